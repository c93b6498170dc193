package wsconn

import (
	"context"
	"net/http"
	"slices"
)

type roomsKey struct{}

// WithRooms returns r carrying extra static rooms for the connection, added
// to those of Options.Rooms; empty names are ignored. Adapters use it for
// rooms taken from a route parameter of their framework:
//
//	c, err := tracker.Accept(w, wsconn.WithRooms(r, ctx.Param("room")), nil)
func WithRooms(r *http.Request, rooms ...string) *http.Request {
	// An empty value is a route without the parameter: no room.
	rooms = slices.DeleteFunc(slices.Clone(rooms), func(s string) bool { return s == "" })
	if len(rooms) == 0 {
		return r
	}
	all := append(append([]string(nil), roomsFrom(r.Context())...), rooms...)
	return r.WithContext(context.WithValue(r.Context(), roomsKey{}, all))
}

func roomsFrom(ctx context.Context) []string {
	rooms, _ := ctx.Value(roomsKey{}).([]string)
	return rooms
}

type leaseKey struct{}

// LeaseFromContext returns the Lease of a connection counted by
// Middleware, from the request context the wrapped handler receives, so
// that the handler can Join and Leave rooms.
func LeaseFromContext(ctx context.Context) (*Lease, bool) {
	l, ok := ctx.Value(leaseKey{}).(*Lease)
	return l, ok
}
