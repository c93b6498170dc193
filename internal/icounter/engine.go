package icounter

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/bounded"
	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/lua"
)

const nShards = 64

// startTimeout bounds the Redis calls of a constructor, which has no
// context (go-redis gives up dialling a Redis that is down when it ends).
const startTimeout = time.Second

// seenSuffix names a counter's last-seen set after its hash.
const seenSuffix = ":seen"

// engine is the machinery shared by Strict and Lax.
type engine struct {
	cfg    config
	client redis.UniversalClient
	// session and seq order this process's assertions: (session, seq) grows
	// with every assertion, and session, taken from Redis TIME at start,
	// grows across restarts of the same InstanceID.
	session int64
	seq     atomic.Int64

	seed   maphash.Seed
	shards [nShards]shard

	// ops is entered by every operation that talks to Redis; Clear, Close
	// and Kill take it alone. Waits on it end with the caller's context.
	ops    *bounded.Gate
	closed atomic.Bool
	stop   context.CancelFunc
	bg     sync.WaitGroup
	// calls runs Redis calls so that no caller waits past its context, and
	// tracks those that run on after their callers stopped waiting.
	calls bounded.Calls

	dupLogged atomic.Bool
	slow      atomic.Bool // the last batch took more than threshold/2
}

type shard struct {
	mu sync.RWMutex
	m  map[string]*state
	_  [32]byte // keep neighbouring shards off one cache line
}

func newEngine(c redis.UniversalClient, cfg config) (*engine, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil Redis client", ErrInvalidOptions)
	}
	e := &engine{cfg: cfg, client: c, seed: maphash.MakeSeed(), ops: bounded.NewGate()}
	for i := range e.shards {
		e.shards[i].m = make(map[string]*state)
	}
	e.session = e.start(c)
	bgCtx, stop := context.WithCancel(context.Background())
	e.stop = stop
	e.goLoop(bgCtx, cfg.heartbeat, true)
	if cfg.lax {
		e.goLoop(bgCtx, cfg.flush, false)
	}
	return e, nil
}

func (e *engine) goLoop(ctx context.Context, every time.Duration, heartbeat bool) {
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := e.tick(ctx, heartbeat); err != nil && ctx.Err() == nil {
					e.cfg.log.Warn("headcount: background write failed", "heartbeat", heartbeat, "err", err)
				}
			}
		}
	}()
}

// start reads the session from Redis' clock and loads the scripts, for at
// most startTimeout: a Redis that is down, or hangs, must neither stop the
// process from starting nor hold it up. Scripts then load on first use, and
// the session falls back to this process's clock.
func (e *engine) start(c redis.UniversalClient) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	clock := make(chan int64, 1)
	_ = e.calls.Run(ctx, func(ctx context.Context) {
		t, err := c.Time(ctx).Result()
		if err != nil {
			e.cfg.log.Warn("headcount: Redis TIME failed; using the local clock for the session", "err", err)
			return
		}
		clock <- t.UnixMicro()
		if err := lua.Load(ctx, c, lua.Assert, lua.AssertMany, lua.Read, lua.Reset, lua.Drop); err != nil {
			e.cfg.log.Warn("headcount: loading scripts failed; they load on first use", "err", err)
		}
	})
	select {
	case session := <-clock:
		return session
	default:
		if ctx.Err() != nil {
			e.cfg.log.Warn("headcount: Redis did not answer TIME in time; using the local clock for the session", "after", startTimeout)
		}
		return time.Now().UnixMicro()
	}
}

// detach runs fn, which talks to Redis, and returns when it is done or when
// ctx ends, whichever comes first (see bounded.Calls.Run).
func (e *engine) detach(ctx context.Context, fn func(ctx context.Context)) error {
	return e.calls.Run(ctx, fn)
}

// enter starts an operation that talks to Redis; call e.ops.Leave when it
// is done. It waits for a Clear under way, until ctx ends.
func (e *engine) enter(ctx context.Context) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if err := e.ops.Enter(ctx); err != nil {
		return err
	}
	if e.closed.Load() {
		e.ops.Leave()
		return ErrClosed
	}
	return nil
}

func (e *engine) shard(key string) *shard {
	return &e.shards[maphash.String(e.seed, key)%nShards]
}

func (e *engine) newState(key string) *state {
	st := &state{key: key, h: e.cfg.space.Key(key), epoch: -1, known: true}
	st.z = st.h + seenSuffix
	return st
}

// acquire returns the state of key, made if needed, pinned against the
// sweeper until release.
func (e *engine) acquire(key string) *state {
	sh := e.shard(key)
	sh.mu.RLock()
	st := sh.m[key]
	if st != nil {
		st.mu.Lock()
		st.users++
		st.mu.Unlock()
		sh.mu.RUnlock()
		return st
	}
	sh.mu.RUnlock()
	sh.mu.Lock()
	if st = sh.m[key]; st == nil {
		st = e.newState(key)
		sh.m[key] = st
	}
	st.mu.Lock()
	st.users++
	st.mu.Unlock()
	sh.mu.Unlock()
	return st
}

