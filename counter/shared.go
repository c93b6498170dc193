package counter

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/cond"
	plain "github.com/headcount-go/headcount/internal/counter"
)

// SharedOptions configure a Shared counter.
type SharedOptions struct {
	// Prefix names the counters' namespace; required. 1 to MaxPrefixLen
	// bytes of letters, digits, '_', '.' and '-'. Shared and SharedLax
	// counters with one Prefix count together, in any mix of processes.
	Prefix string
	// Logger receives warnings (a Redis that is down at construction, a
	// failing lax flush). Default: silent.
	Logger *slog.Logger
}

// SharedLaxOptions configure a SharedLax counter.
type SharedLaxOptions struct {
	SharedOptions
	// FlushInterval is how often buffered changes are sent, all keys in
	// one pipelined batch. Zero means DefaultFlushInterval; negative or
	// below 1ms is refused.
	FlushInterval time.Duration
}

func (o SharedOptions) internal() plain.Options {
	return plain.Options{Prefix: o.Prefix, Logger: o.Logger}
}

// Shared is a strict shared counter: one int64 per key, in Redis, that
// every process adds to. Each change is one Redis round trip, an atomic
// operation on the server, and its change is in Redis when it returns. A
// call that fails on the network may or may not have been applied (and
// go-redis may retry it, see its MaxRetries option).
type Shared struct{ c *plain.Strict }

// NewShared returns a strict shared counter. It loads the Lua scripts; a
// Redis that is down now is only logged, the scripts load on first use.
func NewShared(rc redis.UniversalClient, o SharedOptions) (*Shared, error) {
	c, err := plain.NewStrict(rc, o.internal())
	if err != nil {
		return nil, sharedErr(err)
	}
	return &Shared{c}, nil
}

// Inc adds delta (>= 0) to key and returns the value after.
func (s *Shared) Inc(ctx context.Context, key string, delta int64) (int64, error) {
	v, err := s.c.Inc(ctx, key, delta)
	return v, sharedErr(err)
}

// Dec subtracts delta (>= 0) from key and returns the value after. Values
// may go negative.
func (s *Shared) Dec(ctx context.Context, key string, delta int64) (int64, error) {
	v, err := s.c.Dec(ctx, key, delta)
	return v, sharedErr(err)
}

// Get returns key's value; a key never written, or deleted, is 0.
func (s *Shared) Get(ctx context.Context, key string) (int64, error) {
	v, err := s.c.Get(ctx, key)
	return v, sharedErr(err)
}

// Set makes key's value v and returns v.
func (s *Shared) Set(ctx context.Context, key string, v int64) (int64, error) {
	v, err := s.c.Set(ctx, key, v)
	return v, sharedErr(err)
}

// Del deletes key and returns its value before (0 when it did not exist).
func (s *Shared) Del(ctx context.Context, key string) (int64, error) {
	v, err := s.c.Del(ctx, key)
	return v, sharedErr(err)
}

// IncIf adds delta (of either sign) to key if c holds for its value before
// the change, atomically. It returns the value after and true, or the
// current value and false.
func (s *Shared) IncIf(ctx context.Context, key string, delta int64, c Cond) (int64, bool, error) {
	v, ok, err := s.c.IncIf(ctx, key, delta, cond.Cond(c))
	return v, ok, sharedErr(err)
}

// Clear deletes every counter under the Prefix, on every Redis master.
func (s *Shared) Clear(ctx context.Context) error { return sharedErr(s.c.Clear(ctx)) }

// Close makes later calls return ErrClosed. A Shared holds nothing to send
// and no goroutine, so Close never waits. The Redis client stays open.
func (s *Shared) Close(ctx context.Context) error { return sharedErr(s.c.Close(ctx)) }

