package wsconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/internal/redistest"
)

// TestJoinLeave: dynamic rooms, the per-connection room cap, closing
// leaves every room, and refused Joins are counted as rejections.
func TestJoinLeave(t *testing.T) {
	t.Parallel()
	ns := redistest.Prefix(t)
	o := testOptions(ns, "a")
	o.MaxRoomsPerConn = 3
	tr := newTracker(t, redistest.Standalone(t), o)
	// Another node, to read what Redis holds: a strict Join is there when
	// it returns, and so is a Leave.
	other := newTracker(t, redistest.Standalone(t), testOptions(ns, "b"))
	conns := make(chan *Conn, 1)
	_, url := serve(t, echo(tr, func(c *Conn) { conns <- c }))
	cl := mustDial(t, url+"?room=static")
	c := <-conns
	ctx := ctxT(t)
	for _, room := range []string{"a", "b", "a"} {
		if err := c.Join(ctx, room); err != nil {
			t.Fatalf("Join(%q): %v", room, err)
		}
	}
	if err := c.Join(ctx, "c"); !errors.Is(err, ErrTooManyRooms) {
		t.Fatalf("fourth room: %v, want ErrTooManyRooms", err)
	}
	if err := c.Join(ctx, "bad\x00"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("invalid room: %v", err)
	}
	if got := fmt.Sprint(c.Rooms()); got != "[a b static]" {
		t.Fatalf("Rooms = %s", got)
	}
	one := Count{Total: 1, Local: 1}
	got, err := tr.Counts(ctx, "a", "b", "static", "c")
	if err != nil {
		t.Fatal(err)
	}
	if got["a"] != one || got["b"] != one || got["static"] != one || got["c"] != (Count{}) {
		t.Fatalf("Counts = %+v", got)
	}
	if got, err := other.Count(ctx, "a"); err != nil || got != (Count{Total: 1}) {
		t.Fatalf("another node's Count(a) once Join returned: %+v, %v; want 1", got, err)
	}
	if err := c.Leave(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got, err := other.Count(ctx, "a"); err != nil || got != (Count{}) {
		t.Fatalf("another node's Count(a) once Leave returned: %+v, %v; want 0", got, err)
	}
	if err := c.Leave(ctx, "never"); err != nil {
		t.Fatalf("leaving a room not joined: %v", err)
	}
	roomIs(t, tr, "a", Count{})
	if err := c.Join(ctx, "c"); err != nil {
		t.Fatalf("Join after a Leave: %v", err)
	}
	if got := fmt.Sprint(tr.LocalRooms()); got != "[b c static]" {
		t.Fatalf("LocalRooms = %s", got)
	}
	_ = cl.WS.Close(websocket.StatusNormalClosure, "")
	for _, room := range []string{"b", "c", "static"} {
		roomIs(t, tr, room, Count{})
	}
	if err := c.Join(ctx, "d"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Join after close: %v", err)
	}
	if len(tr.LocalRooms()) != 0 {
		t.Fatalf("LocalRooms after close: %q", tr.LocalRooms())
	}
	// Each refused Join is in headcount_rejections_total, by reason.
	for reason, want := range map[string]int64{"too_many_rooms": 1, "invalid_name": 1, "closed": 1} {
		if got := counterValue(tr.met.rejections.WithLabelValues(reason)); got != want {
			t.Errorf("rejections{reason=%q} = %d, want %d", reason, got, want)
		}
	}
}

// TestPresenceHandler serves counts as JSON and refuses bad names.
func TestPresenceHandler(t *testing.T) {
	t.Parallel()
	o := testOptions(redistest.Prefix(t), "node-a")
	tr := newTracker(t, redistest.Standalone(t), o)
	_, url := serve(t, echo(tr, nil))
	mustDial(t, url+"?room=x&room=y&tenant=t")
	mustDial(t, url+"?room=x")
	ph := httptest.NewServer(tr.PresenceHandler())
	t.Cleanup(ph.Close)

	get := func(query string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Get(ph.URL + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q", ct)
		}
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	code, body := get("")
	want := `map[instance:node-a rooms:map[x:map[local:2 total:2] y:map[local:1 total:1]] total:map[local:2 total:2]]`
	if code != 200 || fmt.Sprint(body) != want {
		t.Fatalf("GET /: %d %v\nwant %s", code, body, want)
	}
	code, body = get("?room=y&room=z&tenant=t")
	want = `map[instance:node-a rooms:map[y:map[local:1 total:1] z:map[local:0 total:0]] tenants:map[t:map[local:1 total:1]] total:map[local:2 total:2]]`
	if code != 200 || fmt.Sprint(body) != want {
		t.Fatalf("GET ?room=y&room=z&tenant=t: %d %v\nwant %s", code, body, want)
	}
	for _, q := range []string{"?room=", "?room=%7F", "?room=" + strings.Repeat("x", 200), "?user=u"} {
		if code, body := get(q); code != http.StatusBadRequest || body["error"] == nil {
			t.Fatalf("GET %s: %d %v; want 400 with an error", q, code, body)
		}
	}
	resp, err := http.Post(ph.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

// TestUserCount: per-user counters only when asked for.
func TestUserCount(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	off := newTracker(t, c, testOptions(ns, "off"))
	if _, err := off.UserCount(ctxT(t), "u"); !errors.Is(err, ErrUsersNotCounted) {
		t.Fatalf("UserCount without CountUsers: %v", err)
	}
	o := testOptions(ns, "on")
	o.CountUsers = true
	on := newTracker(t, c, o)
	_, url := serve(t, echo(on, nil))
	_, offURL := serve(t, echo(off, nil))
	mustDial(t, url+"?user=u")
	mustDial(t, url+"?user=u")
	mustDial(t, offURL+"?user=u") // not counted per user there
	countIs(t, settleDeadline, "user u", Count{Total: 2, Local: 2}, func(ctx context.Context) (Count, error) { return on.UserCount(ctx, "u") })
	totalIs(t, on, Count{Total: 3, Local: 2})
}

// TestAutoLax: a room churning faster than AutoLaxRate turns lax on this
// node, and strict again once it calms down.
func TestAutoLax(t *testing.T) {
	t.Parallel()
	o := testOptions(redistest.Prefix(t), "a")
	o.AutoLaxRate = 20
	tr := newTracker(t, redistest.Standalone(t), o)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	l, err := tr.Admit(ctxT(t), r)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	ctx := ctxT(t)
	if err := l.Join(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	if tr.local.autoLax("busy") {
		t.Fatal("lax after one join")
	}
	for range 15 { // 31 events in well under a second
		if err := l.Leave(ctx, "busy"); err != nil {
			t.Fatal(err)
		}
		if err := l.Join(ctx, "busy"); err != nil {
			t.Fatal(err)
		}
	}
	if !tr.local.autoLax("busy") {
		t.Fatal("not lax after 31 events in a window, rate 20/s")
	}
	// Lax: joins no longer wait for Redis, and the count still converges.
	roomIs(t, tr, "busy", Count{Total: 1, Local: 1})
	eventually(t, 3*autoLaxWindow, "strict again once calm", func() (bool, string) {
		return !tr.local.autoLax("busy"), "still lax"
	})
	if err := l.Leave(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	roomIs(t, tr, "busy", Count{})
}

// TestDrainAndShutdown: Drain closes connections with the drain status and
// refuses new ones; Shutdown removes this node's counts at once.
func TestDrainAndShutdown(t *testing.T) {
	for _, status := range []websocket.StatusCode{0, websocket.StatusServiceRestart} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			c := redistest.Standalone(t)
			ns := redistest.Prefix(t)
			o := testOptions(ns, "a")
			o.DrainStatus = status
			tr := newTracker(t, c, o)
			other := newTracker(t, c, testOptions(ns, "b"))
			_, url := serve(t, echo(tr, nil))
			var clients []*client
			for range 3 {
				clients = append(clients, mustDial(t, url+"?room=r"))
			}
			hub := httptest.NewRequest(http.MethodGet, "/?room=r", nil)
			l, err := tr.Admit(ctxT(t), hub)
			if err != nil {
				t.Fatal(err)
			}
			go func() { <-l.Context().Done(); l.Release() }() // an owner that honours Drain
			totalIs(t, other, Count{Total: 4})

			if err := tr.Drain(ctxT(t)); err != nil {
				t.Fatalf("Drain: %v", err)
			}
			want := status
			if want == 0 {
				want = websocket.StatusGoingAway
			}
			for _, cl := range clients {
				_, _, err := cl.WS.Read(ctxT(t))
				if got := websocket.CloseStatus(err); got != want {
					t.Fatalf("client sees %v (%d), want %d", err, got, want)
				}
			}
			totalIs(t, other, Count{})
			if _, resp, err := dial(ctxT(t), url); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("handshake while draining: %v, %v", err, resp)
			}
			if err := tr.Shutdown(ctxT(t)); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if _, err := tr.Total(ctxT(t)); !errors.Is(err, ErrClosed) {
				t.Fatalf("Total after Shutdown: %v", err)
			}
		})
	}
}

// TestCloseRemovesSlices: a node closing with connections still open takes
// its counts out of Redis at once, not after the reap.
func TestCloseRemovesSlices(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	tr := newTracker(t, c, testOptions(ns, "a"))
	other := newTracker(t, c, testOptions(ns, "b"))
	_, url := serve(t, echo(tr, nil))
	cl := mustDial(t, url+"?room=r")
	totalIs(t, other, Count{Total: 1})
	if err := tr.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	got, err := other.Total(ctxT(t))
	if err != nil || got != (Count{}) {
		t.Fatalf("Total right after Close: %+v, %v", got, err)
	}
	cl.RoundTrip(t) // the connection itself is left alone
	_ = cl.WS.Close(websocket.StatusNormalClosure, "")
	stable(t, 5*testFlush, Count{}, other.Total)
	if err := tr.Close(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// TestJoinAfterShutdown: once the Tracker drains or closes, Join refuses
// with ErrClosed (its connection is, or is about to be, uncounted), and
// Close ends every Lease's Context, as Drain does; every read after Close
// is ErrClosed, one of no rooms too.
func TestJoinAfterShutdown(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	for _, stop := range []string{"Drain", "Close"} {
		tr := newTracker(t, c, testOptions(ns, stop))
		l := admitUser(t, tr, "ann", "a")
		var err error
		if stop == "Drain" {
			ctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
			err = tr.Drain(ctx) // the Lease stays counted until Release
			cancel()
		} else {
			err = tr.Close(ctxT(t))
		}
		if stop == "Close" {
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, err := tr.Counts(ctxT(t)); !errors.Is(err, ErrClosed) {
				t.Errorf("Counts of no rooms after Close: %v, want ErrClosed", err)
			}
		}
		if err := l.Join(ctxT(t), "b"); !errors.Is(err, ErrClosed) {
			t.Errorf("Join after %s: %v, want ErrClosed", stop, err)
		}
		if slices.Contains(l.Rooms(), "b") {
			t.Errorf("after %s, a refused Join lists its room: %v", stop, l.Rooms())
		}
		select {
		case <-l.Context().Done():
		default:
			t.Errorf("Lease's Context not done after %s", stop)
		}
		l.Release()
	}
}

// TestDrainForce: connections whose owner does not close in time are
// closed at once when Drain's context ends.
func TestDrainForce(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), testOptions(redistest.Prefix(t), "a"))
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	// A self-upgrading handler that ignores its lease context but stops
	// when its connection breaks.
	_, url := serve(t, tr.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		echoLoop(context.Background(), ws)
	})))
	mustDial(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := tr.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain: %v, want the context's error", err)
	}
	totalIs(t, tr, Count{})
}