func (e *engine) release(st *state) {
	st.mu.Lock()
	st.users--
	st.mu.Unlock()
}

// pin starts an operation on key that talks to Redis: it checks the key,
// enters (see enter) and acquires the key's state. done ends it.
func (e *engine) pin(ctx context.Context, key string) (st *state, done func(), err error) {
	if err := checkKey(key); err != nil {
		return nil, nil, err
	}
	if err := e.enter(ctx); err != nil {
		return nil, nil, err
	}
	st = e.acquire(key)
	return st, func() {
		e.release(st)
		e.ops.Leave()
	}, nil
}

// addLocal is the lax warm path: one map look-up under a shared lock and one
// atomic add. It never waits for Redis.
func (e *engine) addLocal(key string, d int64) Value {
	sh := e.shard(key)
	sh.mu.RLock()
	if st := sh.m[key]; st != nil {
		v := st.local.Add(d)
		o := st.others.Load()
		sh.mu.RUnlock()
		return Value{Total: o + v, Mine: v}
	}
	sh.mu.RUnlock()
	sh.mu.Lock()
	st := sh.m[key]
	if st == nil {
		st = e.newState(key)
		sh.m[key] = st
	}
	v := st.local.Add(d)
	o := st.others.Load()
	sh.mu.Unlock()
	return Value{Total: o + v, Mine: v}
}

// assertion is one "my slice of this counter is l" about to be sent.
type assertion struct {
	st    *state
	r     *round
	l, d  int64
	epoch int64
	seq   int64
	cond  *Cond
	delta int64 // added when cond holds
}

// begin installs a new round on st and snapshots what to assert. Call with
// st.mu held and no round in flight.
func (e *engine) begin(st *state, c *Cond, delta int64) *assertion {
	r := newRound(st.ver)
	st.round = r
	a := &assertion{st: st, r: r, l: st.local.Load(), d: st.pending, epoch: st.epoch,
		seq: e.seq.Add(1), cond: c, delta: delta}
	st.pending = 0
	return a
}

func (e *engine) call(a *assertion) *lua.Call {
	op, operand := "", "0"
	if a.cond != nil {
		op, operand = a.cond.Op.String(), strconv.FormatInt(a.cond.Operand, 10)
	}
	return &lua.Call{Script: lua.Assert, Keys: []string{a.st.h, a.st.z}, Args: []any{
		e.cfg.id, e.session, a.seq, a.epoch,
		strconv.FormatInt(a.l, 10), strconv.FormatInt(a.d, 10),
		e.cfg.thresholdMs, e.cfg.counterTTLMs, e.cfg.reapPerCall,
		op, operand, strconv.FormatInt(a.delta, 10),
	}}
}

// exchange sends one assertion on its own and settles its round.
func (e *engine) exchange(ctx context.Context, a *assertion) {
	c := e.call(a)
	start := time.Now()
	c.Cmd = lua.Assert.Run(ctx, e.client, c.Keys, c.Args...)
	e.observeScript("assert", start, c.Cmd.Err())
	e.settle(a, c.Cmd)
}

// Assertion reply statuses, see assert.lua.
const (
	statusStale      = 0
	statusApplied    = 1
	statusReset      = 2
	statusSuperseded = 3
)

// settle applies Redis' answer to an assertion to the local state, and wakes
// the callers waiting on its round.
func (e *engine) settle(a *assertion, cmd *redis.Cmd) {
	vals, err := cmd.Slice()
	e.settleVals(a, vals, err)
}

// settleVals is settle for one reply of assert.lua (six values), or err.
func (e *engine) settleVals(a *assertion, vals []any, err error) {
	var rep []int64
	if err == nil {
		rep, err = parseVals(vals, 6)
	}
	st, r := a.st, a.r
	st.mu.Lock()
	defer st.mu.Unlock()
	defer close(r.done)
	st.round = nil
	if err != nil {
		st.pending += a.d
		st.known = false
		r.err = err
		return
	}
	status, total, slice, epoch := rep[0], rep[1], rep[2], rep[3]
	e.observeReaped(rep[4])
	r.val = Value{Total: total, Mine: slice}
	switch status {
	case statusStale:
		// A newer assertion is stored already; it is the one that counts.
		st.known = false
		return
	case statusSuperseded:
		st.pending += a.d
		st.known = false
		r.err = fmt.Errorf("%w: instance ID %q", ErrDuplicateInstance, e.cfg.id)
		if e.dupLogged.CompareAndSwap(false, true) {
			e.cfg.log.Error("headcount: another process with a newer session uses this instance ID; this process's counts are refused",
				"instance", e.cfg.id, "key", st.key)
		}
		return
	case statusReset:
		// The counter was reset since our last write: what we had asserted
		// is gone, and Redis took the pending changes as our slice instead.
		st.local.Add(a.d - a.l)
	}
	if a.cond != nil && rep[5] == 1 {
		st.local.Add(a.delta)
		r.held = true
	}
	st.epoch = epoch
	st.stored = slice
	st.known = true
	st.others.Store(total - slice)
	st.readAt = time.Now()
}

