package icounter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
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
	// with every assertion. The session is Redis TIME (microseconds) at
	// start, so it grows across restarts of the same InstanceID; it is taken
	// anew when the registry has forgotten this instance (see renew).
	session atomic.Int64
	seq     atomic.Int64
	// losses counts the losses of data noticed (see onLoss): an assertion
	// answered after one that it was sent before may be gone with it.
	losses atomic.Int64
	// renewals counts the sessions taken anew (see renew): on a single
	// server, how a loss of its data shows.
	renewals atomic.Int64

	seed   maphash.Seed
	shards [nShards]shard

	// ops is entered by every operation that talks to Redis; Clear, Close
	// and Kill take it alone. Waits on it end with the caller's context.
	ops    *bounded.Gate
	closed atomic.Bool
	// stop ends the heartbeat, the flusher and the sweeps; stopLoops ends
	// the committer and reader, once no caller needs them.
	stop, stopLoops context.CancelFunc
	bgCtx           context.Context // ended by stop
	loopsDone       <-chan struct{} // closed by stopLoops
	bg, loops       sync.WaitGroup
	// bgMu orders goBackground's bg.Go before shutdown's bg.Wait;
	// bgEnded is set once shutdown waits.
	bgMu    sync.Mutex
	bgEnded bool
	// calls runs Redis calls so that no caller waits past its context, and
	// tracks those that run on after their callers stopped waiting.
	calls bounded.Calls

	commit *batcher[*state, struct{}] // states whose next round is due
	// renewKick has renewTick run; every heartbeat sends on it.
	renewKick chan struct{}
	reads     *batcher[string, *read] // counter hash -> read in the next batch
	// memberReads are the member pages read in the next batch.
	memberReads *batcher[memberPageKey, *memberRead]

	live       liveness
	lease      leasePacer   // renewLeases' pacing
	swept      atomic.Int64 // a session a sweep's tombstone refused; 0: none
	renewing   sync.Mutex   // held while a new session is taken (see renew)
	dupLogged  atomic.Bool
	duplicate  atomic.Bool // another process took this ID after this one (see superseded)
	registered atomic.Bool // the registry holds this session
	draining   atomic.Bool // members leaving now leave as drained
	// changes are the states changed since the last flush (see changed);
	// flushes counts flush ticks.
	changes struct {
		mu   sync.Mutex
		list []*state
	}
	flushes atomic.Int64
	// pushed are the counters push holds for the committer.
	pushed struct {
		hold time.Duration // pushHold; tests hold longer
		mu   sync.Mutex
		keys map[string]struct{}
	}
	lists lists // whole member lists last read (presence)
}

type shard struct {
	mu sync.RWMutex
	m  map[string]*state
	_  [32]byte // keep neighbouring shards off one cache line
}

func newEngine(c redis.UniversalClient, cfg config) (*engine, error) {
	if err := keyspace.CheckClient(c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	e := &engine{cfg: cfg, client: c, seed: maphash.MakeSeed(), ops: bounded.NewGate(),
		commit: newBatcher[*state, struct{}](), reads: newBatcher[string, *read](),
		memberReads: newBatcher[memberPageKey, *memberRead](),
		renewKick:   make(chan struct{}, 1)}
	e.pushed.hold, e.pushed.keys = pushHold, make(map[string]struct{})
	for i := range e.shards {
		e.shards[i].m = make(map[string]*state)
	}
	e.live.init(e)
	bgCtx, stop := context.WithCancel(context.Background())
	e.bgCtx = bgCtx
	loopCtx, stopLoops := context.WithCancel(context.Background())
	e.stop, e.stopLoops, e.loopsDone = stop, stopLoops, loopCtx.Done()
	e.start(bgCtx)
	for range 2 {
		e.loops.Go(func() { e.commit.loop(loopCtx, e.commitBatch) })
		e.loops.Go(func() { e.reads.loop(loopCtx, e.readBatch) })
	}
	// One loop: a page's read is rarely that of many callers at once.
	e.loops.Go(func() { e.memberReads.loop(loopCtx, e.memberReadBatch) })
	beats := time.NewTicker(cfg.heartbeat)
	e.bg.Go(func() { defer beats.Stop(); runTicks(e, bgCtx, beats.C, e.beat) })
	// Lease renewals and re-assertions can be thousands of counters; they
	// run beside the heartbeat, which they must never hold up.
	e.bg.Go(func() { runTicks(e, bgCtx, e.renewKick, e.renewTick) })
	if cfg.lax {
		flushes := time.NewTicker(cfg.flush)
		e.bg.Go(func() { defer flushes.Stop(); runTicks(e, bgCtx, flushes.C, e.flushTick) })
	}
	return e, nil
}

// goBackground runs fn on a goroutine that shutdown waits for, and
// reports whether it did: once shutdown has begun it starts nothing. A
// sweep or reconcile can be started by a caller's write (through renew),
// outside the background loops, while shutdown waits.
func (e *engine) goBackground(fn func()) bool {
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	if e.bgEnded {
		return false
	}
	e.bg.Go(fn)
	return true
}

// runTicks runs tick (inside ops, see guard) for every value from c, until
// ctx ends.
func runTicks[T any](e *engine, ctx context.Context, c <-chan T, tick func(context.Context) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c:
			if err := e.guard(ctx, tick); err != nil && ctx.Err() == nil {
				e.cfg.log.Warn("headcount: background write failed", "err", err)
			}
		}
	}
}

