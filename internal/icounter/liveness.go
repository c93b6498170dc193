package icounter

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/lua"
)

// Heartbeat statuses, see heartbeat.lua.
const (
	beatAlive      = 1
	beatGone       = 2
	beatSuperseded = 3
)

// beatHeader is the number of values heartbeat.lua replies before the dead
// sessions.
const beatHeader = 5

// deadPerBeat bounds the dead sessions one heartbeat claims.
const deadPerBeat = 16

// outageGap is how long an instance may go without a heartbeat before its
// next one doubts that the instances it finds unseen are dead: half a
// threshold. A shorter outage is taken like a missed heartbeat or two,
// which the threshold (at least two heartbeats) is there to absorb; a
// pause that long of this process alone only delays what it sweeps, since
// the others go on judging.
func outageGap(threshold time.Duration) time.Duration { return threshold / 2 }

// canaryRefresh is how many heartbeats a Cluster's map of masters is kept
// before it is read again.
const canaryRefresh = 30

// liveness is this instance's side of the registry: the keys, and the
// canaries that tell it a Redis master lost its data.
type liveness struct {
	keys []string // live, sessions, claims, resets

	// since is the Redis time (ms) of the last heartbeat: resets noted
	// from then on are news.
	since int64
	// doubt is the Redis time (ms) before which an instance must have been
	// seen last to be judged dead, until doubtUntil: set when a heartbeat
	// comes after a pause long enough to be an outage of Redis, which
	// stopped everyone's heartbeats alike (see heartbeat.lua).
	doubt      int64
	doubtUntil time.Time

	mu       sync.Mutex
	canaries []canary // one per Cluster master
	beats    int      // heartbeats since the canaries were placed
	sweeping map[string]bool
	// reconciling is set while this process runs a reconcile.
	reconciling atomic.Bool
	// renewAt is when this session's index is due for a longer TTL.
	renewAt time.Time
}

// A canary lives a threshold and a heartbeat after the heartbeat that set
// it, so that it also says an instance is alive (see reconcile).
type canary struct {
	tag string
	key string
	// session is the session this instance last set it with, sent when
	// (0: never yet, so that missing now says nothing): a newer session
	// explains a canary that holds the older one, a canary set longer ago
	// than it lives one that is gone.
	session int64
	sent    time.Time
}

func (l *liveness) init(e *engine) {
	sp := e.cfg.space
	l.keys = []string{sp.Registry("live"), sp.Registry("sessions"), sp.Registry("claims"), sp.Registry("resets"), sp.Registry("renewed")}
	l.sweeping = make(map[string]bool)
}

// register enters session in the registry, in place of held, the session
// this process held before (0 for a process starting). An older session of
// the same instance ID is swept at once. It reports whether another
// process registered the ID after this one (see superseded).
func (e *engine) register(ctx, bg context.Context, session, held int64) (superseded bool) {
	start := time.Now()
	renewedArg := "0"
	if held != 0 {
		renewedArg = "1"
	}
	cmd := lua.Register.Run(ctx, e.client, e.live.keys, e.cfg.id, session, e.cfg.thresholdMs, e.cfg.counterTTLMs, renewedArg, held)
	e.observeScript("heartbeat", start, cmd.Err())
	vals, err := cmd.Slice()
	if err == nil && len(vals) != 3 {
		err = fmt.Errorf("headcount: register replied %d values", len(vals))
	}
	if err != nil {
		e.cfg.log.Warn("headcount: registering this instance failed; the next heartbeat does", "err", err)
		return false
	}
	if st, _ := vals[0].(int64); st == beatSuperseded {
		e.superseded("registered session", vals[1])
		return true
	}
	e.registered.Store(true)
	if now, err := strconv.ParseInt(fmt.Sprint(vals[2]), 10, 64); err == nil {
		e.live.mu.Lock()
		if e.live.since == 0 {
			e.live.since = now
		}
		e.live.mu.Unlock()
	}
	if older, _ := vals[1].(string); older != "" {
		if s, err := strconv.ParseInt(older, 10, 64); err == nil {
			e.goSweep(bg, e.cfg.id, s)
		}
	}
	return false
}

