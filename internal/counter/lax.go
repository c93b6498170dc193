package counter

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/bounded"
	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/lua"
)

const (
	nShards = 256
	// tokenTTL is how long Redis remembers this writer's last batch number
	// per key after its last flush there. A batch left unanswered for longer
	// (Redis unreachable that long) could be counted twice when resent.
	tokenTTL = time.Hour
	// evictIdle is how long a key without changes keeps its entry, so that
	// a process touching many keys over time does not grow without bound.
	evictIdle = time.Minute
)

// Lax is a plain counter that adds Inc and Dec to an in-memory delta per
// key and sends the deltas of all keys every FlushInterval in one pipelined
// batch. Inc and Dec never wait for Redis; other processes see a change
// within about one FlushInterval. Every flush is exactly-once, also when
// its reply is lost and it is sent again (see the package doc). A flush
// that fails is logged once and retried every interval until it succeeds.
type Lax struct {
	core     *core
	session  string // names this writer's batch-number token keys
	interval time.Duration
	evict    int // idle flushes after which an entry is dropped
	seed     maphash.Seed
	shards   [nShards]shard

	// flushes is held alone by every flush (the flusher's, Flush, Close,
	// Clear, and the per-key flush of Set, Del and IncIf), so that flushes
	// never overlap, and shared by Get, so that it never sees a batch half
	// settled. Inc and Dec do not take it. Waits on it end with the
	// caller's context.
	flushes *bounded.Gate
	batch   uint64 // the last batch number used; under flushes

	stop context.CancelFunc
	done chan struct{}
}

type shard struct {
	mu sync.RWMutex
	m  map[string]*entry
	_  [96]byte // keep neighbouring shards off one cache line (pair)
}

// entry is one key's local state.
type entry struct {
	pending atomic.Int64 // changes not sent yet
	// view is known + unacked + pending: what Inc and Dec return.
	view atomic.Int64

	// Owned by flushes, under Lax.flushes.
	keys    []string // counter key and this writer's token key
	unacked int64    // delta sent with batch number seq, outcome unknown
	seq     uint64
	known   int64 // the value Redis last returned for the key
	idle    int   // flushes in a row with nothing to send
}

// observe records v, the key's value in Redis after every change this
// writer sent was applied: unacked is settled.
func (e *entry) observe(v int64) {
	e.view.Add(v - e.known - e.unacked)
	e.known, e.unacked = v, 0
}

// NewLax returns a lax counter and starts its flusher. It loads the
// scripts; a Redis that is down now is only logged.
func NewLax(c redis.UniversalClient, o LaxOptions) (*Lax, error) {
	if o.FlushInterval < 0 || o.FlushInterval > 0 && o.FlushInterval < time.Millisecond {
		return nil, fmt.Errorf("%w: FlushInterval %v: at least 1ms (0: the default)", ErrInvalidOptions, o.FlushInterval)
	}
	cr, err := newCore(c, o.Options)
	if err != nil {
		return nil, err
	}
	interval := cmp.Or(o.FlushInterval, DefaultFlushInterval)
	l := &Lax{
		core:     cr,
		session:  uuid.NewString(),
		interval: interval,
		evict:    int(evictIdle/interval) + 1,
		seed:     maphash.MakeSeed(),
		done:     make(chan struct{}),
		flushes:  bounded.NewGate(),
	}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*entry)
	}
	ctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	go l.run(ctx)
	return l, nil
}

// run flushes every interval until ctx is cancelled, logging when flushes
// start and stop failing rather than every failed tick.
func (l *Lax) run(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(l.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.flushes.Lock(ctx) != nil {
			return
		}
		err := l.flushLocked(ctx)
		l.flushes.Unlock()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			l.core.log.Warn("headcount: lax counter flush failed; retrying every interval", "err", err)
			failing = true
		case err == nil && failing:
			l.core.log.Info("headcount: lax counter flush works again")
			failing = false
		}
	}
}

