package wsconn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/headcount-go/headcount/internal/icounter"
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
// events; the others are checked at the next ticks, in turn. Once events
// may have been lost (a reconnect, a failed read, or fn behind by
// maxQueued), every room is checked, maxRecheckPerTick a tick.
const (
	maxPollPerTick    = 100
	maxRecheckPerTick = 1000
)

// WatchAll is Watch for every room: it calls fn with each room's events,
// in order per room, from now on. It checks the rooms it has seen for
// missed events, 100 a second in turn, and all of them, 1,000 a second,
// once some may have been lost: its subscription was dialled again, a read
// failed, or fn fell 4,096 events behind. It forgets a room once it is
// empty (vacated, or found empty). A room shows up with its first event: a
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
	sub, err := t.subscribe(ctx, allEventsKey, func(ctx context.Context) (func(), error) {
		ps, err := t.strict.SubscribeAll(ctx)
		if err != nil {
			return nil, err
		}
		go icounter.ReadAll(ps, // until stopped
			func(m string) { t.subs.deliver(allEventsKey, m) },
			func() { t.subs.lost(allEventsKey) })
		return func() { go ps.Close() }, nil // Close can wait for a reconnect
	})
	if err != nil {
		return ignoreDone(ctx, err)
	}
	defer sub.Close()
	a := &allWatch{t: t, rooms: make(map[string]*roomWatch), gone: make(map[string]goneRoom),
		deliver: func(e PresenceEvent) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return callFn(fn, e)
		}}
	if err := a.resume(ctx, from); err != nil {
		return ignoreDone(ctx, err)
	}
	poll := time.NewTicker(watchPoll)
	defer poll.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-t.life.Done():
			return nil // closed: as Watch, which its rooms' reads end
		case <-poll.C:
			if sub.dropped.Swap(false) {
				a.recheck = len(a.order)
			}
			err = a.poll(ctx)
		case m, ok := <-sub.msgs:
			if !ok {
				return nil
			}
			err = a.receive(ctx, m)
		}
		if err != nil {
			return ignoreDone(ctx, err)
		}
	}
}

// allWatch is the state of one WatchAll: the rooms it has seen.
type allWatch struct {
	t       *Tracker
	deliver func(PresenceEvent) error
	rooms   map[string]*roomWatch
	// order holds the watches for the polls, which take them in turn from
	// next; a forgotten one leaves at once (see forget).
	order []*roomWatch
	next  int
	// recheck counts the rooms of order still to check after a loss,
	// maxRecheckPerTick a tick.
	recheck int
	// gone keeps the last sequence of the rooms forgotten lately: a
	// message of an event delivered already (from the history, which a
	// poll read before the message came) is dropped, not taken for the
	// room's return, which would deliver a snapshot of the empty room.
	gone map[string]goneRoom
}

func (a *allWatch) add(room string) *roomWatch {
	w := &roomWatch{t: a.t, room: room, group: roomKey(room), at: len(a.order)}
	a.rooms[room] = w
	a.order = append(a.order, w)
	return w
}

// remove takes w out of a.order, putting the last watch in its place.
func (a *allWatch) remove(w *roomWatch) {
	last := a.order[len(a.order)-1]
	a.order[w.at], last.at = last, w.at
	a.order = a.order[:len(a.order)-1]
}

// forget drops a room once it is known empty: should it come back, its
// next event starts it again. Without it, every room ever occupied would be
// polled, and named in an SSE stream's resume point, for good.
func (a *allWatch) forget(w *roomWatch) {
	// Empty as of a vacated event or a snapshot, or a resume point of an
	// empty room with nothing since: not after a leave, which its vacated
	// follows, nor after occupied, which its join follows.
	empty := w.kind == EventVacated || w.kind == EventSnapshot || w.kind == ""
	if w.ready && w.users == 0 && empty && a.rooms[w.room] == w {
		delete(a.rooms, w.room)
		a.remove(w)
		a.gone[w.room] = goneRoom{seq: w.last, at: time.Now()}
	}
}

