package wsconn

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

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
