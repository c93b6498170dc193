package wsconn

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/internal/redistest"
)

// loggingWriter is the kind of wrapper logging middlewares put in front of
// handlers: it records the status and forwards nothing but Unwrap.
type loggingWriter struct {
	w      http.ResponseWriter
	status int
}

func (l *loggingWriter) Header() http.Header         { return l.w.Header() }
func (l *loggingWriter) Write(b []byte) (int, error) { return l.w.Write(b) }
func (l *loggingWriter) WriteHeader(code int)        { l.status = code; l.w.WriteHeader(code) }
func (l *loggingWriter) Unwrap() http.ResponseWriter { return l.w }

func logging(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&loggingWriter{w: w}, r)
	})
}

// selfUpgrading is a handler that upgrades by itself and echoes; it joins
// the room named by ?join= through its Lease.
func selfUpgrading() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		if room := r.URL.Query().Get("join"); room != "" {
			l, ok := LeaseFromContext(r.Context())
			if !ok {
				panic("no lease in the request context")
			}
			if err := l.Join(r.Context(), room); err != nil {
				panic(err)
			}
		}
		for {
			typ, b, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			if string(b) == "panic" {
				panic(http.ErrAbortHandler)
			}
			_ = ws.Write(r.Context(), typ, b)
		}
	})
}

// TestMiddleware: the middleware form counts a self-upgrading handler from
// its 101 to its return (or panic), behind a wrapping writer that only
// forwards Unwrap, and lets plain requests through uncounted.
func TestMiddleware(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), testOptions(redistest.Prefix(t), "a"))
	srv, url := serve(t, logging(tr.Middleware(selfUpgrading())))
	watchNonNegative(t, tr, "r", 1)

	c := mustDial(t, url+"?room=r&join=j")
	one := Count{Total: 1, Local: 1}
	totalIs(t, tr, one)
	roomIs(t, tr, "r", one)
	roomIs(t, tr, "j", one)
	_ = c.WS.Close(websocket.StatusNormalClosure, "")
	totalIs(t, tr, Count{})
	roomIs(t, tr, "j", Count{})

	c = mustDial(t, url+"?room=r")
	totalIs(t, tr, one)
	_ = c.WS.Write(ctxT(t), websocket.MessageText, []byte("panic"))
	totalIs(t, tr, Count{})
	roomIs(t, tr, "r", Count{})
	balanced(t, tr, 2)

	resp, err := http.Get(srv.URL + "?room=r")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET through the middleware: %d", resp.StatusCode)
	}
	balanced(t, tr, 2)
	// Refusals are answered by the middleware, before the handler.
	if _, resp, err := dial(ctxT(t), url+"?room=%00"); err == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("invalid room through the middleware: %v, %v", err, resp)
	}
}

// TestAcceptBehindWrapper: Accept finds the Hijacker behind a wrapper that
// only forwards Unwrap.
func TestAcceptBehindWrapper(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), testOptions(redistest.Prefix(t), "a"))
	_, url := serve(t, logging(echo(tr, nil)))
	c := mustDial(t, url)
	totalIs(t, tr, Count{Total: 1, Local: 1})
	_ = c.WS.Close(websocket.StatusNormalClosure, "")
	totalIs(t, tr, Count{})
}

// handshakeRequest is a valid WebSocket handshake request for target, for
// handlers served without a server.
func handshakeRequest(target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	return r
}

// TestWriterWithoutHijack: a handshake through a ResponseWriter that
// cannot hijack is answered 501 by Accept before anything is counted (not
// a 101 and a dropped connection), and passes through Middleware uncounted.
func TestWriterWithoutHijack(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), testOptions(redistest.Prefix(t), "a"))
	rec := httptest.NewRecorder() // no Hijack
	if _, err := tr.Accept(rec, handshakeRequest("/?room=r"), nil); err == nil || rec.Code != http.StatusNotImplemented {
		t.Errorf("Accept through a recorder: %d, %v; want 501 and an error", rec.Code, err)
	}
	rec = httptest.NewRecorder()
	var leased bool
	tr.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, leased = LeaseFromContext(r.Context())
		_, _ = websocket.Accept(w, r, nil)
	})).ServeHTTP(rec, handshakeRequest("/?room=r"))
	if leased || rec.Code != http.StatusNotImplemented {
		t.Errorf("Middleware through a recorder: %d, counted %v; want 501, uncounted", rec.Code, leased)
	}
	stable(t, 5*testFlush, Count{}, tr.Total)
}

