package faults

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// With every core busy (a -race build beside other load: fresh-clone-runs
// --hog), the whole machine can stand still for over a second: the
// test's clients, the nodes and Redis alike. Runs measured 2 to 2.4 s. No
// deadline holds across that, any more than across a SIGSTOP of Redis, so
// the tests time the stalls of their own process and leave them out of
// their deadlines and time bounds. A stall of a node process alone is not
// left out: it counts against the node.
const (
	stallTick = 50 * time.Millisecond
	// stallGap is the shortest stall noted: half the nodes' RedisTimeout,
	// far above the scheduling delays of a loaded machine.
	stallGap = 500 * time.Millisecond
)

// stretch is a stall: this process did not run from from to to.
type stretch struct{ from, to time.Time }

// stalls records the machine's stalls while the tests run (TestMain).
var stalls stallLog

type stallLog struct {
	mu     sync.Mutex
	seen   []stretch
	last   time.Time // the watcher's last tick
	listen map[int]func(stretch)
	nextID int
}

// watch records, until ctx ends, every stretch over stallGap in which this
// process did not run: a 50 ms ticker that found itself late.
func (l *stallLog) watch(ctx context.Context) {
	tick := time.NewTicker(stallTick)
	defer tick.Stop()
	l.mu.Lock()
	l.last = time.Now()
	l.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		var tell []func(stretch)
		l.mu.Lock()
		s := stretch{l.last, now}
		if now.Sub(l.last) > stallGap {
			l.seen = append(l.seen, s)
			for _, fn := range l.listen {
				tell = append(tell, fn)
			}
		}
		l.last = now
		l.mu.Unlock()
		for _, fn := range tell {
			fn(s)
		}
	}
}

// onStall has fn called with every stall from now until the returned
// function is called, on the watcher's goroutine, which on a machine
// coming back from a stall runs within milliseconds: before the test's
// goroutines, waiting on the network, have judged what the stall did
// (runs showed it 5 to 30 ms ahead).
func (l *stallLog) onStall(fn func(stretch)) (stop func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.listen == nil {
		l.listen = map[int]func(stretch){}
	}
	id := l.nextID
	l.nextID++
	l.listen[id] = fn
	return func() {
		l.mu.Lock()
		delete(l.listen, id)
		l.mu.Unlock()
	}
}

// within is how long the machine stood still in [a, b], counting a stall
// that the watcher, not yet back, has still to note.
func (l *stallLog) within(a, b time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := l.seen
	if !l.last.IsZero() && b.Sub(l.last) > stallGap {
		seen = append(seen[:len(seen):len(seen)], stretch{l.last, b})
	}
	var d time.Duration
	for _, s := range seen {
		from, to := s.from, s.to
		if a.After(from) {
			from = a
		}
		if b.Before(to) {
			to = b
		}
		if to.After(from) {
			d += to.Sub(from)
		}
	}
	return d
}

// ran is how long the machine ran in [a, b]: its length less the stalls
// in it.
func (l *stallLog) ran(a, b time.Time) time.Duration {
	return b.Sub(a) - l.within(a, b)
}

// ran is the time since start that the machine ran.
func ran(start time.Time) time.Duration {
	return stalls.ran(start, time.Now())
}

// stalledFor says, for a test's log, how long the machine stood still
// (nothing when it did not).
func stalledFor(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf(" (and %v more while the machine stood still)", d.Round(time.Millisecond))
}
