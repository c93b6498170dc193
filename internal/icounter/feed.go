package icounter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/keyspace"
)

// Feed carries the events of many groups over few Redis connections: one
// for all of them on a single server (standalone or Sentinel), one per
// master on a Cluster. Subscribe, by contrast, takes a connection per group.
//
// On a Cluster one SSUBSCRIBE takes the channels of one hash slot only, so
// the feed subscribes each group in a command of its own. After a
// reconnect go-redis subscribes a connection's channels again in one
// command, which a Cluster refuses when they span slots: the feed then
// subscribes them again slot by slot. When a group's slot moves to another
// master (a resharding), the old master ends its subscription and the feed
// subscribes it again on the new one.
//
// Messages arrive in each group's order; a reconnect can lose some, which
// the groups' sequences (Seqs, Events) reveal, as with Subscribe. Gaps
// says when that may have happened.
type Feed struct {
	c       common
	timeout time.Duration
	out     chan FeedMessage
	quit    chan struct{} // closed by Close: readers stop handing messages over
	gaps    atomic.Uint64 // see Gaps

	mu     sync.Mutex
	conns  map[string]*feedConn  // by master address on a Cluster, "" otherwise
	chans  map[string]feedMember // channel -> its group and connection
	closed bool
	wg     sync.WaitGroup // the connections' goroutines
}

// FeedMessage is an event of one of a Feed's groups; Payload goes to
// ParseEvent.
type FeedMessage struct {
	Group   string
	Payload string
}

type feedMember struct {
	group string
	conn  *feedConn
}

// feedConn is one subscription connection of a Feed. Its first channel is
// subscribed as it opens (which also tells whether Redis has sharded
// pub/sub); later ones are written in order by its writer, each Add waiting
// for Redis' confirmation, which the reader hands over.
type feedConn struct {
	key     string
	first   string        // the channel it opens with
	ready   chan struct{} // closed once opened, or failed
	err     error         // why it failed; set before ready is closed
	ps      *redis.PubSub
	sharded bool
	held    int                     // channels it holds or is adding
	ops     []feedOp                // queued writes, taken by write
	wake    chan struct{}           // an op was queued, or the connection ended
	waits   map[string][]chan error // confirmations awaited, by channel
	unsubs  map[string]int          // unsubscriptions not yet confirmed
	done    bool                    // ended: nothing holds it any more
	resync  bool                    // a resync is queued in ops
}

type feedOp struct {
	ch     string
	sub    bool       // subscribe; unsubscribe otherwise
	wait   chan error // sub: told the outcome
	resync bool       // subscribe every channel held again, slot by slot
}

// NewFeed returns an empty Feed of this counter's groups, which gives
// Redis up to timeout to open a connection or take a subscription. Close
// it when done.
func (c common) NewFeed(timeout time.Duration) *Feed {
	return &Feed{c: c, timeout: timeout, out: make(chan FeedMessage, 256), quit: make(chan struct{}), conns: make(map[string]*feedConn), chans: make(map[string]feedMember)}
}

// Messages carries the events of the groups added, until Close.
func (f *Feed) Messages() <-chan FeedMessage { return f.out }

// Gaps counts the moments after which Messages may lack some of a group's
// events, or a group may have changed without any: a connection lost, a
// group subscribed again (after a reconnect, or on the master its slot
// moved to), and Redis losing data, as this instance's heartbeat notices
// it (a master's canary gone, a new session taken). A subscriber that
// finds it changed since it last read its groups' sequences reads them
// again; while it stays the same, every event published since came
// through.
func (f *Feed) Gaps() uint64 {
	return f.gaps.Load() + uint64(f.c.e.losses.Load()) + uint64(f.c.e.renewals.Load())
}

// Add subscribes f to group's events and returns once Redis confirmed it,
// or when ctx ends (then it is not added). A group is added at most once.
func (f *Feed) Add(ctx context.Context, group string) error {
	if err := f.c.checkGroups(group); err != nil {
		return err
	}
	ch := f.c.e.cfg.space.GroupKey(group, "pc")
	key, err := f.connKey(ctx, ch)
	if err != nil {
		return fmt.Errorf("headcount: subscribing to the events of %q: %w", group, err)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return ErrClosed
	}
	if _, dup := f.chans[ch]; dup {
		f.mu.Unlock()
		return fmt.Errorf("%w: the events of %q are in the feed already", ErrInvalidOptions, group)
	}
	outcome := f.attach(ch, group, key)
	f.mu.Unlock()
	if err := outcome(ctx); err != nil {
		f.Remove(group)
		return fmt.Errorf("headcount: subscribing to the events of %q: %w", group, err)
	}
	return nil
}

