package counter

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/cond"
	"github.com/headcount-go/headcount/internal/icounter"
)

// PerInstanceOptions configure a PerInstance counter.
type PerInstanceOptions struct {
	// Prefix names the counters' namespace; required. 1 to MaxPrefixLen
	// bytes of letters, digits, '_', '.' and '-'. PerInstance and
	// PerInstanceLax counters with one Prefix count together, in any mix of
	// processes.
	Prefix string
	// InstanceID names this process. Default: a new UUID. A stable ID (a
	// pod name) lets a restarted process sweep its predecessor's slices at
	// once, on every key, instead of after DeadInstanceThreshold. Two
	// live counters of a Prefix must never share one, whether in two
	// processes (ErrDuplicateInstance) or in one (a PerInstance and a
	// PerInstanceLax of one Prefix need an ID each: each would sweep the
	// other's slices). Same key rules as a counter key.
	InstanceID string
	// DeadInstanceThreshold is how long an instance may miss its heartbeat
	// before another instance sweeps its slices from every key. Zero means
	// DefaultDeadInstanceThreshold (30s); at least 10ms. Every instance of
	// a prefix must use the same.
	DeadInstanceThreshold time.Duration
	// HeartbeatInterval is how often this instance stamps itself alive (one
	// short script, whatever its keys), learns of dead instances to sweep
	// and checks that Redis kept its data. Zero means
	// DeadInstanceThreshold/3; below 1ms or more than
	// DeadInstanceThreshold/2 is refused, so that one missed beat never
	// gets a live instance swept.
	HeartbeatInterval time.Duration
	// TombstoneTTL is how long a key reset by Set, Del or Clear remembers
	// the reset, so that an instance cut off from Redis during it zeroes its
	// slice when it returns instead of bringing it back. Zero means
	// DefaultTombstoneTTL (24h); a shorter one is raised to two slice
	// leases (20 minutes by default), as long as a counter lives.
	TombstoneTTL time.Duration
	// Logger receives warnings and errors. Default: silent.
	Logger *slog.Logger
}

// PerInstanceLaxOptions configure a PerInstanceLax counter.
type PerInstanceLaxOptions struct {
	PerInstanceOptions
	// FlushInterval is how often buffered changes are sent, all keys in
	// one pipelined batch. Zero means DefaultFlushInterval; negative or
	// below 1ms is refused.
	FlushInterval time.Duration
}

func (o PerInstanceOptions) internal() icounter.Options {
	return icounter.Options{
		Prefix:                o.Prefix,
		InstanceID:            o.InstanceID,
		DeadInstanceThreshold: o.DeadInstanceThreshold,
		HeartbeatInterval:     o.HeartbeatInterval,
		TombstoneTTL:          o.TombstoneTTL,
		Logger:                o.Logger,
	}
}

// PerInstance is a strict per-instance counter: every process (instance)
// owns a slice of each key, the key's Total is the sum of the live slices
// plus a base written by Set, and the slices of an instance not seen for
// DeadInstanceThreshold are swept by the others. Each change is in Redis
// when the call returns; concurrent changes, to any keys, share round
// trips. A background heartbeat, every HeartbeatInterval (one short
// script, whatever the keys), keeps this instance alive.
type PerInstance struct{ c *icounter.Strict }

// NewPerInstance returns a strict per-instance counter and starts its
// heartbeat. It loads the Lua scripts and reads the Redis clock; a Redis
// that is down now is only logged, and the counter catches up later.
func NewPerInstance(rc redis.UniversalClient, o PerInstanceOptions) (*PerInstance, error) {
	c, err := icounter.NewStrict(rc, o.internal())
	if err != nil {
		return nil, err
	}
	return &PerInstance{c}, nil
}

// InstanceID returns this instance's ID.
func (p *PerInstance) InstanceID() string { return p.c.InstanceID() }

// Inc adds delta (>= 0) to this instance's slice of key. Inc(ctx, key, 0)
// only marks this instance alive on key. On error the change stays in the
// slice and reaches Redis with a later write or heartbeat; Dec undoes it.
func (p *PerInstance) Inc(ctx context.Context, key string, delta int64) (Value, error) {
	v, err := p.c.Inc(ctx, key, delta)
	return Value(v), err
}

