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

// tenantCap, userCap and roomCap return the cap in force for a name, 0 for
// none: the fixed one, or the answer of the cap function.
func (t *Tracker) tenantCap(tenant string) int64 {
	return capOf(t.cfg.Limits.PerTenant, t.cfg.Limits.TenantCap, tenant)
}

func (t *Tracker) userCap(user string) int64 {
	return capOf(t.cfg.Limits.PerUser, t.cfg.Limits.UserCap, user)
}

func (t *Tracker) roomCap(room string) int64 {
	return capOf(t.cfg.Limits.PerRoom, t.cfg.Limits.RoomCap, room)
}

func capOf(fixed int64, f func(string) int64, name string) int64 {
	if f != nil {
		return max(f(name), 0)
	}
	return fixed
}

// roomsLimited reports whether some room may have a cap: then every leave
// of a room is acknowledged at once, as it may free a place.
func (t *Tracker) roomsLimited() bool {
	return t.cfg.Limits.PerRoom > 0 || t.cfg.Limits.RoomCap != nil
}

// reserve takes every limit the connection is subject to, one key after
// the other in a fixed order (tenant, user, rooms sorted), each an atomic
// check-and-count in Redis; if one refuses, those taken are given back. The
// fixed order means two handshakes racing for the last places never hold
// one key each and both fail.
func (m *member) reserve(deadline time.Time) error {
	t := m.t
	var order []limited
	if m.tenant != "" {
		if limit := t.tenantCap(m.tenant); limit > 0 {
			order = append(order, limited{LimitTenant, m.tenant, tenantKey(m.tenant), limit})
		}
	}
	if m.user != "" {
		if limit := t.userCap(m.user); limit > 0 {
			order = append(order, limited{LimitUser, m.user, userKey(m.user), limit})
		}
	}
	if t.roomsLimited() {
		rooms := make([]string, 0, len(m.rooms))
		for room := range m.rooms {
			rooms = append(rooms, room)
		}
		slices.Sort(rooms)
		for _, room := range rooms {
			if limit := t.roomCap(room); limit > 0 {
				order = append(order, limited{LimitRoom, room, roomKey(room), limit})
			}
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
			m.keys = append(m.keys, heldKey{key: l.key, strict: true})
		}
		m.mu.Unlock()
	}
	return nil
}

// limitInc takes one place under l. It returns nil when the place is taken,
// also when Redis could not be asked and the policy is to fail open (the
// place is then counted here and reaches Redis later). A refusal is a
// *LimitError carrying the usage Redis saw.
func (t *Tracker) limitInc(deadline time.Time, l limited) error {
	usage, held, err := t.condInc(deadline, l.key, l.limit)
	switch {
	case err == nil && held:
		return nil
	case err == nil:
		return &LimitError{Kind: l.kind, Name: l.name, Limit: l.limit, Usage: usage}
	}
	if t.cfg.FailClosed {
		return fmt.Errorf("%w: checking the %s limit: %w", ErrUnavailable, l.kind, err)
	}
	t.cfg.log.Warn("wsconn: limit not checked, admitting (fail-open)", "limit", l.kind, "name", l.name, "err", err)
	t.addLocal(l.key, 1)
	return nil
}
