package icounter

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/redistest"
)

// lockedBuffer is a bytes.Buffer for a logger and a test reading it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestHeartbeatCommandsFlat: what one heartbeat costs Redis, in commands as
// INFO commandstats counts them (script calls and the commands they run),
// does not grow with the counters a node holds: the same at 10 and 10,000
// rooms, and no more than the README quotes. Commands are counted, so the
// figure is exact on a server of its own (heartbeatCost starts one); Redis
// CPU per tick is logged, not asserted (a speed).
func TestHeartbeatCommandsFlat(t *testing.T) {
	t.Parallel()
	// The README's "13 Redis commands per tick on a single server": the
	// script call and the 12 commands it runs. A change that adds one
	// must change the README too.
	const quoted = 13
	const ticks = 5
	small, large := heartbeatCost(t, 10, ticks), heartbeatCost(t, 10000, ticks)
	t.Logf("per tick: 10 rooms %.1f commands, %.2f ms CPU; 10,000 rooms %.1f commands, %.2f ms CPU",
		small.commands, small.cpuMs, large.commands, large.cpuMs)
	if small.commands <= 0 || large.commands != small.commands {
		t.Fatalf("commands per tick: %.1f at 10 rooms, %.1f at 10,000: want the same", small.commands, large.commands)
	}
	if small.commands > quoted {
		t.Fatalf("commands per tick: %.1f, more than the %d the README quotes", small.commands, quoted)
	}
}

// Timings of the kill test: longer than the package's, so that a sweep of
// 10,000 counters from a -race build on a loaded machine has room.
const (
	killThreshold = 2 * time.Second
	killHeartbeat = 500 * time.Millisecond
	killRooms     = 10000
)

// TestKilledNodeSweptEverywhere: a process holding a slice in each of
// 10,000 rooms is SIGKILLed while three live nodes hold slices in a few of
// them. Within threshold + heartbeat + 2s every one of its slices is gone,
// including the rooms no live node ever touches; the three sweep at once
// and nothing is subtracted twice: every total is exactly the live nodes'
// share, and the reaps they report add up to the victim's slices, once.
func TestKilledNodeSweptEverywhere(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		o := Options{Prefix: p, DeadInstanceThreshold: killThreshold, HeartbeatInterval: killHeartbeat}
		var obs []*reapCounter
		want := make([]int64, killRooms)
		keys := make([]string, killRooms)
		for i := range keys {
			keys[i] = "room-" + strconv.Itoa(i)
		}
		var live []*Lax
		for n := range 3 {
			o := o
			o.InstanceID = "live-" + strconv.Itoa(n)
			obs = append(obs, &reapCounter{})
			o.Observer = obs[n]
			own, _ := ownClient(t, c)
			l, err := NewLax(own, LaxOptions{Options: o, FlushInterval: testFlush})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close(context.Background()) })
			live = append(live, l)
			for i := n; i < 30; i += 3 { // rooms 0-29: one live node each
				must[Value](t)(l.Inc(ctx, keys[i], 1))
				want[i]++
			}
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		child := startChild(t, c, o, "victim", killRooms)
		// Every node of a namespace must share its timings: a reader with
		// a shorter threshold would sweep before the deadline says.
		r := live[0]
		if ok, what := totalsAre(ctx, r, keys, func(i int) int64 { return want[i] + 1 })(); !ok {
			t.Fatalf("before the kill: %s", what)
		}
		killed := time.Now()
		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = child.Wait()
		deadline := killThreshold + killHeartbeat + 2*time.Second
		// A sweep is over once the victim has left the registry's
		// sessions (when it is claimed) and its claim is gone (after its
		// last drop): cheap to poll, where reading 10,000 rooms is not, and
		// a poll that heavy would slow the sweep it waits for.
		sessions, claims := r.e.live.keys[1], r.e.live.keys[2]
		eventually(t, deadline-time.Since(killed), "the killed node swept", func() (bool, string) {
			known := c.HExists(ctx, sessions, "victim").Val()
			n := c.ZCard(ctx, claims).Val()
			return !known && n == 0, fmt.Sprintf("registered %v, %d claims", known, n)
		})
		t.Logf("swept in %v", time.Since(killed).Round(time.Millisecond))
		if ok, what := totalsAre(ctx, r, keys, func(i int) int64 { return want[i] })(); !ok {
			t.Fatalf("after the sweep: %s", what)
		}
		var n int64
		for _, o := range obs {
			n += o.n.Load()
		}
		if n != killRooms {
			t.Fatalf("the sweepers report %d slices removed, want %d (each once)", n, killRooms)
		}
	})
}

