package icounter

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/cond"
	"github.com/headcount-go/headcount/internal/keyspace"
)

var (
	// ErrClosed is returned by every call after Close or Kill.
	ErrClosed = errors.New("headcount: counter closed")
	// ErrDuplicateInstance is returned when another live process with a
	// newer session uses the same InstanceID: a configuration error. Once
	// the older process has seen it, every write of it is refused (see
	// Options.InstanceID).
	ErrDuplicateInstance = errors.New("headcount: instance ID in use by another process")
	// ErrInvalidKey is returned, before any Redis call, for a key that is
	// empty, longer than 255 bytes or holds a control character.
	ErrInvalidKey = keyspace.ErrInvalidKey
	// ErrInvalidDelta is returned for a negative delta to Inc or Dec.
	ErrInvalidDelta = keyspace.ErrInvalidDelta
	// ErrInvalidCond is returned for a Cond with an unknown operator.
	ErrInvalidCond = cond.ErrInvalidCond
)

// Value is a counter as one instance sees it.
type Value struct {
	Total int64 // cluster-wide: the base plus every live instance's slice
	Mine  int64 // this instance's own slice
}

// CmpOp compares a counter's total with a Cond's operand.
type CmpOp = cond.Op

// The comparisons of a Cond.
const (
	Eq = cond.Eq
	Ne = cond.Ne
	Lt = cond.Lt
	Le = cond.Le
	Gt = cond.Gt
	Ge = cond.Ge
)

// Cond is the condition of IncIf, checked against the total before the
// change.
type Cond = cond.Cond

// Strict is an instance-aware counter whose every change is acknowledged by
// Redis before the call returns. Concurrent changes to one key coalesce: one
// script run serves every change made while the previous one was in flight.
type Strict struct{ common }

// Lax is an instance-aware counter that keeps changes in memory and sends
// them every FlushInterval in one pipelined batch. Inc, Dec, Get and
// SetOnInstance never wait for Redis on the warm path; totals from other
// instances are at most one FlushInterval (plus a round trip) old. Set,
// Del, DelOnInstance and IncIf act on Redis at once, carrying the key's
// buffered changes with them.
type Lax struct{ common }

// common holds the methods whose behaviour does not depend on the mode.
type common struct{ e *engine }

// NewStrict returns a strict counter. It loads the scripts and reads the
// Redis clock, waiting for at most one second: when Redis is down or hangs
// it still succeeds and catches up later.
func NewStrict(c redis.UniversalClient, o Options) (*Strict, error) {
	cfg, err := o.config()
	if err != nil {
		return nil, err
	}
	e, err := newEngine(c, cfg)
	if err != nil {
		return nil, err
	}
	return &Strict{common{e}}, nil
}

// NewLax returns a lax counter; see NewStrict.
func NewLax(c redis.UniversalClient, o LaxOptions) (*Lax, error) {
	cfg, err := o.config()
	if err != nil {
		return nil, err
	}
	e, err := newEngine(c, cfg)
	if err != nil {
		return nil, err
	}
	return &Lax{common{e}}, nil
}

// Strict returns a strict view of l: its calls wait for Redis like those of
// a Strict counter, on the same slices, so a key can switch between lax and
// strict on the fly within one instance. Closing either closes both.
func (l *Lax) Strict() *Strict { return &Strict{l.common} }

// InstanceID returns this instance's ID.
func (c common) InstanceID() string { return c.e.cfg.id }

// Inc adds delta (>= 0) to this instance's slice of key. Inc(ctx, k, 0) only
// stamps this instance as alive on k. On error the change stays in the
// slice and reaches Redis with a later write or heartbeat; Dec undoes it.
func (s *Strict) Inc(ctx context.Context, key string, delta int64) (Value, error) {
	if err := checkDelta(delta); err != nil {
		return Value{}, err
	}
	return s.e.incStrict(ctx, key, delta)
}

// Dec subtracts delta (>= 0) from this instance's slice of key. Slices may
// go negative.
func (s *Strict) Dec(ctx context.Context, key string, delta int64) (Value, error) {
	if err := checkDelta(delta); err != nil {
		return Value{}, err
	}
	return s.e.incStrict(ctx, key, -delta)
}

// Get returns key's total and this instance's slice, read from Redis (a
// plain read, shared with concurrent reads of key). Changes whose outcome
// is unknown are sent before the read.
func (s *Strict) Get(ctx context.Context, key string) (Value, error) { return s.e.get(ctx, key, false) }

// SetOnInstance makes this instance's slice of key mine.
func (s *Strict) SetOnInstance(ctx context.Context, key string, mine int64) (Value, error) {
	return s.e.setMine(ctx, key, mine, true)
}

// Inc adds delta (>= 0) to this instance's slice of key, in memory. The
// returned Total is the last known remote total plus this instance's slice.
func (l *Lax) Inc(ctx context.Context, key string, delta int64) (Value, error) {
	return l.add(key, delta, 1)
}

// Dec subtracts delta (>= 0) from this instance's slice of key, in memory.
func (l *Lax) Dec(ctx context.Context, key string, delta int64) (Value, error) {
	return l.add(key, delta, -1)
}

func (l *Lax) add(key string, delta, sign int64) (Value, error) {
	if !l.e.validKey(key) {
		return Value{}, l.e.checkKey(key)
	}
	if delta < 0 {
		return Value{}, checkDelta(delta)
	}
	if l.e.closed.Load() {
		return Value{}, ErrClosed
	}
	return l.e.addLocal(key, sign*delta), nil
}

