package wsgin

import (
	"bufio"
	"cmp"
	"net"
	"net/http"

	"github.com/coder/websocket"
	"github.com/gin-gonic/gin"

	"github.com/headcount-go/headcount/wsconn"
)

// DefaultParam is the room's path parameter when Options.Param is empty.
const DefaultParam = "room"

// Options configure Handler and Middleware; the zero value is fine.
type Options struct {
	// Param is the path parameter holding the room (c.Param); "room" if "".
	Param string
	// Rooms, if set, returns the rooms instead of Param (nil for none).
	Rooms         func(c *gin.Context) []string
	AcceptOptions *websocket.AcceptOptions // Handler's websocket.Accept options
}

// withRooms sets c.Request to carry the rooms for the Tracker.
func (o Options) withRooms(c *gin.Context) {
	rooms := []string{c.Param(cmp.Or(o.Param, DefaultParam))}
	if o.Rooms != nil {
		rooms = o.Rooms(c)
	}
	c.Request = wsconn.WithRooms(c.Request, rooms...)
}

// Handler accepts the handshake with t.Accept (which answers refusals) and
// serves the counted connection with fn, closing it when fn ends.
func Handler(t *wsconn.Tracker, fn func(c *gin.Context, conn *wsconn.Conn), opts Options) gin.HandlerFunc {
	return func(c *gin.Context) {
		opts.withRooms(c)
		conn, err := t.Accept(c.Writer, c.Request, opts.AcceptOptions)
		if err != nil {
			return // answered
		}
		_ = conn.Serve(func() error { fn(c, conn); return nil })
	}
}

// Middleware is t.Middleware for gin: it counts a connection while the
// handlers after it run, or answers a refused handshake and aborts.
func Middleware(t *wsconn.Tracker, opts Options) gin.HandlerFunc {
	return func(c *gin.Context) {
		opts.withRooms(c)
		passed := false
		t.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			passed = true
			c.Writer, c.Request = &writer{ResponseWriter: c.Writer, w: w}, r
			c.Next()
		})).ServeHTTP(c.Writer, c.Request)
		if !passed {
			c.Abort()
		}
	}
}

// writer is c.Writer with the calls of an upgrade (the 101, Hijack) going
// through w, the writer wsconn's middleware watches.
type writer struct {
	gin.ResponseWriter
	w http.ResponseWriter
}

func (g *writer) WriteHeader(code int) { g.w.WriteHeader(code) }

func (g *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(g.w).Hijack()
}

func (g *writer) Unwrap() http.ResponseWriter { return g.w }
