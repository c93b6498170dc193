package wsconn

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Middleware counts the connections of a handler that upgrades by itself,
// with any WebSocket library. For a handshake request it checks names and
// limits before calling next (refusing like Accept), counts the connection
// when next upgrades (a 101 status or a successful Hijack, through a writer
// that forwards Hijack, Flush and Unwrap), and uncounts it when next
// returns or panics. next finds the connection's Lease, to Join rooms, with
// LeaseFromContext(r.Context()). Other requests, and handshakes through a
// ResponseWriter that cannot hijack (whose upgrade next's library
// refuses), pass through uncounted.
//
// At shutdown, Drain cancels the Lease's Context and waits for next to
// return: next closes its connection once that Context is done (Drain
// closes the hijacked connection under it only when Drain's ctx ends,
// without a close frame).
//
// The count lasts as long as next runs: a handler that returns right after
// the upgrade and leaves the connection to a hub goroutine would be
// uncounted at once. Such handlers use Accept with Conn.Detach, or Admit
// and Lease.Release, instead.
func (t *Tracker) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isUpgrade(r) || !unwrapsTo[http.Hijacker](w) {
			// Nothing to count: next's upgrade, if it tries one, fails
			// on a writer that cannot hijack.
			next.ServeHTTP(w, r)
			return
		}
		m, deadline, err := t.admit(r.Context(), r)
		if err != nil {
			// next's own accept options are unknown here: a refusal with
			// RejectWithClose keeps the default origin check and takes the
			// client's first subprotocol, without which browsers fail the
			// handshake before they see the close.
			t.refuse(w, r, &websocket.AcceptOptions{Subprotocols: slices.Collect(headerTokens(r.Header, "Sec-WebSocket-Protocol"))}, err)
			return
		}
		// Deferred, so a panic in next uncounts too (and still panics).
		defer m.release()
		m.setClose(m.cancel, nil)
		uw := &upgradeWriter{ResponseWriter: w, m: m, ctx: r.Context(), left: time.Until(deadline)}
		next.ServeHTTP(uw, r.WithContext(context.WithValue(r.Context(), leaseKey{}, &Lease{m})))
	})
}

// upgradeWriter sees the upgrade of a handler wrapped by Middleware.
type upgradeWriter struct {
	http.ResponseWriter
	m    *member
	ctx  context.Context // the request's
	left time.Duration   // of the handshake's RedisTimeout, after its limit checks
	once sync.Once
}

// upgraded counts the connection, once, before the upgrade completes: a
// 101 is only sent at the hijack that follows it, and a library that
// hijacks first writes its 101 after Hijack returns. The count waits on
// Redis for what the limit checks left of RedisTimeout (as with Accept,
// one RedisTimeout per handshake, however long next takes to upgrade) and
// not past the request's deadline; after that it is sent in the
// background.
func (w *upgradeWriter) upgraded() {
	w.once.Do(func() {
		_ = w.m.count(deadlineWithin(w.ctx, w.left))
	})
}

func (w *upgradeWriter) WriteHeader(code int) {
	if code == http.StatusSwitchingProtocols {
		w.upgraded()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return c, brw, err
	}
	w.upgraded()
	w.m.setClose(w.m.cancel, func() { _ = c.Close() })
	return c, brw, nil
}

func (w *upgradeWriter) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeaderNow forwards gin's method; see hijackWriter.
func (w *upgradeWriter) WriteHeaderNow() {
	if n, ok := w.ResponseWriter.(interface{ WriteHeaderNow() }); ok {
		n.WriteHeaderNow()
	}
}
