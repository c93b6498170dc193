// Package serve is the part the adapters share: running the user's function
// with an accepted connection and closing it afterwards, and the default
// room source (one route parameter).
package serve

import (
	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/wsconn"
)

// DefaultParam is the route parameter holding the room, by default, in
// every adapter.
const DefaultParam = "room"

// Run runs fn, which serves c, and closes c when fn ends: with
// StatusNormalClosure (1000) when fn returns nil, StatusInternalError (1011)
// when it returns an error or panics. A panic is not recovered: it goes on
// to the framework (net/http logs it and drops the request, as for any
// handler) once c is closed. Closing c uncounts it at once, before the close
// handshake; a connection fn closed already is left alone.
func Run(c *wsconn.Conn, fn func() error) (err error) {
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

// Room returns the room named by a route parameter's value: none when the
// value is empty (the route has no such parameter).
func Room(value string) []string {
	if value == "" {
		return nil
	}
	return []string{value}
}