func (l *Lax) shard(key string) *shard {
	return &l.shards[maphash.String(l.seed, key)%nShards]
}

func (l *Lax) lookup(key string) *entry {
	s := l.shard(key)
	s.mu.RLock()
	e := s.m[key]
	s.mu.RUnlock()
	return e
}

// Inc adds delta (>= 0) to key in memory. It returns an estimate that costs
// no round trip: the value this Lax last saw in Redis for key (at its last
// flush, Set, Del or IncIf of the key; 0 if it has not seen one lately)
// plus its changes since. Use Get for the current value.
func (l *Lax) Inc(ctx context.Context, key string, delta int64) (int64, error) {
	if !keyspace.ValidKey(key) {
		return 0, keyspace.CheckKey(key)
	}
	if delta < 0 {
		return 0, checkDelta(delta)
	}
	return l.add(key, delta)
}

// Dec subtracts delta (>= 0) from key in memory; see Inc.
func (l *Lax) Dec(ctx context.Context, key string, delta int64) (int64, error) {
	if !keyspace.ValidKey(key) {
		return 0, keyspace.CheckKey(key)
	}
	if delta < 0 {
		return 0, checkDelta(delta)
	}
	return l.add(key, -delta)
}

// add is the warm path: a read lock on one shard and two atomic adds, no
// allocation. The closed check sits under the shard lock so that Close,
// which locks every shard once, knows no add is still under way.
func (l *Lax) add(key string, d int64) (int64, error) {
	s := l.shard(key)
	s.mu.RLock()
	if l.core.closed.Load() {
		s.mu.RUnlock()
		return 0, ErrClosed
	}
	e := s.m[key]
	if e != nil {
		e.pending.Add(d)
		v := e.view.Add(d)
		s.mu.RUnlock()
		return v, nil
	}
	s.mu.RUnlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if l.core.closed.Load() {
		return 0, ErrClosed
	}
	e = s.m[key]
	if e == nil {
		sp := l.core.space
		e = &entry{keys: []string{sp.Key(key), sp.Companion(key, "w:"+l.session)}}
		s.m[key] = e
	}
	e.pending.Add(d)
	return e.view.Add(d), nil
}

// prepare returns the flush call for e, or nil when it has nothing to send.
// A delta whose batch got no answer is sent again, unchanged and with the
// same number, before any newer change (resend is then true): if the first
// send was applied the script recognises the number and does nothing.
func (l *Lax) prepare(e *entry) (call *lua.Call, resend bool) {
	resend = e.unacked != 0
	if !resend {
		d := e.pending.Swap(0)
		if d == 0 {
			e.idle++
			return nil, false
		}
		e.unacked, e.seq = d, l.batch
	}
	e.idle = 0
	return &lua.Call{Script: lua.CounterFlush, Keys: e.keys,
		Args: []any{e.unacked, e.seq, tokenTTL.Milliseconds()}}, resend
}

// settle records the answer to e's flush call. On any error the outcome is
// unknown and e.unacked stays for the next flush.
func settle(e *entry, cmd *redis.Cmd) error {
	v, _, err := parseReply(cmd)
	if err != nil {
		return err
	}
	e.observe(v)
	return nil
}

// flushLocked sends every key's delta in one pipeline. When it had to
// resend unanswered deltas, a second round sends the changes that waited
// for them, so that a flush covers every change made before it. The caller
// holds flushes alone.
func (l *Lax) flushLocked(ctx context.Context) error {
	for {
		resent, err := l.flushRound(ctx)
		if err != nil || !resent {
			return err
		}
	}
}