// TestRestartSweepsPredecessor: a process restarted under the same
// InstanceID sweeps its predecessor's share from every room within a second
// of its start, including the rooms it never writes.
func TestRestartSweepsPredecessor(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		// A threshold far away: only the restart can remove the share.
		o := Options{Prefix: p, InstanceID: "pod-0", DeadInstanceThreshold: time.Minute}
		old, err := NewLax(c, LaxOptions{Options: o})
		if err != nil {
			t.Fatal(err)
		}
		const rooms = 2000
		keys := holdRooms(t, old, rooms, 2)
		old.Kill() // a crash: nothing leaves Redis
		r := newStrict(t, c, p, "reader")
		if got := must[[]Value](t)(r.GetMany(ctx, keys))[rooms-1].Total; got != 2 {
			t.Fatalf("before the restart: %d, want 2", got)
		}
		started := time.Now()
		o.Logger = nil
		restarted, err := NewStrict(c, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = restarted.Close(context.Background()) })
		eventually(t, time.Second-time.Since(started), "the predecessor's share gone everywhere",
			totalsAre(ctx, r, keys, func(int) int64 { return 0 }))
		t.Logf("swept %v after the start", time.Since(started).Round(time.Millisecond))
	})
}

// TestMasterRestartedEmptyHealed: each master of a private 3-master cluster
// in turn crashes and comes back without its data. Every node's canary there
// is gone (and, on the master of the registry, the registry too), so the
// nodes re-assert their slices: totals are exact again within one heartbeat
// plus a second of the master's return.
func TestMasterRestartedEmptyHealed(t *testing.T) {
	t.Parallel()
	c, masters := redistest.NewCluster(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	want := map[string]int64{}
	var nodes []*Lax
	var logs lockedBuffer // node-0's
	for n := range 3 {
		o := testOptions(p, "node-"+strconv.Itoa(n))
		if n == 0 {
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		}
		l, err := NewLax(c, LaxOptions{Options: o, FlushInterval: testFlush})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		nodes = append(nodes, l)
		for i := range 60 {
			k := "room-" + strconv.Itoa(i)
			must[Value](t)(l.Inc(ctx, k, int64(n+1)))
			want[k] += int64(n + 1)
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range masters {
		if n := m.Client(t).DBSize(ctx).Val(); n == 0 {
			t.Fatalf("master %s holds no key: the test would prove nothing there", m.Addr())
		}
	}
	// The canaries must have been found in place once, or their loss
	// could not tell.
	eventually(t, 5*testHeartbeat+time.Second, "every node's canaries placed", func() (bool, string) {
		for _, l := range nodes {
			l.e.live.mu.Lock()
			set := len(l.e.live.canaries) == len(masters)
			for _, cn := range l.e.live.canaries {
				set = set && cn.session != 0
			}
			l.e.live.mu.Unlock()
			if !set {
				return false, l.InstanceID()
			}
		}
		return true, ""
	})
	r := newStrict(t, c, p, "reader")
	for i, m := range masters {
		m.Restart(t)
		back := time.Now()
		for k, w := range want {
			eventuallyTotal(t, r, k, w, testHeartbeat+time.Second-time.Since(back))
		}
		t.Logf("master %d (%s) restarted empty: healed in %v", i, m.Addr(), time.Since(back).Round(time.Millisecond))
	}
	// A loss of data is warned of (as one, or, when the restart kept
	// node-0 from setting its canary for longer than it lives, as
	// possibly one); a new session is not (TestSweptInstanceReturns).
	eventually(t, 2*time.Second, "node-0 warning of the lost canaries", func() (bool, string) {
		l := logs.String()
		for _, line := range strings.Split(l, "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "master lost") {
				return true, ""
			}
		}
		return false, l
	})
}

// totalsAre is a condition for eventually: the total of every key of keys,
// read with one GetMany, is want(i).
func totalsAre(ctx context.Context, r interface {
	GetMany(context.Context, []string) ([]Value, error)
}, keys []string, want func(i int) int64) func() (bool, string) {
	return func() (bool, string) {
		vs, err := r.GetMany(ctx, keys)
		if err != nil {
			return false, err.Error()
		}
		wrong, first := 0, ""
		for i, v := range vs {
			if v.Total != want(i) {
				if wrong == 0 {
					first = fmt.Sprintf("%s = %d, want %d", keys[i], v.Total, want(i))
				}
				wrong++
			}
		}
		return wrong == 0, fmt.Sprintf("%d keys wrong, first %s", wrong, first)
	}
}

// The child process of the kill test: this test binary again, told by the
// environment to hold a slice in each of n rooms and wait to be killed.
const childEnv = "HEADCOUNT_ICOUNTER_CHILD"

// startChild starts a node holding 1 in each of rooms rooms (room-0...),
// and returns once its slices are in Redis.
func startChild(t *testing.T, c redis.UniversalClient, o Options, id string, rooms int) *exec.Cmd {
	addrs := ""
	switch c := c.(type) {
	case *redis.ClusterClient:
		addrs = "cluster=" + strings.Join(c.Options().Addrs, ",")
	case *redis.Client:
		addrs = "standalone=" + c.Options().Addr
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{addrs, o.Prefix, id, strconv.Itoa(rooms),
		o.DeadInstanceThreshold.String(), o.HeartbeatInterval.String()}, "|"))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("child node: %q", line)
		}
	case <-time.After(time.Minute):
		t.Fatal("child node not ready within a minute")
	}
	return cmd
}

