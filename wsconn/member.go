package wsconn

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// member is one counted connection, whichever form admitted it (Accept,
// Middleware, Admit): its names, the counters it holds and its rooms. All
// it counts it takes back exactly once, in release.
type member struct {
	t      *Tracker
	tenant string
	user   string
	meta   string // presence metadata of the user

	mu    sync.Mutex
	phase phase
	keys  []heldKey // global, tenant and user counters held
	rooms map[string]roomState
	// inRooms holds the rooms where the user is counted as a member
	// (presence).
	inRooms map[string]bool
	joins   map[string]*joinWait // limited joins waiting on Redis
	drain   func()               // asks the connection to close (Drain)
	force   func()               // closes it at once (Drain past its deadline)
	// ctx is the Lease context: done on release or Drain.
	ctx    context.Context
	cancel context.CancelFunc
	after  []func() // run once released
}

type phase uint8

const (
	phaseNew      phase = iota // names checked, limits maybe reserved
	phaseActive                // counted
	phaseReleased              // uncounted; final
)

type roomState uint8

const (
	roomPending roomState = iota // named before the upgrade; counted with it
	roomJoining                  // a limited join is waiting on Redis
	roomCounted
)

type heldKey struct {
	key    string
	strict bool // acknowledged when released
	member bool // a presence member key: released through memberOut
}

// newMember reads and checks the names of a connection; nothing touches
// Redis before this passes, so bad input never writes.
func (t *Tracker) newMember(r *http.Request) (*member, error) {
	m := &member{t: t, rooms: make(map[string]roomState), joins: make(map[string]*joinWait)}
	if t.cfg.Tenant != nil {
		if m.tenant = t.cfg.Tenant(r); m.tenant != "" {
			if err := checkName("tenant", m.tenant); err != nil {
				return nil, err
			}
		}
	}
	if t.cfg.User != nil {
		if m.user = t.cfg.User(r); m.user != "" {
			if err := checkName("user", m.user); err != nil {
				return nil, err
			}
			meta, err := t.readMetadata(r)
			if err != nil {
				return nil, err
			}
			m.meta = meta
		}
	}
	var rooms []string
	if t.cfg.Rooms != nil {
		rooms = t.cfg.Rooms(r)
	}
	rooms = slices.Concat(rooms, roomsFrom(r.Context()))
	for _, room := range rooms {
		if err := checkName("room", room); err != nil {
			return nil, err
		}
		m.rooms[room] = roomPending
	}
	if len(m.rooms) > t.cfg.maxRooms {
		return nil, fmt.Errorf("%w: %d rooms, at most %d", ErrTooManyRooms, len(m.rooms), t.cfg.maxRooms)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// count counts the connection in every counter it is not in yet and waits
// (until deadline) for Redis to hold the strict ones.
func (m *member) count(deadline time.Time) error {
	t := m.t
	m.mu.Lock()
	if m.phase != phaseNew {
		m.mu.Unlock()
		return ErrClosed
	}
	m.phase = phaseActive
	var acks []string
	hold := func(h heldKey) {
		m.keys = append(m.keys, h)
		if h.strict {
			acks = append(acks, h.key)
		}
	}
	add := func(key string) {
		if slices.ContainsFunc(m.keys, func(h heldKey) bool { return h.key == key }) {
			return // taken by reserve
		}
		t.addLocal(key, 1)
		hold(heldKey{key: key, strict: !t.cfg.Lax})
	}
	addMember := func(group string) { // counted, not listed: overall and a tenant's
		hold(heldKey{key: t.memberIn(m, group, false), strict: !t.cfg.Lax, member: true})
	}
	add(globalKey)
	if m.tenant != "" {
		add(tenantKey(m.tenant))
	}
	if m.user != "" && t.cfg.countUsers {
		add(userKey(m.user))
	}
	if m.presenceOn() {
		addMember(t.onlineGroup(m.user))
		if m.tenant != "" {
			addMember(tenantKey(m.tenant))
		}
	}
	for room, st := range m.rooms {
		switch st {
		case roomPending:
			acks = t.roomIn(m, room, acks)
			m.rooms[room] = roomCounted
		case roomCounted: // a limited room, counted by its limit check
			if k := m.roomMemberIn(room); k != "" {
				acks = append(acks, k)
			}
		}
	}
	t.local.connChange(m.tenant, 1)
	m.mu.Unlock()
	t.met.opened.Inc()
	_, _ = t.accepted.Inc(t.life, acceptedKey, 1) // in memory; fails only once closed
	t.ack(deadline, acks)
	return nil
}

// release uncounts everything the member holds, once; later calls report
// false. It never waits on Redis, so it is safe from any goroutine, also
// from inside a connection's Close.
func (m *member) release() bool {
	t := m.t
	m.mu.Lock()
	if m.phase == phaseReleased {
		m.mu.Unlock()
		return false
	}
	was := m.phase
	m.phase = phaseReleased
	keys, rooms, after := m.keys, m.rooms, m.after
	m.keys, m.rooms, m.after = nil, nil, nil
	var acks []string
	// Rooms first, then the total and the tenant's: no reader of this
	// node's counts sees a room hold the connection after the total let it
	// go (admit counts in the reverse order).
	for room, st := range rooms {
		// A join still waiting on Redis sees the release and undoes itself.
		if st == roomCounted {
			acks = t.roomOut(m, room, acks)
		}
	}
	for _, h := range keys {
		switch {
		case h.member:
			if t.memberOut(h.key, h.strict) {
				acks = append(acks, h.key)
			}
		default:
			t.addLocal(h.key, -1)
			if h.strict {
				acks = append(acks, h.key)
			}
		}
	}
	if was == phaseActive {
		t.local.connChange(m.tenant, -1)
	}
	m.mu.Unlock()
	if was == phaseActive {
		t.met.closed.Inc()
	}
	t.ackAsync(acks)
	t.untrack(m)
	if m.cancel != nil {
		m.cancel()
	}
	for _, f := range after {
		f()
	}
	return true
}

// setClose sets how Drain asks the connection to close, and how it closes
// it at once when Drain's context ends.
func (m *member) setClose(drain, force func()) {
	m.mu.Lock()
	m.drain, m.force = drain, force
	m.mu.Unlock()
}

func (m *member) closers() (drain, force func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.drain, m.force
}

// onRelease runs f once the member is released (at once if it is).
func (m *member) onRelease(f func()) {
	m.mu.Lock()
	if m.phase != phaseReleased {
		m.after = append(m.after, f)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	f()
}

func (m *member) released() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.phase == phaseReleased
}

// admit runs the steps every form shares before the upgrade: refuse while
// shutting down, check names, take the limits.
func (t *Tracker) admit(ctx context.Context, r *http.Request) (*member, time.Time, error) {
	if t.draining.Load() || t.closed.Load() {
		return nil, time.Time{}, errShuttingDown
	}
	m, err := t.newMember(r)
	if err != nil {
		return nil, time.Time{}, err
	}
	// Again: the callbacks newMember ran may have taken a while.
	if err := t.track(m); err != nil {
		m.cancel()
		return nil, time.Time{}, err
	}
	deadline := t.deadline(ctx)
	if err := m.reserve(deadline); err != nil {
		return nil, time.Time{}, err
	}
	return m, deadline, nil
}
