package wsnethttp

import (
	"net/http"

	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/wsconn"
)

// DefaultParam is the path wildcard that names the room when Options.Param
// is empty.
const DefaultParam = "room"

// Options configure Handler and Middleware. The zero value takes the room
// from the wildcard {room} of the matched ServeMux pattern.
type Options struct {
	// Param is the path wildcard holding the room (r.PathValue). Default
	// "room". A request whose pattern has no such wildcard joins no room
	// from the path.
	Param string
	// Rooms, if set, returns the rooms instead of Param (e.g. from a query
	// parameter, or nil for none). They are added to those of the Tracker's
	// Options.Rooms.
	Rooms func(*http.Request) []string
	// AcceptOptions are passed to websocket.Accept by Handler (origin
	// checks, subprotocols, compression). Middleware does not upgrade and
	// ignores them.
	AcceptOptions *websocket.AcceptOptions
}

// withRooms returns r carrying its rooms for the Tracker.
func (o Options) withRooms(r *http.Request) *http.Request {
	if o.Rooms != nil {
		return wsconn.WithRooms(r, o.Rooms(r)...)
	}
	param := o.Param
	if param == "" {
		param = DefaultParam
	}
	return wsconn.WithRooms(r, r.PathValue(param))
}

// Handler returns a handler that accepts the WebSocket handshake with
// t.Accept, in the rooms of opts, and calls fn with the counted connection.
// fn serves the connection until it returns; then Handler closes it with
// StatusNormalClosure (1000). If fn panics, the connection is closed with
// StatusInternalError (1011) and the panic goes on to net/http, which logs
// it (http.ErrAbortHandler silently). Either way the connection is
// uncounted exactly once; fn may also close it itself.
//
// Refused handshakes never reach fn: t.Accept answers them (400 for a bad
// room name, 429 for a limit, 503 while shutting down or under FailClosed,
// 426 for a request that is not a WebSocket handshake; and coder/websocket's
// own: 403 for an Origin it does not allow, 400 for a malformed handshake,
// 405 for a handshake that is not a GET when the route lets one through).
//
// fn must not keep the connection after returning: for a hub goroutine,
// call t.Accept, then Conn.Detach, in a handler of your own.
func Handler(t *wsconn.Tracker, fn func(c *wsconn.Conn, r *http.Request), opts Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = opts.withRooms(r)
		c, err := t.Accept(w, r, opts.AcceptOptions)
		if err != nil {
			return // answered
		}
		_ = c.Serve(func() error { fn(c, r); return nil })
	})
}

// Middleware returns t.Middleware with the rooms of opts: it counts the
// connection of a handler that upgrades by itself, with any WebSocket
// library, for as long as the handler runs (see wsconn.Tracker.Middleware).
// The handler finds the connection's Lease, to join more rooms, with
// wsconn.LeaseFromContext(r.Context()).
//
// Wrap each route's handler, not the whole ServeMux: r.PathValue is only
// set once the mux has matched a pattern.
func Middleware(t *wsconn.Tracker, opts Options) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		h := t.Middleware(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, opts.withRooms(r))
		})
	}
}
