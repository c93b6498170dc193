package redistest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStandaloneSetGet(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	c := Standalone(t)
	key := Prefix(t) + ":k"
	if err := c.Set(ctx, key, "v1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, key).Result(); err != nil || got != "v1" {
		t.Fatalf("GET %s = %q, %v; want v1", key, got, err)
	}
	if s1, s2 := StandaloneServer(t), StandaloneServer(t); s1 != s2 {
		t.Fatalf("StandaloneServer returned two servers: %s and %s", s1.Addr(), s2.Addr())
	}
}

func TestEachRunsBothTopologies(t *testing.T) {
	t.Parallel()
	var ran []string
	Each(t, func(t *testing.T, c redis.UniversalClient) {
		ran = append(ran, t.Name())
		ctx := ctxT(t)
		key := "{" + Prefix(t) + "}:n"
		for want := int64(1); want <= 3; want++ {
			if got, err := c.Incr(ctx, key).Result(); err != nil || got != want {
				t.Fatalf("INCR %s = %d, %v; want %d", key, got, err, want)
			}
		}
		_, isCluster := c.(*redis.ClusterClient)
		if isCluster != strings.HasSuffix(t.Name(), "/cluster") {
			t.Fatalf("subtest %s got a %T", t.Name(), c)
		}
	})
	want := []string{t.Name() + "/standalone", t.Name() + "/cluster"}
	if !slices.Equal(ran, want) {
		t.Fatalf("Each ran %v, want %v", ran, want)
	}
}

// TestClusterKeysOnThreeMasters checks the cluster really has 3 masters that
// split the slots: keys with different hash tags land on different masters.
func TestClusterKeysOnThreeMasters(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	c := Cluster(t)
	servers := ClusterServers(t)
	addrs := ClusterAddrs(t)
	if len(servers) != 3 || len(addrs) != 3 {
		t.Fatalf("cluster has %d masters (%v), want 3", len(servers), addrs)
	}
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	owner := func(slot int64) string {
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) {
				return r.Nodes[0].Addr
			}
		}
		t.Fatalf("slot %d is not served (CLUSTER SLOTS %v)", slot, slots)
		return ""
	}
	prefix := Prefix(t)
	keyOn := map[string]string{} // master addr -> key
	for i := 0; len(keyOn) < 3 && i < 1000; i++ {
		key := fmt.Sprintf("{%s.%d}:k", prefix, i)
		slot, err := c.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if addr := owner(slot); keyOn[addr] == "" {
			keyOn[addr] = key
		}
	}
	if len(keyOn) != 3 {
		t.Fatalf("1000 hash tags landed on %d masters only: %v", len(keyOn), keyOn)
	}
	for i, s := range servers {
		key, ok := keyOn[s.Addr()]
		if !ok {
			t.Fatalf("master %d (%s) owns none of the keys; owners: %v", i, s.Addr(), keyOn)
		}
		if err := c.Set(ctx, key, s.Addr(), time.Minute).Err(); err != nil {
			t.Fatalf("SET %s via cluster client: %v", key, err)
		}
		// A plain client to the owning master reads it without MOVED.
		if got, err := s.Client(t).Get(ctx, key).Result(); err != nil || got != s.Addr() {
			t.Fatalf("GET %s directly on %s = %q, %v", key, s.Addr(), got, err)
		}
	}
}

func TestExternalClusterDiscovery(t *testing.T) {
	t.Parallel()
	addrs := ClusterAddrs(t)
	seeds, masters, err := externalCluster(" " + addrs[2] + " ,")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range masters {
		got = append(got, m.Addr())
	}
	if !slices.Equal(seeds, addrs[2:]) || !slices.Equal(got, addrs) {
		t.Fatalf("externalCluster(%s) = seeds %v masters %v; want masters %v", addrs[2], seeds, got, addrs)
	}
	for _, bad := range []string{",", "no-port"} {
		if _, _, err := externalCluster(bad); err == nil || !strings.Contains(err.Error(), EnvClusterAddrs) {
			t.Errorf("externalCluster(%q) error = %v, want one naming %s", bad, err, EnvClusterAddrs)
		}
	}
}

func TestPrefix(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	check := func(t *testing.T) {
		for range 3 {
			p := Prefix(t)
			if len(p) > 48 || seen[p] {
				t.Fatalf("Prefix = %q (len %d, seen before %v)", p, len(p), seen[p])
			}
			seen[p] = true
			for _, r := range p {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-", r)) {
					t.Fatalf("Prefix = %q contains %q", p, r)
				}
			}
		}
	}
	check(t)
	t.Run("sub test/with {odd} chars: "+strings.Repeat("long", 30), check)
	if p := Prefix(t); !strings.HasPrefix(p, "t_TestPrefix_") {
		t.Fatalf("Prefix = %q, want it to start with t_TestPrefix_", p)
	}
}