// Dec subtracts delta (>= 0) from this instance's slice of key. Slices may
// go negative. On error the change stays in the slice, as with Inc.
func (p *PerInstance) Dec(ctx context.Context, key string, delta int64) (Value, error) {
	v, err := p.c.Dec(ctx, key, delta)
	return Value(v), err
}

// Get returns key's Total and this instance's slice: a plain read, shared
// with concurrent reads of the same key.
func (p *PerInstance) Get(ctx context.Context, key string) (Value, error) {
	v, err := p.c.Get(ctx, key)
	return Value(v), err
}

// Set makes key's Total v cluster-wide: every slice is removed and v
// becomes the base, owned by no instance (it outlives its writer, but not a
// loss of Redis data). Instances holding slices zero them at their next
// write. A base is kept for TombstoneTTL after the Set, and as long as the
// key is written to or holds a live instance's slice other than 0 (two
// slice leases past the last of those): not for good. For a count that must last, use
// a Shared counter.
func (p *PerInstance) Set(ctx context.Context, key string, v int64) (Value, error) {
	r, err := p.c.Set(ctx, key, v)
	return Value(r), err
}

// Del deletes key cluster-wide, slices and base, and returns its value
// before. The key is kept as a tombstone for TombstoneTTL, so that no
// instance cut off during the Del brings its old slice back.
func (p *PerInstance) Del(ctx context.Context, key string) (Value, error) {
	v, err := p.c.Del(ctx, key)
	return Value(v), err
}

// SetOnInstance makes this instance's slice of key mine and returns the
// value after; the other instances' slices are untouched.
func (p *PerInstance) SetOnInstance(ctx context.Context, key string, mine int64) (Value, error) {
	v, err := p.c.SetOnInstance(ctx, key, mine)
	return Value(v), err
}

// DelOnInstance removes this instance's slice of key and returns the value
// after.
func (p *PerInstance) DelOnInstance(ctx context.Context, key string) (Value, error) {
	v, err := p.c.DelOnInstance(ctx, key)
	return Value(v), err
}

// IncIf adds delta (of either sign) to this instance's slice of key if c
// holds for the Total before the change, in one atomic script run: a
// cluster-wide limit. It returns the value after and true, or the current
// value and false. On error the change is not made (if Redis applied it
// after ctx ended, it is taken back).
func (p *PerInstance) IncIf(ctx context.Context, key string, delta int64, c Cond) (Value, bool, error) {
	v, ok, err := p.c.IncIf(ctx, key, delta, cond.Cond(c))
	return Value(v), ok, err
}

// Clear deletes every counter under the Prefix, on every Redis master,
// leaving tombstones like Del.
func (p *PerInstance) Clear(ctx context.Context) error { return p.c.Clear(ctx) }

// Close removes this instance's slices from Redis at once (no wait for the
// reap), stops the heartbeat and waits for calls under way. Later calls
// return ErrClosed. The Redis client stays open.
func (p *PerInstance) Close(ctx context.Context) error { return p.c.Close(ctx) }

// PerInstanceLax is a lax per-instance counter: the slices, reaping and
// heartbeat of PerInstance, but Inc, Dec, Get and SetOnInstance work in
// memory, and a background goroutine sends every changed slice every
// FlushInterval in one pipelined batch. Totals from other instances are at
// most one FlushInterval (plus a round trip) old; this instance's own
// changes are always counted. Set, Del, DelOnInstance and IncIf act on
// Redis at once, carrying the key's buffered changes with them.
type PerInstanceLax struct{ c *icounter.Lax }

// NewPerInstanceLax returns a lax per-instance counter and starts its
// heartbeat and flusher; see NewPerInstance.
func NewPerInstanceLax(rc redis.UniversalClient, o PerInstanceLaxOptions) (*PerInstanceLax, error) {
	c, err := icounter.NewLax(rc, icounter.LaxOptions{Options: o.internal(), FlushInterval: o.FlushInterval})
	if err != nil {
		return nil, err
	}
	return &PerInstanceLax{c: c}, nil
}

// InstanceID returns this instance's ID.
func (p *PerInstanceLax) InstanceID() string { return p.c.InstanceID() }

// Inc adds delta (>= 0) to this instance's slice of key, in memory. The
// returned Total is the last Total read from Redis plus this instance's
// changes since (for a key it has not read or flushed lately, its
// changes alone); Get reads the current one.
func (p *PerInstanceLax) Inc(ctx context.Context, key string, delta int64) (Value, error) {
	v, err := p.c.Inc(ctx, key, delta)
	return Value(v), err
}