// beat is one heartbeat: one script on the registry (plus one canary per
// master on a Cluster), whatever the number of counters. It sweeps the dead
// sessions the registry hands over, marks what lost data or a sweep took
// from this instance for asserting again, and has renewTick run.
func (e *engine) beat(ctx context.Context) error {
	e.renewSwept(ctx)
	session := e.session.Load()
	canaries := e.live.canariesFor(ctx, e)
	e.live.mu.Lock()
	since := max(e.live.since, 1) // unknown: every reset kept is news
	doubt := e.live.doubt
	if time.Now().After(e.live.doubtUntil) {
		doubt = 0
	}
	e.live.mu.Unlock()
	calls := []*lua.Call{{Script: lua.Heartbeat, Keys: e.live.keys, Args: []any{
		e.cfg.id, session, e.cfg.thresholdMs, e.cfg.thresholdMs, e.cfg.counterTTLMs, deadPerBeat, since,
		outageGap(e.cfg.threshold).Milliseconds(), doubt}}}
	calls = append(calls, e.canaryCalls(canaries, session)...)
	e.live.mu.Lock()
	renewIndex := time.Now().After(e.live.renewAt)
	e.live.mu.Unlock()
	var idxCmd *redis.BoolCmd
	with := func(p redis.Pipeliner) {
		idxCmd = p.PExpire(ctx, e.cfg.space.Index(e.cfg.id, session), e.cfg.counterTTL)
	}
	if !renewIndex {
		with = nil
	}
	start := time.Now()
	// A master that does not answer (down, before the Cluster marks it
	// failed) has go-redis retry for seconds; a beat it held that long
	// would leave this instance unstamped on the registry's master, alive,
	// until the others judge it dead. The replies that came in count.
	bctx, cancel := context.WithTimeout(ctx, outageGap(e.cfg.threshold))
	err := lua.RunBatchWith(bctx, e.client, calls, with)
	cancel()
	e.observeScript("heartbeat", start, err)
	cmds := replies(calls)
	if idxCmd != nil && idxCmd.Err() == nil {
		e.live.mu.Lock()
		e.live.renewAt = time.Now().Add(e.cfg.lease / 2)
		e.live.mu.Unlock()
	}
	// Each reply counts on its own: a master that does not answer yet must
	// not hide the loss another one reports.
	if e.canariesLost(cmds[1:], canaries, session, start) {
		e.onLoss(ctx)
	}
	if berr := e.onBeat(ctx, session, cmds[0]); berr != nil || err == nil {
		err = berr
	}
	select {
	case e.renewKick <- struct{}{}:
	default: // a renewal is under way or due already
	}
	return err
}

// renewTick runs after every heartbeat, on a goroutine of its own: it
// asserts what the heartbeat found Redis may not hold, renews the leases
// that are due and forgets the counters that carry nothing.
func (e *engine) renewTick(ctx context.Context) error {
	err := e.renewLeases(ctx)
	e.forget()
	return err
}

// canariesLost reports whether a canary found in place before is gone or
// holds another session, and marks those found in place as set with
// session at sent (when their calls were sent). Each such canary has every
// slice asserted again, as after a loss of data; the log says what it
// means: nothing lost when it holds this instance's previous session (it
// took a new one since), a loss of data when it is gone, or either when
// this instance could not set it for longer than a canary lives (it may
// have expired).
func (e *engine) canariesLost(cmds []*redis.Cmd, canaries []canary, session int64, sent time.Time) bool {
	lost := false
	e.live.mu.Lock()
	defer e.live.mu.Unlock()
	for i, c := range cmds {
		n, err := c.Int64()
		if err != nil {
			continue
		}
		cn := canaries[i]
		switch {
		case n == 1 || cn.session == 0:
		case n == canaryOtherSession && cn.session != session:
			lost = true
			e.cfg.log.Info("headcount: this instance took a new session since it set its canary; re-asserting every slice",
				"canary", cn.key)
		case n == 0 && sent.Sub(cn.sent) >= e.canaryTTL():
			lost = true
			e.cfg.log.Warn("headcount: this instance's canary is gone after it could not set it for longer than a canary lives: it expired, or the master lost its data; re-asserting every slice",
				"canary", cn.key, "unset_for", sent.Sub(cn.sent).Round(time.Millisecond))
		default:
			lost = true
			e.cfg.log.Warn("headcount: a Redis master lost this instance's canary (a restart without its data, a failover that lost writes, or FLUSHALL); re-asserting every slice",
				"canary", cn.key)
		}
		e.live.markCanary(cn.key, session, sent)
	}
	return lost
}

// canaryOtherSession is canary.lua's reply for a canary that held another
// session of this instance id.
const canaryOtherSession = 2

