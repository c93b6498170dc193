package counter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/bounded"
	"github.com/headcount-go/headcount/internal/cond"
	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/lua"
)

var (
	// ErrClosed is returned by every call after Close.
	ErrClosed = errors.New("headcount: counter closed")
	// ErrInvalidOptions is wrapped by every error about bad Options.
	ErrInvalidOptions = errors.New("headcount: invalid options")
	// ErrInvalidKey is returned, before any Redis call, for a key that is
	// empty, longer than 255 bytes or holds a control character.
	ErrInvalidKey = keyspace.ErrInvalidKey
	// ErrInvalidDelta is returned, before any Redis call, for a negative
	// delta to Inc or Dec.
	ErrInvalidDelta = keyspace.ErrInvalidDelta
	// ErrInvalidPrefix is wrapped (with ErrInvalidOptions) by the error for
	// a bad Options.Prefix.
	ErrInvalidPrefix = keyspace.ErrInvalidPrefix
	// ErrInvalidCond is returned for a Cond with an unknown operator.
	ErrInvalidCond = cond.ErrInvalidCond
)

// CmpOp compares a counter's value with a Cond's operand.
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

// Cond is the condition of IncIf, checked against the value before the
// change.
type Cond = cond.Cond

// DefaultFlushInterval is the FlushInterval of a zero LaxOptions.
const DefaultFlushInterval = 20 * time.Millisecond

// Options configure both counters.
type Options struct {
	// Prefix names the namespace: letters, digits, '_', '.', '-', 1-64
	// bytes. Every Redis key of the counter contains it verbatim.
	Prefix string
	// Logger receives warnings. Default: silent.
	Logger *slog.Logger
}

// LaxOptions configure a Lax counter.
type LaxOptions struct {
	Options
	// FlushInterval is how often buffered changes are sent, in one pipelined
	// batch. Zero means DefaultFlushInterval; negative is refused.
	FlushInterval time.Duration
}

// loadTimeout bounds the script load at construction, which has no
// context: a Redis that is down must not hold up a process's start.
const loadTimeout = time.Second

// core is what both counters share: the client, the key names and the
// operations that go straight to Redis.
type core struct {
	c      redis.UniversalClient
	space  keyspace.Space
	log    *slog.Logger
	closed atomic.Bool
	// calls keeps every caller within its context while Redis hangs.
	calls bounded.Calls
}

func newCore(c redis.UniversalClient, o Options) (*core, error) {
	if err := keyspace.CheckClient(c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	sp, err := keyspace.NewSpace("c", o.Prefix)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	cr := &core{c: c, space: sp, log: cmp.Or(o.Logger, slog.New(slog.DiscardHandler))}
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	// A Redis that is down now, or hangs, is no reason to fail or wait: the
	// scripts load again on first use (NOSCRIPT).
	err = cr.do(ctx, func(ctx context.Context) error { return lua.Load(ctx, c, lua.CounterIncr, lua.CounterFlush) })
	if err != nil {
		cr.log.Warn("headcount: loading counter scripts failed; they load on first use", "err", err)
	}
	return cr, nil
}

// do runs fn, which talks to Redis, and returns its error, or ctx's as soon
// as ctx ends: fn then finishes in the background (see internal/bounded).
// With ctx ended already, fn does not run: nothing changes.
func (c *core) do(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	if rerr := c.calls.Run(ctx, func(ctx context.Context) { err = fn(ctx) }); rerr != nil {
		return rerr
	}
	return err
}

// check validates the arguments every call shares, before any Redis call.
func (c *core) check(key string) error {
	if err := keyspace.CheckKey(key); err != nil {
		return err
	}
	if c.closed.Load() {
		return ErrClosed
	}
	return nil
}

func checkDelta(delta int64) error {
	if delta < 0 {
		return fmt.Errorf("%w: %d is negative; use Dec to subtract", ErrInvalidDelta, delta)
	}
	return nil
}

// incr runs counter_incr: add delta when "value op operand" holds (always
// for a nil c). It returns the value after, or the current value and false.
func (c *core) incr(ctx context.Context, key string, delta int64, cd *Cond) (int64, bool, error) {
	op, operand := "", int64(0)
	if cd != nil {
		op, operand = cd.Op.String(), cd.Operand
	}
	cmd := lua.CounterIncr.Run(ctx, c.c, []string{c.space.Key(key)}, delta, op, operand)
	v, applied, err := parseReply(cmd)
	if err != nil {
		return 0, false, fmt.Errorf("headcount: counter %q: incrementing: %w", key, err)
	}
	return v, applied, nil
}

func (c *core) get(ctx context.Context, key string) (int64, error) {
	v, err := c.c.Get(ctx, c.space.Key(key)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("headcount: counter %q: reading: %w", key, err)
	}
	return v, nil
}

func (c *core) set(ctx context.Context, key string, v int64) (int64, error) {
	if err := c.c.Set(ctx, c.space.Key(key), v, 0).Err(); err != nil {
		return 0, fmt.Errorf("headcount: counter %q: setting: %w", key, err)
	}
	return v, nil
}

func (c *core) del(ctx context.Context, key string) (int64, error) {
	v, err := c.c.GetDel(ctx, c.space.Key(key)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("headcount: counter %q: deleting: %w", key, err)
	}
	return v, nil
}

// clear deletes the main key of every counter under the prefix, on every
// master: a SCAN of the prefix's keys, then DELs in pipelined batches. The
// companion keys (lax writers' batch numbers) stay until they expire, so a
// flush resent after the clear is still recognised and not applied twice.
func (c *core) clear(ctx context.Context) error {
	keys, err := c.space.Scan(ctx, c.c)
	if err != nil {
		return fmt.Errorf("headcount: clear: scanning: %w", err)
	}
	const batch = 500
	for len(keys) > 0 {
		n := min(batch, len(keys))
		_, err := c.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys[:n] {
				p.Del(ctx, c.space.Key(k)) // one key per DEL: the keys span cluster slots
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("headcount: clear: %w", err)
		}
		keys = keys[n:]
	}
	return nil
}

// parseReply reads the {value, applied} reply of both counter scripts. The
// value is a decimal string, parsed as an integer so that no digit is lost.
func parseReply(cmd *redis.Cmd) (int64, bool, error) {
	r, err := cmd.Slice()
	if err != nil {
		return 0, false, err
	}
	if len(r) != 2 {
		return 0, false, fmt.Errorf("headcount: unexpected script reply %v", r)
	}
	v, err := parseInt(r[0])
	if err != nil {
		return 0, false, err
	}
	applied, ok := r[1].(int64)
	if !ok {
		return 0, false, fmt.Errorf("headcount: unexpected script reply %v", r)
	}
	return v, applied == 1, nil
}

// parseInt reads an integer reply element; nil (a missing key) is 0.
func parseInt(x any) (int64, error) {
	switch x := x.(type) {
	case nil:
		return 0, nil
	case int64:
		return x, nil
	case string:
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("headcount: counter value %q is not an integer", x)
		}
		return v, nil
	}
	return 0, fmt.Errorf("headcount: unexpected counter value %v (%T)", x, x)
}

