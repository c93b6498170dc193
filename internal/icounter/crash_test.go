package icounter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/redistest"
)

// Five instances on one key, four crash: the survivor sees exactly its own
// slice within threshold + heartbeat + 1s.
func TestCrashAndReap(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		var all []counter
		for i := 0; i < 5; i++ {
			id := "node" + strconv.Itoa(i)
			if i%2 == 0 {
				all = append(all, newStrict(t, c, p, id))
			} else {
				all = append(all, newLax(t, c, p, id))
			}
			must[Value](t)(all[i].Inc(ctx, "room", int64(10*(i+1))))
		}
		if err := all[1].(*Lax).Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := all[3].(*Lax).Flush(ctx); err != nil {
			t.Fatal(err)
		}
		survivor := all[0]
		if got := total(t, survivor, "room"); got != 150 {
			t.Fatalf("total before the crash = %d, want 150", got)
		}
		crash := time.Now()
		for _, cnt := range all[1:] {
			cnt.Kill()
		}
		eventuallyTotal(t, survivor, "room", 10, healDeadline-time.Since(crash))
		if v := must[Value](t)(survivor.Get(ctx, "room")); v != (Value{Total: 10, Mine: 10}) {
			t.Fatalf("survivor sees %+v, want {10 10}", v)
		}
	})
}

// A live instance that never touches a key for ten thresholds is never
// reaped from it: its heartbeat keeps it alive.
func TestIdleLiveInstanceNeverReaped(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		idle, lax := newStrict(t, c, p, "idle"), newLax(t, c, p, "idle-lax")
		reader := newStrict(t, c, p, "reader")
		must[Value](t)(idle.Inc(ctx, "k", 3))
		must[Value](t)(lax.Dec(ctx, "k", 1))
		if err := lax.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		// The reader reaps on every call, so a missed beat would show.
		stableTotal(t, reader, "k", 2, 10*testThreshold)
	})
}

// FLUSHALL while instances hold slices: totals are exact again within one
// heartbeat interval + 1s.
func TestFlushAllHealedByHeartbeat(t *testing.T) {
	t.Parallel()
	run := func(t *testing.T, c redis.UniversalClient, flushAll func(context.Context) error) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		s, l := newStrict(t, c, p, "S"), newLax(t, c, p, "L")
		r := newStrict(t, c, p, "R")
		want := map[string]int64{}
		for i := 0; i < 20; i++ {
			k := "room-" + strconv.Itoa(i)
			must[Value](t)(s.Inc(ctx, k, int64(i+1)))
			must[Value](t)(l.Dec(ctx, k, 1))
			want[k] = int64(i)
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := flushAll(ctx); err != nil {
			t.Fatal(err)
		}
		lost := time.Now()
		for k, w := range want {
			eventuallyTotal(t, r, k, w, testHeartbeat+time.Second-time.Since(lost))
		}
	}
	eachPrivate(t, flushMaster, run)
}

// SCRIPT FLUSH (as after a restart or failover): strict calls and lax
// pipelines reload the scripts and go on.
func TestScriptFlushReloads(t *testing.T) {
	t.Parallel()
	// Private servers: SCRIPT FLUSH would disturb other packages' tests.
	run := func(t *testing.T, c redis.UniversalClient, scriptFlush func(context.Context) error) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		s, l := newStrict(t, c, p, "S"), newLax(t, c, p, "L")
		flush := func() {
			t.Helper()
			if err := scriptFlush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		flush()
		if v := must[Value](t)(s.Inc(ctx, "k", 2)); v.Total != 2 {
			t.Fatalf("strict Inc after SCRIPT FLUSH = %+v", v)
		}
		flush()
		must[Value](t)(l.Inc(ctx, "k", 3))
		if err := l.Flush(ctx); err != nil {
			t.Fatalf("lax Flush after SCRIPT FLUSH: %v", err)
		}
		flush()
		if got := total(t, s, "k"); got != 5 {
			t.Fatalf("total = %d, want 5", got)
		}
	}
	eachPrivate(t, func(ctx context.Context, m *redis.Client) error { return m.ScriptFlush(ctx).Err() }, run)
}

