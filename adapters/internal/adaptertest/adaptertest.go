// Package adaptertest is the test bed shared by the adapters' tests: a
// Tracker on the shared real redis-server (internal/redistest), a real
// coder/websocket client that can also drop its TCP connection, the server
// side of every test connection, a logging wrapper that forwards nothing
// but Unwrap, count assertions that poll with deadlines, and the suites
// every adapter must pass ([Endings], [Refusals]).
//
// An adapter's test file describes how to serve its two forms (Handler and
// Middleware), with and without logging wrappers, as [Setup]s, and hands
// them to the suites.
package adaptertest

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/internal/wstest"
	"github.com/headcount-go/headcount/wsconn"
)

// Main runs the tests, stops the redis-servers they started, then fails the
// run if any goroutine is left behind. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	redistest.StopAll()
	if code == 0 {
		if err := goleak.Find(
			// Documented by internal/redistest; both end in StopAll.
			goleak.IgnoreAnyFunction("github.com/headcount-go/headcount/internal/redistest.(*process).wait"),
			goleak.IgnoreAnyFunction("github.com/headcount-go/headcount/internal/redistest.spawnLoop"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Room is the room of the route every Setup serves: connections dial
// base+"/ws/"+Room.
const Room = "lobby"

// Short timings, so that a test's tracker starts and stops fast.
const (
	threshold = time.Second
	heartbeat = 250 * time.Millisecond
	flush     = 20 * time.Millisecond
	// wait bounds every poll for a count.
	wait = 5 * time.Second
)

// Ctx returns a context for one test's client calls.
func Ctx(t testing.TB) context.Context { return wstest.Ctx(t) }

// Options returns the options of a test's Tracker: a namespace of its own,
// short timings, strict counting.
func Options(t testing.TB) wsconn.Options {
	return wsconn.Options{
		Namespace:             redistest.Prefix(t),
		InstanceID:            "a",
		DeadInstanceThreshold: threshold,
		HeartbeatInterval:     heartbeat,
		FlushInterval:         flush,
		RedisTimeout:          5 * time.Second, // generous: -race on a busy machine
	}
}

// NewTracker returns a Tracker on the shared standalone redis-server,
// closed when the test ends.
func NewTracker(t testing.TB, o wsconn.Options) *wsconn.Tracker {
	t.Helper()
	tr, err := wsconn.New(redistest.Standalone(t), o)
	if err != nil {
		t.Fatalf("wsconn.New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close(context.Background()) })
	return tr
}

// Serve runs h on a test server, closed when the test ends, and returns its
// base URL as ws://. Handler panics are expected and not logged.
func Serve(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// PanicValue is what Behave panics with.
const PanicValue = "adaptertest: handler panic"

// Behave is the server side of every test connection: it echoes each
// message, returns on "close" (so that the caller closes) or when a read
// or write fails, and panics on "panic".
func Behave(ctx context.Context, ws *websocket.Conn) {
	for {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			return
		}
		switch string(b) {
		case "close":
			return
		case "panic":
			panic(PanicValue)
		}
		if err := ws.Write(ctx, typ, b); err != nil {
			return
		}
	}
}

// SelfUpgrading is the handler behind an adapter's Middleware: it upgrades
// by itself, checks that the middleware gave it a Lease, and runs Behave;
// it closes with 1000 when Behave returns and 1011 when it panics, as the
// adapters' Handler does.
func SelfUpgrading() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close(websocket.StatusInternalError, "") // a no-op once closed
		if _, ok := wsconn.LeaseFromContext(r.Context()); !ok {
			_ = ws.Close(websocket.StatusPolicyViolation, "no lease in the request context")
			return
		}
		Behave(r.Context(), ws)
		_ = ws.Close(websocket.StatusNormalClosure, "")
	})
}

// Logger stands for logging middlewares: its writer records status codes
// and forwards nothing but Unwrap (no Hijack, no Flush), so an upgrade
// behind it works only through http.ResponseController-style unwrapping.
type Logger struct {
	mu    sync.Mutex
	codes []int
}

// Handler wraps h so that it writes through the logging writer.
func (l *Logger) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(l.Writer(w), r)
	})
}

// Writer returns w wrapped in the logging writer.
func (l *Logger) Writer(w http.ResponseWriter) http.ResponseWriter {
	return &loggingWriter{w: w, l: l}
}

// Saw reports whether a response with code went through the logger.
func (l *Logger) Saw(code int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.codes, code)
}

func (l *Logger) codesSeen() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.codes)
}

type loggingWriter struct {
	w       http.ResponseWriter
	l       *Logger
	written bool
}

func (lw *loggingWriter) Header() http.Header { return lw.w.Header() }

func (lw *loggingWriter) Write(b []byte) (int, error) {
	if !lw.written {
		lw.WriteHeader(http.StatusOK)
	}
	return lw.w.Write(b)
}