// onLoss acts on a master that lost its data: every slice is asserted
// again (with its index entry) right after this beat, and the slices of
// instances the registry no longer knows are removed (see reconcile).
func (e *engine) onLoss(ctx context.Context) {
	e.losses.Add(1) // before the states, which an answer may settle meanwhile
	e.each(func(st *state) {
		if st.holds() {
			st.known = false
			st.indexedIn = 0
		}
	})
	e.goReconcile(ctx)
}

// placeCanaries sets this instance's canaries, so that a loss of data is
// noticed from the first heartbeat on.
func (e *engine) placeCanaries(ctx context.Context) {
	session := e.session.Load()
	canaries := e.live.canariesFor(ctx, e)
	if len(canaries) == 0 {
		return
	}
	calls := e.canaryCalls(canaries, session)
	sent := time.Now()
	_ = lua.RunBatch(ctx, e.client, calls)
	e.canariesLost(replies(calls), canaries, session, sent)
}

// canaryCalls check and set the canaries, for canaryTTL.
func (e *engine) canaryCalls(canaries []canary, session int64) []*lua.Call {
	calls := make([]*lua.Call, len(canaries))
	for i, c := range canaries {
		calls[i] = &lua.Call{Script: lua.Canary, Keys: []string{c.key},
			Args: []any{session, e.canaryTTL().Milliseconds()}}
	}
	return calls
}

// canaryTTL is how long a canary lives: a threshold and a heartbeat.
func (e *engine) canaryTTL() time.Duration {
	return e.cfg.threshold + e.cfg.heartbeat
}

// replies are the Cmds of calls that ran.
func replies(calls []*lua.Call) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = c.Cmd
	}
	return cmds
}

// onBeat acts on the heartbeat's reply.
func (e *engine) onBeat(ctx context.Context, session int64, beat *redis.Cmd) error {
	vals, err := beat.Slice()
	if err != nil {
		return err
	}
	rep := make([]string, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case int64:
			rep[i] = strconv.FormatInt(v, 10)
		case string:
			rep[i] = v
		}
	}
	var nowMs, doubt, dead int64
	if len(rep) >= beatHeader {
		nowMs, _ = strconv.ParseInt(rep[2], 10, 64)
		doubt, _ = strconv.ParseInt(rep[3], 10, 64)
		dead, _ = strconv.ParseInt(rep[4], 10, 64)
	}
	if len(rep) < beatHeader+2*int(dead) || nowMs == 0 {
		return fmt.Errorf("headcount: heartbeat replied %v", rep)
	}
	e.live.mu.Lock()
	e.live.since = nowMs
	if doubt != 0 {
		e.live.doubt, e.live.doubtUntil = doubt, time.Now().Add(e.cfg.threshold)
	}
	e.live.mu.Unlock()
	if doubt != 0 {
		e.cfg.log.Info("headcount: this instance's heartbeats paused for over half a threshold (a Redis outage stops everyone's); for a threshold, no instance seen shortly before the pause is judged dead")
	}
	switch status, _ := strconv.Atoi(rep[0]); status {
	case beatGone:
		now, _ := strconv.ParseInt(rep[1], 10, 64)
		wasRegistered := e.registered.Load()
		e.renew(ctx, now, session)
		if wasRegistered {
			// The registry's master may have lost it, and with it the
			// dead instances it held; and an instance that wrote slices
			// after the loss but died before its next beat is in no
			// registry or index either, on a single server too.
			e.goReconcile(ctx)
		}
	case beatSuperseded:
		// Unless this process took a new session since the beat was sent
		// (renew registers it before storing it), another one did.
		e.renewing.Lock()
		if e.session.Load() == session {
			e.superseded("registry", "a newer session is registered")
		}
		e.renewing.Unlock()
	}
	e.onResets(rep[beatHeader+2*dead:])
	for i := beatHeader; i < beatHeader+2*int(dead); i += 2 {
		s, err := strconv.ParseInt(rep[i+1], 10, 64)
		if err == nil {
			e.goSweep(ctx, rep[i], s)
		}
	}
	return nil
}

