// Package redistest is the test bed for code that talks to Redis: it hands
// tests clients connected to real redis-server processes, standalone and
// Redis Cluster, either started on demand on free loopback ports or provided
// by the environment.
//
// # Typical use
//
// Every test package that uses this package should route its TestMain
// through [Main], so that servers started lazily by the test binary are
// stopped (and their temporary directories removed) when the tests end:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
//
// Core suites run against both topologies with [Each]:
//
//	func TestIncr(t *testing.T) {
//		redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
//			key := redistest.Prefix(t) + ":hits"
//			...
//		})
//	}
//
// # Sharing and isolation
//
// [Standalone] and [Cluster] share one server (one cluster) per test binary.
// Tests isolate themselves by building every key from [Prefix], which is
// unique per call, per test binary and per run. On the cluster, multi-key
// commands need the keys in one slot: use a hash tag such as
// "{"+redistest.Prefix(t)+"}:a". Tests must never FLUSHALL/FLUSHDB, CONFIG SET,
// SHUTDOWN, DEBUG SLEEP or otherwise disturb a shared server; a test that
// needs to do so, or to crash and restart Redis ([Server.Kill],
// [Server.Restart]), gets a private server from [NewServer] (or a private
// cluster from [NewCluster]).
//
// # Environment
//
//   - HEADCOUNT_REDIS_ADDR=host:port: [Standalone] and [StandaloneServer] use
//     this server instead of starting one.
//   - HEADCOUNT_REDIS_CLUSTER_ADDRS=host:port,host:port,...: [Cluster],
//     [ClusterServers] and [ClusterAddrs] use this cluster (any reachable
//     nodes work as seeds; the masters are discovered with CLUSTER SLOTS).
//
// `make test` (scripts/test.sh) starts one standalone server and one
// 3-master cluster and exports both variables, so all test binaries of a
// run share them. Without the variables each test binary starts its own.
//
// [NewServer] and [NewCluster] always start private processes, so they need
// the redis-server binary even when the variables are set. A test that needs
// Redis and cannot find redis-server fails; it is never skipped.
//
// # Process hygiene
//
// Servers are started with --save "" --appendonly no on 127.0.0.1 in a fresh
// temporary directory. On Linux they also get PR_SET_PDEATHSIG=SIGKILL (from a
// dedicated, locked OS thread that never exits), so a crashed or killed test
// binary does not leave redis-server processes behind.
//
// # goleak
//
// A shared server keeps one goroutine waiting on its process until [StopAll]
// (called by [Main]); the spawner thread exits in StopAll too. Packages that
// check for leaked goroutines per test should ignore
// "github.com/headcount-go/headcount/internal/redistest.(*process).wait" and
// "github.com/headcount-go/headcount/internal/redistest.spawnLoop"; packages
// that check once in TestMain should call [StopAll] before checking.
package redistest