// childNode runs the child of startChild when the environment asks for it,
// and reports whether it did.
func childNode() bool {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return false
	}
	f := strings.Split(spec, "|")
	kind, addrs, _ := strings.Cut(f[0], "=")
	var c redis.UniversalClient
	if kind == "cluster" {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	} else {
		c = redis.NewClient(&redis.Options{Addr: addrs})
	}
	rooms, _ := strconv.Atoi(f[3])
	threshold, _ := time.ParseDuration(f[4])
	heartbeat, _ := time.ParseDuration(f[5])
	l, err := NewLax(c, LaxOptions{Options: Options{Prefix: f[1], InstanceID: f[2],
		DeadInstanceThreshold: threshold, HeartbeatInterval: heartbeat}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child node:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	for i := range rooms {
		if _, err := l.Inc(ctx, "room-"+strconv.Itoa(i), 1); err != nil {
			fmt.Fprintln(os.Stderr, "child node:", err)
			os.Exit(1)
		}
	}
	if err := l.Flush(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child node:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	select {} // until killed
}

// TestSweptInstanceReturns: an instance cut off from Redis for longer than
// the threshold is swept; when it is back it finds the registry has
// forgotten it, takes a new session and re-asserts its slices, within one
// heartbeat plus a second.
func TestSweptInstanceReturns(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		a := newStrict(t, c, p, "A")
		bc, cut := ownClient(t, c)
		var logs lockedBuffer
		o := testOptions(p, "B")
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		b, err := NewStrict(bc, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		must[Value](t)(b.Inc(ctx, "k", 3))
		must[Value](t)(a.Inc(ctx, "k", 1))
		old := b.e.session.Load()
		cut.cut.Store(true)
		eventuallyTotal(t, a, "k", 1, healDeadline)
		cut.cut.Store(false)
		back := time.Now()
		eventuallyTotal(t, a, "k", 4, testHeartbeat+time.Second)
		t.Logf("B counted again %v after its return", time.Since(back).Round(time.Millisecond))
		if now := b.e.session.Load(); now <= old {
			t.Fatalf("B's session %d after its return, want newer than %d", now, old)
		}
		stableTotal(t, a, "k", 4, 2*testHeartbeat)
		// B's canaries (on a Cluster) still hold its old session: a new
		// session of its own, not a master that lost data.
		if l := logs.String(); strings.Contains(l, "lost this instance's canary") {
			t.Errorf("B's logs after its return warn of lost data:\n%s", l)
		}
	})
}

// TestDeadInstanceLostWithRegistry: an instance dies, and before anyone
// sweeps it the master holding the registry restarts empty, taking the
// dead instance's entry with it. The live instances notice the loss,
// register again and reconcile: once the dead instance's canaries have
// expired (a threshold and a heartbeat after its last heartbeat), its
// slices on the other masters go, within a threshold, two heartbeats and a
// second of the master's return.
func TestDeadInstanceLostWithRegistry(t *testing.T) {
	t.Parallel()
	c, masters := redistest.NewCluster(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	o := Options{Prefix: p, DeadInstanceThreshold: testThreshold, HeartbeatInterval: testHeartbeat}
	live := make([]*Lax, 2)
	for i := range live {
		o := o
		o.InstanceID = "live-" + strconv.Itoa(i)
		l, err := NewLax(c, LaxOptions{Options: o, FlushInterval: testFlush})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		live[i] = l
	}
	o.InstanceID = "dead"
	dead, err := NewLax(c, LaxOptions{Options: o, FlushInterval: testFlush})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 60)
	for i := range keys {
		keys[i] = "room-" + strconv.Itoa(i)
		must[Value](t)(live[0].Inc(ctx, keys[i], 1))
		must[Value](t)(dead.Inc(ctx, keys[i], 5))
	}
	for _, l := range []*Lax{live[0], dead} {
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	dead.Kill()
	masterOf(t, c, masters, live[0].e.live.keys[0]).Restart(t)
	back := time.Now()
	deadline := testThreshold + 2*testHeartbeat + time.Second
	eventually(t, deadline, "the dead instance's share gone",
		totalsAre(ctx, live[1], keys, func(int) int64 { return 1 }))
	t.Logf("reconciled %v after the registry's master came back", time.Since(back).Round(time.Millisecond))
}

// TestRestartAfterRegistryLost: a process dies, the master holding the
// registry restarts empty, and the process is started again under the same
// InstanceID. The registry no longer names the predecessor's session, so
// the restart cannot sweep it; the reconcile that the loss sets off finds
// a newer session of that ID registered (and its canaries set) and removes
// the predecessor's slices from the masters that kept their data, within
// a threshold, two heartbeats and a second of the master's return.
func TestRestartAfterRegistryLost(t *testing.T) {
	t.Parallel()
	c, masters := redistest.NewCluster(t)
	p := redistest.Prefix(t)
	live := newStrict(t, c, p, "live")
	o := testOptions(p, "pod-0")
	old, err := NewStrict(c, o)
	if err != nil {
		t.Fatal(err)
	}
	keys := holdBoth(t, live, old)
	old.Kill()
	reg := masterOf(t, c, masters, live.e.live.keys[0])
	reg.Restart(t)
	back := time.Now()
	restarted, err := NewStrict(c, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restarted.Close(context.Background()) })
	kept := keptBy(t, c, masters, live.e, keys, reg)
	onlyLiveShare(t, live, kept, back, testThreshold+2*testHeartbeat+time.Second, "the predecessor's")
}

// TestLossNoticedBeforeReply: an assertion runs in Redis, then the master
// of its counter (not the registry's, so the instance keeps its session)
// loses its data, and the instance notices the loss, by its canary there,
// before the assertion's answer reaches it. The late answer must not mark
// the counter as held by Redis: it is asserted again like the others, and
// the total is exact within a heartbeat and a second of the answer.
func TestLossNoticedBeforeReply(t *testing.T) {
	t.Parallel()
	c, masters := redistest.NewCluster(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	sc, f := ownClient(t, c)
	s := newStrict(t, sc, p, "S")
	r := newStrict(t, c, p, "R")
	reg := masterOf(t, c, masters, s.e.live.keys[0])
	var key string
	var m *redistest.Server
	for i := 0; m == nil || m == reg; i++ {
		key = "room-" + strconv.Itoa(i)
		m = masterOf(t, c, masters, s.e.cfg.space.Key(key))
	}
	must[Value](t)(s.Inc(ctx, key, 1))
	release := f.holdReplies(s.e.cfg.space.Key(key))
	done := make(chan error, 1)
	go func() {
		_, err := s.Inc(ctx, key, 1)
		done <- err
	}()
	eventuallyTotal(t, r, key, 2, time.Second) // it ran in Redis
	losses := s.e.losses.Load()
	if err := m.Client(t).FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, testHeartbeat+time.Second, "S noticing the loss", func() (bool, string) {
		n := s.e.losses.Load()
		return n > losses, fmt.Sprintf("%d losses noticed", n)
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventuallyTotal(t, r, key, 2, testHeartbeat+time.Second)
}

// masterOf is the master of a private cluster that serves key.
func masterOf(t *testing.T, c *redis.ClusterClient, masters []*redistest.Server, key string) *redistest.Server {
	t.Helper()
	slot := keyspace.Slot(key)
	for _, r := range c.ClusterSlots(ctxT(t)).Val() {
		if int(r.Start) <= slot && slot <= int(r.End) && len(r.Nodes) > 0 {
			for _, m := range masters {
				if r.Nodes[0].Addr == m.Addr() {
					return m
				}
			}
		}
	}
	t.Fatalf("no master serves %s (slot %d)", key, slot)
	return nil
}

// holdBoth has live hold 1 and other 5 in each of 60 counters, and
// returns their names.
func holdBoth(t *testing.T, live, other counter) []string {
	t.Helper()
	ctx := ctxT(t)
	keys := make([]string, 60)
	for i := range keys {
		keys[i] = "room-" + strconv.Itoa(i)
		must[Value](t)(live.Inc(ctx, keys[i], 1))
		must[Value](t)(other.Inc(ctx, keys[i], 5))
	}
	return keys
}

// keptBy returns the keys that master m does not serve: those a loss of
// its data leaves in place.
func keptBy(t *testing.T, c *redis.ClusterClient, masters []*redistest.Server, e *engine, keys []string, m *redistest.Server) []string {
	t.Helper()
	var kept []string
	for _, k := range keys {
		if masterOf(t, c, masters, e.cfg.space.Key(k)) != m {
			kept = append(kept, k)
		}
	}
	return kept
}

// onlyLiveShare waits until each of kept holds live's share (1) alone,
// within deadline of back, when the master that lost its data was back;
// whose names the share that must go.
func onlyLiveShare(t *testing.T, live *Strict, kept []string, back time.Time, deadline time.Duration, whose string) {
	t.Helper()
	eventually(t, deadline, whose+" share gone from the masters that kept their data",
		totalsAre(ctxT(t), live, kept, func(int) int64 { return 1 }))
	t.Logf("%d keys on other masters: %s share gone %v after the master came back", len(kept), whose, time.Since(back).Round(time.Millisecond))
}

// TestDeadInstanceLostWithIndex: the master holding an instance's index
// (not the registry's) restarts empty, and the instance dies before its
// next heartbeat, so before it could notice the loss and rebuild its
// index. Its slices on the other masters are in no index left, yet the
// registry knows it, so its sweep comes as usual, and the reconcile that
// the loss sets off on a live instance has entered those slices in its
// index by then: they go within a threshold, two heartbeats and a second of
// the master's return.
func TestDeadInstanceLostWithIndex(t *testing.T) {
	t.Parallel()
	c, masters := redistest.NewCluster(t)
	p := redistest.Prefix(t)
	// A threshold long enough that the reconcile, a heartbeat and a
	// quarter after the live instance notices the loss, comes before the
	// sweep however long the restart takes.
	const threshold = 4 * time.Second
	o := Options{Prefix: p, DeadInstanceThreshold: threshold, HeartbeatInterval: testHeartbeat, InstanceID: "live"}
	live, err := NewStrict(c, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Close(context.Background()) })
	reg := masterOf(t, c, masters, live.e.live.keys[0])
	// An instance ID whose index is on another master than the registry.
	var idx *redistest.Server
	for i := 0; idx == nil || idx == reg; i++ {
		o.InstanceID = "dead-" + strconv.Itoa(i)
		idx = masterOf(t, c, masters, live.e.cfg.space.Index(o.InstanceID, 1))
	}
	dc, cut := ownClient(t, c)
	dead, err := NewStrict(dc, o)
	if err != nil {
		t.Fatal(err)
	}
	// The keys the loss does not take, where the dead share would stay.
	kept := keptBy(t, c, masters, live.e, holdBoth(t, live, dead), idx)
	cut.cut.Store(true) // no heartbeat of the dead instance sees the loss
	idx.Restart(t)
	dead.Kill()
	onlyLiveShare(t, live, kept, time.Now(), threshold+2*testHeartbeat+time.Second, "the dead instance's")
}

// TestRestartSweepsPredecessorAfterFailedRegistration: a process restarted
// under the InstanceID of a crashed one, whose registration at start fails
// (Redis does not answer then), still sweeps its predecessor once Redis
// answers: its heartbeat finds the predecessor's session registered, not
// its own, and registers, instead of stamping that session alive.
func TestRestartSweepsPredecessorAfterFailedRegistration(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	// A threshold far away: only the restart can remove the share.
	o := Options{Prefix: p, InstanceID: "pod-0", DeadInstanceThreshold: time.Minute, HeartbeatInterval: testHeartbeat}
	old, err := NewLax(c, LaxOptions{Options: o})
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"room-a", "room-b"}
	for _, k := range keys {
		must[Value](t)(old.Inc(ctx, k, 2))
	}
	if err := old.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	old.Kill() // a crash: nothing leaves Redis
	proxy, err := faultproxy.New(c.Options().Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	pc := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = pc.Close() })
	proxy.Stall(true)
	var logs lockedBuffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	restarted, err := NewStrict(pc, o) // registers in vain: Redis does not answer
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restarted.Close(context.Background()) })
	eventually(t, 10*time.Second, "the start given up", func() (bool, string) {
		s := logs.String() // registration failed, or never tried (no Redis clock for the session)
		return strings.Contains(s, "registering this instance failed") || strings.Contains(s, "using the local clock"), s
	})
	proxy.CutAll() // what waited is lost: the registration never reached Redis
	proxy.Stall(false)
	back := time.Now()
	r := newStrict(t, c, p, "reader")
	// One heartbeat to find the registry, one round trip to register, a
	// sweep of two counters; a second for a busy machine.
	eventually(t, testHeartbeat+time.Second, "the predecessor's share gone",
		totalsAre(ctx, r, keys, func(int) int64 { return 0 }))
	t.Logf("swept %v after Redis answered", time.Since(back).Round(time.Millisecond))
}