// guard runs a background tick inside ops, so that Clear runs alone.
func (e *engine) guard(ctx context.Context, tick func(context.Context) error) error {
	if err := e.enter(ctx); err != nil {
		return nil
	}
	defer e.ops.Leave()
	return tick(ctx)
}

// start reads the session from Redis' clock, loads the scripts and
// registers the session, for at most startTimeout: a Redis that is down, or
// hangs, must neither stop the process from starting nor hold it up.
// Scripts then load on first use, the session falls back to this process's
// clock, and the first heartbeat registers it.
func (e *engine) start(bg context.Context) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	clock := make(chan int64, 1)
	_ = e.calls.Run(ctx, func(ctx context.Context) {
		t, err := e.client.Time(ctx).Result()
		if err != nil {
			e.cfg.log.Warn("headcount: Redis TIME failed; using the local clock for the session", "err", err)
			return
		}
		clock <- t.UnixMicro()
		if err := lua.Load(ctx, e.client, lua.Assert, lua.AssertMany, lua.Reset, lua.Drop, lua.Register, lua.Heartbeat); err != nil {
			e.cfg.log.Warn("headcount: loading scripts failed; they load on first use", "err", err)
		}
	})
	select {
	case session := <-clock:
		e.session.Store(session)
	default:
		if ctx.Err() != nil {
			e.cfg.log.Warn("headcount: Redis did not answer TIME in time; using the local clock for the session", "after", startTimeout)
		}
		e.session.Store(time.Now().UnixMicro())
		return
	}
	_ = e.calls.Run(ctx, func(ctx context.Context) {
		e.register(ctx, bg, e.session.Load(), 0)
		e.placeCanaries(ctx)
	})
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
	if err := e.checkKey(key); err != nil {
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
		v := e.bump(st, d)
		sh.mu.RUnlock()
		return v
	}
	sh.mu.RUnlock()
	sh.mu.Lock()
	st := sh.m[key]
	if st == nil {
		st = e.newState(key)
		sh.m[key] = st
	}
	v := e.bump(st, d)
	sh.mu.Unlock()
	return v
}

// bump adds d to st's slice in memory, queues st for the next flush and
// returns the counter as this instance now sees it: the lax change itself,
// by key (addLocal) or through a Handle.
func (e *engine) bump(st *state, d int64) Value {
	v := st.local.Add(d)
	o := st.others.Load()
	e.changed(st)
	return Value{Total: o + v, Mine: v}
}

// changed queues st for the next flush, once: the flusher visits the
// states changed since, not every state (a node may hold thousands). On
// the warm path it costs one atomic load when st is queued already. A
// strict-only engine has no flusher, and queues nothing.
func (e *engine) changed(st *state) {
	if !e.cfg.lax || st.queued.Load() || !st.queued.CompareAndSwap(false, true) {
		return
	}
	e.changes.mu.Lock()
	e.changes.list = append(e.changes.list, st)
	e.changes.mu.Unlock()
}

// takeChanged returns the states queued since the last call.
func (e *engine) takeChanged() []*state {
	e.changes.mu.Lock()
	list := e.changes.list
	e.changes.list = nil
	e.changes.mu.Unlock()
	for _, st := range list {
		st.queued.Store(false) // a change from now on queues it again
	}
	return list
}

