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
// go-redis only honours context deadlines on sockets when the client sets
// ContextTimeoutEnabled, which wsconn cannot rely on; so every wait on Redis
// runs the call in a goroutine and gives up on a timer.

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

// ack waits until Redis holds this node's current slices of keys, or the
// deadline passes. It reports whether every key was acknowledged.
func (t *Tracker) ack(deadline time.Time, keys []string) bool {
	if len(keys) == 0 {
		return true
	}
	ctx, cancel := context.WithDeadline(t.life, deadline)
	done := make(chan error, len(keys))
	for _, k := range keys {
		t.goBg(func() {
			// Inc by 0 sends the slice as it is now, which includes our
			// change, and coalesces with concurrent writers of the key.
			_, err := t.strict.Inc(ctx, k, 0)
			done <- err
		})
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	ok := true
	for range keys {
		select {
		case err := <-done:
			if err != nil {
				ok = false
				t.redisTrouble("ack", err)
			}
		case <-timer.C:
			// The goroutines end on their own (cancel, or go-redis' own
			// timeouts); the slices stay and are sent with the next flush.
			t.met.timeouts.Inc()
			cancel()
			return false
		}
	}
	cancel()
	return ok
}

// ackAsync sends keys' slices now without waiting, so strict counts drop
// in Redis within a round trip; the flusher would send them anyway within
// FlushInterval.
func (t *Tracker) ackAsync(keys []string) {
	if len(keys) == 0 || t.closed.Load() {
		return
	}
	t.goBg(func() {
		ctx, cancel := context.WithTimeout(t.life, max(t.cfg.timeout, 5*time.Second))
		defer cancel()
		var wg sync.WaitGroup
		for _, k := range keys {
			wg.Go(func() {
				if _, err := t.strict.Inc(ctx, k, 0); err != nil {
					t.redisTrouble("release", err)
				}
			})
		}
		wg.Wait()
	})
}

// condInc adds 1 to key if its cluster-wide total is below limit, atomically
// in Redis, waiting until the deadline. On errTimeout (or another error) the
// call may still complete later: if it then turns out to have counted, the
// count is taken back, so the caller may act on the timeout as if nothing
// had been counted.
func (t *Tracker) condInc(deadline time.Time, key string, limit int64) (bool, error) {
	type result struct {
		held bool
		err  error
	}
	var (
		mu        sync.Mutex
		abandoned bool
	)
	ch := make(chan result, 1)
	ctx, cancel := context.WithDeadline(t.life, deadline)
	t.goBg(func() {
		defer cancel()
		_, held, err := t.strict.IncIf(ctx, key, 1, icounter.Cond{Op: icounter.Lt, Operand: limit})
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if held {
				t.addLocal(key, -1)
				t.ackAsync([]string{key})
			}
			return
		}
		ch <- result{held, err}
	})
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.held, r.err
	case <-timer.C:
	}
	mu.Lock()
	defer mu.Unlock()
	select {
	case r := <-ch: // answered while the timer fired
		return r.held, r.err
	default:
	}
	abandoned = true
	t.met.timeouts.Inc()
	return false, errTimeout
}

// redisTrouble records a failed Redis call of a handshake or release.
func (t *Tracker) redisTrouble(op string, err error) {
	if errors.Is(err, icounter.ErrClosed) || errors.Is(err, context.Canceled) {
		return
	}
	t.met.redisErrors.WithLabelValues(op).Inc()
}