// panicHijacker is a ResponseWriter whose Hijack panics, as a framework's
// writer does that hijacks the writer under it without checking it can.
type panicHijacker struct{ *httptest.ResponseRecorder }

func (panicHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) { panic("cannot hijack") }

// TestAcceptPanicGivesBackLimits: a panic in the upgrade (here in Hijack)
// gives back what the handshake took: the room's place under its limit,
// and the connection Drain would wait for.
func TestAcceptPanicGivesBackLimits(t *testing.T) {
	t.Parallel()
	o := testOptions(redistest.Prefix(t), "a")
	o.Limits.PerRoom = 1
	tr := newTracker(t, redistest.Standalone(t), o)
	func() {
		defer func() { _ = recover() }()
		_, _ = tr.Accept(panicHijacker{httptest.NewRecorder()}, handshakeRequest("/?room=r"), nil)
		t.Error("Accept did not panic")
	}()
	l, err := tr.Admit(ctxT(t), httptest.NewRequest(http.MethodGet, "/?room=r", nil))
	if err != nil {
		t.Fatalf("the room's only place after a panicked handshake: %v", err)
	}
	l.Release()
	ctx, cancel := context.WithTimeout(ctxT(t), settleDeadline)
	defer cancel()
	if err := tr.Drain(ctx); err != nil {
		t.Errorf("Drain after a panicked handshake: %v", err)
	}
}

// TestUpgradeWriterForwards: Flush and Unwrap reach the writer underneath,
// through a wrapper that has only Unwrap.
func TestUpgradeWriterForwards(t *testing.T) {
	rec := httptest.NewRecorder()
	lw := &loggingWriter{w: rec}
	uw := &upgradeWriter{ResponseWriter: lw}
	uw.Flush()
	if !rec.Flushed {
		t.Fatal("Flush did not reach the recorder")
	}
	if uw.Unwrap() != lw {
		t.Fatal("Unwrap")
	}
	if err := http.NewResponseController(uw).SetWriteDeadline(time.Now().Add(time.Second)); err == nil {
		t.Fatal("a recorder has no deadlines; the error should come through")
	}
}

// TestAdmitLease: the explicit form counts without upgrading, until Release;
// Release acts once.
func TestAdmitLease(t *testing.T) {
	t.Parallel()
	o := testOptions(redistest.Prefix(t), "a")
	o.Limits.PerTenant = 1
	tr := newTracker(t, redistest.Standalone(t), o)
	r := httptest.NewRequest(http.MethodGet, "/?room=a&tenant=t&user=u", nil)
	l, err := tr.Admit(ctxT(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if l.Tenant() != "t" || l.User() != "u" || len(l.Rooms()) != 1 {
		t.Fatalf("lease: %q %q %q", l.Tenant(), l.User(), l.Rooms())
	}
	one := Count{Total: 1, Local: 1}
	totalIs(t, tr, one)
	if _, err := tr.Admit(ctxT(t), r); err == nil || httpStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("second Admit over the tenant limit: %v", err)
	}
	rec := httptest.NewRecorder()
	tr.WriteError(rec, &LimitError{Kind: LimitTenant, Name: "t", Limit: 1})
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("WriteError: %d %q", rec.Code, rec.Header())
	}
	if err := l.Join(ctxT(t), "b"); err != nil {
		t.Fatal(err)
	}
	roomIs(t, tr, "b", one)
	select {
	case <-l.Context().Done():
		t.Fatal("lease context done too early")
	default:
	}
	if !l.Release() || l.Release() {
		t.Fatal("Release must act exactly once")
	}
	<-l.Context().Done()
	if err := l.Join(ctxT(t), "c"); err != ErrClosed {
		t.Fatalf("Join after Release: %v", err)
	}
	totalIs(t, tr, Count{})
	roomIs(t, tr, "b", Count{})
	countIs(t, settleDeadline, "tenant", Count{}, func(ctx context.Context) (Count, error) { return tr.TenantCount(ctx, "t") })
	balanced(t, tr, 1)
}
