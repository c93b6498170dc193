package wsconn

import (
	"context"
	"errors"
	"fmt"

	"github.com/headcount-go/headcount/internal/icounter"
)

// Count is a live connection count: cluster-wide, and on this node.
type Count struct {
	Total int64 `json:"total"` // every live node's connections
	Local int64 `json:"local"` // this node's
}

// Every read asks Redis (one round trip per Redis node for any number of
// keys) and adds this node's own count as it is in memory, so Local is
// exact, and Total holds every other node's strict connection from the
// moment its handshake returned; their strict closes are at most 10 ms
// (plus a round trip) behind, as they are sent in the background, and
// their lax changes at most FlushInterval (plus a round trip). A read is a plain
// hash read; concurrent reads of one count share a round trip. Reads wait
// on Redis for at most RedisTimeout, or until ctx ends, and then fail with
// ErrUnavailable.

// Total returns the number of connections.
func (t *Tracker) Total(ctx context.Context) (Count, error) {
	return t.read1(ctx, globalKey)
}

// Count returns the number of connections in room.
func (t *Tracker) Count(ctx context.Context, room string) (Count, error) {
	if err := checkName("room", room); err != nil {
		return Count{}, err
	}
	return t.read1(ctx, roomKey(room))
}

// TenantCount returns the number of connections of tenant.
func (t *Tracker) TenantCount(ctx context.Context, tenant string) (Count, error) {
	if err := checkName("tenant", tenant); err != nil {
		return Count{}, err
	}
	return t.read1(ctx, tenantKey(tenant))
}

// UserCount returns the number of connections of user. It needs per-user
// counting (Options.CountUsers or Limits.PerUser) and fails with
// ErrUsersNotCounted otherwise.
func (t *Tracker) UserCount(ctx context.Context, user string) (Count, error) {
	if !t.cfg.countUsers {
		return Count{}, ErrUsersNotCounted
	}
	if err := checkName("user", user); err != nil {
		return Count{}, err
	}
	return t.read1(ctx, userKey(user))
}

// Counts returns the number of connections in each room, in one round trip
// per Redis node.
func (t *Tracker) Counts(ctx context.Context, rooms ...string) (map[string]Count, error) {
	keys := make([]string, len(rooms))
	for i, room := range rooms {
		if err := checkName("room", room); err != nil {
			return nil, err
		}
		keys[i] = roomKey(room)
	}
	vals, err := t.read(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Count, len(rooms))
	for i, room := range rooms {
		out[room] = vals[i]
	}
	return out, nil
}

// readErr maps a failed read to ErrClosed or ErrUnavailable.
func (t *Tracker) readErr(err error) error {
	switch {
	case errors.Is(err, icounter.ErrClosed):
		return ErrClosed
	case errors.Is(err, context.DeadlineExceeded):
		// The read goes on in the background; the engine counts it in
		// headcount_redis_errors_total if it fails.
		t.met.timeouts.Inc()
		err = errTimeout
	}
	// A failed call is counted once, by the engine's observer
	// (metrics.ScriptDone).
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// LocalRooms returns the rooms with connections on this node, sorted.
func (t *Tracker) LocalRooms() []string { return t.local.roomNames() }

func (t *Tracker) read1(ctx context.Context, key string) (Count, error) {
	v, err := t.read(ctx, []string{key})
	if err != nil {
		return Count{}, err
	}
	return v[0], nil
}

// read fetches keys in one batch, waiting for at most RedisTimeout.
func (t *Tracker) read(ctx context.Context, keys []string) ([]Count, error) {
	if t.closed.Load() {
		return nil, ErrClosed // also for no keys: every read after Close
	}
	if len(keys) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithDeadline(ctx, t.deadline(ctx))
	defer cancel()
	vals, err := t.strict.GetMany(ctx, keys)
	if err != nil {
		return nil, t.readErr(err)
	}
	out := make([]Count, len(keys))
	for i, v := range vals {
		out[i] = Count{Total: v.Total, Local: v.Mine}
	}
	return out, nil
}