// attach puts ch, group's channel, on the connection named key, opening
// it if there is none, and returns what tells the outcome: nil once Redis
// confirmed the subscription. Called with f.mu held.
func (f *Feed) attach(ch, group, key string) (outcome func(context.Context) error) {
	fc := f.conns[key]
	opens := fc == nil
	wait := make(chan error, 1)
	if opens {
		fc = &feedConn{key: key, first: ch, ready: make(chan struct{}), wake: make(chan struct{}, 1),
			waits: make(map[string][]chan error), unsubs: make(map[string]int)}
		f.conns[key] = fc
		f.wg.Add(1)
		go f.open(fc)
	} else {
		fc.ops = append(fc.ops, feedOp{ch: ch, sub: true, wait: wait})
		fc.wakeUp()
	}
	fc.held++
	f.chans[ch] = feedMember{group: group, conn: fc}
	return func(ctx context.Context) error {
		if opens {
			select {
			case <-fc.ready:
				return fc.err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case err := <-wait:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// detach takes ch off fc, closing fc when it holds nothing else. Called
// with f.mu held.
func (f *Feed) detach(ch string, fc *feedConn) {
	if fc.held--; fc.held == 0 {
		f.end(fc)
		return
	}
	fc.ops = append(fc.ops, feedOp{ch: ch})
	fc.unsubs[ch]++
	fc.wakeUp()
}

// connKey names the connection that carries ch: on a Cluster that of the
// master serving ch's slot.
func (f *Feed) connKey(ctx context.Context, ch string) (string, error) {
	cc, cluster := f.c.e.client.(*redis.ClusterClient)
	if !cluster {
		return "", nil
	}
	m, err := cc.MasterForKey(ctx, ch)
	if err != nil {
		return "", err
	}
	return m.Options().Addr, nil
}

// Remove unsubscribes f from group's events; a connection left with no
// group is closed.
func (f *Feed) Remove(group string) {
	ch := f.c.e.cfg.space.GroupKey(group, "pc")
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.chans[ch]
	if !ok {
		return
	}
	delete(f.chans, ch)
	f.detach(ch, m.conn)
}

// Close unsubscribes from every group and closes Messages once the
// connections are closed.
func (f *Feed) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	close(f.quit)
	for _, fc := range f.conns {
		f.end(fc)
	}
	clear(f.chans)
	f.mu.Unlock()
	f.wg.Wait()
	close(f.out)
	return nil
}

// end retires fc; its writer closes it. Called with f.mu held.
func (f *Feed) end(fc *feedConn) {
	fc.done = true
	if f.conns[fc.key] == fc {
		delete(f.conns, fc.key)
	}
	fc.wakeUp()
}

func (fc *feedConn) wakeUp() {
	select {
	case fc.wake <- struct{}{}:
	default:
	}
}

// open makes fc's subscription with its first channel, then reads and
// writes for it until it ends.
func (f *Feed) open(fc *feedConn) {
	defer f.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	ps, sharded, err := f.c.subscribeChannel(ctx, fc.first)
	cancel()
	f.mu.Lock()
	fc.ps, fc.sharded, fc.err = ps, sharded, err
	if err != nil {
		for _, op := range fc.ops {
			if op.sub {
				op.wait <- err
			}
		}
		fc.ops = nil
		if !fc.done {
			f.end(fc) // a later Add opens a connection anew
		}
	}
	close(fc.ready)
	f.mu.Unlock()
	if err != nil {
		return
	}
	f.wg.Add(1)
	go f.read(fc)
	f.write(fc)
}

// write sends fc's queued subscriptions and unsubscriptions in order, and
// closes fc once it ended.
func (f *Feed) write(fc *feedConn) {
	for {
		f.mu.Lock()
		ops, done := fc.ops, fc.done
		fc.ops, fc.resync = nil, false
		if done {
			for _, ws := range fc.waits {
				for _, w := range ws {
					w <- ErrClosed
				}
			}
			clear(fc.waits)
			for _, op := range ops {
				if op.sub {
					op.wait <- ErrClosed
				}
			}
			f.mu.Unlock()
			_ = fc.ps.Close() // ends read
			return
		}
		for _, op := range ops {
			if op.sub {
				fc.waits[op.ch] = append(fc.waits[op.ch], op.wait)
			}
		}
		f.mu.Unlock()
		for _, op := range ops {
			if op.resync {
				f.resubscribe(fc)
				continue
			}
			err := f.send(fc, op)
			if err != nil && !op.sub {
				f.mu.Lock()
				f.confirmed(fc, op.ch)
				f.mu.Unlock()
			}
			if err != nil && op.sub && f.unwait(fc, op) {
				op.wait <- err
			}
		}
		<-fc.wake
	}
}

func (f *Feed) send(fc *feedConn, op feedOp) error {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	switch {
	case op.sub && fc.sharded:
		return fc.ps.SSubscribe(ctx, op.ch)
	case op.sub:
		return fc.ps.Subscribe(ctx, op.ch)
	case fc.sharded:
		return fc.ps.SUnsubscribe(ctx, op.ch)
	default:
		return fc.ps.Unsubscribe(ctx, op.ch)
	}
}

// resubscribe subscribes every channel fc holds again, one command per
// hash slot. Errors are left to the reader: a connection that failed is
// dialed again, and resynced again.
func (f *Feed) resubscribe(fc *feedConn) {
	bySlot := map[int][]string{}
	f.mu.Lock()
	for ch, m := range f.chans {
		if m.conn == fc {
			slot := keyspace.Slot(ch)
			bySlot[slot] = append(bySlot[slot], ch)
		}
	}
	f.mu.Unlock()
	for _, chs := range bySlot {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		if fc.sharded {
			_ = fc.ps.SSubscribe(ctx, chs...)
		} else {
			_ = fc.ps.Subscribe(ctx, chs...)
		}
		cancel()
	}
}

// lost queues a resync of fc after a receive failed with err: a broken
// connection (which go-redis dials again, subscribing every channel in
// one command) or a Cluster's refusal of that command (CROSSSLOT). Other
// errors from Redis are left alone.
func (f *Feed) lost(fc *feedConn, err error) {
	var rerr redis.Error
	if errors.As(err, &rerr) && !redis.HasErrorPrefix(err, "CROSSSLOT") {
		f.c.e.cfg.log.Debug("headcount: feed subscription refused", "err", err)
		return
	}
	f.gaps.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	// Confirmations of unsubscriptions sent before are lost with the
	// connection.
	clear(fc.unsubs)
	if !fc.done && !fc.resync {
		fc.resync = true
		fc.ops = append(fc.ops, feedOp{resync: true})
		fc.wakeUp()
	}
}

// confirm tells the first Add waiting on ch that Redis confirmed it.
// Called with f.mu held.
func (f *Feed) confirm(fc *feedConn, ch string) {
	ws := fc.waits[ch]
	if len(ws) == 0 {
		// Made again after a reconnect (by go-redis or a resync): what
		// was published before it may be missing.
		f.gaps.Add(1)
		return
	}
	ws[0] <- nil
	if len(ws) == 1 {
		delete(fc.waits, ch)
	} else {
		fc.waits[ch] = ws[1:]
	}
}

// unwait takes op's Add off those waiting for a confirmation of op.ch, and
// reports whether it was still there: a confirmation, of a resync or of a
// subscription go-redis made again, may have answered it already.
func (f *Feed) unwait(fc *feedConn, op feedOp) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ws := fc.waits[op.ch]
	i := slices.Index(ws, op.wait)
	switch {
	case i < 0:
		return false
	case len(ws) == 1:
		delete(fc.waits, op.ch)
	default:
		fc.waits[op.ch] = slices.Delete(ws, i, i+1)
	}
	return true
}

// confirmed takes one unsubscription of ch off fc's pending ones, and
// reports whether there was one. Called with f.mu held.
func (f *Feed) confirmed(fc *feedConn, ch string) bool {
	n := fc.unsubs[ch]
	switch {
	case n == 0:
		return false
	case n == 1:
		delete(fc.unsubs, ch)
	default:
		fc.unsubs[ch] = n - 1
	}
	return true
}

// unsubscribed handles Redis ending fc's subscription to ch: the
// confirmation of a Remove, or, unasked, a Cluster master whose slot moved
// to another (a resharding), where the group is subscribed again. Called
// with f.mu held.
func (f *Feed) unsubscribed(fc *feedConn, ch string) {
	if f.confirmed(fc, ch) {
		return
	}
	if m, ok := f.chans[ch]; ok && m.conn == fc && !f.closed {
		f.wg.Add(1)
		go f.move(ch, m)
	}
}

// errLeft: the group left the feed, or moved, while being moved.
var errLeft = errors.New("headcount: the group left the feed")

// move subscribes m's group again, on the master that serves its slot
// now, until that succeeds, or the group leaves the feed, or f closes.
func (f *Feed) move(ch string, m feedMember) {
	defer f.wg.Done()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		err := f.moveOnce(ctx, ch, &m)
		cancel()
		if err == nil {
			f.gaps.Add(1) // published between the old master's end and now
		}
		if err == nil || errors.Is(err, errLeft) {
			return
		}
		f.c.e.cfg.log.Warn("headcount: subscribing again to the events of a group whose slot moved", "group", m.group, "err", err)
		t := time.NewTimer(time.Second)
		select {
		case <-t.C:
		case <-f.quit:
			t.Stop()
			return
		}
	}
}

// moveOnce is one try of move; m is updated to where the group is put.
func (f *Feed) moveOnce(ctx context.Context, ch string, m *feedMember) error {
	key := m.conn.key
	if cc, ok := f.c.e.client.(*redis.ClusterClient); ok {
		// go-redis reads the slots again in the background: give it a
		// second to see the slot elsewhere. If it never does (Redis ended
		// the subscription for another reason), subscribe where it was.
		cc.ReloadState(ctx)
		for range 20 {
			k, err := f.connKey(ctx, ch)
			if err != nil {
				return err
			}
			if key = k; key != m.conn.key {
				break
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-f.quit:
				return errLeft
			}
		}
	}
	f.mu.Lock()
	if cur, ok := f.chans[ch]; f.closed || !ok || cur != *m {
		f.mu.Unlock()
		return errLeft
	}
	f.detach(ch, m.conn)
	outcome := f.attach(ch, m.group, key)
	*m = f.chans[ch]
	f.mu.Unlock()
	return outcome(ctx)
}

// read hands fc's messages to Messages and its confirmations to the Adds
// waiting for them, until fc is closed.
func (f *Feed) read(fc *feedConn) {
	defer f.wg.Done()
	receive(fc.ps, f.quit, func(err error) { f.lost(fc, err) }, func(m any) {
		switch m := m.(type) {
		case *redis.Subscription:
			f.mu.Lock()
			switch m.Kind {
			case "subscribe", "ssubscribe":
				f.confirm(fc, m.Channel)
			case "unsubscribe", "sunsubscribe":
				f.unsubscribed(fc, m.Channel)
			}
			f.mu.Unlock()
		case *redis.Message:
			f.mu.Lock()
			g, ok := f.chans[m.Channel]
			f.mu.Unlock()
			if ok && g.conn == fc {
				select {
				case f.out <- FeedMessage{Group: g.group, Payload: m.Payload}:
				case <-f.quit:
				}
			}
		}
	})
}

// subscribeChannel subscribes to ch, with SSUBSCRIBE where Redis has it
// (sharded reports which), returning once Redis confirmed it, or when ctx
// ends.
func (c common) subscribeChannel(ctx context.Context, ch string) (*redis.PubSub, bool, error) {
	var plain bool // read only once subscribeWithin returned the subscription
	ps, err := subscribeWithin(ctx, func() (*redis.PubSub, error) {
		ps := c.e.client.SSubscribe(ctx, ch)
		_, err := ps.Receive(ctx)
		if err != nil && shardedRefused(err) {
			_ = ps.Close()
			plain = true
			ps = c.e.client.Subscribe(ctx, ch)
			_, err = ps.Receive(ctx)
		}
		return ps, err
	})
	if err != nil {
		return nil, false, err
	}
	return ps, !plain, nil
}