// Two live processes with one InstanceID: the older one is refused and told,
// at its first write to a counter the newer one wrote, and from then on.
func TestDuplicateInstanceDetected(t *testing.T) {
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	older := newStrict(t, c, p, "twin")
	newer := newStrict(t, c, p, "twin")
	if newer.e.session.Load() <= older.e.session.Load() {
		t.Fatalf("sessions not ordered: %d, %d", older.e.session.Load(), newer.e.session.Load())
	}
	must[Value](t)(newer.Inc(ctx, "k", 1))
	if _, err := older.Inc(ctx, "k", 5); !errors.Is(err, ErrDuplicateInstance) {
		t.Fatalf("older twin's Inc: %v, want ErrDuplicateInstance", err)
	}
	if got := total(t, newer, "k"); got != 1 {
		t.Fatalf("total = %d, want 1 (the older twin's write refused)", got)
	}
	// Every write of it from now on, to any counter.
	if _, err := older.Inc(ctx, "fresh", 1); !errors.Is(err, ErrDuplicateInstance) {
		t.Fatalf("older twin's Inc of another counter: %v, want ErrDuplicateInstance", err)
	}
}

// Two live processes with one InstanceID, the older one writing before and
// after the newer one starts: the newer one's registration sweeps the
// older one's slices; the older one learns of the newer one at its first
// write to a swept counter or, at the latest, at its next heartbeat, and
// from then on every write of it is refused. It never takes a session of
// its own again, which would sweep the newer one's slices in turn (it did
// before: the two swept each other at every write).
func TestDuplicateInstanceRefusedEverywhere(t *testing.T) {
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	older := newStrict(t, c, p, "twin")
	must[Value](t)(older.Inc(ctx, "a", 2))
	newer := newStrict(t, c, p, "twin")
	must[Value](t)(newer.Inc(ctx, "b", 1))
	// Totals are read by an instance of another ID: a twin takes the
	// slice of its ID in Redis for its own, which it is not.
	reader := newStrict(t, c, p, "reader")
	// Registration sweeps the older session in the background.
	eventuallyTotal(t, reader, "a", 0, testThreshold+time.Second)

	// a holds the sweep's tombstone for the older session.
	if _, err := older.Inc(ctx, "a", 1); !errors.Is(err, ErrDuplicateInstance) {
		t.Fatalf("older twin's Inc of a swept counter: %v, want ErrDuplicateInstance", err)
	}
	// c is a counter the newer one never wrote.
	if _, err := older.Inc(ctx, "c", 5); !errors.Is(err, ErrDuplicateInstance) {
		t.Fatalf("older twin's Inc of a new counter: %v, want ErrDuplicateInstance", err)
	}
	sessions := older.e.cfg.space.Registry("sessions")
	if got, err := c.HGet(ctx, sessions, "twin").Int64(); err != nil || got != newer.e.session.Load() {
		t.Fatalf("registered session %d, %v; want the newer twin's %d", got, err, newer.e.session.Load())
	}
	// Over a few heartbeats of both, the newer one's slices stay, and its
	// writes go on.
	stableTotal(t, reader, "b", 1, 3*testHeartbeat)
	must[Value](t)(newer.Inc(ctx, "b", 1))
	for key, want := range map[string]int64{"a": 0, "b": 2, "c": 0} {
		if got := total(t, reader, key); got != want {
			t.Errorf("total of %s = %d, want %d", key, got, want)
		}
	}
}

// A twin that starts writing only after the newer one registered, to
// counters the newer one never touches, is refused from its next heartbeat.
func TestDuplicateInstanceRefusedFromHeartbeat(t *testing.T) {
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	older := newStrict(t, c, p, "twin")
	newStrict(t, c, p, "twin")
	// The first writes may still be taken (the older twin has not heard of
	// the newer one; the newer one's sweep removes them); within a
	// heartbeat of the older one (and a second for a busy machine), every
	// write is refused.
	eventually(t, testHeartbeat+time.Second, "the older twin refused", func() (bool, string) {
		_, err := older.Inc(ctx, "solo", 1)
		return errors.Is(err, ErrDuplicateInstance), fmt.Sprint(err)
	})
	if _, err := older.Inc(ctx, "other", 1); !errors.Is(err, ErrDuplicateInstance) {
		t.Fatalf("older twin's Inc once refused: %v, want ErrDuplicateInstance", err)
	}
}

