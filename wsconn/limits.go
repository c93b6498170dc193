package wsconn

import (
	"fmt"
	"slices"
	"time"
)

// limited is one limit a connection is subject to.
type limited struct {
	kind  LimitKind
	name  string
	key   string
	limit int64
}

// reserve takes every limit the connection is subject to, one key after
// the other in a fixed order (tenant, user, rooms sorted), each an atomic
// check-and-count in Redis; if one refuses, those taken are given back. The
// fixed order means two handshakes racing for the last places never hold
// one key each and both fail.
func (m *member) reserve(deadline time.Time) error {
	t := m.t
	lim := t.cfg.Limits
	var order []limited
	if lim.PerTenant > 0 && m.tenant != "" {
		order = append(order, limited{LimitTenant, m.tenant, tenantKey(m.tenant), lim.PerTenant})
	}
	if lim.PerUser > 0 && m.user != "" {
		order = append(order, limited{LimitUser, m.user, userKey(m.user), lim.PerUser})
	}
	if lim.PerRoom > 0 {
		rooms := make([]string, 0, len(m.rooms))
		for room := range m.rooms {
			rooms = append(rooms, room)
		}
		slices.Sort(rooms)
		for _, room := range rooms {
			order = append(order, limited{LimitRoom, room, roomKey(room), lim.PerRoom})
		}
	}
	for _, l := range order {
		if err := t.limitInc(deadline, l); err != nil {
			m.release()
			return err
		}
		m.mu.Lock()
		if l.kind == LimitRoom {
			t.local.roomChange(l.name, 1)
			m.rooms[l.name] = roomCounted
		} else {
			m.keys = append(m.keys, heldKey{l.key, true})
		}
		m.mu.Unlock()
	}
	return nil
}

// limitInc takes one place under l. It returns nil when the place is taken,
// also when Redis could not be asked and the policy is to fail open (the
// place is then counted here and reaches Redis later).
func (t *Tracker) limitInc(deadline time.Time, l limited) error {
	held, err := t.condInc(deadline, l.key, l.limit)
	switch {
	case err == nil && held:
		return nil
	case err == nil:
		return &LimitError{Kind: l.kind, Name: l.name, Limit: l.limit}
	}
	t.redisTrouble("limit", err)
	if t.cfg.FailClosed {
		return fmt.Errorf("%w: checking the %s limit: %w", ErrUnavailable, l.kind, err)
	}
	t.cfg.log.Warn("wsconn: limit not checked, admitting (fail-open)", "limit", l.kind, "name", l.name, "err", err)
	t.addLocal(l.key, 1)
	return nil
}