// Dec subtracts delta (>= 0) from this instance's slice of key, in memory.
func (p *PerInstanceLax) Dec(ctx context.Context, key string, delta int64) (Value, error) {
	v, err := p.c.Dec(ctx, key, delta)
	return Value(v), err
}

// Handle returns a handle on key: its Inc and Dec are this counter's Inc
// and Dec on key without looking the key up again, an atomic add in
// memory, for a caller that changes one key often (a stream's viewer
// count, a connection's room). The key stays in memory until the handle's
// Close.
func (p *PerInstanceLax) Handle(key string) (*Handle, error) {
	h, err := p.c.Handle(key)
	if err != nil {
		return nil, err
	}
	return &Handle{h: h}, nil
}

// Handle is one key of a PerInstanceLax, looked up once; see
// PerInstanceLax.Handle. It is safe for concurrent use.
type Handle struct{ h *icounter.Handle }

// Key returns the handle's key.
func (h *Handle) Key() string { return h.h.Key() }

// Inc adds delta (>= 0) to this instance's slice of the key, in memory,
// like PerInstanceLax.Inc.
func (h *Handle) Inc(delta int64) (Value, error) {
	v, err := h.h.Inc(delta)
	return Value(v), err
}

// Dec subtracts delta (>= 0) from this instance's slice of the key, in
// memory.
func (h *Handle) Dec(delta int64) (Value, error) {
	v, err := h.h.Dec(delta)
	return Value(v), err
}

// Close releases the handle: its Inc and Dec return ErrHandleClosed from
// then on (a change racing Close may be lost). The key's count is kept.
func (h *Handle) Close() { h.h.Close() }

// Get returns key's Total and this instance's slice: from memory when the
// last read of key is younger than FlushInterval, else from Redis.
func (p *PerInstanceLax) Get(ctx context.Context, key string) (Value, error) {
	v, err := p.c.Get(ctx, key)
	return Value(v), err
}

// Set makes key's Total v cluster-wide, as PerInstance.Set does; this
// instance's buffered changes to key are part of what it replaces.
func (p *PerInstanceLax) Set(ctx context.Context, key string, v int64) (Value, error) {
	r, err := p.c.Set(ctx, key, v)
	return Value(r), err
}

// Del deletes key cluster-wide and returns its value before, counting this
// instance's buffered changes; see PerInstance.Del.
func (p *PerInstanceLax) Del(ctx context.Context, key string) (Value, error) {
	v, err := p.c.Del(ctx, key)
	return Value(v), err
}

// SetOnInstance makes this instance's slice of key mine, in memory.
func (p *PerInstanceLax) SetOnInstance(ctx context.Context, key string, mine int64) (Value, error) {
	v, err := p.c.SetOnInstance(ctx, key, mine)
	return Value(v), err
}

// DelOnInstance removes this instance's slice of key from Redis at once
// and returns the value after.
func (p *PerInstanceLax) DelOnInstance(ctx context.Context, key string) (Value, error) {
	v, err := p.c.DelOnInstance(ctx, key)
	return Value(v), err
}

// IncIf adds delta (of either sign) to this instance's slice of key if c
// holds for the Total before the change, this instance's buffered changes
// included, in one atomic script run; see PerInstance.IncIf.
func (p *PerInstanceLax) IncIf(ctx context.Context, key string, delta int64, c Cond) (Value, bool, error) {
	v, ok, err := p.c.IncIf(ctx, key, delta, cond.Cond(c))
	return Value(v), ok, err
}

// Clear deletes every counter under the Prefix, on every Redis master,
// leaving tombstones like Del; this instance's buffered changes go too.
func (p *PerInstanceLax) Clear(ctx context.Context) error { return p.c.Clear(ctx) }

// Flush sends every buffered change now and waits for Redis to apply it.
func (p *PerInstanceLax) Flush(ctx context.Context) error { return p.c.Flush(ctx) }

// Close removes this instance's slices from Redis at once, buffered
// changes included, stops the heartbeat and flusher and waits for calls
// under way. Later calls return ErrClosed. The Redis client stays open.
func (p *PerInstanceLax) Close(ctx context.Context) error { return p.c.Close(ctx) }