// handle passes on an error of a room's watch that ends the WatchAll: not
// Redis being away (the room is tried again at its next poll or message).
func (a *allWatch) handle(ctx context.Context, err error, room string) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, ErrUnavailable):
		a.t.warnWatch(room, err)
		return nil
	}
	return err
}

// resume starts the rooms of from where the subscriber left them (a
// negative sequence is no resume point: the room starts with its next
// event, as one not named does).
func (a *allWatch) resume(ctx context.Context, from map[string]int64) error {
	var ws []*roomWatch
	for room, seq := range from {
		if seq < 0 {
			continue
		}
		w := a.add(room)
		w.last, w.users, w.ready = seq, -1, true
		if seq == 0 {
			w.users = 0
		}
		ws = append(ws, w)
	}
	return a.check(ctx, ws)
}

// poll checks rooms for events missed, in turn: maxPollPerTick of them, or
// maxRecheckPerTick while a recheck runs.
func (a *allWatch) poll(ctx context.Context) error {
	for room, g := range a.gone {
		if time.Since(g.at) > goneFor {
			delete(a.gone, room)
		}
	}
	n := maxPollPerTick
	if a.recheck > 0 {
		n = maxRecheckPerTick
		a.recheck = max(a.recheck-n, 0)
	}
	ws := make([]*roomWatch, min(n, len(a.order)))
	for i := range ws {
		a.next %= len(a.order)
		ws[i] = a.order[a.next]
		a.next++
	}
	return a.check(ctx, ws)
}

// check brings each of ws up to date: a snapshot for a room not started, or
// what happened since the subscriber's last event. The sequences of the
// others are read together, and a room is read further only if it changed:
// checking many rooms costs Redis one read each.
func (a *allWatch) check(ctx context.Context, ws []*roomWatch) error {
	var groups []string
	for _, w := range ws {
		if w.ready {
			groups = append(groups, w.group)
		}
	}
	var seqs []int64
	if len(groups) > 0 {
		rctx, cancel := context.WithDeadline(ctx, a.t.deadline(ctx))
		var err error
		seqs, err = a.t.strict.Seqs(rctx, groups)
		cancel()
		if err != nil {
			// Redis is away: once it answers, every room is checked.
			a.recheck = len(a.order)
			return a.handle(ctx, a.t.readErr(err), "")
		}
	}
	for _, w := range ws {
		var err error
		if w.ready {
			err = w.syncTo(ctx, seqs[0], a.deliver)
			seqs = seqs[1:]
		} else {
			err = w.start(ctx, a.deliver)
		}
		if err := a.handle(ctx, err, w.room); err != nil {
			return err
		}
		a.forget(w)
	}
	return nil
}

// receive delivers a message of the namespace's channel.
func (a *allWatch) receive(ctx context.Context, payload string) error {
	group, e, err := a.t.strict.ParseAllEvent(payload)
	room, isRoom := strings.CutPrefix(group, "r:")
	if err != nil || !isRoom {
		if err != nil {
			a.t.cfg.log.Warn("wsconn: presence event", "err", err)
		}
		return nil
	}
	w := a.rooms[room]
	if w == nil {
		if g, ok := a.gone[room]; ok && e.Seq <= g.seq {
			return nil // delivered before the room was forgotten
		}
		delete(a.gone, room)
		w = a.add(room)
		if e.Start {
			// The room's sequence starts here, from empty: nothing to
			// snapshot.
			w.ready = true
		} else {
			err = a.handle(ctx, w.start(ctx, a.deliver), room)
		}
	}
	if err == nil && w.ready {
		_, err = w.receive(ctx, e, a.deliver)
		err = a.handle(ctx, err, room)
	}
	a.forget(w)
	return err
}

// start delivers a first snapshot of w's room, and marks it ready once
// Redis answered.
func (w *roomWatch) start(ctx context.Context, deliver func(PresenceEvent) error) error {
	err := w.snapshot(ctx, deliver)
	w.ready = err == nil
	return err
}

// ignoreDone turns the error of a watch whose context ended into nil, and
// an error of fn into fn's own.
func ignoreDone(ctx context.Context, err error) error {
	var fe fnError
	if errors.As(err, &fe) {
		return fe.err // fn's own, which WatchAll returns
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}
