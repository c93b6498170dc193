package icounter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/lua"
)

func checkDelta(delta int64) error {
	if delta < 0 {
		return fmt.Errorf("%w: %d is negative; use Dec to subtract", ErrInvalidDelta, delta)
	}
	return nil
}

// incStrict changes this instance's slice by d and returns once Redis has
// acknowledged an assertion that includes the change.
func (e *engine) incStrict(ctx context.Context, key string, d int64) (Value, error) {
	st, done, err := e.pin(ctx, key)
	if err != nil {
		return Value{}, err
	}
	defer done()
	st.mu.Lock()
	st.local.Add(d)
	st.pending += d
	st.ver++
	st.force = true
	return e.await(ctx, st, st.ver)
}

// setMine makes this instance's slice mine and, when sync, waits for Redis.
func (e *engine) setMine(ctx context.Context, key string, mine int64, sync bool) (Value, error) {
	st, done, err := e.pin(ctx, key)
	if err != nil {
		return Value{}, err
	}
	defer done()
	st.mu.Lock()
	old := st.local.Swap(mine)
	st.pending += mine - old
	st.ver++
	e.changed(st)
	if !sync {
		v := Value{Total: st.others.Load() + mine, Mine: mine}
		st.mu.Unlock()
		return v, nil
	}
	return e.await(ctx, st, st.ver)
}

// incIf adds delta to this instance's slice if c holds for the total, in one
// script run.
func (e *engine) incIf(ctx context.Context, key string, delta int64, c Cond) (Value, bool, error) {
	if err := c.Check(); err != nil {
		return Value{}, false, err
	}
	st, done, err := e.pin(ctx, key)
	if err != nil {
		return Value{}, false, err
	}
	defer done()
	if err := st.lockIdle(ctx); err != nil {
		return Value{}, false, err
	}
	a := e.begin(st, &c, delta)
	st.users++ // the state stays pinned while the script runs
	st.mu.Unlock()
	// Whoever claims the outcome first owns it: the caller, or, once the
	// caller has given up, the script's goroutine, which then takes back a
	// change the caller will never know was made.
	var claim atomic.Int32
	const caller, background = 1, 2
	err = e.detach(ctx, func(ctx context.Context) {
		defer e.release(st)
		_ = e.send(ctx, []*assertion{a}, nil) // settles a's round, error included
		if !claim.CompareAndSwap(0, caller) && a.r.held {
			e.retract(ctx, st, delta)
		}
	})
	if err != nil && claim.CompareAndSwap(0, background) {
		return Value{}, false, err
	}
	return a.r.val, a.r.held, a.r.err
}

// retract undoes a change of delta that was applied for a caller who had
// stopped waiting, and waits until Redis has it.
func (e *engine) retract(ctx context.Context, st *state, delta int64) {
	st.mu.Lock()
	st.local.Add(-delta)
	st.ver++
	// ErrClosed: shut down meanwhile; a close drops or abandons the slice.
	if _, err := e.await(ctx, st, st.ver); err != nil && !errors.Is(err, ErrClosed) {
		e.cfg.log.Warn("headcount: taking back an abandoned IncIf failed; the heartbeat will", "key", st.key, "err", err)
	}
}

// get returns the total and this instance's slice. Lax counters answer from
// memory while the last read is younger than the flush interval.
func (e *engine) get(ctx context.Context, key string, lax bool) (Value, error) {
	if err := e.checkKey(key); err != nil {
		return Value{}, err
	}
	if lax {
		if v, ok := e.cachedValue(key); ok {
			return v, nil
		}
	}
	st, done, err := e.pin(ctx, key)
	if err != nil {
		return Value{}, err
	}
	defer done()

	st.mu.Lock()
	if !lax && st.round == nil && st.dirty() {
		// Strict: changes whose outcome is unknown go out before we read.
		return e.await(ctx, st, st.ver)
	}
	st.mu.Unlock()
	rd, err := e.readRedis(ctx, st.h)
	if err != nil {
		return Value{}, err
	}
	total, slice, epoch := rd.total, rd.mine, rd.epoch
	st.mu.Lock()
	if !lax && st.round == nil && st.epoch >= 0 && epoch > st.epoch && st.local.Load() != 0 {
		// Reset elsewhere since we last wrote: let an assertion zero our
		// slice the way every write does.
		st.force = true
		return e.await(ctx, st, st.ver)
	}
	if st.epoch < 0 && st.local.Load() == 0 && st.round == nil {
		st.epoch = epoch
	}
	st.others.Store(total - slice)
	st.readAt = time.Now()
	local := st.local.Load()
	st.mu.Unlock()
	return Value{Total: total - slice + local, Mine: local}, nil
}