// parseInts reads a script's array reply of integers and decimal strings.
func parseInts(cmd *redis.Cmd, n int) ([]int64, error) {
	vals, err := cmd.Slice()
	if err != nil {
		return nil, err
	}
	return parseVals(vals, n)
}

func parseVals(vals []any, n int) ([]int64, error) {
	var err error
	if len(vals) < n {
		return nil, fmt.Errorf("headcount: script reply has %d values, want %d", len(vals), n)
	}
	out := make([]int64, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case int64:
			out[i] = v
		case string:
			if out[i], err = strconv.ParseInt(v, 10, 64); err != nil {
				return nil, fmt.Errorf("headcount: script reply: %w", err)
			}
		default:
			return nil, fmt.Errorf("headcount: script reply has %T", v)
		}
	}
	return out, nil
}

// await makes sure the strict change numbered my reaches Redis: it joins the
// round in flight when that round covers it, or waits and sends the next
// one itself. Call with st.mu held; it returns with st.mu released.
func (e *engine) await(ctx context.Context, st *state, my int64) (Value, error) {
	for {
		r := st.round
		if r == nil {
			a := e.begin(st, nil, 0)
			st.mu.Unlock()
			if err := e.detach(ctx, func(ctx context.Context) { e.exchange(ctx, a) }); err != nil {
				return Value{}, err
			}
			return a.r.val, a.r.err
		}
		st.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			// The change stays in the slice; a later round carries it.
			return Value{}, ctx.Err()
		}
		// A round cut short by its sender's context says nothing about ours.
		if r.ver >= my && !(isContextErr(r.err) && ctx.Err() == nil) {
			return r.val, r.err
		}
		st.mu.Lock()
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// tick sends, in one pipeline, an assertion for every counter that needs
// one: the dirty ones when flushing, every one with a slice on a heartbeat.
// After a heartbeat it forgets counters that carry nothing.
func (e *engine) tick(ctx context.Context, heartbeat bool) error {
	if err := e.enter(ctx); err != nil {
		return nil
	}
	defer e.ops.Leave()
	var as []*assertion
	e.each(func(st *state) {
		if st.round == nil && (st.dirty() || heartbeat && (st.local.Load() != 0 || st.stored != 0)) {
			as = append(as, e.begin(st, nil, 0))
		}
	})
	start := time.Now()
	err := e.send(ctx, as)
	if len(as) > 0 {
		e.observeFlush(heartbeat, len(as), start, err)
		e.checkPace(len(as), time.Since(start))
	}
	if heartbeat {
		e.sweep()
	}
	return err
}

// checkPace warns when one batch took more than half the threshold. Liveness
// is stamped per counter by this instance's own assertions, so a node whose
// batches take that long may see other nodes reap the slices it is still
// sending: a false reap, healed by its next heartbeat, but wrong meanwhile.
// It logs once when that starts and once when it ends.
func (e *engine) checkPace(keys int, d time.Duration) {
	slow := d > e.cfg.threshold/2
	if e.slow.Swap(slow) == slow {
		return
	}
	if slow {
		e.cfg.log.Warn("headcount: one batch of assertions took more than half of DeadInstanceThreshold; other nodes may reap this node's counts while it is alive: raise DeadInstanceThreshold or spread the counters over more nodes",
			"counters", keys, "took", d, "threshold", e.cfg.threshold)
	} else {
		e.cfg.log.Info("headcount: batches of assertions are back within half of DeadInstanceThreshold", "took", d)
	}
}

// send runs the assertions in one pipeline and settles them. Assertions
// whose keys may share a script run (see batchKey) go in one assert_many
// call, at most maxPerCall at a time.
func (e *engine) send(ctx context.Context, as []*assertion) error {
	if len(as) == 0 {
		return nil
	}
	const maxPerCall = 64
	var groups [][]*assertion
	open := map[string]int{} // batch key -> index of its open group
	for _, a := range as {
		k := e.batchKey(a.st)
		if i, ok := open[k]; ok && len(groups[i]) < maxPerCall {
			groups[i] = append(groups[i], a)
			continue
		}
		open[k] = len(groups)
		groups = append(groups, []*assertion{a})
	}
	calls := make([]*lua.Call, len(groups))
	for i, g := range groups {
		if len(g) == 1 {
			calls[i] = e.call(g[0])
		} else {
			calls[i] = e.callMany(g)
		}
	}
	start := time.Now()
	err := lua.RunBatch(ctx, e.client, calls)
	e.observeScript("assert", start, err)
	for i, g := range groups {
		if len(g) == 1 {
			e.settle(g[0], calls[i].Cmd)
			continue
		}
		vals, err := calls[i].Cmd.Slice()
		if err == nil && len(vals) != 6*len(g) {
			err = fmt.Errorf("headcount: assert_many replied %d values for %d counters", len(vals), len(g))
		}
		for j, a := range g {
			if err != nil {
				e.settleVals(a, nil, err)
			} else {
				e.settleVals(a, vals[6*j:6*j+6], nil)
			}
		}
	}
	return err
}

// batchKey says which counters one script run may touch together: any on a
// single Redis server (or a Sentinel-managed one), those of one hash tag on
// a Cluster or Ring, where the tag decides the shard.
func (e *engine) batchKey(st *state) string {
	if _, single := e.client.(*redis.Client); single {
		return ""
	}
	return st.h // every counter has a hash tag of its own
}

// callMany is one assert_many call for the assertions of one batch.
func (e *engine) callMany(g []*assertion) *lua.Call {
	keys := make([]string, 0, 2*len(g))
	args := make([]any, 0, 5+4*len(g))
	args = append(args, e.cfg.id, e.session, e.cfg.thresholdMs, e.cfg.counterTTLMs, e.cfg.reapPerCall)
	for _, a := range g {
		keys = append(keys, a.st.h, a.st.z)
		args = append(args, a.seq, a.epoch, strconv.FormatInt(a.l, 10), strconv.FormatInt(a.d, 10))
	}
	return &lua.Call{Script: lua.AssertMany, Keys: keys, Args: args}
}

// sweep forgets counters on which this instance has nothing, so memory
// follows the live counters, not every name ever seen.
func (e *engine) sweep() {
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for k, st := range sh.m {
			st.mu.Lock()
			if st.idle() {
				delete(sh.m, k)
			}
			st.mu.Unlock()
		}
		sh.mu.Unlock()
	}
}

