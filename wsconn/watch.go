package wsconn

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/headcount-go/headcount/internal/icounter"
)

// Presence event kinds.
const (
	EventSnapshot = "snapshot" // the room's members; the events after it continue it
	EventJoin     = "join"     // a user's first connection in the room, cluster-wide
	EventLeave    = "leave"    // a user's last connection in the room went
	EventOccupied = "occupied" // the room's first user came
	EventVacated  = "vacated"  // the room's last user went
)

// Why a user left (PresenceEvent.Reason).
const (
	ReasonClosed  = "closed"  // its connection closed, or left the room
	ReasonDrained = "drained" // its node drained (Drain, Shutdown, Close)
	ReasonCrashed = "crashed" // its node died; the others swept its connections
)

// PresenceEvent is one change of a room's users, or a snapshot of them.
// Each change happens once cluster-wide: it is emitted in Redis by whatever
// made it (a node counting a user's first or last connection, or a sweeper
// removing a dead node's), whichever node a subscriber is on.
type PresenceEvent struct {
	Room string `json:"room"`
	// Seq is the room's event sequence: each event is one more than the
	// one before in its room. A snapshot carries the sequence it is at.
	Seq    int64  `json:"seq"`
	Kind   string `json:"kind"`
	User   string `json:"user,omitempty"`
	Reason string `json:"reason,omitempty"`
	Node   string `json:"node,omitempty"` // the instance whose change it was
	Meta   string `json:"meta,omitempty"` // the user's metadata, on joins
	// Members is the room's member list, on snapshots (up to
	// PresenceOptions.MaxMembers users).
	Members *Members `json:"members,omitempty"`
}

// watchPoll is how often a watch looks whether its subscription may have
// missed events: a reconnect of the Redis connection loses the messages
// published meanwhile. Only then does it read its rooms' sequences, and
// otherwise every watchRecheck: an idle watch of many rooms costs Redis
// nothing most seconds.
const (
	watchPoll    = time.Second
	watchRecheck = 30 * time.Second
)

// MaxWatchRooms is the most rooms one Watch (or one EventsHandler
// stream) follows; more take several, which share the Tracker's
// subscriptions.
const MaxWatchRooms = 100

