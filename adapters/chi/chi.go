package wschi

import (
	"cmp"
	"net/http"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"

	"github.com/headcount-go/headcount/adapters/internal/rawpath"
	wsnethttp "github.com/headcount-go/headcount/adapters/nethttp"
	"github.com/headcount-go/headcount/wsconn"
)

// DefaultParam is the room's URL parameter when Options.Param is empty.
const DefaultParam = "room"

// Options configure Handler and Middleware; the zero value is fine.
type Options struct {
	// Param is the URL parameter holding the room (chi.URLParam),
	// unescaped; "room" if "". A route without it joins no room.
	Param string
	// Rooms, if set, returns the rooms instead of Param (nil for none).
	Rooms func(*http.Request) []string
	// AcceptOptions are passed to websocket.Accept by Handler.
	AcceptOptions *websocket.AcceptOptions
}

// nethttp is opts for the net/http adapter, which does the work: chi
// routes plain http.Handlers and differs only in where the room comes from.
func (o Options) nethttp() wsnethttp.Options {
	rooms := o.Rooms
	if rooms == nil {
		name := cmp.Or(o.Param, DefaultParam)
		rooms = func(r *http.Request) []string { return []string{param(r, name)} }
	}
	return wsnethttp.Options{Rooms: rooms, AcceptOptions: o.AcceptOptions}
}

// param returns r's URL parameter name unescaped: chi routes on the raw
// path when there is one (see rawpath.Param), unless a middleware set the
// path it routes on (StripSlashes, URLFormat), which they take decoded.
func param(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePath != "" {
		return v
	}
	return rawpath.Param(r, v)
}

// Handler accepts the handshake with t.Accept (which answers refusals) and
// serves the counted connection with fn, closing it when fn ends; it is
// wsnethttp.Handler with the room from chi.
func Handler(t *wsconn.Tracker, fn func(c *wsconn.Conn, r *http.Request), opts Options) http.Handler {
	return wsnethttp.Handler(t, fn, opts.nethttp())
}

// Middleware is t.Middleware with the room from chi: it counts the
// connection of a handler that upgrades by itself while it runs. Add it
// where chi has matched the route already: Router.With or Router.Group,
// not Router.Use (see the package documentation).
func Middleware(t *wsconn.Tracker, opts Options) func(http.Handler) http.Handler {
	return wsnethttp.Middleware(t, opts.nethttp())
}