// TestOutageSweepsNoOne: Redis stops answering every instance for longer
// than the threshold, then answers again. An outage is no instance's
// death: none of the live ones is swept (each keeps its session, the total
// never drops below their share), while one killed just before the outage
// is swept once the outage's benefit of the doubt, a threshold, has run
// out. Two outages: commands refused at once (a cluster that is down, a
// server that is restarting), and commands held and run late (CLIENT
// PAUSE, like a link that stalls), where the heartbeat sent before the
// outage is the first to run after it.
func TestOutageSweepsNoOne(t *testing.T) {
	t.Parallel()
	// Long enough that, when it ends, every instance is unseen for more
	// than a threshold.
	const outage = testThreshold + 2*testHeartbeat
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
			outageSweepsNoOne(t, c, func(cuts []*faults) {
				for _, f := range cuts {
					f.cut.Store(true)
				}
				time.Sleep(outage) // the outage itself
				for _, f := range cuts {
					f.cut.Store(false)
				}
			})
		})
	})
	t.Run("held", func(t *testing.T) {
		t.Parallel()
		// A private server: CLIENT PAUSE holds every client.
		c := redistest.NewServer(t).Client(t)
		outageSweepsNoOne(t, c, func([]*faults) {
			if err := c.Do(ctxT(t), "CLIENT", "PAUSE", outage.Milliseconds(), "ALL").Err(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(outage) // the outage itself
		})
	})
}

