package icounter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/redistest"
)

// TestSyncWaitsForRoundInFlight: a slice brought back to its stored value
// while an assertion of an older value is in flight is not clean. Lax A
// counts 1, sends it, takes it back with a send still in flight, counts it
// again and Syncs: once Sync returns, B reads 1. Before the fix Sync found
// local == stored and returned at once, while the in-flight round stored 0.
func TestSyncWaitsForRoundInFlight(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		a := newLax(t, c, p, "A")
		b := newStrict(t, c, p, "B")
		const key = "redial"
		for i := range 1000 {
			must[Value](t)(a.Inc(ctx, key, 1))
			if err := a.Sync(ctx, key); err != nil {
				t.Fatal(err)
			}
			must[Value](t)(a.Dec(ctx, key, 1))
			released := make(chan error, 1)
			go func() { released <- a.Sync(ctx, key) }() // the release's send, in flight
			must[Value](t)(a.Inc(ctx, key, 1))
			if err := a.Sync(ctx, key); err != nil {
				t.Fatal(err)
			}
			if got := total(t, b, key); got != 1 {
				t.Fatalf("try %d: B reads %d right after A's Sync, want 1", i, got)
			}
			if err := <-released; err != nil {
				t.Fatal(err)
			}
			must[Value](t)(a.Dec(ctx, key, 1))
			if err := a.Sync(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestRestartTakesOverOnRead: a process restarted under the same
// InstanceID that only reads a counter (a presence page polling) takes its
// predecessor's slice over instead of keeping it alive. Before the fix a
// read stamped the predecessor's slice as seen, so it was never reaped.
func TestRestartTakesOverOnRead(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		old := newStrict(t, c, p, "pod-0")
		must[Value](t)(old.Inc(ctx, "read-only", 5))
		must[Value](t)(old.Inc(ctx, "untouched", 3))
		old.Kill()

		restarted := newStrict(t, c, p, "pod-0")
		other := newStrict(t, c, p, "other")
		// The slice under its own ID is the restarted process's from its
		// first read: it reads its own count (0) in place of it at once.
		if got := total(t, restarted, "read-only"); got != 0 {
			t.Fatalf("restarted process reads %d, want 0: the predecessor's 5 are its own", got)
		}
		// A counter the restarted process only polls, never writes: its
		// polling must not keep the predecessor's slice alive. The sweep
		// its registration starts (in the background: another process may
		// read the slice for a moment) removes both slices; the heal
		// deadline (threshold, heartbeat and a second) is what a dead
		// instance's slice may take at most even without that sweep.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					_, _ = restarted.Get(ctx, "untouched")
				}
			}
		})
		eventuallyTotal(t, other, "read-only", 0, healDeadline)
		eventuallyTotal(t, other, "untouched", 0, healDeadline)
		close(stop)
		wg.Wait()
	})
}

// reapCounter is an Observer counting reported reaps.
type reapCounter struct{ n atomic.Int64 }

func (r *reapCounter) ScriptDone(string, time.Duration, error) {}
func (r *reapCounter) Reaped(n int)                            { r.n.Add(int64(n)) }
func (r *reapCounter) Flushed(bool, int, time.Duration, error) {}

// scriptRecorder is an Observer recording the scripts reported.
type scriptRecorder struct {
	mu      sync.Mutex
	scripts map[string]int
}

func (r *scriptRecorder) ScriptDone(script string, _ time.Duration, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scripts == nil {
		r.scripts = map[string]int{}
	}
	r.scripts[script]++
}
func (r *scriptRecorder) Reaped(int)                              {}
func (r *scriptRecorder) Flushed(bool, int, time.Duration, error) {}

func (r *scriptRecorder) count(script string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.scripts[script]
}

// TestClearReported: Clear's resets are reported to the Observer as
// "reset" calls, as Set's and Del's are.
func TestClearReported(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	obs := &scriptRecorder{}
	o := testOptions(p, "solo")
	o.Observer = obs
	s := newStrictWith(t, c, o)
	must[Value](t)(s.Inc(ctx, "a", 1))
	if err := s.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if n := obs.count("reset"); n == 0 {
		t.Fatal("Clear reported no reset")
	}
	must[Value](t)(s.Set(ctx, "b", 2))
	if n := obs.count("reset"); n < 2 {
		t.Fatalf("Clear and Set reported %d resets, want at least 2", n)
	}
}