// assertion is one "my slice of this counter is l" about to be sent.
type assertion struct {
	st      *state
	r       *round
	l, d    int64
	epoch   int64
	session int64
	seq     int64
	losses  int64  // engine.losses when it was made
	index   bool   // the session's index does not hold the counter yet
	indexed bool   // set by send: the index took it
	meta    string // a member's metadata, set with the assertion
	cond    *Cond
	delta   int64 // added when cond holds
}

// begin starts a round on st, the one callers wait for if there is one, and
// snapshots what to assert. Call with st.mu held and no round in flight.
func (e *engine) begin(st *state, c *Cond, delta int64) *assertion {
	r := st.next
	if r == nil {
		r = newRound()
	} else {
		st.next = nil
	}
	r.ver = st.ver
	st.round = r
	st.force = false
	session := e.session.Load()
	r.session = session
	a := &assertion{st: st, r: r, l: st.local.Load(), d: st.pending, epoch: st.epoch,
		session: session, seq: e.seq.Add(1), losses: e.losses.Load(), index: st.indexedIn != session,
		cond: c, delta: delta}
	a.meta = st.meta
	st.pending = 0
	return a
}

func (e *engine) call(a *assertion) *lua.Call {
	op, operand := "", "0"
	if a.cond != nil {
		op, operand = a.cond.Op.String(), strconv.FormatInt(a.cond.Operand, 10)
	}
	return &lua.Call{Script: lua.Assert, Keys: []string{a.st.h, a.st.z}, Args: []any{
		e.cfg.id, a.session, a.seq, a.epoch,
		strconv.FormatInt(a.l, 10), strconv.FormatInt(a.d, 10),
		e.cfg.leaseMs, e.cfg.counterTTLMs, e.cfg.reapPerCall,
		op, operand, strconv.FormatInt(a.delta, 10),
		e.spec(""), a.meta,
	}}
}

// Assertion reply statuses, see assert.lua.
const (
	statusStale      = 0
	statusApplied    = 1
	statusReset      = 2
	statusSuperseded = 3
	statusSwept      = 4
)

// errSwept: Redis refused an assertion because other instances declared
// this one dead (it was cut off for longer than the threshold) and swept
// it. Its next heartbeat takes a new session and asserts everything again.
var errSwept = errors.New("headcount: this instance was declared dead and swept; it counts again from its next heartbeat")

