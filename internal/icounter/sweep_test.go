package icounter

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// TestSweepsSubtractOnce: sweeps of one dead session by two instances at
// once, and again after them, subtract its slices once; and a sweep of that
// session after the instance came back under a newer one (a restart with
// the same InstanceID, which starts a sweep of its own) leaves what the
// newer session wrote. The drops apply to the swept session only and are
// idempotent: a drop that subtracted again, or took a newer session's
// slice, would leave totals short.
func TestSweepsSubtractOnce(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		// A threshold far away: no sweep runs but the test's own.
		opts := func(id string) Options {
			return Options{Prefix: p, InstanceID: id, DeadInstanceThreshold: time.Minute}
		}
		a, b := newStrictWith(t, c, opts("a")), newStrictWith(t, c, opts("b"))
		dead := newStrictWith(t, c, opts("dead"))
		keys := make([]string, 50)
		for i := range keys {
			keys[i] = "room-" + strconv.Itoa(i)
			must[Value](t)(a.Inc(ctx, keys[i], 1))
			must[Value](t)(dead.Inc(ctx, keys[i], 3))
		}
		session := dead.e.session.Load()
		dead.Kill()

		var wg sync.WaitGroup
		for _, s := range []*Strict{a, b} {
			wg.Go(func() {
				if _, err := s.e.sweepSession(ctx, "dead", session); err != nil {
					t.Errorf("sweep by %s: %v", s.InstanceID(), err)
				}
			})
		}
		wg.Wait()
		if _, err := b.e.sweepSession(ctx, "dead", session); err != nil {
			t.Fatalf("sweep again: %v", err)
		}
		if ok, got := totalsAre(ctx, b, keys, func(int) int64 { return 1 })(); !ok {
			t.Fatalf("after three sweeps of one session: %s", got)
		}

		// The instance comes back under a newer session and writes; its
		// registration sweeps the old session too. Once that sweep's pass
		// is done (the old index deleted), a sweeper that read the index
		// before then drops the old session from every counter again.
		back := newStrictWith(t, c, opts("dead"))
		hs := make([]string, len(keys))
		for i, k := range keys {
			must[Value](t)(back.Inc(ctx, k, 2))
			hs[i] = back.e.cfg.space.Key(k)
		}
		idx := back.e.cfg.space.Index("dead", session)
		eventually(t, healDeadline, "the restarted instance's sweep of the old session done", func() (bool, string) {
			n, err := c.Exists(ctx, idx).Result()
			return err == nil && n == 0, fmt.Sprint(n, err)
		})
		if _, err := a.e.drop(ctx, "dead", session, hs, reasonCrashed); err != nil {
			t.Fatalf("late drop of the old session: %v", err)
		}
		if ok, got := totalsAre(ctx, b, keys, func(int) int64 { return 3 })(); !ok {
			t.Fatalf("after a drop of the old session, with the instance back under a new one: %s", got)
		}
	})
}

// TestSweepTakenOverWhenSweeperDies: the instance that claimed a dead
// session for a sweep is cut off from Redis the moment its heartbeat
// claims it, before its sweep can drop anything (its first SSCAN fails).
// The claim lapses a threshold later and another instance's heartbeat
// takes the sweep over: the dead session's slices are gone within a
// threshold (the lapse), a heartbeat (the next beat) and a second of the
// cut. Were claims kept for good, nothing but the ten-minute lease would
// remove them.
func TestSweepTakenOverWhenSweeperDies(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		dead := newStrict(t, c, p, "dead")
		keys := make([]string, 20)
		for i := range keys {
			keys[i] = "room-" + strconv.Itoa(i)
			must[Value](t)(dead.Inc(ctx, keys[i], 3))
		}
		claim := strconv.FormatInt(dead.e.session.Load(), 10) + ":dead"

		own, f := ownClient(t, c)
		sweeper := newStrictWith(t, own, testOptions(p, "sweeper"))
		claimsKey := sweeper.e.live.keys[2]
		cutAt := make(chan time.Time, 1)
		// Runs after each of the sweeper's pipelines, before its code sees
		// the replies: the heartbeat that claimed the session is the last
		// thing it gets from Redis.
		check := func([]redis.Cmder) {
			if f.cut.Load() {
				return
			}
			if _, err := c.ZScore(ctx, claimsKey, claim).Result(); err == nil && f.cut.CompareAndSwap(false, true) {
				cutAt <- time.Now()
			}
		}
		f.after.Store(&check)
		dead.Kill()

		var cut time.Time
		select {
		case cut = <-cutAt:
		case <-time.After(healDeadline):
			t.Fatalf("the sweeper did not claim the dead session within %v", healDeadline)
		}
		taker := newStrict(t, c, p, "taker")
		eventually(t, healDeadline-time.Since(cut), "the dead session's slices gone", totalsAre(ctx, taker, keys, func(int) int64 { return 0 }))
	})
}

// TestNoSweepAfterShutdown: a sweep (or reconcile) started after shutdown
// began, as a strict write meeting a tombstone during Close can start one
// through renew, must not start: shutdown has waited for the background
// work already, and nothing would wait for it. Before the fix it started,
// and ran its passes for two thresholds after Close returned.
func TestNoSweepAfterShutdown(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	s := newStrict(t, c, redistest.Prefix(t), "S")
	must[Value](t)(s.Inc(ctxT(t), "k", 1))
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s.e.goSweep(context.Background(), "dead", 1)
	s.e.live.mu.Lock()
	sweeping := len(s.e.live.sweeping)
	s.e.live.mu.Unlock()
	if sweeping != 0 {
		t.Fatalf("a sweep started after Close: %d under way", sweeping)
	}
	s.e.goReconcile(context.Background())
	if s.e.live.reconciling.Load() {
		t.Fatal("a reconcile started after Close")
	}
}