func (l *Lax) flushRound(ctx context.Context) (resent bool, err error) {
	l.batch++
	var calls []*lua.Call
	var sent []*entry
	for i := range l.shards {
		s := &l.shards[i]
		idle := false
		s.mu.RLock()
		for _, e := range s.m {
			call, resend := l.prepare(e)
			if call != nil {
				calls = append(calls, call)
				sent = append(sent, e)
				resent = resent || resend
			} else if e.idle > l.evict {
				idle = true
			}
		}
		s.mu.RUnlock()
		if idle {
			l.dropIdle(s)
		}
	}
	if len(calls) == 0 {
		return false, nil
	}
	_ = lua.RunBatch(ctx, l.core.c, calls) // each call's outcome is in its Cmd
	var first error
	failed := 0
	for i, call := range calls {
		if err := settle(sent[i], call.Cmd); err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 {
		return resent, fmt.Errorf("headcount: lax flush: %d of %d counters not confirmed (resent with the next flush): %w",
			failed, len(calls), first)
	}
	return resent, nil
}

// dropIdle forgets the idle entries of s. Under the write lock no Inc is
// half done, so an entry with nothing pending can go.
func (l *Lax) dropIdle(s *shard) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.m {
		if e.idle > l.evict && e.unacked == 0 && e.pending.Load() == 0 {
			delete(s.m, k)
		}
	}
}

// Flush sends every buffered change now and waits for the answer.
func (l *Lax) Flush(ctx context.Context) error { return l.alone(ctx, l.flushLocked) }

// alone runs fn with flushes held off, and shared runs it with flushes
// shared, both on a goroutine of their own (see internal/bounded): the
// caller waits until fn is done or ctx ends; flushes stay held until fn is
// done. After Close both return ErrClosed without running fn.
func (l *Lax) alone(ctx context.Context, fn func(ctx context.Context) error) error {
	return l.gated(ctx, l.flushes.Alone, fn)
}

func (l *Lax) shared(ctx context.Context, fn func(ctx context.Context) error) error {
	return l.gated(ctx, l.flushes.Shared, fn)
}

func (l *Lax) gated(ctx context.Context, hold func(context.Context, *bounded.Calls, func(context.Context)) error,
	fn func(ctx context.Context) error) error {
	var err error
	herr := hold(ctx, &l.core.calls, func(ctx context.Context) {
		if l.core.closed.Load() {
			err = ErrClosed
			return
		}
		err = fn(ctx)
	})
	if herr != nil {
		return herr
	}
	return err
}

// Get returns key's value in Redis plus this process's changes not yet
// applied there. It waits for a flush under way.
func (l *Lax) Get(ctx context.Context, key string) (int64, error) {
	if err := keyspace.CheckKey(key); err != nil {
		return 0, err
	}
	var v int64
	err := l.shared(ctx, func(ctx context.Context) (err error) {
		v, err = l.get(ctx, key)
		return err
	})
	return v, err
}

// get is Get with flushes shared.
func (l *Lax) get(ctx context.Context, key string) (int64, error) {
	e := l.lookup(key)
	if e == nil {
		return l.core.get(ctx, key)
	}
	local := e.pending.Load()
	if e.unacked == 0 {
		v, err := l.core.get(ctx, key)
		if err != nil {
			return 0, err
		}
		return v + local, nil
	}
	// A batch with this key's delta got no answer: the delta is in Redis
	// exactly when the token has reached the batch's number.
	r, err := l.core.c.MGet(ctx, e.keys...).Result()
	if err != nil {
		return 0, fmt.Errorf("headcount: counter %q: reading: %w", key, err)
	}
	v, err := parseInt(r[0])
	if err != nil {
		return 0, err
	}
	tok, err := parseInt(r[1])
	if err != nil {
		return 0, err
	}
	if uint64(tok) < e.seq {
		local += e.unacked
	}
	return v + local, nil
}

// exclusive runs fn with flushes held off, after sending key's buffered
// changes, so that fn acts on a Redis value that includes them and no
// earlier change of this process can land after it. e is nil when this
// process has no state for key.
func (l *Lax) exclusive(ctx context.Context, key string, fn func(ctx context.Context, e *entry) error) error {
	if err := keyspace.CheckKey(key); err != nil {
		return err
	}
	return l.alone(ctx, func(ctx context.Context) error {
		e := l.lookup(key)
		if e != nil {
			if err := l.flushEntry(ctx, e); err != nil {
				return fmt.Errorf("headcount: counter %q: sending buffered changes first: %w", key, err)
			}
		}
		return fn(ctx, e)
	})
}