// TestKillAfterAbandonedIncIf: an IncIf whose caller gave up comes back
// held only after Kill stopped the committer. Taking the change back must
// not wait for a committer that is gone: before the fix Kill (and Close
// without a deadline) never returned.
func TestKillAfterAbandonedIncIf(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	sc, f := ownClient(t, c)
	s := newStrict(t, sc, p, "S")
	must[Value](t)(s.Inc(ctx, "k", 0))
	release := f.holdReplies(s.e.cfg.space.Key("k"))
	abandon(t, ctx, release, func(ctx context.Context) error {
		_, _, err := s.IncIf(ctx, "k", 1, Cond{Op: Lt, Operand: 10})
		return err
	})
	// What follows takes milliseconds; the rest is room for -race on a
	// loaded machine.
	const settleWithin = 5 * time.Second
	killed := make(chan struct{})
	go func() {
		s.Kill()
		close(killed)
	}()
	// Kill waits for the abandoned call, after stopping the committer.
	eventually(t, settleWithin, "Kill stopping the committer", func() (bool, string) {
		select {
		case <-s.e.loopsDone:
			return true, ""
		default:
			return false, "committer running"
		}
	})
	close(release) // the script's reply: the condition held
	select {
	case <-killed:
	case <-time.After(settleWithin):
		t.Fatalf("Kill did not return within %v of the abandoned IncIf's reply", settleWithin)
	}
}

// A strict Inc on its own costs one round trip: one command, plus, the
// first time this session writes the counter, its index entry (SADD and
// PEXPIRE): in the same pipeline on a single server, in a round trip of
// its own before it on a Cluster (see TestIndexBeforeSliceOnCluster).
func TestStrictIncIsOneRoundTrip(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		own, f := ownClient(t, c)
		s := newStrict(t, own, p, "S")
		must[Value](t)(s.Inc(ctx, "warm", 1)) // connections are open now
		firstTrips := int64(1)
		if _, cluster := c.(*redis.ClusterClient); cluster {
			firstTrips = 2
		}
		for i := 0; i < 5; i++ {
			k := "k" + strconv.Itoa(i)
			for j, want := range []int64{3, 1} {
				wantTrips := int64(1)
				if j == 0 {
					wantTrips = firstTrips
				}
				before, trips := f.commands.Load(), f.roundTrip.Load()
				must[Value](t)(s.Inc(ctx, k, 1))
				if n, rt := f.commands.Load()-before, f.roundTrip.Load()-trips; n != want || rt != wantTrips {
					t.Fatalf("strict Inc sent %d commands in %d round trips, want %d in %d", n, rt, want, wantTrips)
				}
			}
		}
	})
}