func outageSweepsNoOne(t *testing.T, c redis.UniversalClient, outage func(cuts []*faults)) {
	ctx, p := ctxT(t), redistest.Prefix(t)
	live := make([]*Strict, 3)
	var cuts []*faults
	var want int64
	for i := range live {
		ic, f := ownClient(t, c)
		live[i] = newStrict(t, ic, p, "live-"+strconv.Itoa(i))
		cuts = append(cuts, f)
		must[Value](t)(live[i].Inc(ctx, "k", int64(i+1)))
		want += int64(i + 1)
	}
	dead := newStrict(t, c, p, "dead")
	must[Value](t)(dead.Inc(ctx, "k", 10))
	sessions := make([]int64, len(live))
	for i, l := range live {
		sessions[i] = l.e.session.Load()
	}
	dead.Kill()
	outage(cuts)
	back := time.Now()
	// The doubt lasts a threshold from the first heartbeat after the
	// outage, within a heartbeat of its end; the next heartbeat after it
	// sweeps the dead instance.
	deadline := testThreshold + 2*testHeartbeat + time.Second
	eventually(t, deadline, "the dead instance swept, the live ones kept", func() (bool, string) {
		got := total(t, live[0], "k")
		if got < want {
			t.Fatalf("total %d %v after the outage: below the live instances' %d", got, time.Since(back).Round(time.Millisecond), want)
		}
		return got == want, fmt.Sprint(got)
	})
	t.Logf("the dead instance swept %v after the outage", time.Since(back).Round(time.Millisecond))
	stableTotal(t, live[0], "k", want, testThreshold+testHeartbeat)
	for i, l := range live {
		if s := l.e.session.Load(); s != sessions[i] {
			t.Errorf("live-%d took session %d after the outage, had %d: it was swept", i, s, sessions[i])
		}
	}
}