// flushEntry sends e's delta like flushLocked, for one key.
func (l *Lax) flushEntry(ctx context.Context, e *entry) error {
	for {
		l.batch++
		call, resend := l.prepare(e)
		if call == nil {
			return nil
		}
		if err := settle(e, call.Script.Run(ctx, l.core.c, call.Keys, call.Args...)); err != nil {
			return err
		}
		if !resend {
			return nil
		}
	}
}

// Set sends key's buffered changes, then makes its value v and returns v.
func (l *Lax) Set(ctx context.Context, key string, v int64) (int64, error) {
	err := l.exclusive(ctx, key, func(ctx context.Context, e *entry) error {
		if _, err := l.core.set(ctx, key, v); err != nil {
			return err
		}
		if e != nil {
			e.observe(v)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return v, nil
}

// Del sends key's buffered changes, then deletes key and returns its value
// before, which includes them.
func (l *Lax) Del(ctx context.Context, key string) (int64, error) {
	var old int64
	err := l.exclusive(ctx, key, func(ctx context.Context, e *entry) error {
		var err error
		if old, err = l.core.del(ctx, key); err != nil {
			return err
		}
		if e != nil {
			e.observe(0)
		}
		return nil
	})
	return old, err
}

// IncIf sends key's buffered changes, then adds delta (of either sign) in
// Redis if c holds for the value before the change; see Strict.IncIf.
func (l *Lax) IncIf(ctx context.Context, key string, delta int64, c Cond) (int64, bool, error) {
	if err := keyspace.CheckKey(key); err != nil {
		return 0, false, err
	}
	if err := c.Check(); err != nil {
		return 0, false, err
	}
	var v int64
	var ok bool
	err := l.exclusive(ctx, key, func(ctx context.Context, e *entry) error {
		var err error
		if v, ok, err = l.core.incr(ctx, key, delta, &c); err != nil {
			return err
		}
		if e != nil {
			e.observe(v)
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return v, ok, nil
}

// Clear sends every buffered change, then deletes every counter under the
// prefix, on every master, so that none of this process's earlier changes
// can land after it. Changes made while Clear runs are sent after it.
func (l *Lax) Clear(ctx context.Context) error {
	return l.alone(ctx, func(dctx context.Context) error {
		if err := l.flushLocked(dctx); err != nil {
			return fmt.Errorf("headcount: clear: sending buffered changes first: %w", err)
		}
		// ctx itself: once the caller has gone, Clear stops at its next
		// command.
		if err := l.core.clear(ctx); err != nil {
			return err
		}
		for i := range l.shards {
			s := &l.shards[i]
			s.mu.RLock()
			for _, e := range s.m {
				e.observe(0)
			}
			s.mu.RUnlock()
		}
		return nil
	})
}

// Close stops the flusher and sends the buffered changes a last time. If
// that flush fails (go-redis has already retried what it could), Close
// returns the error and those changes are lost. If ctx ends first, Close
// returns ctx's error at once and the last flush goes on in the background,
// bounded by the client's own timeouts. Later calls return ErrClosed. The
// client stays open.
func (l *Lax) Close(ctx context.Context) error {
	if !l.core.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	l.stop()
	done := make(chan error, 1)
	go func() {
		<-l.done
		// Wait for Inc and Dec calls that passed the closed check.
		for i := range l.shards {
			l.shards[i].mu.Lock()
			l.shards[i].mu.Unlock() //nolint:staticcheck // the empty critical section is the barrier
		}
		_ = l.flushes.Lock(context.Background()) // calls under way end
		defer l.flushes.Unlock()
		// Not cut short by ctx: once the caller has gone, the last flush
		// still goes out when Redis answers.
		done <- l.flushLocked(context.WithoutCancel(ctx))
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("headcount: close: %w; the last flush goes on in the background", ctx.Err())
	}
}
