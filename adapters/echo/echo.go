package wsecho

import (
	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"

	"github.com/headcount-go/headcount/adapters/internal/rawpath"
	"github.com/headcount-go/headcount/wsconn"
)

// DefaultParam is the path parameter that names the room when
// Options.Param is empty.
const DefaultParam = "room"

// Options configure Handler and Middleware. The zero value takes the room
// from the path parameter :room of the matched route.
type Options struct {
	// Param is the path parameter holding the room (c.Param), unescaped.
	// Default "room". A route without it joins no room from the path.
	// (Echo matches a path holding an escape it cannot decode in place,
	// such as %2F, in its raw form, and gives such a request's parameters
	// escaped: "/ws/a%2Fb%20c" gives "a%2Fb%20c". The room is then
	// unescaped once, to "a/b c", so a room has one name whatever the
	// path's encoding, as with net/http's r.PathValue.)
	Param string
	// Rooms, if set, returns the rooms instead of Param (e.g. from
	// c.QueryParam, or nil for none). They are added to those of the
	// Tracker's Options.Rooms.
	Rooms func(c echo.Context) []string
	// AcceptOptions are passed to websocket.Accept by Handler (origin
	// checks, subprotocols, compression). Middleware does not upgrade and
	// ignores them.
	AcceptOptions *websocket.AcceptOptions
}

// withRooms sets c's request to carry its rooms for the Tracker.
func (o Options) withRooms(c echo.Context) {
	var rooms []string
	if o.Rooms != nil {
		rooms = o.Rooms(c)
	} else {
		name := o.Param
		if name == "" {
			name = DefaultParam
		}
		rooms = []string{param(c, name)}
	}
	c.SetRequest(wsconn.WithRooms(c.Request(), rooms...))
}

// param returns c's path parameter name, unescaped if echo matched the
// raw path (see Options.Param).
func param(c echo.Context, name string) string {
	return rawpath.Param(c.Request(), c.Param(name))
}

// Handler returns an echo handler that accepts the WebSocket handshake with
// t.Accept, in the rooms of opts, and calls fn with the counted connection.
// fn serves the connection until it returns; then Handler closes it: with
// StatusNormalClosure (1000) if fn returned nil, else with
// StatusInternalError (1011), and returns fn's error, which echo's
// error handler does not answer (the response is committed) but logging
// middlewares see. If fn panics, the connection is closed with 1011 and
// the panic goes on (to a Recover middleware, or to net/http). Either way
// the connection is uncounted exactly once; fn may also close it itself.
//
// Refused handshakes never reach fn: t.Accept answers them (400 for a bad
// room name, 429 for a limit, 503 while shutting down or under FailClosed,
// 426 for a request that is not a WebSocket handshake; and coder/websocket's
// own: 403 for an Origin it does not allow, 400 for a malformed handshake,
// 405 for a handshake that is not a GET when the route lets one through) through
// c.Response(), and Handler returns nil.
//
// fn must not keep the connection after returning: for a hub goroutine,
// call t.Accept, then Conn.Detach, in a handler of your own.
func Handler(t *wsconn.Tracker, fn func(c echo.Context, conn *wsconn.Conn) error, opts Options) echo.HandlerFunc {
	return func(c echo.Context) error {
		opts.withRooms(c)
		conn, err := t.Accept(c.Response(), c.Request(), opts.AcceptOptions)
		if err != nil {
			return nil // answered
		}
		return conn.Serve(func() error { return fn(c, conn) })
	}
}

// Middleware returns t.Middleware as echo middleware, with the rooms of
// opts: it counts the connection of a handler that upgrades by itself,
// with any WebSocket library, for as long as the handler runs (see
// wsconn.Tracker.Middleware). The handler finds the connection's Lease, to
// join more rooms, with wsconn.LeaseFromContext(c.Request().Context()).
//
// Add it to routes (e.GET(path, h, mw)) or groups, not with e.Pre: path
// parameters are only known once the router has matched.
func Middleware(t *wsconn.Tracker, opts Options) echo.MiddlewareFunc {
	wrap := echo.WrapMiddleware(t.Middleware)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		h := wrap(next)
		return func(c echo.Context) error {
			opts.withRooms(c)
			return h(c)
		}
	}
}