// Get returns key's total and this instance's slice: from memory when the
// last read is younger than FlushInterval, else read from Redis.
func (l *Lax) Get(ctx context.Context, key string) (Value, error) { return l.e.get(ctx, key, true) }

// SetOnInstance makes this instance's slice of key mine, in memory.
func (l *Lax) SetOnInstance(ctx context.Context, key string, mine int64) (Value, error) {
	return l.e.setMine(ctx, key, mine, false)
}

// Buffered returns how many keys hold changes Redis has not acknowledged.
func (l *Lax) Buffered() int { return l.e.dirtyCount() }

// Flush sends every buffered change now and waits for the answer.
func (l *Lax) Flush(ctx context.Context) error { return l.e.flush(ctx) }

// Sync sends the buffered changes of the given keys now, in one pipeline
// (one round trip per Redis node) shared with the strict changes other
// callers make meanwhile, and returns once Redis has acknowledged every
// change made to them before the call: a strict commit of several keys at
// once.
func (l *Lax) Sync(ctx context.Context, keys ...string) error { return l.e.sync(ctx, keys) }

// Push has the buffered changes of the given keys sent soon, without
// waiting: held for 10 ms, then with the next batch of strict changes. A
// strict change to one of them meanwhile that brings its slice back to
// what Redis holds (a release, then a connection to the same room) leaves
// nothing to send, and Sync returns without a round trip. Invalid keys are
// left out.
func (l *Lax) Push(keys ...string) { l.e.push(keys) }

// Set makes key's total v cluster-wide: every slice is removed and v becomes
// the base, owned by no instance. Instances holding slices zero them at their
// next write. A base lives as long as the key; lost Redis data loses it.
func (c common) Set(ctx context.Context, key string, v int64) (Value, error) {
	return c.e.reset(ctx, key, true, v)
}

// Del deletes key cluster-wide and returns its value before, counting this
// instance's unflushed changes. The key is kept as a tombstone
// (Options.TombstoneTTL) so that no cut-off instance brings its old slice
// back.
func (c common) Del(ctx context.Context, key string) (Value, error) {
	return c.e.reset(ctx, key, false, 0)
}

// DelOnInstance removes this instance's slice of key at once and returns
// the value after.
func (c common) DelOnInstance(ctx context.Context, key string) (Value, error) {
	return c.e.setMine(ctx, key, 0, true)
}

// IncIf adds delta to this instance's slice if cond holds for the total
// before the change (buffered changes included), in one script run. When it
// does not, it returns the current value and false. On error the change is
// not made: if Redis applied it after ctx ended, it is taken back.
func (c common) IncIf(ctx context.Context, key string, delta int64, cond Cond) (Value, bool, error) {
	return c.e.incIf(ctx, key, delta, cond)
}

// GetMany reads many keys from Redis in one round trip per Redis node,
// counting this instance's slices as they are in memory.
func (c common) GetMany(ctx context.Context, keys []string) ([]Value, error) {
	return c.e.getMany(ctx, keys)
}

// Clear deletes every counter under the prefix, on every master, leaving
// tombstones like Del. It runs alone: other calls wait for it (until their
// contexts end), and it waits for this instance's writes still on their way
// to Redis (of callers that gave up, or flushes) to be answered first.
func (c common) Clear(ctx context.Context) error { return c.e.clear(ctx) }

// Close removes this instance's slices from Redis at once, stops the
// heartbeat (and flusher) and waits for calls under way; buffered changes go
// with the slices. Later calls return ErrClosed. If ctx ends first, Close
// returns its error at once; see Contexts in the package doc for what
// happens to the rest.
func (c common) Close(ctx context.Context) error { return c.e.close(ctx, true) }

// Kill stops the heartbeat and flusher and abandons this instance's slices
// in Redis, exactly as a crash would: other instances sweep them after the
// dead-instance threshold. For tests and chaos tools.
func (c common) Kill() { _ = c.e.close(context.Background(), false) }

// AddMember is Inc (delta > 0) or Dec (delta < 0) of a member key (see
// Member), in memory, that also sets the member's metadata on this
// instance, empty included, unless delta is negative and meta empty (a
// connection out leaves it as it is): every assertion of the member
// carries it, and the one that makes the member present puts it in the
// join event and the member list. The list shows the metadata an instance
// asserted last.
func (l *Lax) AddMember(key string, delta int64, meta string) (Value, error) {
	if !l.e.cfg.presence {
		return Value{}, errNoPresence
	}
	if err := l.e.checkKey(key); err != nil {
		return Value{}, err
	}
	if l.e.closed.Load() {
		return Value{}, ErrClosed
	}
	st := l.e.acquire(key)
	defer l.e.release(st)
	if delta >= 0 || meta != "" {
		st.mu.Lock()
		if len(st.meta) != len(meta)+1 || st.meta[1:] != meta {
			st.meta = "=" + meta
		}
		st.mu.Unlock()
	}
	v := st.local.Add(delta)
	l.e.changed(st)
	return Value{Total: st.others.Load() + v, Mine: v}, nil
}

// Draining has the members that leave because of this instance from now on
// leave with the reason drained instead of closed.
func (c common) Draining() { c.e.draining.Store(true) }