// TestReconcileLeavesRenewalToItsProcess: a running process that took a new
// session (Redis lost the registry) asserts its slices again under it, and
// until it has, they hold its older session. A reconcile's first pass must
// leave them to it, not drop them first: while an outage delays the
// process's assertions, its count would be missing. A later pass drops
// what is still there (the process died meanwhile), and so does a first
// pass when the newer session is a new process's (a restart under the same
// InstanceID: nothing asserts the predecessor's slices again).
func TestReconcileLeavesRenewalToItsProcess(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	// No one is judged dead while the test rewrites the registry.
	slow := func(id string) Options {
		o := testOptions(p, id)
		o.DeadInstanceThreshold = time.Minute
		return o
	}
	live := newStrictWith(t, c, slow("live"))
	renewing := newStrictWith(t, c, slow("renewing"))
	keys := holdBoth(t, live, renewing)
	// It stops here, before asserting anything under its new session.
	renewing.Kill()
	newer := strconv.FormatInt(renewing.e.session.Load()+1, 10)
	sessions, renewed := live.e.live.keys[1], live.e.live.keys[4]
	// note stands in for register.lua: session of id in registry hash h.
	note := func(h, id, session string) {
		t.Helper()
		if err := c.HSet(ctx, h, id, session).Err(); err != nil {
			t.Fatal(err)
		}
	}
	note(sessions, "renewing", newer)
	pass := func(spareRenewed bool, wantRemoved int, want int64) {
		t.Helper()
		removed, again, err := live.e.reconcile(ctx, spareRenewed)
		if err != nil {
			t.Fatal(err)
		}
		if removed != wantRemoved || again != (wantRemoved == 0) {
			t.Fatalf("reconcile(spareRenewed=%v) removed %d slices, again %v; want %d", spareRenewed, removed, again, wantRemoved)
		}
		for _, k := range keys {
			if got := total(t, live, k); got != want {
				t.Fatalf("%s: total %d after reconcile(spareRenewed=%v), want %d", k, got, spareRenewed, want)
			}
		}
	}

	note(renewed, "renewing", newer)
	pass(true, 0, 6)
	if err := c.HDel(ctx, renewed, "renewing").Err(); err != nil {
		t.Fatal(err)
	}
	pass(true, len(keys), 1)

	// A later pass, on the slices of another renewing process.
	renewing = newStrictWith(t, c, slow("renewing-2"))
	for _, k := range keys {
		must[Value](t)(renewing.Inc(ctx, k, 5))
	}
	renewing.Kill()
	newer = strconv.FormatInt(renewing.e.session.Load()+1, 10)
	note(sessions, "renewing-2", newer)
	note(renewed, "renewing-2", newer)
	pass(false, len(keys), 1)
}