func (lw *loggingWriter) WriteHeader(code int) {
	if !lw.written {
		lw.written = true
		lw.l.mu.Lock()
		lw.l.codes = append(lw.l.codes, code)
		lw.l.mu.Unlock()
	}
	lw.w.WriteHeader(code)
}

func (lw *loggingWriter) Unwrap() http.ResponseWriter { return lw.w }

// Client is the test client (internal/wstest).
type Client = wstest.Client

// Dial connects to url with a real coder/websocket client.
func Dial(ctx context.Context, url string) (*Client, *http.Response, error) {
	return wstest.Dial(ctx, url)
}

// MustDial connects, closes the connection when the test ends, and makes
// one echo round trip (see wstest.MustDial).
func MustDial(t testing.TB, url string) *Client { t.Helper(); return wstest.MustDial(t, url) }

// Get makes a plain (not WebSocket) GET request to url (http:// or ws://)
// and returns the status code.
func Get(t testing.TB, url string) int {
	t.Helper()
	url = "http" + strings.TrimPrefix(url, "ws")
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(Ctx(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// eventually polls cond until it holds, or fails the test after wait.
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	end := time.Now().Add(wait)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v; last: %s", what, wait, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func one(n int64) wsconn.Count { return wsconn.Count{Total: n, Local: n} }

// TotalIs waits until the tracker counts n connections (all on this node).
func TotalIs(t testing.TB, tr *wsconn.Tracker, n int64) {
	t.Helper()
	countIs(t, "Total", one(n), tr.Total)
}

// RoomIs waits until room counts n connections (all on this node).
func RoomIs(t testing.TB, tr *wsconn.Tracker, room string, n int64) {
	t.Helper()
	countIs(t, "Count("+room+")", one(n), func(ctx context.Context) (wsconn.Count, error) { return tr.Count(ctx, room) })
}

func countIs(t testing.TB, what string, want wsconn.Count, read func(context.Context) (wsconn.Count, error)) {
	t.Helper()
	eventually(t, what, func() (bool, string) {
		got, err := read(Ctx(t))
		if err != nil {
			return false, err.Error()
		}
		return got == want, fmt.Sprintf("%+v, want %+v", got, want)
	})
}

// Stable checks that the total and room keep counting n for a while:
// nothing is decremented twice, late.
func Stable(t testing.TB, tr *wsconn.Tracker, room string, n int64) {
	t.Helper()
	for end := time.Now().Add(10 * flush); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		total, err := tr.Total(Ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		inRoom, err := tr.Count(Ctx(t), room)
		if err != nil {
			t.Fatal(err)
		}
		if total != one(n) || inRoom != one(n) {
			t.Fatalf("total %+v, room %q %+v; want %d throughout", total, room, inRoom, n)
		}
	}
}

// WatchRange reads the total and room every few milliseconds until the
// test ends, and fails the test if either is ever below zero or above max.
func WatchRange(t *testing.T, tr *wsconn.Tracker, room string, max int64) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			total, err := tr.Total(ctx)
			inRoom, err2 := tr.Count(ctx, room)
			cancel()
			if err != nil || err2 != nil {
				continue
			}
			for _, c := range []wsconn.Count{total, inRoom} {
				if c.Total < 0 || c.Local < 0 || c.Total > max || c.Local > max {
					t.Errorf("count out of range [0, %d]: %+v", max, c)
				}
			}
		}
	})
	t.Cleanup(func() { close(stop); wg.Wait() })
}

// Balanced waits until the tracker has counted n connections and
// uncounted each of them once (its opened and closed metrics).
func Balanced(t testing.TB, tr *wsconn.Tracker, n int64) {
	t.Helper()
	eventually(t, "opened == closed", func() (bool, string) {
		o, c := metric(t, tr, "headcount_connections_opened_total"), metric(t, tr, "headcount_connections_closed_total")
		return o == n && c == n, fmt.Sprintf("opened %d, closed %d, want %d", o, c, n)
	})
}