// Concurrent strict callers on one key share script runs (group commit).
func TestGroupCommitCoalesces(t *testing.T) {
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	own, f := ownClient(t, c)
	s := newStrict(t, own, p, "S")
	must[Value](t)(s.Inc(ctx, "k", 0))
	const callers, each = 50, 40
	before := f.commands.Load()
	errs := make(chan error, callers)
	for g := 0; g < callers; g++ {
		go func() {
			for i := 0; i < each; i++ {
				v, err := s.Inc(ctx, "k", 1)
				if err == nil && (v.Mine < 1 || v.Total != v.Mine) {
					err = fmt.Errorf("acknowledged value %+v", v)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < callers; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := total(t, s, "k"); got != callers*each {
		t.Fatalf("total = %d, want %d", got, callers*each)
	}
	sent := f.commands.Load() - before
	t.Logf("%d strict Incs took %d script runs", callers*each, sent)
	if sent >= callers*each {
		t.Fatalf("no coalescing: %d changes took %d script runs", callers*each, sent)
	}
}

// A stalled Redis never holds a caller past its context, even though
// go-redis only honours deadlines on its sockets when told to; the change
// stays in the slice and lands once Redis answers again.
func TestCallerNeverWaitsPastContext(t *testing.T) {
	t.Parallel()
	srv := redistest.StandaloneServer(t)
	p, err := faultproxy.New(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	stalled := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = stalled.Close() })
	ctx, prefix := ctxT(t), redistest.Prefix(t)
	s := newStrict(t, stalled, prefix, "S")
	l := newLax(t, stalled, prefix, "L")
	r := newStrict(t, srv.Client(t), prefix, "R")
	must[Value](t)(s.Inc(ctx, "k", 1))

	p.Stall(true)
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"Inc", func(c context.Context) error { _, err := s.Inc(c, "k", 1); return err }},
		{"IncIf", func(c context.Context) error {
			_, _, err := s.IncIf(c, "cond", 1, Cond{Op: Ge, Operand: 0})
			return err
		}},
		{"Get", func(c context.Context) error { _, err := s.Get(c, "other"); return err }},
		{"Set", func(c context.Context) error { _, err := s.Set(c, "set", 3); return err }},
		{"Flush", func(c context.Context) error { _, _ = l.Inc(c, "k", 1); return l.Flush(c) }},
		{"GetMany", func(c context.Context) error { _, err := s.GetMany(c, []string{"a", "b"}); return err }},
	}
	for _, tc := range calls {
		name := tc.name
		c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		start := time.Now()
		err := tc.call(c)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s on a stalled Redis: %v, want DeadlineExceeded", name, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s returned after %v, past its 100ms context", name, d)
		}
	}
	p.Stall(false)
	// The Inc and the lax Inc stay counted and the Set runs once Redis
	// answers, though their callers had gone; the IncIf, applied after its
	// caller gave up on it, is taken back.
	eventuallyTotal(t, r, "k", 3, healDeadline)
	eventuallyTotal(t, r, "set", 3, healDeadline)
	eventually(t, healDeadline, "the abandoned IncIf ran", func() (bool, string) {
		n := r.e.cfg.space.Key("cond")
		v := srv.Client(t).HGet(ctx, n, "c:S").Val()
		return v != "", v
	})
	eventuallyTotal(t, r, "cond", 0, healDeadline)
}

// A Redis that is down at construction neither fails NewStrict nor holds
// it up past its start timeout, and the counter works once Redis is back.
func TestStartWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.NewServer(t)
	c := srv.Client(t)
	srv.Kill()
	start := time.Now()
	s, err := NewStrict(c, testOptions(redistest.Prefix(t), "S"))
	if err != nil {
		t.Fatalf("NewStrict with Redis down: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	if d := time.Since(start); d > startTimeout+time.Second {
		t.Fatalf("NewStrict took %v with Redis down, bound %v", d, startTimeout)
	}
	srv.Restart(t)
	ctx := ctxT(t)
	eventually(t, 5*time.Second, "Inc once Redis is back", func() (bool, string) {
		v, err := s.Inc(ctx, "k", 1)
		if err != nil {
			return false, err.Error()
		}
		return v.Total >= 1, fmt.Sprint(v)
	})
}

// TestDiedJustAfterDataLoss: Redis loses its data (FLUSHALL), and an
// instance writes a slice into the emptied Redis, with its old session,
// then dies before its next heartbeat would have registered it again: no
// registry entry or index points at that slice. The live instances notice
// the loss at their next beat and reconcile, so the slice goes within three
// heartbeats and a second of the loss (a beat, the reconcile's wait of 1.25
// heartbeats, its scripts), on a single server as on a Cluster (not the ten
// minutes of its lease).
func TestDiedJustAfterDataLoss(t *testing.T) {
	t.Parallel()
	run := func(t *testing.T, c redis.UniversalClient, flushAll func(context.Context) error) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		live, reader := newStrict(t, c, p, "live"), newStrict(t, c, p, "reader")
		doomed, err := NewStrict(c, testOptions(p, "doomed"))
		if err != nil {
			t.Fatal(err)
		}
		must[Value](t)(live.Inc(ctx, "k", 1))
		must[Value](t)(doomed.Inc(ctx, "k", 2))
		if err := flushAll(ctx); err != nil {
			t.Fatal(err)
		}
		lost := time.Now()
		// Into the emptied Redis (7), then dead at once: its next beat,
		// which would register it again, is most likely a heartbeat away
		// (if it came first, the sweeper would remove it in time too).
		must[Value](t)(doomed.Inc(ctx, "k", 5))
		doomed.Kill()
		// The live instance's next beat (within a heartbeat) re-asserts its
		// 1 and starts the reconcile, which waits 1.25 heartbeats for every
		// live instance to register again, then drops the doomed slice.
		eventuallyTotal(t, reader, "k", 1, 3*testHeartbeat+time.Second-time.Since(lost))
	}
	eachPrivate(t, flushMaster, run)
}