// renew replaces session old with a new one when the registry has
// forgotten it: other instances swept it as dead (it was cut off for longer
// than the threshold; a heartbeat finds it gone, or a write meets the
// sweep's tombstone), or Redis lost the registry. What this instance writes from now
// on carries the new session, so that a late drop aimed at the old one
// cannot remove it, and every slice is asserted again at once, with its
// index entry, by the renewTick that follows the beat.
//
// The new session is registered before anything is written under it: a
// reconcile takes a slice whose session the registry does not know for a
// dead instance's (see reconcile). Should the registration fail, the next
// heartbeat finds the session unknown and renews again. Concurrent callers
// wait for the first one's registration and find the session renewed.
func (e *engine) renew(ctx context.Context, now, old int64) {
	e.renewing.Lock()
	defer e.renewing.Unlock()
	if e.session.Load() != old || e.duplicate.Load() {
		return // renewed already, or superseded for good
	}
	if e.registered.Load() {
		e.cfg.log.Warn("headcount: the registry no longer knows this instance (it was swept as dead, or Redis lost its data); taking a new session and re-asserting every slice",
			"instance", e.cfg.id)
	}
	next := max(now, old+1)
	if e.register(ctx, e.bgCtx, next, old) {
		return // another process uses this ID: the old session stays, refused
	}
	e.session.Store(next)
	e.renewals.Add(1)
	e.each(func(st *state) {
		if st.holds() {
			st.known = false
		}
	})
}

// renewSwept takes a new session when a write met a sweep's tombstone.
// The registry may still hold the swept session (a reconcile can drop the
// slices of a session whose registration failed, or reached Redis after
// the first writes under it), so a heartbeat alone would not tell.
func (e *engine) renewSwept(ctx context.Context) {
	if s := e.swept.Swap(0); s != 0 {
		e.renew(ctx, time.Now().UnixMicro(), s)
	}
}

// canariesFor returns the canaries to check at this beat: one per master
// on a Cluster client, none on any other, where the registry serves (its
// loss is data loss).
func (l *liveness) canariesFor(ctx context.Context, e *engine) []canary {
	cc, ok := e.client.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	l.mu.Lock()
	stale := l.canaries == nil || l.beats >= canaryRefresh
	l.beats++
	out := l.canaries
	l.mu.Unlock()
	if !stale {
		return out
	}
	// Bounded as the beat is: a master that does not answer must not hold
	// the heartbeat for go-redis' own timeouts and retries.
	sctx, cancel := context.WithTimeout(ctx, outageGap(e.cfg.threshold))
	slots, err := cc.ClusterSlots(sctx).Result()
	cancel()
	if err != nil {
		return out
	}
	seen := map[string]bool{}
	var tags []string
	for _, s := range slots {
		if len(s.Nodes) == 0 || seen[s.Nodes[0].ID] {
			continue
		}
		seen[s.Nodes[0].ID] = true
		if tag, ok := keyspace.TagIn(int(s.Start), int(s.End)); ok {
			tags = append(tags, tag)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := map[string]canary{}
	for _, c := range l.canaries {
		old[c.key] = c
	}
	l.canaries = l.canaries[:0:0]
	for _, tag := range tags {
		k := e.cfg.space.Canary(tag, e.cfg.id)
		c := old[k]
		c.tag, c.key = tag, k
		l.canaries = append(l.canaries, c)
	}
	l.beats = 0
	return l.canaries
}

// markCanary records that canary key is set, with session, by calls sent
// at sent. Call with l.mu held.
func (l *liveness) markCanary(key string, session int64, sent time.Time) {
	for i := range l.canaries {
		if c := &l.canaries[i]; c.key == key {
			c.session, c.sent = session, sent
		}
	}
}

// onResets has this instance assert again, in the same beat, its slices of
// the counters that were reset (Set, Del, Clear) since its last heartbeat:
// the assertion finds the new epoch and zeroes the slice.
func (e *engine) onResets(hs []string) {
	if len(hs) == 0 {
		return
	}
	all := false
	keys := make(map[string]bool, len(hs))
	for _, h := range hs {
		if h == "*" {
			all = true
		}
		keys[h] = true
	}
	e.each(func(st *state) {
		if st.holds() && (all || keys[st.h]) {
			st.known = false
		}
	})
}

// noteReset tells every instance, at its next heartbeat, that the counters
// hs ("*": all) were reset. It runs after the reset, so that an instance
// that learns of it finds the new epoch.
func (e *engine) noteReset(ctx context.Context, hs ...string) error {
	args := make([]any, 0, 1+len(hs))
	args = append(args, e.cfg.counterTTLMs)
	for _, h := range hs {
		args = append(args, h)
	}
	return lua.NoteReset.Run(ctx, e.client, e.live.keys, args...).Err()
}
