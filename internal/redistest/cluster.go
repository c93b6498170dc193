package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	clusterSize    = 3
	clusterSlots   = 16384
	clusterTimeout = 30 * time.Second // forming, or recovering after Restart
)

// clusterGroup is a Redis Cluster of clusterSize masters started here.
type clusterGroup struct {
	nodes []*Server // ordered by slot range
}

func (g *clusterGroup) addrs() []string {
	a := make([]string, len(g.nodes))
	for i, n := range g.nodes {
		a[i] = n.addr
	}
	return a
}

func (g *clusterGroup) close() {
	for _, n := range g.nodes {
		if n != nil {
			n.close()
		}
	}
}

// newClusterGroup starts size cluster-enabled servers in parallel, gives
// each an equal share of the slots, introduces them with CLUSTER MEET and
// waits until every node reports cluster_state:ok.
func newClusterGroup(kind serverKind, size int) (*clusterGroup, error) {
	if _, err := redisServerPath(kind); err != nil {
		return nil, err
	}
	g := &clusterGroup{nodes: make([]*Server, size)}
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range size {
		wg.Go(func() { g.nodes[i], errs[i] = newServer(kind, true) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		g.close()
		return nil, err
	}
	for _, n := range g.nodes {
		n.group = g
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if err := g.form(ctx); err != nil {
		g.close()
		return nil, fmt.Errorf("create cluster on %s: %w", strings.Join(g.addrs(), ","), err)
	}
	return g, nil
}

func (g *clusterGroup) form(ctx context.Context) error {
	clients := g.nodeClients()
	defer closeAll(clients)
	for i, c := range clients {
		// Distinct epochs up front spare the cluster its epoch-collision
		// resolution (what redis-cli --cluster create does too).
		if err := c.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("CLUSTER SET-CONFIG-EPOCH on %s: %w", g.nodes[i].addr, err)
		}
		lo, hi := i*clusterSlots/len(clients), (i+1)*clusterSlots/len(clients)-1
		err := c.ClusterAddSlotsRange(ctx, lo, hi).Err()
		if err != nil && strings.Contains(strings.ToLower(err.Error()), "unknown subcommand") {
			// Redis < 7.0 has no ADDSLOTSRANGE.
			slots := make([]int, 0, hi-lo+1)
			for s := lo; s <= hi; s++ {
				slots = append(slots, s)
			}
			err = c.ClusterAddSlots(ctx, slots...).Err()
		}
		if err != nil {
			return fmt.Errorf("CLUSTER ADDSLOTS %d-%d on %s: %w", lo, hi, g.nodes[i].addr, err)
		}
	}
	for _, n := range g.nodes[1:] {
		if err := clients[0].ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(n.port)).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s from %s: %w", n.addr, g.nodes[0].addr, err)
		}
	}
	return g.waitOK(ctx)
}