// TestClearAfterWriteUnderWay: a strict change whose caller gave up is
// still on its way to Redis when Clear runs. Clear waits for its answer
// before resetting; before the fix it did not, the change landed after the
// reset, and settling it, its 1 less the slice it had snapshotted (6),
// left this instance's slice at -5.
func TestClearAfterWriteUnderWay(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	own, f := ownClient(t, c)
	s := newStrict(t, own, p, "S")
	must[Value](t)(s.Inc(ctx, "k", 5))
	release := f.holdRequest(s.e.cfg.space.Key("k"))
	abandon(t, ctx, release, func(ctx context.Context) error {
		_, err := s.Inc(ctx, "k", 1)
		return err
	})
	cleared := make(chan error, 1)
	go func() { cleared <- s.Clear(ctx) }()
	// The old code's Clear returns at once, and the held change lands
	// after its reset. The new one waits for the change: a second lets it
	// get there, and is no deadline (a slow Clear only makes the old code
	// pass).
	select {
	case err := <-cleared:
		cleared <- err
	case <-time.After(time.Second):
	}
	close(release)
	if err := <-cleared; err != nil {
		t.Fatalf("Clear: %v", err)
	}
	// The answer takes milliseconds; the rest is room for -race on a
	// loaded machine.
	const settleWithin = 5 * time.Second
	st := s.e.acquire("k")
	defer s.e.release(st)
	eventually(t, settleWithin, "the held change answered", func() (bool, string) {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.round == nil, "round in flight"
	})
	if v := must[Value](t)(s.Inc(ctx, "k", 0)); v != (Value{}) {
		t.Fatalf("Inc(k, 0) after Clear: %+v, want zero", v)
	}
	eventuallyTotal(t, newStrict(t, c, p, "reader"), "k", 0, settleWithin)
}

// TestReapedCountsOnlyOthersSlices: an idle counter's own zero slice is not
// a reap; a dead instance's non-zero slice is one, and its zero slices are
// none. Before the fix, the first case reported a reap on a node that never
// crashed.
func TestReapedCountsOnlyOthersSlices(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		obs := &reapCounter{}
		o := testOptions(p, "solo")
		o.Observer = obs
		s, err := NewStrict(c, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		must[Value](t)(s.Inc(ctx, "idle", 1))
		must[Value](t)(s.Dec(ctx, "idle", 1)) // a zero slice, no longer heartbeated

		dead := newStrict(t, c, p, "dead")
		must[Value](t)(dead.Inc(ctx, "idle", 2))
		must[Value](t)(dead.Inc(ctx, "zero", 0)) // seen on "zero" with nothing
		dead.Kill()

		// Past the threshold the sweeper drops the dead one's slices; the
		// sweep is over when its claim is gone.
		eventuallyTotal(t, s, "idle", 0, healDeadline)
		claims := s.e.live.keys[2]
		eventually(t, healDeadline, "the sweep ends", func() (bool, string) {
			n := c.ZCard(ctx, claims).Val()
			return n == 0, fmt.Sprint(n, " claims")
		})
		if got := obs.n.Load(); got != 1 {
			t.Fatalf("reaps reported: %d, want 1 (the dead instance's slice of 2)", got)
		}
	})
}

// TestBoundsWhileRedisHangs: while Redis hangs (a proxy that stalls; the
// client keeps go-redis' default timeouts and retries, about 10 s per
// command), the constructors return within their one second, and Clear and
// Close within their contexts, also with calls in flight. Before the fix
// NewStrict took 10 s and Close waited for the stalled calls. Standalone
// only: a cluster client dials the nodes' own addresses, past any proxy.
func TestBoundsWhileRedisHangs(t *testing.T) {
	t.Parallel()
	c, p := faultproxy.Redis(t)
	ctx, prefix := ctxT(t), redistest.Prefix(t)
	l := newLax(t, c, prefix, "L")
	must[Value](t)(l.Inc(ctx, "k", 1))
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	p.Stall(true)
	var s *Strict
	redistest.Within(t, "NewStrict", startTimeout, func() {
		var err error
		if s, err = NewStrict(c, testOptions(prefix, "S")); err != nil {
			t.Errorf("NewStrict: %v", err)
		}
	})
	redistest.Within(t, "NewLax", startTimeout, func() {
		l2, err := NewLax(c, LaxOptions{Options: testOptions(prefix, "L2")})
		if err != nil {
			t.Errorf("NewLax: %v", err)
			return
		}
		t.Cleanup(l2.Kill) // after the stall ends: Kill waits for its calls
	})
	// Calls in flight when Close begins: they hold the stalled connection.
	inflight := make(chan error, 2)
	go func() { _, err := s.Inc(ctx, "k", 1); inflight <- err }()
	go func() { inflight <- l.Sync(ctx, "k") }()
	for _, tc := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"Clear", s.Clear}, // before Close, which ends s
		{"Close", s.Close},
		{"Close (lax)", l.Close},
	} {
		name, do := tc.name, tc.do
		redistest.Within(t, name, 300*time.Millisecond, func() {
			cctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if err := do(cctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s: %v, want DeadlineExceeded", name, err)
			}
		})
	}
	p.Stall(false)
	for range 2 {
		<-inflight // they end once Redis answers; goleak checks the rest
	}
}
