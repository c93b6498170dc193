package wsconn

import (
	"context"
	"errors"
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

// ack waits until Redis holds this node's current slices of keys, or the
// deadline passes. It reports whether every key was acknowledged. The
// engine group-commits: one round trip carries the keys of every handshake
// and release under way. On a timeout the slices stay and go out with the
// next batch or flush anyway.
func (t *Tracker) ack(deadline time.Time, keys []string) bool {
	if len(keys) == 0 {
		return true
	}
	if t.closed.Load() {
		return false // nothing sends any more
	}
	ctx, cancel := context.WithDeadline(t.life, deadline)
	defer cancel()
	err := t.lax.Sync(ctx, keys...)
	if errors.Is(err, context.DeadlineExceeded) {
		t.met.timeouts.Inc()
	}
	return err == nil
}

// ackAsync has keys' slices sent soon without waiting (see Lax.Push), so
// that strict counts drop in Redis within half a FlushInterval and a round
// trip, unless a connection counted meanwhile cancels the release out.
func (t *Tracker) ackAsync(keys []string) {
	if len(keys) > 0 {
		t.lax.Push(keys...)
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
