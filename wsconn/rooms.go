package wsconn

import (
	"context"
	"fmt"
	"slices"
)

// roomIn counts m's join of room here (and its user's, with presence) and
// returns acks with the keys to acknowledge added: none when the room is
// lax. Call with m.mu held.
func (t *Tracker) roomIn(m *member, room string, acks []string) []string {
	auto := t.local.roomChange(room, 1)
	t.addLocal(roomKey(room), 1)
	mk := m.roomMemberIn(room)
	if t.roomLax(room, auto) {
		return acks
	}
	acks = append(acks, roomKey(room))
	if mk != "" {
		acks = append(acks, mk)
	}
	return acks
}

// roomOut counts m's leave of room and returns acks with the keys to
// acknowledge added. Leaves of limited rooms are always acknowledged: they
// free a place. Call with m.mu held.
func (t *Tracker) roomOut(m *member, room string, acks []string) []string {
	auto := t.local.roomChange(room, -1)
	t.addLocal(roomKey(room), -1)
	strict := !t.roomLax(room, auto)
	if strict || t.roomsLimited() {
		acks = append(acks, roomKey(room))
	}
	if mk := m.roomMemberOut(room, strict); mk != "" {
		acks = append(acks, mk)
	}
	return acks
}

func (t *Tracker) roomLax(room string, auto bool) bool {
	return auto || t.cfg.LaxRooms != nil && t.cfg.LaxRooms(room)
}

func (m *member) join(ctx context.Context, room string) error {
	t := m.t
	if err := checkName("room", room); err != nil {
		t.met.rejected(reason(err))
		return err
	}
	m.mu.Lock()
	if jw := m.joins[room]; jw != nil {
		// A join of room is waiting on Redis: its outcome is ours, within
		// the same RedisTimeout.
		m.mu.Unlock()
		select {
		case <-jw.done:
			return jw.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if m.phase == phaseReleased || t.draining.Load() || t.closed.Load() {
		// Uncounted already, or about to be: Drain closes it, Close
		// stops counting it.
		m.mu.Unlock()
		t.met.rejected(reason(ErrClosed))
		return ErrClosed
	}
	if _, ok := m.rooms[room]; ok {
		m.mu.Unlock()
		return nil
	}
	if len(m.rooms) >= t.cfg.maxRooms {
		m.mu.Unlock()
		t.met.rejected(reason(ErrTooManyRooms))
		return fmt.Errorf("%w: at most %d", ErrTooManyRooms, t.cfg.maxRooms)
	}
	limit := t.roomCap(room)
	if limit == 0 {
		if m.phase == phaseNew {
			m.rooms[room] = roomPending // counted with the upgrade
			m.mu.Unlock()
			return nil
		}
		acks := t.roomIn(m, room, nil)
		m.rooms[room] = roomCounted
		m.mu.Unlock()
		t.ack(t.deadline(ctx), acks)
		return nil
	}
	m.rooms[room] = roomJoining
	jw := &joinWait{done: make(chan struct{})}
	m.joins[room] = jw
	m.mu.Unlock()
	l := limited{LimitRoom, room, roomKey(room), limit}
	// One RedisTimeout for the limit and the member key (presence) both.
	deadline := t.deadline(ctx)
	err := t.limitInc(deadline, l)
	m.mu.Lock()
	err = m.settleJoin(room, l, err)
	var mk []string
	if err == nil && m.phase == phaseActive {
		if k := m.roomMemberIn(room); k != "" { // before the upgrade, count does it
			mk = []string{k}
		}
	}
	jw.err = err
	delete(m.joins, room)
	m.mu.Unlock()
	close(jw.done)
	t.ack(deadline, mk)
	return err
}

// settleJoin records the outcome err of a limited join of room, with m.mu
// held, and returns the join's result: a join that took its place after the
// connection was released gives the place back.
func (m *member) settleJoin(room string, l limited, err error) error {
	t := m.t
	switch {
	case m.phase == phaseReleased:
		if err == nil {
			t.addLocal(l.key, -1)
			t.ackAsync([]string{l.key})
		}
		return ErrClosed
	case err != nil:
		delete(m.rooms, room)
		t.met.rejected(reason(err))
		return err
	}
	t.local.roomChange(room, 1)
	m.rooms[room] = roomCounted
	return nil
}

func (m *member) leave(ctx context.Context, room string) error {
	if err := checkName("room", room); err != nil {
		return err
	}
	t := m.t
	m.mu.Lock()
	if err := m.awaitJoin(ctx, room); err != nil {
		return err
	}
	st, ok := m.rooms[room]
	if !ok || m.phase == phaseReleased {
		m.mu.Unlock()
		return nil
	}
	delete(m.rooms, room)
	var acks []string
	if st == roomCounted {
		acks = t.roomOut(m, room, nil)
	}
	m.mu.Unlock()
	t.ack(t.deadline(ctx), acks)
	return nil
}

// joinWait is a limited join of one room waiting on Redis: concurrent joins
// and leaves of that room wait for its outcome rather than racing it.
type joinWait struct {
	done chan struct{}
	err  error // the join's outcome, set before done is closed
}

// awaitJoin waits, with m.mu held, until no join of room is waiting on
// Redis, so that a leave acts on a settled room: in it, or not in it. It
// returns with m.mu held, or with m.mu released and ctx's error if ctx
// ends first.
func (m *member) awaitJoin(ctx context.Context, room string) error {
	for {
		jw := m.joins[room]
		if jw == nil {
			return nil
		}
		m.mu.Unlock()
		select {
		case <-jw.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		m.mu.Lock()
	}
}

func (m *member) roomList() []string {
	m.mu.Lock()
	out := make([]string, 0, len(m.rooms))
	for room, st := range m.rooms {
		if st != roomJoining {
			out = append(out, room)
		}
	}
	m.mu.Unlock()
	slices.Sort(out)
	return out
}