// settleVals applies Redis' answer to an assertion (one reply of
// assert.lua, six values), or err, to the local state, and wakes the callers
// waiting on its round.
func (e *engine) settleVals(a *assertion, vals []any, err error) {
	var buf [6]int64 // on the stack: a settle runs for every assertion
	rep := buf[:]
	if err == nil {
		err = parseInto(rep, vals)
	}
	st, r := a.st, a.r
	st.mu.Lock()
	defer st.mu.Unlock()
	defer e.ended(st, r)
	// Acknowledged under an older session, the slice may be swept with it;
	// or gone with a loss of data noticed since, and the index entry too.
	held := a.session == e.session.Load() && a.losses == e.losses.Load()
	if a.indexed && held {
		st.indexedIn = a.session
	}
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
	case statusSwept:
		st.pending += a.d
		st.known = false
		r.err = errSwept
		// The next flush or heartbeat takes a new session (see renew).
		e.swept.CompareAndSwap(0, a.session)
		return
	case statusSuperseded:
		st.pending += a.d
		st.known = false
		r.err = e.errDuplicate()
		if a.session == e.session.Load() {
			// Sent under this process's current session: the newer one
			// the counter holds is another process's (a session is
			// stored before anything is written under it).
			e.superseded("key", st.key)
		} else {
			e.logDuplicate("key", st.key)
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
	// A slice the index did not take (its master did not answer, on a
	// Cluster) is asserted again with the next renewal: until the index
	// has it, a sweep after this process's death would miss it.
	st.known = held && (a.indexed || !a.index)
	if !held && st.next == nil {
		// Answered under an older session, or before a loss of data
		// noticed since: what it wrote may be gone. The renewal that
		// followed the loss passed this counter by, its round being in
		// flight; the next one is a heartbeat away. Assert again now.
		st.next = newRound()
	}
	st.others.Store(total - slice)
	st.readAt = time.Now()
	st.assertedAt = st.readAt
}

// ended closes round r of st, which has settled, and hands st to the
// committer if callers wait for its next round. Call with st.mu held.
func (e *engine) ended(st *state, r *round) {
	st.round = nil
	close(r.done)
	if st.next != nil {
		e.commit.add(st, func() struct{} { return struct{}{} })
	}
}

// logDuplicate logs, once, that another process uses this instance ID.
func (e *engine) logDuplicate(args ...any) {
	if e.dupLogged.CompareAndSwap(false, true) {
		e.cfg.log.Error("headcount: another process with a newer session uses this instance ID; this process's counts are refused",
			append([]any{"instance", e.cfg.id}, args...)...)
	}
}

// superseded marks this process as the older of two that share its
// instance ID, for good: its writes are refused from now on, and it takes
// no new session, which would sweep the newer process's slices.
func (e *engine) superseded(args ...any) {
	e.duplicate.Store(true)
	e.logDuplicate(args...)
}

// errDuplicate is the error of a write refused because another process
// uses this instance ID.
func (e *engine) errDuplicate() error {
	return fmt.Errorf("%w: instance ID %q", ErrDuplicateInstance, e.cfg.id)
}

// parseInts reads a script's array reply of integers and decimal strings.
func parseInts(cmd *redis.Cmd, n int) ([]int64, error) {
	vals, err := cmd.Slice()
	if err != nil {
		return nil, err
	}
	out := make([]int64, n)
	return out, parseInto(out, vals)
}

// parseInto reads len(out) values of a script's reply into out.
func parseInto(out []int64, vals []any) error {
	if len(vals) < len(out) {
		return fmt.Errorf("headcount: script reply has %d values, want %d", len(vals), len(out))
	}
	var err error
	for i := range out {
		switch v := vals[i].(type) {
		case int64:
			out[i] = v
		case string:
			if out[i], err = strconv.ParseInt(v, 10, 64); err != nil {
				return fmt.Errorf("headcount: script reply: %w", err)
			}
		default:
			return fmt.Errorf("headcount: script reply has %T", v)
		}
	}
	return nil
}

// await returns once Redis holds every strict change of st up to my: it
// joins the round in flight when that round covers them, or else the next
// round, which the committer sends together with those of other counters.
// Call with st.mu held; it returns with st.mu released.
func (e *engine) await(ctx context.Context, st *state, my int64) (Value, error) {
	renewed := false
	for {
		r := st.round
		if r == nil || r.ver < my {
			r = e.nextRound(st)
			e.commit.wake()
		}
		st.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			// The change stays in the slice; a later round carries it.
			return Value{}, ctx.Err()
		case <-e.loopsDone:
			// Shut down: no committer runs the round. Callers inside
			// the engine's operations never see this (shutdown waits
			// for them first); background work that outlived them (the
			// take-back of an abandoned IncIf) does.
			return Value{}, ErrClosed
		}
		if r.ver >= my {
			if r.err != errSwept || renewed {
				return r.val, r.err
			}
			// Back from a cut longer than the threshold: take a new
			// session now, rather than at the next heartbeat, and send
			// the change again under it.
			e.renew(ctx, time.Now().UnixMicro(), r.session)
			renewed = true
		}
		st.mu.Lock()
	}
}

// nextRound returns st's next round, queueing st with the committer when
// nobody waits for one yet; the caller wakes the committer. Call with st.mu
// held.
func (e *engine) nextRound(st *state) *round {
	if st.next == nil {
		st.next = newRound()
		e.commit.put(st, func() struct{} { return struct{}{} })
	}
	return st.next
}

// commitBatch sends the next round of every state of the batch, in one
// pipeline: the group commit of concurrent strict changes to any counters.
func (e *engine) commitBatch(ctx context.Context, batch map[*state]struct{}) {
	as := make([]*assertion, 0, len(batch))
	for st := range batch {
		st.mu.Lock()
		switch {
		case st.next == nil || st.round != nil:
			// Nothing to send, or a round in flight, whose end queues st
			// again: the next round must carry what that one did not.
		case !st.dirty() && !st.force:
			// Redis holds the slice already.
			r := st.next
			st.next = nil
			r.ver = st.ver
			l := st.local.Load()
			r.val = Value{Total: st.others.Load() + l, Mine: l}
			close(r.done)
		default:
			as = append(as, e.begin(st, nil, 0))
		}
		st.mu.Unlock()
	}
	start := time.Now()
	if err := e.send(ctx, as, nil); err != nil && len(as) > 0 {
		e.cfg.log.Debug("headcount: commit failed", "counters", len(as), "took", time.Since(start), "err", err)
	}
}

