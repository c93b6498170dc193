package wsconn

import (
	"context"
	"net/http"
)

// Lease is a connection counted without wsconn doing the upgrade: from
// Admit, for other WebSocket libraries and for connections handed to a hub
// goroutine, or from Middleware. It stays counted until Release.
type Lease struct{ m *member }

// Admit checks the names and limits of r and counts a connection, without
// upgrading: call it before upgrading with any WebSocket library, and
// Release when the connection ends (whichever goroutine sees that first;
// Release is idempotent). On error nothing is counted; answer the client
// with WriteError. Redis is waited on for at most RedisTimeout, or until
// ctx's deadline if sooner (cancelling ctx does not cut that wait short).
func (t *Tracker) Admit(ctx context.Context, r *http.Request) (*Lease, error) {
	if r == nil {
		return nil, errNilRequest
	}
	m, deadline, err := t.admit(ctx, r)
	if err != nil {
		t.met.rejected(reason(err))
		return nil, err
	}
	m.setClose(m.cancel, nil)
	if err := m.count(deadline); err != nil {
		return nil, err
	}
	return &Lease{m}, nil
}

// Release uncounts the connection and leaves its rooms. Only the first call
// does anything; it reports whether this call did.
func (l *Lease) Release() bool { return l.m.release() }

// Context is done once the lease is released or the Tracker drains or
// closes: a signal to close the connection.
func (l *Lease) Context() context.Context { return l.m.ctx }

// Join adds the connection to room; see Conn.Join.
func (l *Lease) Join(ctx context.Context, room string) error { return l.m.join(ctx, room) }

// Leave removes the connection from room; see Conn.Leave.
func (l *Lease) Leave(ctx context.Context, room string) error { return l.m.leave(ctx, room) }

// Rooms returns the connection's rooms, sorted.
func (l *Lease) Rooms() []string { return l.m.roomList() }

// Tenant returns the connection's tenant, "" if none.
func (l *Lease) Tenant() string { return l.m.tenant }

// User returns the connection's user, "" if anonymous.
func (l *Lease) User() string { return l.m.user }
