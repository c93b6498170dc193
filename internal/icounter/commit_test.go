package icounter

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/headcount-go/headcount/internal/redistest"
)

// TestGroupCommitAcrossKeys: concurrent strict changes to different
// counters share round trips (the engine's committer), and each caller's
// acknowledged value includes its own change.
func TestGroupCommitAcrossKeys(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		own, f := ownClient(t, c)
		s := newStrict(t, own, p, "S")
		const callers, each = 50, 20
		for g := range callers {
			must[Value](t)(s.Inc(ctx, "k"+strconv.Itoa(g), 0)) // indexed, warm
		}
		trips := f.roundTrip.Load()
		var g errgroup.Group
		for n := range callers {
			g.Go(func() error {
				k := "k" + strconv.Itoa(n)
				for i := 1; i <= each; i++ {
					v, err := s.Inc(ctx, k, 1)
					if err == nil && v.Mine != int64(i) {
						err = fmt.Errorf("%s: acknowledged %+v after %d changes", k, v, i)
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		sent := f.roundTrip.Load() - trips
		t.Logf("%d strict Incs on %d counters took %d round trips", callers*each, callers, sent)
		if sent >= callers*each/2 {
			t.Fatalf("%d changes on %d counters took %d round trips: no group commit", callers*each, callers, sent)
		}
		for g := range callers {
			if got := total(t, s, "k"+strconv.Itoa(g)); got != each {
				t.Fatalf("k%d = %d, want %d", g, got, each)
			}
		}
	})
}

// TestConcurrentReadsShareRoundTrips: reads are plain HMGETs batched by the
// reader; concurrent reads of one counter share them, and all see the
// value.
func TestConcurrentReadsShareRoundTrips(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		w := newStrict(t, c, p, "W")
		must[Value](t)(w.Inc(ctx, "room", 5))
		own, f := ownClient(t, c)
		r := newStrict(t, own, p, "R")
		must[Value](t)(r.Get(ctx, "room")) // connections are open now
		const readers, each = 50, 20
		before := f.commands.Load()
		var g errgroup.Group
		for range readers {
			g.Go(func() error {
				for range each {
					v, err := r.Get(ctx, "room")
					if err == nil && v != (Value{Total: 5}) {
						err = fmt.Errorf("read %+v, want total 5", v)
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		sent := f.commands.Load() - before
		t.Logf("%d reads of one counter took %d commands", readers*each, sent)
		if sent >= readers*each/2 {
			t.Fatalf("%d concurrent reads of one counter took %d commands: none shared", readers*each, sent)
		}
	})
}

// TestBatchKeepsEachAssertionsSession: a batch holding assertions begun on
// both sides of a session change (see renew) stores each under its own
// session and enters it in that session's index. One script run for both
// once stored the second under the first one's session, which a sweep of
// the old session would then remove while this instance took it for
// stored; one index entry for both left the second out of its own
// session's index, which a sweep after a crash goes by.
func TestBatchKeepsEachAssertionsSession(t *testing.T) {
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	own, f := ownClient(t, c)
	e := newStrictWith(t, own, quietOptions(p, "S")).e // no heartbeat meets the session set below
	begin := func(key string) *assertion {
		st := e.acquire(key)
		t.Cleanup(func() { e.release(st) })
		st.mu.Lock()
		defer st.mu.Unlock()
		st.local.Store(1)
		return e.begin(st, nil, 0)
	}
	a := begin("a")
	e.session.Add(1) // as renew takes a new session
	b := begin("b")
	// Redis is read once the batch has run, before its answers settle:
	// the answer to a, sent under the old session, has a asserted again
	// under the new one.
	var checked atomic.Bool
	check := func(cmds []redis.Cmder) {
		if !names(cmds, a.st.h) || !checked.CompareAndSwap(false, true) {
			return
		}
		for _, x := range []*assertion{a, b} {
			if got, want := c.HGet(ctx, x.st.h, "s:S").Val(), strconv.FormatInt(x.session, 10); got != want {
				t.Errorf("%s stored under session %s, its assertion's is %s", x.st.key, got, want)
			}
			if !c.SIsMember(ctx, e.cfg.space.Index("S", x.session), x.st.h).Val() {
				t.Errorf("%s is not in the index of its assertion's session %d", x.st.key, x.session)
			}
		}
	}
	f.after.Store(&check)
	if err := e.send(ctx, []*assertion{a, b}, nil); err != nil {
		t.Fatal(err)
	}
	if !checked.Load() {
		t.Fatal("the batch's pipeline never ran")
	}
}

// TestPushedReleaseMeetsConnect: a release pushed without waiting (Dec in
// memory, then Push) is held for pushHold, even while batches of other
// counters go out; a strict change that brings the slice back meanwhile
// (Inc, then Sync: the next connection in the room the release left)
// finds Redis holding the slice in memory, so neither costs Redis a round
// trip. A release that no change follows reaches Redis after the hold.
func TestPushedReleaseMeetsConnect(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	lc, f := ownClient(t, c)
	ctx, p := ctxT(t), redistest.Prefix(t)
	// No heartbeat or flush within the test: they would be round trips
	// of their own.
	l, err := NewLax(lc, LaxOptions{Options: quietOptions(p, "L"), FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	reader := newStrict(t, c, p, "R")
	must[Value](t)(l.Strict().Inc(ctx, "room", 2))
	// The test ends the hold itself (commitPushed, what the timer calls),
	// so that a slow machine cannot end it early.
	l.e.pushed.hold = time.Hour

	must[Value](t)(l.Dec(ctx, "room", 1))
	l.Push("room")
	// A batch of another counter goes out; the held release does not go
	// with it.
	must[Value](t)(l.Strict().Inc(ctx, "other", 1))
	if got := total(t, reader, "room"); got != 2 {
		t.Fatalf("total %d while the release is held, want 2", got)
	}
	trips := f.roundTrip.Load()
	must[Value](t)(l.Inc(ctx, "room", 1))
	if err := l.Sync(ctx, "room"); err != nil {
		t.Fatal(err)
	}
	l.e.commitPushed()
	// Once the key has left the committer's queue, whatever was to be
	// sent for it has been.
	eventually(t, time.Second, "the pushed key through the committer", func() (bool, string) {
		l.e.commit.mu.Lock()
		defer l.e.commit.mu.Unlock()
		return len(l.e.commit.next) == 0, fmt.Sprintf("%d queued", len(l.e.commit.next))
	})
	if n := f.roundTrip.Load() - trips; n != 0 {
		t.Fatalf("a held release and the connect after it made %d round trips, want 0", n)
	}

	must[Value](t)(l.Dec(ctx, "room", 1))
	l.Push("room")
	l.e.commitPushed()
	eventuallyTotal(t, reader, "room", 1, time.Second)
}

// TestPushedReleaseSent: with the default hold, a release no change
// follows reaches Redis after pushHold and a round trip (no flush sends it:
// the flush interval is an hour).
func TestPushedReleaseSent(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	l, err := NewLax(c, LaxOptions{Options: testOptions(p, "L"), FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	reader := newStrict(t, c, p, "R")
	must[Value](t)(l.Strict().Inc(ctx, "room", 2))
	must[Value](t)(l.Dec(ctx, "room", 1))
	l.Push("room")
	// pushHold, then a round trip: a second is plenty on a busy machine.
	eventuallyTotal(t, reader, "room", 1, pushHold+time.Second)
}
