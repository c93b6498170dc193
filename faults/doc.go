// Package faults is headcount's fault suite: it checks, against real
// redis-server processes (standalone and a 3-master Redis Cluster), that
// connection counts stay exact when things break. It holds tests only; this
// file is its documentation.
//
// # What is covered
//
// Every test opens real WebSocket connections (github.com/coder/websocket)
// to nodes that count them with wsconn, and reads the counts the way an
// application does: GET /api/presence (wsconn's PresenceHandler) on every
// node, for the global total, every room and, where it applies, every
// tenant. "Exact" means every node reports, for each of them, the
// cluster-wide total and its own local share that the test computes from
// the connections it holds open. Timings are short so that the suite takes
// seconds: DeadInstanceThreshold 2s, HeartbeatInterval 500ms.
//
//   - TestCrash (standalone and cluster): 3 demo processes (go build
//     ./demo, run as children of the test), 3,000 connections over 100
//     rooms spread over them; one is killed with SIGKILL and the two
//     survivors report exact counts within threshold + heartbeat + 1s of the
//     kill. On the cluster, rooms whose keys sit on each of the 3 masters are
//     included.
//   - TestPartition (pause, drop): a node whose Redis traffic is blackholed
//     by a TCP proxy (internal/faultproxy) for longer than the threshold is
//     reaped by the others within threshold + heartbeat + 1s, while the
//     other nodes are never reaped and its own clients keep working; it
//     keeps admitting (fail-open, within RedisTimeout) and closing
//     connections meanwhile, and once traffic resumes its counts, as they
//     are now, come back exactly within heartbeat + 1s, with no double
//     counting (watchers check a ceiling and a floor on every read). "pause"
//     delivers the held traffic late; "drop" cuts the node's Redis
//     connections first, so only its heartbeats can heal the counts.
//   - TestRedisRestart: redis-server is killed (SIGKILL, data lost) while
//     three nodes count connections; connections open and close during the
//     outage; counts are exact within heartbeat + 1s of Redis answering
//     again.
//   - TestScriptFlush (standalone and cluster, private servers): SCRIPT
//     FLUSH on every master while nodes count, then FLUSHALL and SCRIPT
//     FLUSH; handshakes and closes right after each are counted (no Redis
//     error, no timeout recorded) and counts are exact within heartbeat +
//     1s.
//   - TestSlowRedis: a proxy adds 200ms each way between two nodes and
//     Redis; with RedisTimeout 100ms every handshake returns in less than
//     one Redis round trip, fail-open admits over a full tenant limit,
//     FailClosed answers 503 with Retry-After (and admits a connection no
//     limit applies to), reads fail fast with 503, a third node never sees
//     the slow nodes' counts drop, and counts are exact within heartbeat +
//     1s once the latency is removed (the late limit check is undone).
//   - TestClusterMasterRestart: on a private 3-master cluster, with rooms
//     whose keys sit on each master (found with CLUSTER KEYSLOT and CLUSTER
//     SLOTS, checked with EXISTS), each master in turn is killed, has
//     connections in its rooms open and close while it is down, and comes
//     back empty; counts are exact within heartbeat + 1s of the cluster
//     being whole again.
//   - TestIdleSoak (opt-in, see below): idle connections held for minutes
//     with a 1s threshold; no read ever shows a count below the truth and
//     no node ever reaps a slice.
//
// Tests that crash, stop, flush or slow Redis use private servers
// (redistest.NewServer, redistest.NewCluster) or a proxy in front of the
// shared one: the shared servers of `make test` are never disturbed, and
// every key lives under a namespace from redistest.Prefix. Processes the
// tests start are killed at cleanup (and get PR_SET_PDEATHSIG on Linux), and
// TestMain checks for leaked goroutines once all tests are done.
//
// # Running
//
// `make test` runs the suite with everything else. On its own:
//
//	make test PKGS=./faults/
//	go test -race -count=1 ./faults/   # starts its own redis-servers
//
// It needs redis-server in PATH, the go tool (TestCrash builds ./demo once
// per run, without -race), and about 8,000 file descriptors in the test
// process (the crash tests hold 6,000 client connections; Go raises the
// soft limit to the hard one). It takes about two minutes, the nemesis
// included.
//
// # The soak
//
// TestIdleSoak holds idle connections with a 1s threshold and checks that
// no live node is ever reaped. By default it soaks for ten thresholds; for
// the long soak, give HEADCOUNT_SOAK a duration:
//
//	HEADCOUNT_SOAK=5m go test -race -count=1 -run TestIdleSoak -timeout 20m ./faults/
//	HEADCOUNT_SOAK=5m make test PKGS=./faults/   # the whole suite, on make's servers
//
// In CI set HEADCOUNT_SOAK on a scheduled job rather than on every push:
// it takes as long as it says, on the standalone server and the cluster at
// once.
//
// # The nemesis
//
// TestNemesis (nemesis_test.go, nodes from ./faults/nemesisnode) runs four
// node processes on private Redis servers (standalone, and a 3-master
// cluster, at once), each talking to Redis through proxies of its own.
// Clients follow a seeded random schedule (connect, close, join, double
// join, leave, redial, read) under limits, while a nemesis injects faults:
// SIGKILL and restart under the same or a new InstanceID, a partition of
// one node, every node's traffic stalled, redis-server or a master stopped
// (SIGSTOP) or restarted empty, FLUSHALL, SCRIPT FLUSH. A model of every
// connection's memberships checks every read: never negative, strict
// counts seen everywhere once their call returned, removals gone within
// their documented bounds, no limit exceeded by a fail-closed node while
// Redis answered, a nil Join leaves the connection in the room, every call
// within RedisTimeout plus slack, and "unavailable" only while a fault
// lasts or heals. After each round, faults healed, every count on every
// node must be exact by the deadline the model computes. Presence is on in
// the nodes (nemesis_presence_test.go): connections belong to users of a
// small pool (several tabs each, on several nodes, names with the
// characters member keys encode, some anonymous), and at the same points
// every node must also report the model's distinct users (per room, per
// tenant, online) and full member lists, paged through, with each user's
// connections and metadata. One subscriber reads the presence events of
// every room (EventsHandler, over HTTP, on a node picked at random; it
// moves to another every few seconds, or when its node is killed, resuming
// from the last sequences): replayed, they must give the model's members,
// with sequences that follow each other (a snapshot only after Redis lost
// data), joins and leaves of users that were there, leaves of a killed
// node's users "crashed", of closed ones "closed", never "drained". A
// failure prints the seed and the command that replays it. It runs 50 s
// per topology in `make test`; longer with HEADCOUNT_NEMESIS:
//
//	HEADCOUNT_NEMESIS=15m go test -race -count=1 -timeout 40m -run TestNemesis ./faults/
//	HEADCOUNT_NEMESIS_SEED=<seed> go test -race -count=1 -run 'TestNemesis/cluster$' ./faults/
package faults