func flushMaster(ctx context.Context, m *redis.Client) error { return m.FlushAll(ctx).Err() }

// eachPrivate runs fn as the subtests "standalone" and "cluster", each on
// servers of its own, for what would disturb other tests (FLUSHALL, SCRIPT
// FLUSH): onEvery runs onMaster on every master.
func eachPrivate(t *testing.T, onMaster func(context.Context, *redis.Client) error,
	fn func(t *testing.T, c redis.UniversalClient, onEvery func(context.Context) error)) {
	t.Run("standalone", func(t *testing.T) {
		c := redistest.NewServer(t).Client(t)
		fn(t, c, func(ctx context.Context) error { return onMaster(ctx, c) })
	})
	t.Run("cluster", func(t *testing.T) {
		c, _ := redistest.NewCluster(t)
		fn(t, c, func(ctx context.Context) error {
			return c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return onMaster(ctx, m) })
		})
	})
}

// TestCrashAfterIndexWriteFailed: the script writing a first slice is
// answered but the index entry sent with it is not (on a Cluster the index
// lives on another master, which may not answer). The slice is asserted
// again, with its entry, at the renewal after the next heartbeat, so that
// a sweep after a crash finds it. Before the fix it counted as known and
// stayed out of the index until its lease renewal minutes later: a crash
// meanwhile left it counted until its lease ran out.
func TestCrashAfterIndexWriteFailed(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	own, f := ownClient(t, c)
	s := newStrict(t, own, p, "S")
	h, idx, failed, _ := failIndexEntry(t, c, f, s, "k")
	must[Value](t)(s.Inc(ctx, "k", 1))
	if !failed.Load() {
		t.Fatal("Inc of a new counter sent no index entry")
	}
	// The renewal follows the next heartbeat: a heartbeat, and a second
	// for -race on a loaded machine.
	eventually(t, testHeartbeat+time.Second, "the index holding k", func() (bool, string) {
		in, err := c.SIsMember(ctx, idx, h).Result()
		return err == nil && in, fmt.Sprintf("in the index: %v (err %v)", in, err)
	})
	crash := time.Now()
	s.Kill()
	eventuallyTotal(t, newStrict(t, c, p, "reader"), "k", 0, healDeadline-time.Since(crash))
}