// each calls fn for every state, with the state's mu held.
func (e *engine) each(fn func(st *state)) {
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.RLock()
		for _, st := range sh.m {
			st.mu.Lock()
			fn(st)
			st.mu.Unlock()
		}
		sh.mu.RUnlock()
	}
}

// flush sends every dirty counter now; see sendDirty.
func (e *engine) flush(ctx context.Context) error {
	if err := e.enter(ctx); err != nil {
		return err
	}
	defer e.ops.Leave()
	return e.sendDirty(ctx, e.each)
}

// sync sends the given counters now, in one pipeline; see sendDirty.
func (e *engine) sync(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return err
		}
	}
	if err := e.enter(ctx); err != nil {
		return err
	}
	defer e.ops.Leave()
	states := make([]*state, len(keys))
	for i, k := range keys {
		states[i] = e.acquire(k)
	}
	defer func() {
		for _, st := range states {
			e.release(st)
		}
	}()
	return e.sendDirty(ctx, func(fn func(*state)) {
		for _, st := range states {
			st.mu.Lock()
			fn(st)
			st.mu.Unlock()
		}
	})
}

// sendDirty sends, in one pipeline, every dirty state that visit yields (with
// its mu held), and waits for the answers. A state with a round in flight
// is judged after that round: the round may carry an older value of the
// slice, so a slice that a later change brought back to the stored value is
// not clean until the round has settled. Every change made before the call
// is covered when it returns.
func (e *engine) sendDirty(ctx context.Context, visit func(func(*state))) error {
	for pass := 0; pass < 2; pass++ {
		var as []*assertion
		var busy []*round
		var again []*state
		visit(func(st *state) {
			switch {
			case st.round != nil:
				busy = append(busy, st.round)
				again = append(again, st)
			case st.dirty():
				as = append(as, e.begin(st, nil, 0))
			}
		})
		var err error
		if derr := e.detach(ctx, func(ctx context.Context) { err = e.send(ctx, as) }); derr != nil {
			return derr
		}
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.r.err != nil {
				return a.r.err
			}
		}
		if len(busy) == 0 {
			return nil
		}
		for _, r := range busy {
			select {
			case <-r.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			// A round in flight in the second pass began after the first
			// pass, so it carries every change made before the call: its
			// outcome is ours.
			if pass == 1 && r.err != nil {
				return r.err
			}
		}
		// Only the states that were busy need a second look.
		visit = func(fn func(*state)) {
			for _, st := range again {
				st.mu.Lock()
				fn(st)
				st.mu.Unlock()
			}
		}
	}
	return nil
}

func checkKey(key string) error { return keyspace.CheckKey(key) }