func TestKillRestart(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := NewServer(t)
	if s == StandaloneServer(t) || s.Addr() == StandaloneServer(t).Addr() {
		t.Fatal("NewServer returned the shared server")
	}
	addr := s.Addr()
	c := s.Client(t)
	key := Prefix(t) + ":k"
	if err := c.Set(ctx, key, "before", 0).Err(); err != nil {
		t.Fatal(err)
	}

	s.Kill()
	// Probe with a raw connection: a go-redis client that fails to dial
	// backs off for a second, which would only slow this test down.
	if _, err := probe(addr); err == nil {
		t.Fatal("server still answers after Kill")
	}
	s.Kill() // idempotent

	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	if err := c.Get(ctx, key).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after Restart: err = %v, want redis.Nil (empty data)", err)
	}
	if err := c.Set(ctx, key, "after", 0).Err(); err != nil {
		t.Fatal(err)
	}

	s.Restart(t) // restarting a running server replaces it
	if err := c.Get(ctx, key).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after second Restart: err = %v, want redis.Nil", err)
	}

	s.Stop()
	if _, err := probe(addr); err == nil {
		t.Fatal("server still answers after Stop")
	}
	s.Restart(t)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Stop+Restart: %v", err)
	}
}

func TestSharedServersRefuseKill(t *testing.T) {
	t.Parallel()
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "NewServer") {
				t.Errorf("%s: recovered %v, want a panic pointing to NewServer", name, r)
			}
		}()
		f()
	}
	mustPanic("StandaloneServer.Kill", StandaloneServer(t).Kill)
	mustPanic("StandaloneServer.Stop", StandaloneServer(t).Stop)
	mustPanic("ClusterServers[0].Kill", ClusterServers(t)[0].Kill)
	if msg := fatalMessage(func(tb testing.TB) { StandaloneServer(t).Restart(tb) }); !strings.Contains(msg, "NewServer") {
		t.Errorf("Restart of the shared server: Fatalf(%q), want a message pointing to NewServer", msg)
	}
}

// TestNewClusterNodeRestart crashes one master of a private cluster and
// restarts it: the cluster serves all slots again and the node is empty.
func TestNewClusterNodeRestart(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	c, nodes := NewCluster(t)
	if len(nodes) != 3 {
		t.Fatalf("NewCluster returned %d nodes", len(nodes))
	}
	shared := ClusterAddrs(t)
	for _, n := range nodes {
		if slices.Contains(shared, n.Addr()) {
			t.Fatalf("NewCluster reused shared node %s", n.Addr())
		}
	}
	prefix := Prefix(t)
	var keys []string
	for i := range 30 {
		key := fmt.Sprintf("{%s.%d}:k", prefix, i)
		if err := c.Set(ctx, key, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	victim := nodes[1]
	victim.Kill()
	victim.Restart(t)
	for _, n := range nodes {
		if err := clusterNodeOK(ctx, n.Client(t), 3); err != nil {
			t.Fatalf("%s after Restart: %v", n.Addr(), err)
		}
	}
	lost := 0
	for _, key := range keys {
		err := c.Get(ctx, key).Err()
		switch {
		case errors.Is(err, redis.Nil):
			lost++
		case err != nil:
			t.Fatalf("GET %s after restart: %v", key, err)
		}
	}
	if lost == 0 || lost == len(keys) {
		t.Fatalf("%d of %d keys lost, want only those of the restarted master", lost, len(keys))
	}
}

// TestWaitClusterDown: once WaitClusterDown returns for a killed master,
// the other masters refuse commands (CLUSTERDOWN); after Restart they serve
// again.
func TestWaitClusterDown(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	_, nodes := NewCluster(t)
	nodes[0].Kill()
	nodes[0].WaitClusterDown(t)
	other := nodes[1].Client(t)
	if err := other.Get(ctx, "k").Err(); err == nil || !strings.HasPrefix(err.Error(), "CLUSTERDOWN") {
		t.Fatalf("GET on %s with the cluster down: %v, want CLUSTERDOWN", nodes[1].Addr(), err)
	}
	nodes[0].Restart(t)
	if err := other.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := clusterNodeOK(ctx, n.Client(t), 3); err != nil {
			t.Fatalf("%s after Restart: %v", n.Addr(), err)
		}
	}
}

// fatalTB records Fatalf (and stops the goroutine, like testing.T does).
// Any other method, e.g. Skip, panics through the nil embedded TB.
type fatalTB struct {
	testing.TB
	msg      string
	cleanups []func()
}

func (f *fatalTB) Helper()           {}
func (f *fatalTB) Name() string      { return "TestFake" }
func (f *fatalTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fatalTB) Fatal(args ...any) { f.msg = fmt.Sprint(args...); runtime.Goexit() }
func (f *fatalTB) Fatalf(s string, args ...any) {
	f.msg = fmt.Sprintf(s, args...)
	runtime.Goexit()
}

func fatalMessage(fn func(tb testing.TB)) string {
	f := &fatalTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	for _, c := range slices.Backward(f.cleanups) {
		c()
	}
	return f.msg
}

// TestMissingBinaryFails checks that without redis-server a test fails (it
// is never skipped) with instructions. Not parallel: it empties PATH.
func TestMissingBinaryFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for name, fn := range map[string]func(testing.TB){
		"NewServer":  func(tb testing.TB) { NewServer(tb) },
		"NewCluster": func(tb testing.TB) { NewCluster(tb) },
	} {
		msg := fatalMessage(fn)
		if !strings.Contains(msg, "redis-server not found in PATH") || !strings.Contains(msg, "make test") {
			t.Errorf("%s without redis-server: Fatalf(%q)", name, msg)
		}
	}
	_, err := newServer(kindShared, false)
	for _, want := range []string{"redis-server not found in PATH", "make test", "apt-get install -y redis-server", EnvAddr, EnvClusterAddrs} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("shared start without redis-server: error %v, want it to mention %q", err, want)
		}
	}
}