// metric reads a counter from the tracker's Prometheus collector.
func metric(t testing.TB, tr *wsconn.Tracker, name string) int64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(tr.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return int64(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// Setup is one way an adapter serves test connections.
type Setup struct {
	Name string
	// Serve starts a server (with adaptertest.Serve) on which a WebSocket
	// handshake to "/ws/{room}" is counted by tr, in the room named by the
	// route, and served by Behave (Handler form) or SelfUpgrading
	// (Middleware form). It returns the server's base ws:// URL. If the
	// setup puts log's wrappers (Logger.Handler or Logger.Writer) in the
	// way, it sets Logged.
	Serve  func(t *testing.T, tr *wsconn.Tracker, log *Logger) string
	Logged bool
}

// ending is one way a test connection ends.
type ending struct {
	name string
	end  func(t *testing.T, c *Client)
	// code is the close status the client must see; 0: not checked.
	code websocket.StatusCode
}

var endings = []ending{
	{"server close", func(t *testing.T, c *Client) { c.Send(t, "close") }, websocket.StatusNormalClosure},
	{"client close", func(t *testing.T, c *Client) { _ = c.WS.Close(websocket.StatusNormalClosure, "bye") }, 0},
	{"TCP reset, no close frame", func(t *testing.T, c *Client) { c.DropTCP(true) }, 0},
	{"TCP FIN, no close frame", func(t *testing.T, c *Client) { c.DropTCP(false) }, 0},
	{"handler panic", func(t *testing.T, c *Client) { c.Send(t, "panic") }, websocket.StatusInternalError},
}

// Endings checks, for every setup, that a connection is counted (globally
// and in its route's room) once it is open, and uncounted exactly once
// however it ends: the server closes it, the client closes it, the client's
// TCP connection goes away without a close frame (reset or FIN), or the
// handler panics. Throughout, no count is ever negative or above one; after
// the end, opened == closed == 1 and the counts stay at zero. The client
// sees close status 1000 when the handler returns and 1011 when it
// panics. Setups with loggers check that the upgrade (101) went through
// them.
func Endings(t *testing.T, setups []Setup) {
	for _, s := range setups {
		for _, e := range endings {
			t.Run(s.Name+"/"+e.name, func(t *testing.T) {
				t.Parallel()
				tr := NewTracker(t, Options(t))
				var log Logger
				base := s.Serve(t, tr, &log)
				WatchRange(t, tr, Room, 1)

				c := MustDial(t, base+"/ws/"+Room)
				TotalIs(t, tr, 1)
				RoomIs(t, tr, Room, 1)
				if s.Logged && !log.Saw(http.StatusSwitchingProtocols) {
					t.Fatalf("the logging wrapper saw %v, not the 101", log.codesSeen())
				}

				e.end(t, c)
				if e.code != 0 {
					if got := c.CloseStatus(t); got != e.code {
						t.Fatalf("client sees close status %d, want %d", got, e.code)
					}
				}
				TotalIs(t, tr, 0)
				RoomIs(t, tr, Room, 0)
				Balanced(t, tr, 1)
				Stable(t, tr, Room, 0)
				if got := tr.LocalRooms(); len(got) != 0 {
					t.Fatalf("LocalRooms after the end: %q", got)
				}
			})
		}
	}
}

// Refusals checks, for every setup, that refused handshakes are answered
// through the adapter and never counted or served: over Limits.PerRoom
// (429 with Retry-After), a bad room name (400), and a plain GET (426,
// from coder/websocket, in the handler or behind the middleware). Setups
// with loggers check that the refusals' status went through them.
func Refusals(t *testing.T, setups []Setup) {
	for _, s := range setups {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			o := Options(t)
			o.Limits.PerRoom = 1
			tr := NewTracker(t, o)
			var log Logger
			base := s.Serve(t, tr, &log)

			c := MustDial(t, base+"/ws/"+Room)
			RoomIs(t, tr, Room, 1)
			for _, tc := range []struct {
				path string
				code int
			}{
				{"/ws/" + Room, http.StatusTooManyRequests},
				{"/ws/" + strings.Repeat("x", wsconn.MaxNameLen+1), http.StatusBadRequest},
				{"/ws/%7F", http.StatusBadRequest}, // DEL, a control character
			} {
				_, resp, err := Dial(Ctx(t), base+tc.path)
				if err == nil || resp == nil || resp.StatusCode != tc.code {
					code := 0
					if resp != nil {
						code = resp.StatusCode
					}
					t.Fatalf("dial %s: %v, HTTP %d; want HTTP %d", tc.path, err, code, tc.code)
				}
				if tc.code == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
					t.Fatalf("429 without Retry-After: %v", resp.Header)
				}
				if s.Logged && !log.Saw(tc.code) {
					t.Fatalf("the logging wrapper saw %v, not %d", log.codesSeen(), tc.code)
				}
			}
			if code := Get(t, base+"/ws/"+Room); code != http.StatusUpgradeRequired {
				t.Fatalf("plain GET: HTTP %d, want 426", code)
			}
			TotalIs(t, tr, 1)
			c.RoundTrip(t) // still served
			_ = c.WS.Close(websocket.StatusNormalClosure, "")
			TotalIs(t, tr, 0)
			Balanced(t, tr, 1)
		})
	}
}

// InRooms dials url and checks that the connection is counted in exactly
// rooms (and uncounted from them once closed).
func InRooms(t *testing.T, tr *wsconn.Tracker, url string, rooms ...string) {
	t.Helper()
	c := MustDial(t, url)
	for _, room := range rooms {
		RoomIs(t, tr, room, 1)
	}
	if got := tr.LocalRooms(); !slices.Equal(got, rooms) {
		t.Fatalf("%s: in rooms %q, want %q", url, got, rooms)
	}
	_ = c.WS.Close(websocket.StatusNormalClosure, "")
	TotalIs(t, tr, 0)
	if got := tr.LocalRooms(); len(got) != 0 {
		t.Fatalf("%s: still in rooms %q", url, got)
	}
}