// Watch calls fn with the presence of rooms (1 to MaxWatchRooms, else
// ErrInvalidName; a room named twice is watched once) and then every
// change of it, in order per room, until ctx ends, the Tracker closes or
// fn returns an error (which Watch returns). fn is never
// called concurrently. For each room it first gets a snapshot (the members
// and the room's sequence) and then each event after it; or, when from
// holds a sequence for the room (the last one a subscriber saw, e.g.
// before it reconnected), the events after that one, with neither a gap
// nor a duplicate, if Redis still keeps them (PresenceOptions.History) and
// a new snapshot if it does not. Events a subscription misses (a Redis
// reconnect) are fetched from that history too: a watch reads its rooms'
// sequences when its subscription may have missed some (a reconnect, a
// resubscription, Redis losing data, a queue overflowing), and about every
// 30 s besides, and fetches the events such a read finds missing a second
// later if they have not come by then. Watch fails with ErrUnavailable
// when Redis cannot be subscribed to within RedisTimeout, and returns nil
// when ctx ends (canceled or past its deadline) or the Tracker closes. The
// watches of a room on one Tracker (and its
// EventsHandler streams) share one Redis subscription; one whose fn is
// slow holds up no other. The rooms share the Tracker's subscription
// connections: one on a single Redis server, one per master on a Cluster.
func (t *Tracker) Watch(ctx context.Context, rooms []string, from map[string]int64, fn func(PresenceEvent) error) error {
	if err := t.presenceRead(); err != nil {
		return err
	}
	rooms = slices.Compact(slices.Sorted(slices.Values(rooms)))
	if len(rooms) == 0 || len(rooms) > MaxWatchRooms {
		return fmt.Errorf("%w: %d rooms to watch, want 1 to %d", ErrInvalidName, len(rooms), MaxWatchRooms)
	}
	for _, r := range rooms {
		if err := checkName("room", r); err != nil {
			return err
		}
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	deliver := func(e PresenceEvent) error {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return callFn(fn, e)
	}
	ws := make([]*roomWatch, len(rooms))
	for i, r := range rooms {
		w, err := t.subscribeRoom(ctx, r)
		if err != nil {
			for _, w := range ws[:i] {
				w.close()
			}
			return ignoreDone(ctx, err)
		}
		ws[i] = w
	}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() {
			defer w.close()
			f, resume := from[w.room]
			if !resume {
				f = -1
			}
			if err := w.run(ctx, f, deliver); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	err := context.Cause(ctx)
	var fe fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	if parent.Err() != nil || errors.Is(err, context.Canceled) {
		return nil // the caller's end
	}
	return err
}

// warnWatch logs a watch's failed read of room, at most once a second: when
// Redis is away, every room watched fails at each poll, and a node may
// watch thousands.
func (t *Tracker) warnWatch(room string, err error) {
	now, last := time.Now().UnixNano(), t.watchWarned.Load()
	if now-last < int64(time.Second) || !t.watchWarned.CompareAndSwap(last, now) {
		return
	}
	t.cfg.log.Warn("wsconn: presence watch (at most one such warning a second)", "room", room, "err", err)
}

// fnError carries an error of a watch's fn. It ends the watch whatever the
// error wraps: an ErrUnavailable from a read fn made is not Redis being
// away for the watch, a context.Canceled not the watch's end. It has no
// Unwrap, so that the watch's checks do not see through it.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// callFn calls a watch's fn, marking its error.
func callFn(fn func(PresenceEvent) error, e PresenceEvent) error {
	if err := fn(e); err != nil {
		return fnError{err}
	}
	return nil
}

type roomWatch struct {
	t     *Tracker
	room  string
	group string
	sub   *subscriber // the room's events (Watch; nil in WatchAll)
	last  int64
	// users is the room's user count as delivered: a new sequence (see
	// icounter.Event.Start) continues an empty room without a snapshot.
	users int64
	kind  string // of the last event delivered (EventSnapshot for one)
	ready bool   // WatchAll: last is what the subscriber has
	at    int    // WatchAll: its index in allWatch.order
	// Watch: the feed's Gaps when the room's sequence was last read (or
	// due to be), when that was, and whether a read is due.
	gaps    uint64
	checked time.Time
	due     bool
	// ahead is the room's sequence as a read found it, beyond what was
	// delivered: its events are fetched from the history at the next poll
	// unless the subscription brings them first (see check).
	ahead int64
}

func (t *Tracker) subscribeRoom(ctx context.Context, room string) (*roomWatch, error) {
	group := roomKey(room)
	s, err := t.subscribe(ctx, group, func(ctx context.Context) (func(), error) {
		if err := t.subs.feed.Add(ctx, group); err != nil {
			return nil, err
		}
		return func() { t.subs.feed.Remove(group) }, nil
	})
	if err != nil {
		return nil, err
	}
	return &roomWatch{t: t, room: room, group: group, sub: s}, nil
}

// subscribe joins this node's subscription named key (made by open when
// there is none, which returns how to end it), waiting for it at most
// RedisTimeout.
func (t *Tracker) subscribe(ctx context.Context, key string, open func(context.Context) (func(), error)) (*subscriber, error) {
	sctx, cancel := context.WithDeadline(ctx, t.deadline(ctx))
	defer cancel()
	s, err := t.subs.subscribe(sctx, key, func() (func(), error) {
		octx, cancel := context.WithTimeout(t.life, t.cfg.timeout)
		defer cancel()
		return open(octx)
	})
	if err != nil {
		return nil, t.readErr(err)
	}
	return s, nil
}

func (w *roomWatch) close() {
	_ = w.sub.Close()
	for range w.sub.msgs { // let the subscriber's forwarder end
	}
}

// run delivers the room's snapshot (or, when from >= 0, resumes after
// from) and then its events, until ctx ends.
func (w *roomWatch) run(ctx context.Context, from int64, deliver func(PresenceEvent) error) error {
	// started: w.last is what the subscriber has; until then (a first
	// snapshot Redis did not answer) events wait for the snapshot.
	var err error
	// The rechecks of a Watch's rooms (and of the many Watches started
	// together) are spread over half a period, not made all at once.
	w.gaps, w.checked = w.t.subs.feed.Gaps(), time.Now().Add(-rand.N(watchRecheck/2))
	started := from >= 0
	if started {
		// How many users the subscriber saw is unknown, unless none
		// (sequence 0: the room never had an event).
		w.last, w.users = from, -1
		if from == 0 {
			w.users = 0
		}
		err = w.sync(ctx, deliver)
	} else {
		err = w.snapshot(ctx, deliver)
		started = err == nil
	}
	poll := time.NewTicker(watchPoll)
	defer poll.Stop()
	for {
		if err != nil && ctx.Err() != nil {
			return nil
		}
		if err != nil && errors.Is(err, ErrUnavailable) {
			// Redis is away: try again at the next message or poll.
			w.t.warnWatch(w.room, err)
			err, w.due = nil, true
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.t.life.Done():
			return nil // the Tracker closed
		case now := <-poll.C:
			if started {
				err = w.poll(ctx, now, deliver)
			} else {
				err = w.snapshot(ctx, deliver)
				started = err == nil
			}
		case payload, ok := <-w.sub.msgs:
			if !ok {
				return nil
			}
			if !started {
				continue // the snapshot, when Redis answers, covers it
			}
			e, perr := icounter.ParseEvent(payload)
			if perr != nil {
				w.t.cfg.log.Warn("wsconn: presence event", "room", w.room, "err", perr)
				continue
			}
			_, err = w.receive(ctx, e, deliver)
		}
	}
}

// poll fetches from the history the events a check found missing and the
// subscription has not brought since; otherwise it checks the room if it
// may have missed some.
func (w *roomWatch) poll(ctx context.Context, now time.Time, deliver func(PresenceEvent) error) error {
	switch {
	case w.ahead > w.last:
		if w.sub.pending() {
			// Messages wait here: those events, most likely, or a later
			// one, which finds the gap if there is one (see receive).
			return nil
		}
		if err := w.catchUp(ctx, w.ahead, deliver); err != nil {
			return err
		}
		w.ahead = 0
	case w.missable(now):
		if err := w.check(ctx, deliver); err != nil {
			return err
		}
		w.due = false
	}
	return nil
}

// missable reports whether the room's sequence is to be read now: the
// feed may have lost messages since the last read (Gaps changed), the
// subscriber dropped some, a read failed, or watchRecheck passed. Redis
// losing data counts as a gap: a room can then change with no event.
func (w *roomWatch) missable(now time.Time) bool {
	if g := w.t.subs.feed.Gaps(); g != w.gaps || w.sub.dropped.Swap(false) || now.Sub(w.checked) >= watchRecheck {
		w.gaps, w.checked, w.due = g, now, true
	}
	return w.due
}

// receive delivers e if it is the next event of the room, fetches what it
// skipped from the history if it is later, and drops it if it was
// delivered already. It reports whether it delivered e itself.
func (w *roomWatch) receive(ctx context.Context, e icounter.Event, deliver func(PresenceEvent) error) (bool, error) {
	switch {
	case e.Seq <= w.last:
		return false, nil // delivered already (from the history)
	case w.follows(e):
		return true, deliver(w.event(e))
	}
	return false, w.catchUp(ctx, e.Seq, deliver)
}

// sync delivers what happened in the room since w.last: nothing when its
// sequence is still there, the events after it from the history, or a new
// snapshot when the history no longer holds them all.
func (w *roomWatch) sync(ctx context.Context, deliver func(PresenceEvent) error) error {
	seq, err := w.seq(ctx)
	if err != nil {
		return err
	}
	return w.syncTo(ctx, seq, deliver)
}

// syncTo is sync once the room's sequence is read.
func (w *roomWatch) syncTo(ctx context.Context, seq int64, deliver func(PresenceEvent) error) error {
	if err := w.found(ctx, seq, deliver); err != nil || w.ahead <= w.last {
		return err
	}
	return w.catchUp(ctx, w.ahead, deliver)
}

// check is sync for a watch whose subscription may have missed events,
// except that events it finds beyond w.last are left to the next poll
// (w.ahead), or to the one after the messages waiting here are taken: they
// are most often on their way, published before the read and not received
// or not taken yet. Fetching them at once would read the history of
// every busy room whenever many are checked together (every room of a
// node after a reconnect), on the connections the node's own heartbeat
// needs.
func (w *roomWatch) check(ctx context.Context, deliver func(PresenceEvent) error) error {
	seq, err := w.seq(ctx)
	if err != nil {
		return err
	}
	return w.found(ctx, seq, deliver)
}

// found is check once the room's sequence is read.
func (w *roomWatch) found(ctx context.Context, seq int64, deliver func(PresenceEvent) error) error {
	switch {
	case seq < w.last:
		return w.snapshot(ctx, deliver) // a new sequence, or a bad resume point
	case seq > w.last:
		w.ahead = seq
	}
	return nil
}

// seq reads the room's last event sequence.
func (w *roomWatch) seq(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithDeadline(ctx, w.t.deadline(ctx))
	defer cancel()
	seqs, err := w.t.strict.Seqs(rctx, []string{w.group}) // batched with other watches
	if err != nil {
		return 0, w.t.readErr(err)
	}
	return seqs[0], nil
}

// catchUp delivers the events after w.last up to upTo from the room's
// history; if the history no longer holds the next one, it delivers a new
// snapshot instead.
func (w *roomWatch) catchUp(ctx context.Context, upTo int64, deliver func(PresenceEvent) error) error {
	const page = 1000
	for w.last < upTo {
		rctx, cancel := context.WithDeadline(ctx, w.t.deadline(ctx))
		evs, err := w.t.strict.Events(rctx, w.group, w.last, page)
		cancel()
		if err != nil {
			return w.t.readErr(err)
		}
		if len(evs) == 0 || !w.follows(evs[0]) {
			return w.snapshot(ctx, deliver) // trimmed, or lost with its keys
		}
		for i, e := range evs {
			if i > 0 && !w.follows(e) {
				return w.snapshot(ctx, deliver)
			}
			if err := deliver(w.event(e)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *roomWatch) snapshot(ctx context.Context, deliver func(PresenceEvent) error) error {
	rctx, cancel := context.WithDeadline(ctx, w.t.deadline(ctx))
	defer cancel()
	limit := icounter.DefaultMemberCap
	if p := w.t.cfg.Presence; p.MaxMembers > 0 {
		limit = p.MaxMembers
	}
	p, err := w.t.strict.Members(rctx, w.group, "", limit)
	if err != nil {
		return w.t.readErr(err)
	}
	w.last, w.users, w.kind, w.ahead = p.Seq, p.Present, EventSnapshot, 0
	m := membersOf(p)
	return deliver(PresenceEvent{Room: w.room, Seq: p.Seq, Kind: EventSnapshot, Members: &m})
}

// follows reports whether e comes right after what was delivered, and if
// so takes it as delivered: the next in the sequence, or the start of a new
// one while the room was empty (its presence keys expired or were lost with
// no one in it).
func (w *roomWatch) follows(e icounter.Event) bool {
	if e.Seq != w.last+1 && !(e.Start && e.Seq > w.last && w.users == 0) {
		return false
	}
	w.last, w.kind = e.Seq, e.Kind
	if w.users < 0 {
		return true // unknown (a resume past 0) until a snapshot
	}
	switch e.Kind {
	case icounter.EventJoin:
		w.users++
	case icounter.EventLeave:
		w.users--
	}
	return true
}

func (w *roomWatch) event(e icounter.Event) PresenceEvent {
	return PresenceEvent{Room: w.room, Seq: e.Seq, Kind: e.Kind, User: e.Member, Reason: e.Reason, Node: e.Instance, Meta: e.Meta}
}