// waitOK polls CLUSTER INFO on every node until all report cluster_state:ok,
// know all nodes, see all slots served and suspect no node of failing.
func (g *clusterGroup) waitOK(ctx context.Context) error {
	clients := g.nodeClients()
	defer closeAll(clients)
	delay := 5 * time.Millisecond
	for {
		var notReady error
		for i, c := range clients {
			if err := clusterNodeOK(ctx, c, len(clients)); err != nil {
				notReady = fmt.Errorf("%s: %w", g.nodes[i].addr, err)
				break
			}
		}
		if notReady == nil {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cluster not ready: %w", notReady)
		case <-t.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

func clusterNodeOK(ctx context.Context, c *redis.Client, nodes int) error {
	fields, err := clusterInfo(ctx, c)
	if err != nil {
		return err
	}
	want := map[string]string{
		"cluster_state":       "ok",
		"cluster_known_nodes": strconv.Itoa(nodes),
		"cluster_slots_ok":    strconv.Itoa(clusterSlots),
	}
	for k, v := range want {
		if fields[k] != v {
			return fmt.Errorf("%s is %q, want %q", k, fields[k], v)
		}
	}
	// A node suspected (fail?) may still be declared failed, which takes
	// the whole cluster down for a while after this state:ok: wait until
	// no node suspects another.
	nodesInfo, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return err
	}
	for line := range strings.Lines(nodesInfo) {
		if f := strings.Fields(line); len(f) > 2 && strings.Contains(f[2], "fail") {
			return fmt.Errorf("it flags %s as %s", f[1], f[2])
		}
	}
	return nil
}

// clusterInfo is a node's CLUSTER INFO, field by field.
func clusterInfo(ctx context.Context, c *redis.Client) (map[string]string, error) {
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}

// WaitClusterDown waits until every other node of this node's cluster
// reports cluster_state:fail, as they do once this node, killed, has been
// unreachable for the cluster's node timeout (2s): from then on the whole
// cluster refuses commands (CLUSTERDOWN) until this node is back and the
// others have cleared its failure, which takes a while longer after
// [Server.Restart].
func (s *Server) WaitClusterDown(tb testing.TB) {
	tb.Helper()
	if s.group == nil {
		tb.Fatalf("redistest: WaitClusterDown called on %s, which is not a node of a cluster from NewCluster", s.describe())
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	clients := s.group.nodeClients()
	defer closeAll(clients)
	for i, c := range clients {
		if s.group.nodes[i] == s {
			continue
		}
		for {
			fields, err := clusterInfo(ctx, c)
			if err == nil && fields["cluster_state"] == "fail" {
				break
			}
			select {
			case <-ctx.Done():
				tb.Fatalf("redistest: %s still reports cluster_state %q (%v) %v after %s went down",
					s.group.nodes[i].addr, fields["cluster_state"], err, clusterTimeout, s.addr)
			case <-time.After(maxPollInterval):
			}
		}
	}
}

func (g *clusterGroup) nodeClients() []*redis.Client {
	clients := make([]*redis.Client, len(g.nodes))
	for i, n := range g.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.addr, MaxRetries: -1})
	}
	return clients
}

func closeAll(clients []*redis.Client) {
	for _, c := range clients {
		_ = c.Close()
	}
}

// sharedCluster is the cluster shared by the test binary.
var sharedCluster struct {
	mu      sync.Mutex
	done    bool
	seeds   []string  // addresses given to cluster clients
	masters []*Server // ordered by slot range
	err     error
}

func resetSharedCluster() {
	sharedCluster.mu.Lock()
	defer sharedCluster.mu.Unlock()
	sharedCluster.done, sharedCluster.seeds, sharedCluster.masters, sharedCluster.err = false, nil, nil, nil
}

func sharedClusterState() (seeds []string, masters []*Server, err error) {
	sharedCluster.mu.Lock()
	defer sharedCluster.mu.Unlock()
	if !sharedCluster.done {
		sharedCluster.done = true
		if env := strings.TrimSpace(os.Getenv(EnvClusterAddrs)); env != "" {
			sharedCluster.seeds, sharedCluster.masters, sharedCluster.err = externalCluster(env)
		} else if g, err := newClusterGroup(kindShared, clusterSize); err != nil {
			sharedCluster.err = err
		} else {
			sharedCluster.seeds, sharedCluster.masters = g.addrs(), g.nodes
		}
	}
	return sharedCluster.seeds, sharedCluster.masters, sharedCluster.err
}

// externalCluster parses HEADCOUNT_REDIS_CLUSTER_ADDRS and discovers the
// masters with CLUSTER SLOTS.
func externalCluster(env string) ([]string, []*Server, error) {
	var seeds []string
	for a := range strings.SplitSeq(env, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, nil, fmt.Errorf("%s=%q: %q is not host:port: %v", EnvClusterAddrs, env, a, err)
		}
		seeds = append(seeds, a)
	}
	if len(seeds) == 0 {
		return nil, nil, fmt.Errorf("%s=%q names no address", EnvClusterAddrs, env)
	}
	var errs []error
	for _, seed := range seeds {
		masters, err := discoverMasters(seed)
		if err == nil {
			return seeds, masters, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", seed, err))
	}
	return nil, nil, fmt.Errorf("%s=%q: CLUSTER SLOTS failed on every seed: %w", EnvClusterAddrs, env, errors.Join(errs...))
}