// flushTick sends, in one pipeline, every counter changed since it was
// last acknowledged.
func (e *engine) flushTick(ctx context.Context) error {
	e.renewSwept(ctx)
	var as []*assertion
	visit := func(st *state) {
		switch {
		case st.round == nil && st.dirty():
			as = append(as, e.begin(st, nil, 0))
		case st.round != nil:
			e.changed(st) // settled by then, or looked at again
		}
	}
	// The states changed since the last flush; and every state at most
	// once a heartbeat, for those made dirty by other means (a failed
	// exchange, a reset, a strict change Redis did not acknowledge).
	if e.flushes.Add(1)%e.cfg.fullFlushEvery == 0 {
		e.takeChanged()
		e.each(visit)
	} else {
		for _, st := range e.takeChanged() {
			st.mu.Lock()
			visit(st)
			st.mu.Unlock()
		}
	}
	if len(as) == 0 {
		return nil
	}
	start := time.Now()
	err := e.send(ctx, as, nil)
	e.observeFlush(false, len(as), start, err)
	if err != nil {
		for _, a := range as {
			e.changed(a.st) // try again at the next flush
		}
	}
	return err
}

// send runs the assertions in one pipeline, with the index entries they
// are due and the removal of the index entries of the idle states in
// unindex, and settles them all. Assertions whose keys may share a script
// run (see batchKey) go in one assert_many call, at most maxPerCall at a
// time.
func (e *engine) send(ctx context.Context, as []*assertion, unindex []*state) error {
	if len(as) == 0 && len(unindex) == 0 {
		return nil
	}
	if e.duplicate.Load() {
		err := e.errDuplicate()
		for _, a := range as {
			e.settleVals(a, nil, err)
		}
		for _, st := range unindex {
			st.mu.Lock()
			e.ended(st, st.round)
			st.mu.Unlock()
		}
		return err
	}
	// Each slice goes in the index of the session it is asserted under: a
	// batch may hold two. The index goes first: a slice Redis holds must be
	// found by a sweeper should this process die now.
	var toIndex []*assertion
	for _, a := range as {
		if a.index {
			toIndex = append(toIndex, a)
		}
	}
	adds := groupBy(toIndex, func(a *assertion) int64 { return a.session })
	var indexErr error
	if _, cluster := e.client.(*redis.ClusterClient); cluster && len(adds) > 0 {
		as, indexErr = e.indexFirst(ctx, as, adds)
		adds = nil
	}
	// One script run carries one session (assert_many's ARGV[2]): a batch
	// may hold assertions begun on both sides of a session change.
	type callKey struct {
		batch   string
		session int64
	}
	groups := groupBy(as, func(a *assertion) callKey { return callKey{e.batchKey(a.st.h), a.session} })
	calls := make([]*lua.Call, len(groups))
	for i, g := range groups {
		if len(g) == 1 {
			calls[i] = e.call(g[0])
		} else {
			calls[i] = e.callMany(g)
		}
	}
	session := e.session.Load()
	var addCmds []*redis.IntCmd
	var rems []string
	for _, st := range unindex {
		rems = append(rems, st.h)
	}
	var remCmd *redis.IntCmd
	with := func(p redis.Pipeliner) {
		addCmds = e.addToIndex(ctx, p, adds)
		if len(rems) > 0 {
			remCmd = p.SRem(ctx, e.cfg.space.Index(e.cfg.id, session), toAny(rems)...)
		}
	}
	if len(adds) == 0 && len(rems) == 0 {
		with = nil
	}
	if len(calls) == 0 && with == nil {
		return indexErr
	}
	start := time.Now()
	err := lua.RunBatchWith(ctx, e.client, calls, with)
	if len(calls) > 0 {
		e.observeScript("assert", start, err)
	}
	markIndexed(adds, addCmds)
	for _, st := range unindex {
		st.mu.Lock()
		if remCmd.Err() == nil && st.indexedIn == session {
			st.indexedIn = 0
		}
		e.ended(st, st.round)
		st.mu.Unlock()
	}
	for i, g := range groups {
		if len(g) == 1 {
			vals, err := calls[i].Cmd.Slice()
			e.settleVals(g[0], vals, err)
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
	return cmp.Or(indexErr, err)
}

// indexFirst writes the index entries adds (of assertions in as) in a
// round trip of their own, before the scripts are sent. On a Cluster the
// index lives on a master of its own, reached on a connection of its own,
// so in one pipeline an entry could land after its slice, or not at all
// while the slice does, and a sweep after this process's death would miss
// the slice. It settles with the error the assertions whose entry Redis
// did not take (their changes stay pending, for the next flush or
// heartbeat) and returns the others, and that error.
func (e *engine) indexFirst(ctx context.Context, as []*assertion, adds [][]*assertion) ([]*assertion, error) {
	pipe := e.client.Pipeline()
	cmds := e.addToIndex(ctx, pipe, adds)
	_, _ = pipe.Exec(ctx) // each entry's outcome is in its command
	markIndexed(adds, cmds)
	var firstErr error
	for i, g := range adds {
		if err := cmds[i].Err(); err != nil {
			firstErr = cmp.Or(firstErr, err)
			for _, a := range g {
				e.settleVals(a, nil, err)
			}
		}
	}
	if firstErr == nil {
		return as, nil
	}
	rest := make([]*assertion, 0, len(as)) // as is the caller's
	for _, a := range as {
		if a.indexed || !a.index {
			rest = append(rest, a)
		}
	}
	return rest, firstErr
}

// markIndexed notes, for each group of adds whose SADD (in cmds) Redis
// took, that its assertions' counters are in their session's index.
func markIndexed(adds [][]*assertion, cmds []*redis.IntCmd) {
	for i, g := range adds {
		if cmds[i].Err() == nil {
			for _, a := range g {
				a.indexed = true
			}
		}
	}
}

// addToIndex queues on p, for each group of assertions (of one session),
// their counters' entries in that session's index, and returns the SADDs.
func (e *engine) addToIndex(ctx context.Context, p redis.Pipeliner, adds [][]*assertion) []*redis.IntCmd {
	cmds := make([]*redis.IntCmd, len(adds))
	for i, g := range adds {
		hs := make([]any, len(g))
		for j, a := range g {
			hs[j] = a.st.h
		}
		idx := e.cfg.space.Index(e.cfg.id, g[0].session)
		cmds[i] = p.SAdd(ctx, idx, hs...)
		p.PExpire(ctx, idx, e.cfg.counterTTL)
	}
	return cmds
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// maxPerCall bounds the counters of one assert_many or drop call, so that
// one script run stays short.
const maxPerCall = 64

// groupBy splits items into groups of at most maxPerCall that share a key.
func groupBy[T any, K comparable](items []T, key func(T) K) [][]T {
	var groups [][]T
	open := map[K]int{} // key -> index of its open group
	for _, it := range items {
		k := key(it)
		if i, ok := open[k]; ok && len(groups[i]) < maxPerCall {
			groups[i] = append(groups[i], it)
			continue
		}
		open[k] = len(groups)
		groups = append(groups, []T{it})
	}
	return groups
}

// batchKey says which counters one script run may touch together: any on a
// single Redis server (or a Sentinel-managed one), those of one hash tag on
// a Cluster or Ring, where the tag decides the shard.
func (e *engine) batchKey(h string) string {
	if _, single := e.client.(*redis.Client); single {
		return ""
	}
	return h // every counter has a hash tag of its own
}

// callMany is one assert_many call for the assertions of one batch.
func (e *engine) callMany(g []*assertion) *lua.Call {
	keys := make([]string, 0, 2*len(g))
	args := make([]any, 0, 6+5*len(g))
	args = append(args, e.cfg.id, g[0].session, e.cfg.leaseMs, e.cfg.counterTTLMs, e.cfg.reapPerCall, e.spec(""))
	for _, a := range g {
		keys = append(keys, a.st.h, a.st.z)
		args = append(args, a.seq, a.epoch, strconv.FormatInt(a.l, 10), strconv.FormatInt(a.d, 10))
		if e.cfg.presence {
			args = append(args, a.meta)
		}
	}
	return &lua.Call{Script: lua.AssertMany, Keys: keys, Args: args}
}

// forget drops the states that carry nothing, so memory follows the live
// counters, not every name ever seen. A state still in this session's
// index is left for unindexing first (see renewLeases).
func (e *engine) forget() {
	session := e.session.Load()
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for k, st := range sh.m {
			st.mu.Lock()
			if st.idle() && st.indexedIn != session {
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

// flush sends every dirty counter now, with the committer; see
// commitIfDirty.
func (e *engine) flush(ctx context.Context) error {
	if err := e.enter(ctx); err != nil {
		return err
	}
	defer e.ops.Leave()
	var rs []*round
	e.each(func(st *state) {
		if r := e.commitIfDirty(st); r != nil {
			rs = append(rs, r)
		}
	})
	e.commit.wake()
	return waitRounds(ctx, rs)
}

// sync sends the given counters now, with the committer; see commitIfDirty.
func (e *engine) sync(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := e.checkKey(k); err != nil {
			return err
		}
	}
	if err := e.enter(ctx); err != nil {
		return err
	}
	defer e.ops.Leave()
	rs := e.commitKeys(keys)
	e.commit.wake()
	return waitRounds(ctx, rs)
}

// pushHold is how long pushed counters wait before the committer takes
// them: half the default FlushInterval, so that a release reaches Redis
// well before a lax change would.
const pushHold = 10 * time.Millisecond

// push hands the given counters to the committer without waiting, once
// pushHold has passed: a strict change to one of them meanwhile (a
// connection to the room a release left, the next handshake for the global
// count) finds the slice Redis holds equal to the one in memory, and
// neither the release nor the change costs Redis anything. What is still
// to send then goes with the next batch of strict changes.
func (e *engine) push(keys []string) {
	if e.closed.Load() {
		return
	}
	e.pushed.mu.Lock()
	first := len(e.pushed.keys) == 0
	for _, k := range keys {
		if e.validKey(k) {
			e.pushed.keys[k] = struct{}{}
		}
	}
	arm := first && len(e.pushed.keys) > 0
	e.pushed.mu.Unlock()
	if arm {
		time.AfterFunc(e.pushed.hold, e.commitPushed)
	}
}

// commitPushed hands the counters pushed since the last call to the
// committer.
func (e *engine) commitPushed() {
	e.pushed.mu.Lock()
	keys := slices.Collect(maps.Keys(e.pushed.keys))
	clear(e.pushed.keys)
	e.pushed.mu.Unlock()
	if e.closed.Load() {
		return
	}
	e.commitKeys(keys)
	e.commit.wake()
}

// commitKeys queues the given counters with the committer (see
// commitIfDirty) and returns the rounds to wait for; the caller wakes the
// committer.
func (e *engine) commitKeys(keys []string) []*round {
	rs := make([]*round, 0, len(keys))
	for _, k := range keys {
		st := e.acquire(k)
		st.mu.Lock()
		if r := e.commitIfDirty(st); r != nil {
			rs = append(rs, r)
		}
		st.mu.Unlock()
		e.release(st)
	}
	return rs
}

// commitIfDirty returns the round that brings st's slice to Redis when
// Redis may not hold it: the next round, which begins after the call, so it
// carries every change made before. A round in flight may carry an older
// value of the slice (one that a later change brought back to the stored
// value), so a state with one is not judged clean until it has settled:
// the committer does that. Call with st.mu held.
func (e *engine) commitIfDirty(st *state) *round {
	if st.round == nil && !st.dirty() {
		return nil
	}
	return e.nextRound(st)
}

// waitRounds waits for the rounds and returns the first error.
func waitRounds(ctx context.Context, rs []*round) error {
	var first error
	for _, r := range rs {
		select {
		case <-r.done:
			if first == nil {
				first = r.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}

// Why a member leaves, in its event (see presence.lua).
const (
	reasonClosed  = "closed"
	reasonDrained = "drained"
	reasonCrashed = "crashed"
)

// spec is the presence spec of a script call (see presence.lua): with
// reason, or when it is "", why this instance's slices go down now; "" with
// presence off.
func (e *engine) spec(reason string) string {
	switch {
	case !e.cfg.presence:
		return ""
	case reason != "":
		return reason + e.cfg.specTail
	case e.draining.Load():
		return e.cfg.specDrained
	}
	return e.cfg.specClosed
}

// validKey reports whether key names a counter: a member key too, with
// presence on. It does not allocate (the lax warm path calls it).
func (e *engine) validKey(key string) bool {
	return keyspace.ValidKey(key) || e.cfg.presence && keyspace.ValidMemberKey(key)
}

func (e *engine) checkKey(key string) error {
	if e.validKey(key) {
		return nil
	}
	if _, _, _, member := keyspace.SplitMember(key); member && !e.cfg.presence {
		return fmt.Errorf("%w: %q names a member, and presence is off", ErrInvalidKey, key)
	}
	return keyspace.CheckKey(key)
}
