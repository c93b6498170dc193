package wsconn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// allEventsKey names the shared subscription to every room's events; no
// group key is empty.
const allEventsKey = ""

// goneFor is how long WatchAll remembers a forgotten room's last sequence:
// far longer than a message takes to follow the history that a poll read.
const goneFor = 10 * time.Second

// goneRoom is a room WatchAll forgot: its last sequence, and when.
type goneRoom struct {
	seq int64
	at  time.Time
}

// maxPollPerTick bounds the rooms one tick of WatchAll checks for missed
// events; the others are checked at the next ticks, in turn.
const maxPollPerTick = 100

// WatchAll is Watch for every room: it calls fn with each room's events,
// in order per room, from now on. It checks the rooms it has seen for
// missed events (a Redis reconnect), up to 100 a second, and forgets a
// room once it is empty (vacated, or found empty). A room shows up with
// its first event: a
// snapshot of it first, unless the event starts the room's sequence (the
// room was empty) or from holds the room's last sequence a subscriber saw,
// in which case the events after that one come first, from the history.
// It needs PresenceOptions.WatchAll (every node publishing every event on
// the namespace's channel too), else it fails with ErrPresenceOff.
func (t *Tracker) WatchAll(ctx context.Context, from map[string]int64, fn func(PresenceEvent) error) error {
	if err := t.presenceRead(); err != nil {
		return err
	}
	if !t.cfg.Presence.WatchAll {
		return fmt.Errorf("%w: PresenceOptions.WatchAll is off", ErrPresenceOff)
	}
	for room := range from {
		if err := checkName("room", room); err != nil {
			return err
		}
	}
	sub, err := t.subscribe(ctx, allEventsKey, t.strict.SubscribeAll)
	if err != nil {
		return err
	}
	defer sub.Close()
	msgs := sub.msgs
	deliver := func(e PresenceEvent) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fn(e)
	}
	rooms := make(map[string]*roomWatch)
	// order holds the watches in the order they came, for the polls; one
	// of a room forgotten (and maybe watched again since) leaves it when
	// a poll comes to it.
	var order []*roomWatch
	add := func(room string) *roomWatch {
		w := &roomWatch{t: t, room: room, group: roomKey(room)}
		rooms[room] = w
		order = append(order, w)
		return w
	}
	// forget drops a room once it is known empty: should it come back, its
	// next event starts it again. Without it, every room ever occupied
	// would be polled, and named in an SSE stream's resume point, for good.
	// A room forgotten lately keeps its last sequence in gone for a while:
	// a message of an event delivered already (from the history, which a
	// poll read before the message came) is dropped, not taken for the
	// room's return, which would deliver a snapshot of the empty room.
	gone := make(map[string]goneRoom)
	forget := func(w *roomWatch) {
		// Empty as of a vacated event or a snapshot, or a resume point of
		// an empty room with nothing since: not after a leave, which its
		// vacated follows, nor after occupied, which its join follows.
		empty := w.kind == EventVacated || w.kind == EventSnapshot || w.kind == ""
		if w.ready && w.users == 0 && empty && rooms[w.room] == w {
			delete(rooms, w.room)
			gone[w.room] = goneRoom{seq: w.last, at: time.Now()}
		}
	}
	// resumed rooms start where the subscriber left them.
	var pending []*roomWatch
	for room, seq := range from {
		w := add(room)
		w.last, w.users, w.ready = seq, -1, true
		if seq == 0 {
			w.users = 0
		}
		pending = append(pending, w)
	}
	handle := func(err error, room string) error {
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrUnavailable):
			t.cfg.log.Warn("wsconn: presence watch", "room", room, "err", err)
			return nil
		}
		return err
	}
	for _, w := range pending {
		if err := handle(w.sync(ctx, deliver), w.room); err != nil {
			return ignoreDone(ctx, err)
		}
		forget(w)
	}
	poll := time.NewTicker(watchPoll)
	defer poll.Stop()
	next := 0
	for {
		var err error
		var room string
		select {
		case <-ctx.Done():
			return nil
		case <-t.life.Done():
			return nil // closed: as Watch, which its rooms' reads end
		case <-poll.C:
			for room, g := range gone {
				if time.Since(g.at) > goneFor {
					delete(gone, room)
				}
			}
			for i := 0; i < min(len(order), maxPollPerTick) && err == nil; i++ {
				next %= len(order)
				w := order[next]
				if rooms[w.room] != w { // forgotten
					order[next] = order[len(order)-1]
					order = order[:len(order)-1]
					if len(order) == 0 {
						break
					}
					continue
				}
				next++
				room = w.room
				if w.ready {
					err = handle(w.sync(ctx, deliver), room)
				} else {
					err = handle(w.start(ctx, deliver), room)
				}
				forget(w)
			}
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			group, e, perr := t.strict.ParseAllEvent(m)
			r, isRoom := strings.CutPrefix(group, "r:")
			if perr != nil || !isRoom {
				if perr != nil {
					t.cfg.log.Warn("wsconn: presence event", "err", perr)
				}
				continue
			}
			room = r
			w := rooms[room]
			if w == nil {
				if g, ok := gone[room]; ok && e.Seq <= g.seq {
					continue // delivered before the room was forgotten
				}
				delete(gone, room)
				w = add(room)
				if e.Start {
					// The room's sequence starts here, from empty: nothing
					// to snapshot.
					w.ready = true
				} else {
					err = handle(w.start(ctx, deliver), room)
				}
			}
			if err == nil && w.ready {
				_, err = w.receive(ctx, e, deliver)
				err = handle(err, room)
			}
			forget(w)
		}
		if err != nil {
			return ignoreDone(ctx, err)
		}
	}
}

// start delivers a first snapshot of w's room, and marks it ready once
// Redis answered.
func (w *roomWatch) start(ctx context.Context, deliver func(PresenceEvent) error) error {
	err := w.snapshot(ctx, deliver)
	w.ready = err == nil
	return err
}

// ignoreDone turns the error of a watch whose context ended into nil.
func ignoreDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
