package wsconn

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/headcount-go/headcount/internal/icounter"
)

// Every count is first made in this node's slice in memory (it cannot fail
// and never waits), then, for strict keys, acknowledged: the caller waits
// until Redis holds the slice. So counting always fails open: what Redis did
// not take now is sent with the next flush or heartbeat, and counts converge
// once Redis is back.
//
// No wait on Redis outlasts its deadline: icounter returns when a call's
// context ends, whatever go-redis' own timeouts.

// errTimeout: Redis did not answer before the deadline.
var errTimeout = errors.New("wsconn: redis did not answer in time")

// addLocal changes this node's slice of key by d, in memory.
func (t *Tracker) addLocal(key string, d int64) {
	var err error
	if d >= 0 {
		_, err = t.lax.Inc(t.life, key, d)
	} else {
		_, err = t.lax.Dec(t.life, key, -d)
	}
	if err != nil && !errors.Is(err, icounter.ErrClosed) {
		t.cfg.log.Warn("wsconn: counting failed", "key", key, "err", err)
	}
}

// send writes this node's slices of keys to Redis, in one pipeline (one
// round trip per Redis node), and returns once Redis holds every change
// made to them before the call.
func (t *Tracker) send(ctx context.Context, keys []string) error {
	return t.lax.Sync(ctx, keys...)
}

// Strict counts are group-committed: callers hand their keys to one
// goroutine, which sends every key handed over while its previous send was
// in flight in one go, so that under load one round trip serves many
// handshakes and releases instead of one (or one per key) each.
type committer struct {
	mu      sync.Mutex
	keys    map[string]struct{}
	waiters []chan error
	kick    chan struct{}
}

func newCommitter() committer {
	return committer{keys: make(map[string]struct{}), kick: make(chan struct{}, 1)}
}

// submit hands keys to the committer; done, if not nil, gets the outcome
// of the send that carries them.
func (t *Tracker) submit(keys []string, done chan error) {
	c := &t.commit
	c.mu.Lock()
	for _, k := range keys {
		c.keys[k] = struct{}{}
	}
	if done != nil {
		c.waiters = append(c.waiters, done)
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (t *Tracker) commitLoop() {
	c := &t.commit
	for {
		select {
		case <-t.life.Done():
			c.mu.Lock()
			for _, w := range c.waiters {
				w <- ErrClosed
			}
			c.waiters = nil
			c.mu.Unlock()
			return
		case <-c.kick:
		}
		c.mu.Lock()
		keys := make([]string, 0, len(c.keys))
		for k := range c.keys {
			keys = append(keys, k)
		}
		clear(c.keys)
		waiters := c.waiters
		c.waiters = nil
		c.mu.Unlock()
		var err error
		if len(keys) > 0 {
			ctx, cancel := context.WithTimeout(t.life, max(t.cfg.timeout, 5*time.Second))
			err = t.send(ctx, keys)
			cancel()
		}
		for _, w := range waiters {
			w <- err
		}
	}
}

// ack waits until Redis holds this node's current slices of keys, or the
// deadline passes. It reports whether every key was acknowledged. On a
// timeout the send goes on (and ends by go-redis' own timeouts at worst);
// the slices stay and go out with the next flush anyway.
func (t *Tracker) ack(deadline time.Time, keys []string) bool {
	if len(keys) == 0 {
		return true
	}
	if t.closed.Load() {
		return false // nothing sends any more
	}
	done := make(chan error, 1)
	t.submit(keys, done)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case err := <-done:
		return err == nil
	case <-timer.C:
		t.met.timeouts.Inc()
		return false
	}
}

// ackAsync has keys' slices sent soon without waiting, so that strict
// counts drop in Redis within about a round trip rather than a
// FlushInterval.
func (t *Tracker) ackAsync(keys []string) {
	if len(keys) > 0 {
		t.submit(keys, nil)
	}
}

// condInc adds 1 to key if its cluster-wide total is below limit, atomically
// in Redis, waiting until the deadline. It returns the total Redis saw when
// it refused. On an error nothing is counted: icounter takes back an IncIf
// that Redis applies after its caller gave up.
func (t *Tracker) condInc(deadline time.Time, key string, limit int64) (total int64, held bool, err error) {
	ctx, cancel := context.WithDeadline(t.life, deadline)
	defer cancel()
	v, held, err := t.strict.IncIf(ctx, key, 1, icounter.Cond{Op: icounter.Lt, Operand: limit})
	if errors.Is(err, context.DeadlineExceeded) {
		t.met.timeouts.Inc()
		err = errTimeout
	}
	return v.Total, held, err
}
