package wsconn

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/headcount-go/headcount/internal/icounter"
)

// maxQueued caps the messages a subscriber has not taken yet; beyond it,
// new ones are dropped for that subscriber alone, which marks it dropped.
// Watches find what they missed from the room's sequence (at the next
// event, or the check a drop calls for), as after a Redis reconnect.
const maxQueued = 4096

// sharedSubs shares one subscription per channel among this node's
// watches: a thousand browsers watching one room share one, not a thousand.
// The rooms' subscriptions share the feed's connections in turn: one for
// every room on a single Redis server, one per master on a Cluster. Each
// subscriber takes the messages in order from a queue of its own, so that
// a slow one holds up no other.
type sharedSubs struct {
	mu     sync.Mutex
	topics map[string]*topic
	feed   *icounter.Feed // the rooms' events; nil without presence
}

// topic is one shared subscription.
type topic struct {
	ready chan struct{} // closed once the subscription is made, or failed
	err   error         // why it failed; set before ready is closed
	stop  func()        // ends the subscription once made; called under mu, it must not wait
	subs  map[*subscriber]struct{}
}

// subscriber is one watch's share of a topic: msgs carries the messages,
// and is closed after Close.
type subscriber struct {
	h     *sharedSubs
	key   string
	tp    *topic
	msgs  chan string
	mu    sync.Mutex
	queue []string
	// dropped is set when a message did not fit in the queue: the
	// watch reads its room's sequence again.
	dropped atomic.Bool
	// held counts the messages queued and not taken from msgs yet.
	held atomic.Int64
	wake chan struct{} // a message was queued
	end  chan struct{} // closed by Close
	once sync.Once
}

// subscribe joins the subscription named key, which open makes when this
// node has none (returning how to end it; its messages go to deliver), and
// returns once it is made (or failed), or ctx ends. open runs on its own,
// so that one subscriber's context does not end the subscription of the
// others that wait for it.
func (h *sharedSubs) subscribe(ctx context.Context, key string, open func() (func(), error)) (*subscriber, error) {
	s := &subscriber{h: h, key: key, msgs: make(chan string), wake: make(chan struct{}, 1), end: make(chan struct{})}
	h.mu.Lock()
	if h.topics == nil {
		h.topics = make(map[string]*topic)
	}
	tp := h.topics[key]
	if tp == nil {
		tp = &topic{ready: make(chan struct{}), subs: make(map[*subscriber]struct{})}
		h.topics[key] = tp
		go h.run(key, tp, open)
	}
	s.tp = tp
	tp.subs[s] = struct{}{}
	h.mu.Unlock()
	go s.forward()
	select {
	case <-tp.ready:
		if tp.err != nil {
			_ = s.Close()
			return nil, tp.err
		}
		return s, nil
	case <-ctx.Done():
		_ = s.Close()
		return nil, ctx.Err()
	}
}

// run makes tp's subscription; the last subscriber to leave ends it.
func (h *sharedSubs) run(key string, tp *topic, open func() (func(), error)) {
	stop, err := open()
	h.mu.Lock()
	tp.stop, tp.err = stop, err
	unused := err != nil || len(tp.subs) == 0
	if unused {
		delete(h.topics, key) // the next subscriber opens it anew
	}
	if unused && err == nil {
		stop() // under mu: ended before the next subscriber opens it anew
	}
	close(tp.ready) // under mu: Close sees it made, or run sees Close's leave
	h.mu.Unlock()
}

// deliver hands a message of the subscription named key to each of its
// subscribers.
func (h *sharedSubs) deliver(key, m string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if tp := h.topics[key]; tp != nil {
		for s := range tp.subs {
			s.push(m)
		}
	}
}

// lost marks every subscriber of the subscription named key dropped: its
// messages may be missing (a reconnect).
func (h *sharedSubs) lost(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if tp := h.topics[key]; tp != nil {
		for s := range tp.subs {
			s.dropped.Store(true)
		}
	}
}

// push queues m for s, without waiting. Called with the sharedSubs mu held.
func (s *subscriber) push(m string) {
	s.mu.Lock()
	if len(s.queue) < maxQueued {
		s.queue = append(s.queue, m)
		s.held.Add(1)
	} else {
		s.dropped.Store(true)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// forward hands s's queued messages to msgs, in order, until Close.
func (s *subscriber) forward() {
	defer close(s.msgs)
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, m := range q {
			select {
			case s.msgs <- m:
				s.held.Add(-1)
			case <-s.end:
				return
			}
		}
		select {
		case <-s.wake:
		case <-s.end:
			return
		}
	}
}

// pending reports whether messages wait for the subscriber to take them.
func (s *subscriber) pending() bool { return s.held.Load() > 0 }

// Close leaves the subscription; the last subscriber to leave closes it.
func (s *subscriber) Close() error {
	s.once.Do(func() {
		close(s.end)
		h, tp := s.h, s.tp
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(tp.subs, s)
		if len(tp.subs) == 0 && h.topics[s.key] == tp {
			select {
			case <-tp.ready: // made: end it, before the next subscriber opens it anew
				delete(h.topics, s.key)
				tp.stop()
			default: // still being made: run ends it, unless someone joins
			}
		}
	})
	return nil
}