// TestDrainRefusesHandshakeUnderWay: a handshake whose callbacks (here the
// Tenant lookup) are running when Drain starts, with nothing tracked yet,
// is refused when they return: Drain returned saying nothing is left, so
// nothing may be admitted after it.
func TestDrainRefusesHandshakeUnderWay(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	o := testOptions(redistest.Prefix(t), "a")
	o.Tenant = func(*http.Request) string {
		close(entered)
		<-release
		return "acme"
	}
	tr := newTracker(t, redistest.Standalone(t), o)
	admitted := make(chan error, 1)
	go func() {
		lease, err := tr.Admit(ctxT(t), httptest.NewRequest(http.MethodGet, "/ws", nil))
		if err == nil {
			lease.Release()
		}
		admitted <- err
	}()
	<-entered
	if err := tr.Drain(ctxT(t)); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	close(release)
	if err := <-admitted; !errors.Is(err, ErrClosed) {
		t.Fatalf("Admit under way during Drain: %v, want ErrClosed", err)
	}
}

// WithRooms ignores empty names: a route without the parameter has no room.
func TestWithRoomsIgnoresEmpty(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if got := roomsFrom(WithRooms(r, "").Context()); len(got) != 0 {
		t.Fatalf("WithRooms(r, \"\") carries %q", got)
	}
	if got := roomsFrom(WithRooms(WithRooms(r, "a", ""), "", "b").Context()); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("rooms %q, want [a b]", got)
	}
}
