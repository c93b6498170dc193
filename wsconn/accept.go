package wsconn

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/coder/websocket"
)

// Conn is a WebSocket connection accepted and counted by a Tracker. It is
// uncounted exactly once, by whichever comes first: Close or CloseNow (on
// Conn or on the underlying websocket.Conn), the peer's close frame, a
// failed read or write on the connection (the peer or the network went
// away), the accepting handler returning or panicking (unless Detach was
// called), or Drain.
type Conn struct {
	m        *member
	ws       *websocket.Conn
	detached atomic.Bool
	stop     func() bool // unregisters the handler-return hook
}

// Accept checks r's names and takes its limits, upgrades it with
// coder/websocket (opts as for websocket.Accept), and counts the
// connection: globally, in its tenant, its user (if counted) and its rooms.
// For strict counters it returns once Redis holds the count; it waits on
// Redis for at most RedisTimeout in all.
//
// Refusals are answered before the upgrade and returned: 400 for invalid
// names (ErrInvalidName, ErrTooManyRooms), 429 with Retry-After for a limit
// (*LimitError; or, with Options.RejectWithClose, an upgrade closed at once
// with 1013), 503 when shutting down (ErrClosed) or when a limit could not
// be checked under FailClosed (ErrUnavailable). Requests that are not
// WebSocket handshakes, and handshakes through a ResponseWriter that cannot
// hijack (501), are answered by coder/websocket, uncounted.
//
// The handler should defer c.Close; when it returns (or panics) the
// connection is closed with StatusInternalError if still open, unless it
// called Detach to hand the connection to another goroutine. That is when
// r's context ends: one that ends sooner closes it then (see the package
// documentation).
func (t *Tracker) Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (*Conn, error) {
	if r == nil {
		return nil, errNilRequest
	}
	if !isUpgrade(r) || !unwrapsTo[http.Hijacker](w) {
		// Answers 426, 405 or 400, or 501 when w cannot hijack: before
		// anything is counted, where hijackWriter, which always has a
		// Hijack, would have coder/websocket send its 101 first.
		ws, err := websocket.Accept(w, r, opts)
		if err == nil {
			_ = ws.CloseNow()
			err = errors.New("wsconn: not a WebSocket handshake")
		}
		return nil, err
	}
	m, deadline, err := t.admit(r.Context(), r)
	if err != nil {
		t.refuse(w, r, opts, err)
		return nil, err
	}
	// Until the connection is counted, anything but success (an error, or
	// a panic in the upgrade: a framework's writer may hijack without
	// checking that it can) gives back the limits taken.
	ok := false
	defer func() {
		if !ok {
			m.release()
		}
	}()
	c := &Conn{m: m}
	hw := &hijackWriter{ResponseWriter: w, watch: func(nc net.Conn) net.Conn {
		return &watchedConn{Conn: nc, gone: func() { m.release() }}
	}}
	ws, err := websocket.Accept(hw, r, opts)
	if err != nil {
		return nil, err
	}
	c.ws = ws
	// Counted after the upgrade, as nothing is counted for a handshake
	// coder/websocket refuses, and the client does not wait for Redis; but
	// before Accept returns, so before the handler reads or writes a
	// message (strict counters).
	if err := m.count(deadline); err != nil {
		_ = ws.CloseNow()
		return nil, err
	}
	m.setClose(
		// Uncounted at once, like Close; the close handshake, which waits
		// for the peer, goes on in the background.
		func() {
			m.release()
			t.goBg(func() { _ = ws.Close(t.cfg.drainStatus, "server shutting down") })
		},
		func() { m.release(); _ = ws.CloseNow() },
	)
	// net/http cancels the request context when the handler returns, also
	// after a hijack and after a panic: that is how Accept sees it.
	c.stop = context.AfterFunc(r.Context(), c.handlerReturned)
	m.onRelease(func() { c.stop() })
	ok = true
	return c, nil
}

