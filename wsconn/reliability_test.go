package wsconn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/redistest"
)

// TestStrictRedialSeenEverywhere: strict means that once Admit returns,
// every node counts the connection. A admits, releases and at once admits
// again (a client the server closed, redialling); B must read 1 right
// after. Before the fix, about one try in five read 0 until the next flush.
func TestStrictRedialSeenEverywhere(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		t.Parallel()
		ctx, ns := ctxT(t), redistest.Prefix(t)
		a := newTracker(t, c, testOptions(ns, "a"))
		b := newTracker(t, c, testOptions(ns, "b"))
		r := httptest.NewRequest(http.MethodGet, "/ws?room=lobby", nil)
		for i := range 300 {
			first, err := a.Admit(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			first.Release()
			again, err := a.Admit(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := readAll(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Total != 1 || got[1].Total != 1 {
				t.Fatalf("try %d: B reads total %d, lobby %d right after A's Admit; want 1 and 1", i, got[0].Total, got[1].Total)
			}
			again.Release()
		}
	})
}

// TestConcurrentJoinsOfOneRoom: two Joins of the same room by one
// connection at once share one outcome. Join returns nil only when the
// connection is in the room. Before the fix, with the room full, one Join
// got a *LimitError and the other nil while the connection was not in it.
func TestConcurrentJoinsOfOneRoom(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		t.Parallel()
		ctx, ns := ctxT(t), redistest.Prefix(t)
		o := testOptions(ns, "n")
		o.Limits.PerRoom = 1
		tr := newTracker(t, c, o)
		full, err := tr.Admit(ctx, httptest.NewRequest(http.MethodGet, "/ws?room=full", nil))
		if err != nil {
			t.Fatal(err)
		}
		defer full.Release()

		joinTwice := func(l *Lease, room string) [2]error {
			var errs [2]error
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range errs {
				wg.Go(func() {
					<-start
					errs[i] = l.Join(ctx, room)
				})
			}
			close(start)
			wg.Wait()
			return errs
		}
		for try := range 50 {
			l, err := tr.Admit(ctx, httptest.NewRequest(http.MethodGet, "/ws", nil))
			if err != nil {
				t.Fatal(err)
			}
			// The room is full: both fail, each with the limit.
			for i, err := range joinTwice(l, "full") {
				var le *LimitError
				if !errors.As(err, &le) {
					t.Fatalf("try %d: Join %d of a full room = %v, want a *LimitError; rooms %v", try, i, err, l.Rooms())
				}
			}
			if rooms := l.Rooms(); len(rooms) != 0 {
				t.Fatalf("try %d: rooms %v after refused joins", try, rooms)
			}
			// An empty room of one place: both succeed, the connection is
			// in it once.
			room := fmt.Sprint("free-", try)
			for i, err := range joinTwice(l, room) {
				if err != nil {
					t.Fatalf("try %d: Join %d of a free room: %v", try, i, err)
				}
			}
			if rooms := l.Rooms(); !slices.Equal(rooms, []string{room}) {
				t.Fatalf("try %d: rooms %v, want [%s]", try, rooms, room)
			}
			if n, err := tr.Count(ctx, room); err != nil || n.Total != 1 {
				t.Fatalf("try %d: %s counts %+v (%v), want 1", try, room, n, err)
			}
			l.Release()
		}
	})
}

// TestBoundsWhileRedisHangs: while Redis hangs (a proxy that stalls; the
// client keeps go-redis' default timeouts and retries, about 10 s per
// command), New returns within a second, and Shutdown within its context
// plus RedisTimeout, also with handshakes and reads in flight. Before the
// fix New took 10 s and Shutdown with a 1 s context 10 s or more.
// Standalone only: a cluster client dials the nodes' own addresses, past
// any proxy.
func TestBoundsWhileRedisHangs(t *testing.T) {
	t.Parallel()
	c, p := faultproxy.Redis(t)
	ctx, ns := ctxT(t), redistest.Prefix(t)
	o := testOptions(ns, "n")
	o.RedisTimeout = 200 * time.Millisecond
	tr := newTracker(t, c, o)
	r := httptest.NewRequest(http.MethodGet, "/ws?room=lobby", nil)
	held, err := tr.Admit(ctx, r)
	if err != nil {
		t.Fatal(err)
	}

	fo := testOptions(ns, "f")
	// A RedisTimeout well above the slack, so that two in a row show.
	fo.RedisTimeout, fo.FailClosed, fo.Limits.PerRoom = time.Second, true, 10
	closedFail := newTracker(t, c, fo)
	member, err := closedFail.Admit(ctx, httptest.NewRequest(http.MethodGet, "/ws", nil))
	if err != nil {
		t.Fatal(err)
	}

	p.Stall(true)
	redistest.Within(t, "New", time.Second, func() { newTracker(t, c, testOptions(ns, "m")) })
	// Two joins of one limited room that Redis cannot check (FailClosed):
	// the second shares the first's outcome, within one RedisTimeout.
	redistest.Within(t, "two concurrent Joins", fo.RedisTimeout, func() {
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				if err := member.Join(ctx, "limited"); !errors.Is(err, ErrUnavailable) {
					t.Errorf("Join while Redis hangs (FailClosed): %v, want ErrUnavailable", err)
				}
			})
		}
		wg.Wait()
	})
	// Traffic in flight: handshakes and reads waiting on the stalled Redis.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if l, err := tr.Admit(ctx, r); err == nil {
				l.Release()
			}
		})
		wg.Go(func() { _, _ = tr.Total(ctx) })
	}
	held.Release()
	redistest.Within(t, "Shutdown", time.Second+o.RedisTimeout, func() {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_ = tr.Shutdown(sctx) // may report the counts it could not remove
	})
	wg.Wait() // every handshake and read gave up within RedisTimeout
	p.Stall(false)
}
