package wsgorilla

import (
	"net/http"

	"github.com/coder/websocket"
	"github.com/gorilla/mux"

	wsnethttp "github.com/headcount-go/headcount/adapters/nethttp"
	"github.com/headcount-go/headcount/wsconn"
)

// DefaultParam is the route variable that names the room when
// Options.Param is empty.
const DefaultParam = "room"

// Options configure Handler and Middleware. The zero value takes the room
// from the route variable {room} (mux.Vars).
type Options struct {
	// Param is the route variable holding the room (mux.Vars). Default
	// "room". A route without it joins no room from the path. The value
	// is taken as mux gives it: decoded, unless the Router uses
	// UseEncodedPath (then set Rooms, with url.PathUnescape). mux matches
	// the decoded path by default, so a room name holding '/' (sent as
	// %2F) finds no route (404) without UseEncodedPath.
	Param string
	// Rooms, if set, returns the rooms instead of Param (e.g. from a query
	// parameter, or nil for none). They are added to those of the
	// Tracker's Options.Rooms.
	Rooms func(*http.Request) []string
	// AcceptOptions are passed to websocket.Accept by Handler (origin
	// checks, subprotocols, compression). Middleware does not upgrade and
	// ignores them.
	AcceptOptions *websocket.AcceptOptions
}

// nethttp is opts for the net/http adapter, which does the work: gorilla/mux
// routes plain http.Handlers and differs only in where the room comes from.
func (o Options) nethttp() wsnethttp.Options {
	rooms := o.Rooms
	if rooms == nil {
		param := o.Param
		if param == "" {
			param = DefaultParam
		}
		rooms = func(r *http.Request) []string { return []string{mux.Vars(r)[param]} }
	}
	return wsnethttp.Options{Rooms: rooms, AcceptOptions: o.AcceptOptions}
}

// Handler returns a handler that accepts the WebSocket handshake with
// t.Accept, in the rooms of opts, and calls fn with the counted connection.
// fn serves the connection until it returns; then Handler closes it with
// StatusNormalClosure (1000). If fn panics, the connection is closed with
// StatusInternalError (1011) and the panic goes on to net/http (or a
// recovering middleware). Either way the connection is uncounted exactly
// once; fn may also close it itself.
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
	return wsnethttp.Handler(t, fn, opts.nethttp())
}

// Middleware returns t.Middleware as a mux.MiddlewareFunc, with the rooms
// of opts: it counts the connection of a handler that upgrades by itself,
// with any WebSocket library (gorilla/websocket included), for as long as
// the handler runs (see wsconn.Tracker.Middleware). The handler finds the
// connection's Lease, to join more rooms, with
// wsconn.LeaseFromContext(r.Context()).
//
// Router.Use runs middleware after the route matched, so mux.Vars is set;
// a handler that wraps the whole Router from outside would see no vars.
func Middleware(t *wsconn.Tracker, opts Options) mux.MiddlewareFunc {
	return wsnethttp.Middleware(t, opts.nethttp())
}