func (c *Conn) handlerReturned() {
	if c.detached.Load() || c.m.released() {
		return
	}
	c.m.release()
	c.m.t.runBg(func() { _ = c.ws.Close(websocket.StatusInternalError, "") })
}

// Serve runs fn, which serves the connection, and closes the connection
// when fn ends: with StatusNormalClosure (1000) when fn returns nil, with
// StatusInternalError (1011) when it returns an error or panics. A panic is
// not recovered: it goes on to the caller (net/http logs it, as for any
// handler) once the connection is closed and uncounted. A connection fn
// closed already is left alone. It returns fn's error.
func (c *Conn) Serve(fn func() error) (err error) {
	returned := false
	defer func() {
		code := websocket.StatusInternalError
		if returned && err == nil {
			code = websocket.StatusNormalClosure
		}
		_ = c.Close(code, "")
	}()
	err = fn()
	returned = true
	return err
}

// WS returns the underlying connection, for reading and writing. Closing it
// directly uncounts it too.
func (c *Conn) WS() *websocket.Conn { return c.ws }

// Close uncounts the connection at once, then closes it with the close
// handshake (websocket.Conn.Close).
func (c *Conn) Close(code websocket.StatusCode, reason string) error {
	c.m.release()
	return c.ws.Close(code, reason)
}

// CloseNow uncounts the connection and closes it without a close
// handshake.
func (c *Conn) CloseNow() error {
	c.m.release()
	return c.ws.CloseNow()
}

// Detach unties the connection from the handler that accepted it: it stays
// open and counted after the handler returns, until it is closed or its peer
// goes away (seen when a read or write fails, so keep reading, e.g. with
// websocket.Conn.CloseRead, and ping). Use it for handlers that hand the
// connection to a hub goroutine and return.
func (c *Conn) Detach() {
	c.detached.Store(true)
	c.stop()
}

// Join adds the connection to room, counting it there. Joining a room twice
// is a no-op. It fails with ErrInvalidName, ErrTooManyRooms (more than
// Options.MaxRoomsPerConn), a *LimitError (Limits.PerRoom or RoomCap), ErrUnavailable
// (the limit could not be checked, under FailClosed) or ErrClosed (the
// connection is uncounted already, or the Tracker is draining or closed). It waits on Redis for at most
// RedisTimeout, or until ctx's deadline if sooner (cancelling ctx ends only
// a wait on a concurrent Join of the same room); counting itself fails
// open.
func (c *Conn) Join(ctx context.Context, room string) error { return c.m.join(ctx, room) }

// Leave removes the connection from room; leaving a room it is not in is a
// no-op. From a strict room (or any room when room limits are set) it
// waits on Redis, at most RedisTimeout or until ctx's deadline; past that the
// change is sent in the background.
func (c *Conn) Leave(ctx context.Context, room string) error { return c.m.leave(ctx, room) }

// Rooms returns the connection's rooms, sorted.
func (c *Conn) Rooms() []string { return c.m.roomList() }

// Tenant returns the connection's tenant, "" if none.
func (c *Conn) Tenant() string { return c.m.tenant }

// User returns the connection's user, "" if anonymous.
func (c *Conn) User() string { return c.m.user }

// refuse answers a refused handshake and records why.
func (t *Tracker) refuse(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions, err error) {
	t.met.rejected(reason(err))
	if t.cfg.RejectWithClose && errors.Is(err, ErrLimit) {
		ws, aerr := websocket.Accept(w, r, opts)
		if aerr != nil {
			return
		}
		// The close handshake waits for the peer; the handler need not.
		t.goBg(func() { _ = ws.Close(websocket.StatusTryAgainLater, closeReason(err)) })
		return
	}
	t.WriteError(w, err)
}

// closeReason is err's text cut to what a close frame can carry.
func closeReason(err error) string {
	var le *LimitError
	s := err.Error()
	if errors.As(err, &le) {
		s = string(le.Kind) + " limit reached"
	}
	if len(s) > 123 {
		s = s[:123]
	}
	return s
}
