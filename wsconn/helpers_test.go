package wsconn

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/internal/wstest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// Short timings so that crash tests take seconds.
const (
	testThreshold = time.Second
	testHeartbeat = 250 * time.Millisecond
	testFlush     = 20 * time.Millisecond
	// reapDeadline is the promise for a crashed node's counts.
	reapDeadline = testThreshold + testHeartbeat + time.Second
	// settleDeadline bounds the wait for a change to show in a read, from
	// this node or another: a strict change is in Redis within a round
	// trip (a close within half a FlushInterval and a round trip), a lax
	// one within FlushInterval and a round trip, and a presence event a
	// poll later at most. Far shorter than 5 s here; the rest is room
	// for -race on a loaded two-core machine, where a round trip can
	// take a second.
	settleDeadline = 5 * time.Second
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testOptions are the options of most tests: query parameters name the
// rooms (room=), tenant (tenant=) and user (user=).
func testOptions(ns, id string) Options {
	return Options{
		Namespace:             ns,
		InstanceID:            id,
		DeadInstanceThreshold: testThreshold,
		HeartbeatInterval:     testHeartbeat,
		FlushInterval:         testFlush,
		RedisTimeout:          5 * time.Second, // generous: -race on a busy machine
		Rooms:                 func(r *http.Request) []string { return r.URL.Query()["room"] },
		Tenant:                func(r *http.Request) string { return r.URL.Query().Get("tenant") },
		User:                  func(r *http.Request) string { return r.URL.Query().Get("user") },
	}
}

func newTracker(t testing.TB, c redis.UniversalClient, o Options) *Tracker {
	t.Helper()
	tr, err := New(c, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close(context.Background()) })
	return tr
}

// serve runs h on a test server; its URL is returned as ws://.
func serve(t testing.TB, h http.Handler) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handler panics are expected
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, "ws" + strings.TrimPrefix(srv.URL, "http")
}

// echo is the handler of most tests: Accept, then echo until the peer goes.
// accepted, if set, is told once Accept has returned (the count is in).
func echo(tr *Tracker, accepted func(*Conn)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := tr.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close(websocket.StatusNormalClosure, "")
		if accepted != nil {
			accepted(c)
		}
		echoLoop(r.Context(), c.WS())
	})
}

func echoLoop(ctx context.Context, ws *websocket.Conn) {
	for {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			return
		}
		if string(b) == "close" {
			_ = ws.Close(websocket.StatusNormalClosure, "asked to")
			return
		}
		if err := ws.Write(ctx, typ, b); err != nil {
			return
		}
	}
}

// client is the test client (internal/wstest).
type client = wstest.Client

func dial(ctx context.Context, url string) (*client, *http.Response, error) {
	return wstest.Dial(ctx, url)
}

// mustDial connects and makes one echo round trip, which proves the
// server's Accept has returned.
func mustDial(t testing.TB, url string) *client {
	t.Helper()
	return wstest.MustDial(t, url)
}

// eventually polls cond until it holds or the deadline passes, and returns
// how long it took.
func eventually(t testing.TB, deadline time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	end := start.Add(deadline)
	for {
		ok, got := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v; last: %s", what, deadline, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countIs polls read until it returns want.
func countIs(t testing.TB, deadline time.Duration, what string, want Count, read func(context.Context) (Count, error)) time.Duration {
	t.Helper()
	return eventually(t, deadline, what, func() (bool, string) {
		c, err := read(ctxT(t))
		if err != nil {
			return false, err.Error()
		}
		return c == want, fmt.Sprintf("%+v, want %+v", c, want)
	})
}

func totalIs(t testing.TB, tr *Tracker, want Count) {
	t.Helper()
	countIs(t, settleDeadline, "Total", want, tr.Total)
}

func roomIs(t testing.TB, tr *Tracker, room string, want Count) {
	t.Helper()
	countIs(t, settleDeadline, "Count("+room+")", want, func(ctx context.Context) (Count, error) { return tr.Count(ctx, room) })
}

// watchNonNegative reads the total and a room every few milliseconds until
// the test ends and fails it if either ever goes below zero or above max.
func watchNonNegative(t *testing.T, tr *Tracker, room string, max int64) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			got, err := tr.Counts(ctx, room)
			total, err2 := tr.Total(ctx)
			cancel()
			if err != nil || err2 != nil {
				continue
			}
			for _, c := range []Count{got[room], total} {
				if c.Total < 0 || c.Local < 0 || c.Total > max || c.Local > max {
					t.Errorf("count out of range [0, %d]: %+v", max, c)
				}
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
}

func counterValue(c prometheus.Counter) int64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return int64(m.GetCounter().GetValue())
}

// balanced checks that every connection counted was uncounted exactly once.
func balanced(t testing.TB, tr *Tracker, opened int64) {
	t.Helper()
	eventually(t, settleDeadline, "opened == closed", func() (bool, string) {
		o, c := counterValue(tr.met.opened), counterValue(tr.met.closed)
		return o == opened && c == opened, fmt.Sprintf("opened %d closed %d, want %d", o, c, opened)
	})
}

// stable checks that read keeps returning want for a while: nothing is
// decremented twice later.
func stable(t testing.TB, window time.Duration, want Count, read func(context.Context) (Count, error)) {
	t.Helper()
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		c, err := read(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if c != want {
			t.Fatalf("count %+v, want %+v throughout %v", c, want, window)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fmtCounts(got, want []Count) string {
	return fmt.Sprintf("got %+v, want %+v", got, want)
}
