package wsconn

import (
	"bufio"
	"errors"
	"iter"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
)

// watchedConn is the hijacked connection under an accepted WebSocket. A
// peer that goes away shows here first: coder/websocket does not close its
// connection when a read hits EOF or a reset, but the read fails here. So
// Close, and any failed Read or Write other than a timeout, report the
// connection gone, once.
type watchedConn struct {
	net.Conn
	done atomic.Bool
	gone func()
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !isTimeout(err) {
		c.report()
	}
	return n, err
}

func (c *watchedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && !isTimeout(err) {
		c.report()
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.report()
	return c.Conn.Close()
}

func (c *watchedConn) report() {
	if c.done.CompareAndSwap(false, true) {
		c.gone()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hijackWriter hands coder/websocket a watched connection on Hijack. It
// reaches the real Hijacker through Unwrap chains (http.ResponseController),
// so wrapping middlewares that only forward Unwrap still work.
type hijackWriter struct {
	http.ResponseWriter
	watch func(net.Conn) net.Conn
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return c, brw, err
	}
	wc := w.watch(c)
	// Writes go through brw.Writer; point it at the watched connection so a
	// failed write is seen too. net/http hands it over empty.
	if brw != nil && brw.Writer.Buffered() == 0 {
		brw.Writer.Reset(wc)
	}
	return wc, brw, nil
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeaderNow forwards gin's method, which coder/websocket calls so that
// gin sends the 101 before the hijack.
func (w *hijackWriter) WriteHeaderNow() {
	if n, ok := w.ResponseWriter.(interface{ WriteHeaderNow() }); ok {
		n.WriteHeaderNow()
	}
}

// isUpgrade reports whether r asks for a WebSocket upgrade at all; other
// requests are passed on uncounted.
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet &&
		headerHasToken(r.Header, "Connection", "upgrade") &&
		headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for t := range headerTokens(h, key) {
		if strings.EqualFold(t, token) {
			return true
		}
	}
	return false
}

// unwrapsTo reports whether w, or a ResponseWriter it wraps (Unwrap, as
// http.ResponseController follows it), is a T: whether it can flush, or
// hijack.
func unwrapsTo[T any](w http.ResponseWriter) bool {
	for {
		if _, ok := w.(T); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// headerTokens yields the comma-separated tokens of h's key headers,
// trimmed, empty ones left out.
func headerTokens(h http.Header, key string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range h.Values(key) {
			for t := range strings.SplitSeq(v, ",") {
				if t = strings.TrimSpace(t); t != "" && !yield(t) {
					return
				}
			}
		}
	}
}