// SharedLax is a lax shared counter: Inc and Dec add to a per-key delta in
// memory, and a background goroutine sends the deltas of all keys every
// FlushInterval in one pipelined batch. Every flush is applied exactly
// once, also when its reply is lost and it is sent again. Other processes
// see a change one FlushInterval (plus a round trip) later; Get is exact
// for this process's own changes. Changes not yet sent when the process
// crashes are lost; Close sends them.
type SharedLax struct{ c *plain.Lax }

// NewSharedLax returns a lax shared counter and starts its flusher. A
// Redis that is down now is only logged.
func NewSharedLax(rc redis.UniversalClient, o SharedLaxOptions) (*SharedLax, error) {
	c, err := plain.NewLax(rc, plain.LaxOptions{Options: o.internal(), FlushInterval: o.FlushInterval})
	if err != nil {
		return nil, sharedErr(err)
	}
	return &SharedLax{c}, nil
}

// Inc adds delta (>= 0) to key in memory, without waiting for Redis.
// It returns an estimate that costs no round trip: the value last seen in
// Redis for key (at a flush, Set, Del or IncIf) plus this process's changes
// since: for a key it has not read or flushed lately, its changes alone.
// Get returns the current value.
func (l *SharedLax) Inc(ctx context.Context, key string, delta int64) (int64, error) {
	v, err := l.c.Inc(ctx, key, delta)
	return v, sharedErr(err)
}

// Dec subtracts delta (>= 0) from key in memory; see Inc.
func (l *SharedLax) Dec(ctx context.Context, key string, delta int64) (int64, error) {
	v, err := l.c.Dec(ctx, key, delta)
	return v, sharedErr(err)
}

// Get returns key's value in Redis plus this process's changes not yet
// applied there: one round trip.
func (l *SharedLax) Get(ctx context.Context, key string) (int64, error) {
	v, err := l.c.Get(ctx, key)
	return v, sharedErr(err)
}

// Set sends key's buffered changes, then makes its value v and returns v,
// so that none of this process's earlier changes lands after it.
func (l *SharedLax) Set(ctx context.Context, key string, v int64) (int64, error) {
	v, err := l.c.Set(ctx, key, v)
	return v, sharedErr(err)
}

// Del sends key's buffered changes, then deletes key and returns its value
// before, which includes them.
func (l *SharedLax) Del(ctx context.Context, key string) (int64, error) {
	v, err := l.c.Del(ctx, key)
	return v, sharedErr(err)
}

// IncIf sends key's buffered changes, then adds delta (of either sign) in
// Redis if c holds for the value before the change, atomically. It returns
// the value after and true, or the current value and false.
func (l *SharedLax) IncIf(ctx context.Context, key string, delta int64, c Cond) (int64, bool, error) {
	v, ok, err := l.c.IncIf(ctx, key, delta, cond.Cond(c))
	return v, ok, sharedErr(err)
}

// Clear sends every buffered change, then deletes every counter under the
// Prefix, on every Redis master. Changes made while it runs are sent after.
func (l *SharedLax) Clear(ctx context.Context) error { return sharedErr(l.c.Clear(ctx)) }

// Flush sends every buffered change now and waits for Redis to apply it.
func (l *SharedLax) Flush(ctx context.Context) error { return sharedErr(l.c.Flush(ctx)) }

// Close stops the flusher and sends the buffered changes a last time. If
// that flush fails, Close returns the error and those changes are lost.
// Later calls return ErrClosed. The Redis client stays open.
func (l *SharedLax) Close(ctx context.Context) error { return sharedErr(l.c.Close(ctx)) }

// sharedErr gives the plain counters' own sentinel errors this package's
// identity (the per-instance counters' ones), keeping their messages, so
// that errors.Is works the same for all four kinds.
func sharedErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, plain.ErrClosed):
		return alias{err, ErrClosed}
	case errors.Is(err, plain.ErrInvalidOptions):
		return alias{err, ErrInvalidOptions}
	}
	return err
}

// alias is err, also matching target in errors.Is.
type alias struct{ err, target error }

func (a alias) Error() string   { return a.err.Error() }
func (a alias) Unwrap() []error { return []error{a.err, a.target} }