// cachedValue answers a lax Get from memory when the last read is fresh.
func (e *engine) cachedValue(key string) (Value, bool) {
	if e.closed.Load() {
		return Value{}, false // the read that follows says ErrClosed
	}
	sh := e.shard(key)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	st := sh.m[key]
	if st == nil {
		return Value{}, false
	}
	st.mu.Lock()
	fresh := !st.readAt.IsZero() && time.Since(st.readAt) < e.cfg.flush
	st.mu.Unlock()
	if !fresh {
		return Value{}, false
	}
	l := st.local.Load()
	return Value{Total: st.others.Load() + l, Mine: l}, true
}

// reset runs Set (set true) or Del cluster-wide.
func (e *engine) reset(ctx context.Context, key string, set bool, total int64) (Value, error) {
	st, done, err := e.pin(ctx, key)
	if err != nil {
		return Value{}, err
	}
	defer done()
	if err := st.lockIdle(ctx); err != nil {
		return Value{}, err
	}
	r := newRound()
	r.ver = st.ver
	st.round = r
	l, p := st.local.Load(), st.pending
	st.mu.Unlock()

	mode := "del"
	if set {
		mode = "set"
	}
	if err := e.detach(ctx, func(ctx context.Context) {
		start := time.Now()
		cmd := lua.Reset.Run(ctx, e.client, []string{st.h, st.z},
			e.cfg.id, mode, strconv.FormatInt(total, 10), e.cfg.leaseMs, e.cfg.tombstoneMs, e.cfg.reapPerCall, e.spec(""))
		e.observeScript("reset", start, cmd.Err())
		e.settleReset(st, r, cmd, set, total, l, p)
		if cmd.Err() == nil {
			if err := e.noteReset(ctx, st.h); err != nil {
				e.cfg.log.Warn("headcount: telling other instances of a reset failed; they zero their slices at their next write there",
					"key", key, "err", err)
			}
		}
	}); err != nil {
		return Value{}, err
	}
	return r.val, r.err
}

// settleReset applies a Set or Del reply to the local state: our slice is
// gone with the rest, and changes made since the snapshot (l, p) stay.
func (e *engine) settleReset(st *state, r *round, cmd *redis.Cmd, set bool, total, l, p int64) {
	rep, err := parseInts(cmd, 4)
	st.mu.Lock()
	defer st.mu.Unlock()
	defer e.ended(st, r)
	if err != nil {
		st.known = false
		r.err = err
		return
	}
	e.observeReaped(rep[3])
	st.local.Add(-l)
	st.pending -= p
	st.epoch = rep[2]
	st.stored, st.known = 0, true
	st.readAt = time.Now()
	if set {
		st.others.Store(total)
		r.val = Value{Total: total}
	} else {
		st.others.Store(0)
		r.val = Value{Total: rep[0] - rep[1] + l, Mine: l}
	}
}

// clear deletes every counter of the prefix, on every master, leaving
// tombstones like Del. It runs alone, once this instance's assertions under
// way are answered (see holdRounds); if ctx ends first, it returns ctx's
// error at once and stops at its next Redis command, leaving the counters
// it reached deleted.
func (e *engine) clear(ctx context.Context) error {
	if e.closed.Load() {
		return ErrClosed
	}
	var err error
	// The body gets ctx itself, not the detached one: once the caller has
	// gone, nothing more is worth sending.
	if gerr := e.ops.Alone(ctx, &e.calls, func(context.Context) { err = e.clearAlone(ctx) }); gerr != nil {
		return gerr
	}
	return err
}