func discoverMasters(seed string) ([]*Server, error) {
	c := redis.NewClient(&redis.Options{Addr: seed, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, err
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i].Start < slots[j].Start })
	seedHost, _, _ := net.SplitHostPort(seed)
	var masters []*Server
	seen := map[string]bool{}
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			continue
		}
		addr := s.Nodes[0].Addr
		if host, port, err := net.SplitHostPort(addr); err == nil && (host == "" || host == "?") {
			addr = net.JoinHostPort(seedHost, port) // the seed itself, before it learnt its IP
		}
		if !seen[addr] {
			seen[addr] = true
			masters = append(masters, &Server{addr: addr, kind: kindExternal})
		}
	}
	if len(masters) == 0 {
		return nil, errors.New("CLUSTER SLOTS lists no master: is the cluster created?")
	}
	return masters, nil
}

// Cluster returns a client to the Redis Cluster shared by the test binary:
// the one named by HEADCOUNT_REDIS_CLUSTER_ADDRS, or else 3 masters (no
// replicas) started on the first call and stopped by [Main] / [StopAll].
// The client is closed when the test ends. Keys must be built from [Prefix].
func Cluster(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	seeds, _, err := sharedClusterState()
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return newClusterClient(tb, seeds)
}

// ClusterServers returns the masters of the shared cluster (see [Cluster]),
// ordered by the first slot they serve. Do not Kill, Stop or Restart them;
// use [NewCluster] for that.
func ClusterServers(tb testing.TB) []*Server {
	tb.Helper()
	_, masters, err := sharedClusterState()
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return slices.Clone(masters)
}

// ClusterAddrs returns the host:port of each master of the shared cluster,
// ordered by the first slot they serve.
func ClusterAddrs(tb testing.TB) []string {
	tb.Helper()
	var addrs []string
	for _, s := range ClusterServers(tb) {
		addrs = append(addrs, s.Addr())
	}
	return addrs
}

// NewCluster starts a private 3-master cluster for this test only, even when
// HEADCOUNT_REDIS_CLUSTER_ADDRS is set, and returns a client to it and its
// masters ordered by slot range. Everything is stopped when the test ends.
// The masters have no replicas: after Kill the cluster is down until the node
// is restarted with [Server.Restart] (it then serves its slots again, empty).
func NewCluster(tb testing.TB) (*redis.ClusterClient, []*Server) {
	tb.Helper()
	g, err := newClusterGroup(kindPrivate, clusterSize)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(g.close)
	return newClusterClient(tb, g.addrs()), slices.Clone(g.nodes)
}

// StartCluster starts a private cluster of masters (no replicas) for a
// program that is not a test (cmd/hcsim): the servers of NewCluster,
// without a testing.TB. It returns the masters' addresses, ordered by slot
// range, and stop, which kills them and removes their data.
func StartCluster(masters int) (addrs []string, stop func(), err error) {
	if masters < 1 {
		return nil, nil, fmt.Errorf("redistest: a cluster of %d masters", masters)
	}
	g, err := newClusterGroup(kindPrivate, masters)
	if err != nil {
		return nil, nil, fmt.Errorf("redistest: %w", err)
	}
	return g.addrs(), g.close, nil
}

func newClusterClient(tb testing.TB, seeds []string) *redis.ClusterClient {
	tb.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds})
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		return m.Ping(ctx).Err()
	})
	if err != nil {
		tb.Fatalf("redistest: cluster %s is not usable: %v", strings.Join(seeds, ","), err)
	}
	return c
}

// Each runs fn as the subtests "standalone" (client from [Standalone]) and
// "cluster" (client from [Cluster]), so a suite covers both topologies.
func Each(t *testing.T, fn func(t *testing.T, c redis.UniversalClient)) {
	t.Helper()
	t.Run("standalone", func(t *testing.T) { fn(t, Standalone(t)) })
	t.Run("cluster", func(t *testing.T) { fn(t, Cluster(t)) })
}