// TestReconcileKeepsWhatARegistrationWrites: Redis lost the registry, and
// an instance registers again and asserts its slices under a new session
// while another instance's reconcile is between its two reads, of the
// slices and of the registry. The new slices stay: their session is
// registered before they are written, and the reconcile reads the
// registry after the slices. (Reading the registry first, it took them
// for a dead instance's and dropped them, and the instance, its session
// alive in the registry, did not know until it wrote there again.)
func TestReconcileKeepsWhatARegistrationWrites(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	// Heartbeats only when the test beats: a background one would
	// register again, or reconcile, on its own.
	slow := func(id string) Options {
		o := testOptions(p, id)
		o.DeadInstanceThreshold, o.HeartbeatInterval = 2*time.Minute, time.Minute
		return o
	}
	a := newStrictWith(t, c, slow("a"))
	bc, f := ownClient(t, c)
	b := newStrictWith(t, bc, slow("b"))
	keys := make([]string, 20)
	for i := range keys {
		keys[i] = "room-" + strconv.Itoa(i)
		must[Value](t)(a.Inc(ctx, keys[i], 2))
	}
	if err := c.Del(ctx, a.e.live.keys...).Err(); err != nil {
		t.Fatal(err)
	}
	old := a.e.session.Load()
	// reasserted says whether every slice of a is in Redis under a
	// session newer than old.
	reasserted := func() (bool, string) {
		for _, k := range keys {
			s, err := c.HGet(ctx, a.e.cfg.space.Key(k), "s:a").Int64()
			if err != nil || s <= old {
				return false, fmt.Sprintf("%s: session of a %d (%v), want one above %d", k, s, err, old)
			}
		}
		return true, ""
	}
	var once sync.Once
	between := func(cmds []redis.Cmder) {
		if cmds[0].Name() != "hgetall" {
			return
		}
		once.Do(func() {
			// a's heartbeat finds the registry gone: a new session,
			// registered, and every slice asserted again under it. (On
			// a's own context, as its heartbeats run: the reconcile the
			// beat starts ends with a.)
			if err := a.e.beat(a.e.bgCtx); err != nil {
				t.Errorf("beat: %v", err)
			}
			// The assertions run on a goroutine of their own, which the
			// beat kicks: a few round trips on an idle server.
			eventually(t, 10*time.Second, "a's slices asserted under its new session", reasserted)
		})
	}
	f.after.Store(&between)
	removed, _, err := b.e.reconcile(ctx, false)
	f.after.Store(nil)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 0 {
		t.Errorf("reconcile removed %d slices, want 0: every slice read was of a live session", removed)
	}
	for _, k := range keys {
		if got := total(t, b, k); got != 2 {
			t.Errorf("%s: total %d after the reconcile, want a's 2", k, got)
		}
	}
}