// TestIndexBeforeSliceOnCluster: on a Cluster the index lives on a master
// of its own, so the index entry of a first slice is written, and
// answered, before the slice is sent: one whose entry the index's master
// did not take is not written at all (in one pipeline the slice could
// land without it, and a sweep after a crash would miss it). It stays
// pending and goes, with its entry, with the next flush or heartbeat;
// after a crash then, the sweep finds it.
func TestIndexBeforeSliceOnCluster(t *testing.T) {
	t.Parallel()
	c := redistest.Cluster(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	own, f := ownClient(t, c)
	s := newStrict(t, own, p, "S")
	// The pipeline that carried k's failed entry must not have carried
	// k's slice.
	h, idx, failed, withSlice := failIndexEntry(t, c, f, s, "k")
	if _, err := s.Inc(ctx, "k", 1); !errors.Is(err, errCut) {
		t.Errorf("Inc of a new counter whose index entry failed: %v, want the entry's error", err)
	}
	if !failed.Load() || withSlice.Load() {
		t.Fatalf("index entry sent: %v; with the slice in the same pipeline: %v", failed.Load(), withSlice.Load())
	}
	if v, err := c.HGet(ctx, h, "v:S").Result(); err != redis.Nil {
		t.Fatalf("slice in Redis without its index entry: %q (err %v)", v, err)
	}
	// Sent again with the next flush (or heartbeat, whichever first): a
	// heartbeat, and a second for -race on a loaded machine.
	eventually(t, testHeartbeat+time.Second, "k's slice and its index entry", func() (bool, string) {
		in, err1 := c.SIsMember(ctx, idx, h).Result()
		v, err2 := c.HGet(ctx, h, "v:S").Result()
		return err1 == nil && in && err2 == nil && v == "1", fmt.Sprintf("in the index: %v (err %v), slice %q (err %v)", in, err1, v, err2)
	})
	crash := time.Now()
	s.Kill()
	eventuallyTotal(t, newStrict(t, c, p, "reader"), "k", 0, healDeadline-time.Since(crash))
}

// failIndexEntry has the first index entry of s's counter key that s sends
// fail: once its pipeline ran (hook f), the entry is taken out again, as if
// it had never landed, and its reply is errCut. It returns the key's Redis
// hash and index, whether the entry failed, and whether the pipeline that
// carried it also carried the key's script.
func failIndexEntry(t *testing.T, c redis.UniversalClient, f *faults, s *Strict, key string) (h, idx string, failed, withSlice *atomic.Bool) {
	h = s.e.cfg.space.Key(key)
	idx = s.e.cfg.space.Index(s.e.cfg.id, s.e.session.Load())
	failed, withSlice = new(atomic.Bool), new(atomic.Bool)
	ctx := ctxT(t)
	hook := func(cmds []redis.Cmder) {
		for _, cmd := range cmds {
			if cmd.Name() == "sadd" && names([]redis.Cmder{cmd}, h) && failed.CompareAndSwap(false, true) {
				if err := c.SRem(ctx, idx, h).Err(); err != nil {
					t.Error(err)
				}
				cmd.SetErr(errCut)
				withSlice.Store(slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Name() == "evalsha" && names([]redis.Cmder{c}, h) }))
			}
		}
	}
	f.after.Store(&hook)
	return h, idx, failed, withSlice
}

// TestSweepBeforeFirstWriteLands: on a Cluster a first write's index
// entry goes ahead of it, so a sweep of the session (its instance judged
// dead, its link stalled) can find the entry before the write lands. The
// drop leaves a tombstone on the counter that does not exist yet, and the
// write, landing after, is refused as swept: the instance takes a new
// session and writes again under it. Were the write taken under the swept
// session, no sweep would come back for it, and once the instance died its
// connection would stay counted for a lease (minutes).
func TestSweepBeforeFirstWriteLands(t *testing.T) {
	t.Parallel()
	c := redistest.Cluster(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	own, f := ownClient(t, c)
	s := newStrict(t, own, p, "S")
	sweeper := newStrict(t, c, p, "sweeper")
	h, old := s.e.cfg.space.Key("k"), s.e.session.Load()
	var swept atomic.Bool
	hook := func(cmds []redis.Cmder) {
		for _, cmd := range cmds {
			if cmd.Name() == "sadd" && names([]redis.Cmder{cmd}, h) && swept.CompareAndSwap(false, true) {
				// The entry is in, the slice not yet sent: sweep now.
				if _, err := sweeper.e.sweepSession(ctx, "S", old); err != nil {
					t.Error(err)
				}
			}
		}
	}
	f.after.Store(&hook)
	if _, err := s.Inc(ctx, "k", 1); err != nil {
		t.Fatalf("Inc: %v", err)
	}
	if !swept.Load() {
		t.Fatal("no index entry went ahead of the write: the test shows nothing")
	}
	if got, err := c.HGet(ctx, h, "s:S").Result(); err != nil || got == strconv.FormatInt(old, 10) {
		t.Fatalf("the slice's session is %s (err %v), the swept one: want a new session", got, err)
	}
	eventuallyTotal(t, sweeper, "k", 1, time.Second)
	crash := time.Now()
	s.Kill()
	eventuallyTotal(t, sweeper, "k", 0, healDeadline-time.Since(crash))
}