func (e *engine) clearAlone(ctx context.Context) error {
	if e.closed.Load() {
		return ErrClosed
	}
	held, err := e.holdRounds(ctx)
	if err != nil {
		return fmt.Errorf("headcount: clear: waiting for assertions under way: %w", err)
	}
	defer e.releaseRounds(held)
	keys, err := e.cfg.space.Scan(ctx, e.client)
	if err != nil {
		return fmt.Errorf("headcount: clear: scanning: %w", err)
	}
	const batch = 500
	for len(keys) > 0 {
		n := min(batch, len(keys))
		calls := make([]*lua.Call, n)
		for i, k := range keys[:n] {
			h := e.cfg.space.Key(k)
			calls[i] = &lua.Call{Script: lua.Reset, Keys: []string{h, h + seenSuffix}, Args: []any{
				e.cfg.id, "del", "0", e.cfg.leaseMs, e.cfg.tombstoneMs, e.cfg.reapPerCall, e.spec("")}}
		}
		start := time.Now()
		err := lua.RunBatch(ctx, e.client, calls)
		e.observeScript("reset", start, err)
		if err != nil {
			return fmt.Errorf("headcount: clear: %w", err)
		}
		for _, c := range calls {
			if rep, err := parseInts(c.Cmd, 4); err == nil {
				e.observeReaped(rep[3])
			}
		}
		keys = keys[n:]
	}
	if err := e.noteReset(ctx, "*"); err != nil {
		return fmt.Errorf("headcount: clear: %w", err)
	}
	e.each(func(st *state) {
		st.local.Add(-st.local.Load())
		st.pending = 0
		st.epoch = -1 // adopt the tombstone's epoch on the next write
		st.stored, st.known = 0, true
		st.others.Store(0)
		st.readAt = time.Time{}
	})
	return nil
}

// holdRounds waits until no counter has a round in flight, and starts an
// empty round on each, which keeps the committer off it until
// releaseRounds. Clear runs alone, but rounds outlive their callers (a
// strict change whose caller gave up, a held release, a lax flush): one
// answered after Clear's reset, against the slice it snapshotted before,
// would leave the slice short or over by what Clear zeroed.
func (e *engine) holdRounds(ctx context.Context) ([]*state, error) {
	var all []*state
	e.each(func(st *state) { all = append(all, st) })
	held := all[:0]
	for _, st := range all {
		if err := st.lockIdle(ctx); err != nil {
			e.releaseRounds(held)
			return nil, err
		}
		st.round = newRound()
		st.mu.Unlock()
		held = append(held, st)
	}
	return held, nil
}

// releaseRounds ends the rounds of holdRounds; a state queued meanwhile
// goes to the committer.
func (e *engine) releaseRounds(held []*state) {
	for _, st := range held {
		st.mu.Lock()
		e.ended(st, st.round)
		st.mu.Unlock()
	}
}

// close removes this instance's slices (graceful) or abandons them (kill),
// and stops background work. Either way later calls get ErrClosed. It
// returns when done or when ctx ends: then what is under way ends by the
// Redis client's own timeouts in the background, and the slices not
// removed are reaped by other instances after the threshold.
func (e *engine) close(ctx context.Context, graceful bool) error {
	if !e.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	e.stop()
	done := make(chan error, 1)
	go func() { done <- e.shutdown(ctx, graceful) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("headcount: close: %w; this instance's slices not removed are reaped after %v",
			ctx.Err(), e.cfg.threshold)
	}
}

// shutdown waits for the background loops and every operation under way,
// then stops the committer and the reader and, if graceful, removes this
// instance's slices and its entry in the registry.
func (e *engine) shutdown(ctx context.Context, graceful bool) error {
	e.bgMu.Lock()
	e.bgEnded = true
	e.bgMu.Unlock()
	e.bg.Wait()
	// closed keeps new operations out; this waits for those inside, which
	// the committer and the reader still serve.
	_ = e.ops.Lock(context.Background())
	defer e.ops.Unlock()
	e.stopLoops()
	e.loops.Wait()
	e.calls.Wait()
	if !graceful {
		return nil
	}
	var hs []string
	e.each(func(st *state) {
		if st.holds() || st.indexedIn != 0 {
			hs = append(hs, st.h)
		}
	})
	session := e.session.Load()
	if _, err := e.drop(ctx, e.cfg.id, session, hs, reasonDrained); err != nil {
		return fmt.Errorf("headcount: close: removing this instance's slices (they will be swept after %v): %w",
			e.cfg.threshold, err)
	}
	pipe := e.client.Pipeline()
	pipe.Del(ctx, e.cfg.space.Index(e.cfg.id, session))
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("headcount: close: deleting this instance's index: %w", err)
	}
	if err := lua.Leave.Run(ctx, e.client, e.live.keys, e.cfg.id, session).Err(); err != nil {
		return fmt.Errorf("headcount: close: leaving the registry: %w", err)
	}
	return nil
}