// Strict is a plain counter whose every call is one Redis round trip: the
// change is in Redis when the call returns.
//
// A call that fails with a network error may or may not have been applied,
// and go-redis may itself retry it (ClientOptions.MaxRetries); use Lax,
// whose flushes are idempotent, where a count must never be doubled.
type Strict struct{ core *core }

// NewStrict returns a strict counter. It loads the scripts; a Redis that is
// down now is only logged.
func NewStrict(c redis.UniversalClient, o Options) (*Strict, error) {
	cr, err := newCore(c, o)
	if err != nil {
		return nil, err
	}
	return &Strict{core: cr}, nil
}

// Inc adds delta (>= 0) to key and returns the value after.
func (s *Strict) Inc(ctx context.Context, key string, delta int64) (int64, error) {
	if err := s.core.check(key); err != nil {
		return 0, err
	}
	if err := checkDelta(delta); err != nil {
		return 0, err
	}
	return s.incr(ctx, key, delta)
}

// Dec subtracts delta (>= 0) from key and returns the value after. Values
// may go negative.
func (s *Strict) Dec(ctx context.Context, key string, delta int64) (int64, error) {
	if err := s.core.check(key); err != nil {
		return 0, err
	}
	if err := checkDelta(delta); err != nil {
		return 0, err
	}
	return s.incr(ctx, key, -delta)
}

func (s *Strict) incr(ctx context.Context, key string, delta int64) (v int64, err error) {
	err = s.core.do(ctx, func(ctx context.Context) (err error) {
		v, _, err = s.core.incr(ctx, key, delta, nil)
		return err
	})
	return v, err
}

// Get returns key's value; a missing key is 0.
func (s *Strict) Get(ctx context.Context, key string) (int64, error) {
	if err := s.core.check(key); err != nil {
		return 0, err
	}
	var v int64
	err := s.core.do(ctx, func(ctx context.Context) (err error) {
		v, err = s.core.get(ctx, key)
		return err
	})
	return v, err
}

// Set makes key's value v and returns v.
func (s *Strict) Set(ctx context.Context, key string, v int64) (int64, error) {
	if err := s.core.check(key); err != nil {
		return 0, err
	}
	err := s.core.do(ctx, func(ctx context.Context) error {
		_, err := s.core.set(ctx, key, v)
		return err
	})
	if err != nil {
		return 0, err
	}
	return v, nil
}

// Del deletes key and returns its value before (0 when it did not exist).
// It needs Redis 6.2 or later (GETDEL).
func (s *Strict) Del(ctx context.Context, key string) (int64, error) {
	if err := s.core.check(key); err != nil {
		return 0, err
	}
	var old int64
	err := s.core.do(ctx, func(ctx context.Context) (err error) {
		old, err = s.core.del(ctx, key)
		return err
	})
	return old, err
}

// Clear deletes every counter under the prefix, on every master.
func (s *Strict) Clear(ctx context.Context) error {
	if s.core.closed.Load() {
		return ErrClosed
	}
	// clear gets ctx itself: once the caller has gone it stops at its next
	// command.
	return s.core.do(ctx, func(context.Context) error { return s.core.clear(ctx) })
}

// IncIf adds delta (of either sign) to key if c holds for the value before
// the change, atomically. It returns the value after and true, or the
// current value and false.
func (s *Strict) IncIf(ctx context.Context, key string, delta int64, c Cond) (int64, bool, error) {
	if err := s.core.check(key); err != nil {
		return 0, false, err
	}
	if err := c.Check(); err != nil {
		return 0, false, err
	}
	var v int64
	var ok bool
	err := s.core.do(ctx, func(ctx context.Context) (err error) {
		v, ok, err = s.core.incr(ctx, key, delta, &c)
		return err
	})
	return v, ok, err
}

// Close makes later calls return ErrClosed. A Strict has nothing buffered,
// so it never fails on the first call; the client stays open.
func (s *Strict) Close(ctx context.Context) error {
	if !s.core.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	return nil
}