// TestBeatGivesUpOnSilentRedis: a heartbeat that Redis does not answer
// (a master down that the Cluster has not marked failed yet: go-redis
// retries for seconds) gives up after half a threshold, so that the next
// one stamps this instance on time wherever the registry's master answers.
func TestBeatGivesUpOnSilentRedis(t *testing.T) {
	t.Parallel()
	sc, f := ownClient(t, redistest.Standalone(t))
	s := newStrict(t, sc, redistest.Prefix(t), "S")
	f.stall.Store(int64(time.Minute))
	defer f.stall.Store(0)
	start := time.Now()
	err := s.e.beat(ctxT(t))
	took := time.Since(start)
	// Half a threshold, and a second for a busy machine under -race: far
	// below the stall, which a beat without a deadline waits out.
	if limit := outageGap(testThreshold) + time.Second; took > limit || err == nil {
		t.Fatalf("a beat Redis did not answer returned after %v with err %v; want an error within %v", took, err, limit)
	}
}

// TestLossReassertsRoundInFlight: an assertion on its way when a loss of
// data is noticed is answered from before the loss, so its counter must be
// asserted again; the renewal that follows the loss passes the counter by
// while its round is in flight. The answer has it asserted again at once:
// before the fix it waited for the renewal after the next heartbeat (an
// hour here), well past the heartbeat + 1s that the README promises once
// Redis is back.
func TestLossReassertsRoundInFlight(t *testing.T) {
	t.Parallel()
	c := redistest.NewServer(t).Client(t) // flushed: a server of its own
	ctx, p := ctxT(t), redistest.Prefix(t)
	own, f := ownClient(t, c)
	s := newStrictWith(t, own, quietOptions(p, "S")) // no heartbeat but the test's
	must[Value](t)(s.Inc(ctx, "k", 1))
	release := f.holdReplies(s.e.cfg.space.Key("k"))
	abandon(t, ctx, release, func(ctx context.Context) error {
		_, err := s.Inc(ctx, "k", 1)
		return err
	})
	// The change is in Redis, its answer held. Redis loses everything,
	// and the instance notices, as a heartbeat finding a canary gone
	// would, and renews (with the heartbeat's context, which Close ends).
	if err := c.FlushAll(ctx).Err(); err != nil {
		close(release)
		t.Fatal(err)
	}
	s.e.onLoss(s.e.bgCtx)
	if err := s.e.renewLeases(s.e.bgCtx); err != nil {
		close(release)
		t.Fatal(err)
	}
	close(release)
	// Milliseconds of work; the rest is room for -race on a loaded
	// machine, far below the hour the old code waited.
	eventuallyTotal(t, newStrict(t, c, p, "reader"), "k", 2, 5*time.Second)
}
