package icounter

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// reconcileBatch is how many counters one step of a reconcile reads.
const reconcileBatch = 500

// goReconcile removes, in the background, the slices of sessions the
// registry does not know, from every counter of the prefix. A Cluster
// master that lost its data may have taken the registry (and with it the
// dead instances not yet swept) or the index of a dead instance: no sweep
// would then find their slices, and only their leases would end them.
//
// It waits one heartbeat first, so that every live instance has seen the
// loss and registered again, then takes a lock in the registry (one
// instance reconciles; the lock lapses after a heartbeat) and reads the
// counters in batches. A slice goes when the registry holds a newer session
// of its instance, or none and the instance has no canary left on any
// master (a live instance's canaries outlive a missed heartbeat or two);
// but in the first pass not when that newer session is a running process's
// renewal (see registry.lua): that process asserts the slice again, and
// dropping it first would take its count away until then, for as long as
// an outage delays its assertion;
// the drop is the sweeper's, session-matched and idempotent, and the
// registry is read again after each batch's slices, so that an instance
// registering meanwhile keeps what it writes. A slice that stays, of an
// instance with a canary missing on some master, is entered in its
// session's index: that instance has not heartbeated since the loss, so it
// has not rebuilt an index the loss may have taken, and should it be dead,
// its sweep goes by that index.
func (e *engine) goReconcile(ctx context.Context) {
	if !e.live.reconciling.CompareAndSwap(false, true) {
		return
	}
	started := e.goBackground(func() {
		defer e.live.reconciling.Store(false)
		select {
		case <-time.After(e.cfg.heartbeat + e.cfg.heartbeat/4):
		case <-ctx.Done():
			return
		}
		// An instance that died just before the loss still has canaries:
		// another pass once they have expired.
		for pass := range 3 {
			ok, err := e.client.SetNX(ctx, e.cfg.space.Registry("reconcile"), e.cfg.id, e.cfg.heartbeat).Result()
			if err != nil || !ok {
				return
			}
			start := time.Now()
			n, again, err := e.reconcile(ctx, pass == 0)
			e.observeScript("sweep", start, err)
			if err != nil {
				if ctx.Err() == nil {
					e.cfg.log.Warn("headcount: removing the slices of instances lost with a master's data failed; their leases end them", "err", err)
				}
				return
			}
			e.cfg.log.Info("headcount: removed the slices of instances lost with a master's data", "slices", n, "took", time.Since(start))
			if !again {
				return
			}
			select {
			case <-time.After(e.cfg.threshold + e.cfg.heartbeat):
			case <-ctx.Done():
				return
			}
		}
	})
	if !started {
		e.live.reconciling.Store(false)
	}
}

// reconcile is one pass of goReconcile; it returns how many non-zero
// slices it removed, and whether it kept some that a later pass should look
// at again: of instances that the registry does not know but that still
// have canaries, or, when spareRenewed, of the older sessions of renewed
// ones.
func (e *engine) reconcile(ctx context.Context, spareRenewed bool) (removed int, again bool, err error) {
	keys, err := e.cfg.space.Scan(ctx, e.client)
	if err != nil {
		return 0, false, err
	}
	memo := map[string]canaries{}
	for len(keys) > 0 {
		batch := keys[:min(reconcileBatch, len(keys))]
		keys = keys[len(batch):]
		pipe := e.client.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.HGetAll(ctx, e.cfg.space.Key(k))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return removed, again, err
		}
		// The registry after the slices: an instance registers a session
		// before it writes under it (see renew), so the registry read
		// knows the session of every live slice read. Read first, it
		// would miss an instance registering again between the two reads,
		// and its new slices would go.
		reg := e.client.Pipeline()
		sessionsCmd, renewedCmd := reg.HGetAll(ctx, e.live.keys[1]), reg.HGetAll(ctx, e.live.keys[4])
		if _, err := reg.Exec(ctx); err != nil {
			return removed, again, err
		}
		sessions, renewed := sessionsCmd.Val(), renewedCmd.Val()
		// stale, reindex: instance -> session -> counter hashes holding
		// its slice.
		stale := map[string]map[int64][]string{}
		reindex := map[string]map[int64][]string{}
		for i, c := range cmds {
			for f, v := range c.Val() {
				id, ok := strings.CutPrefix(f, "s:")
				if !ok {
					continue
				}
				s, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					continue
				}
				h := e.cfg.space.Key(batch[i])
				cur, err := strconv.ParseInt(sessions[id], 10, 64)
				known := err == nil
				registered := known && cur <= s // a live session, or one registering now
				if registered || !known && e.canariesOf(ctx, id, memo).some {
					if !e.canariesOf(ctx, id, memo).all {
						addTo(reindex, id, s, h)
					}
					// Unknown but with canaries: alive and registering
					// again, or just dead.
					again = again || !registered
					continue
				}
				if spareRenewed && known && renewed[id] == sessions[id] {
					again = true
					continue
				}
				addTo(stale, id, s, h)
			}
		}
		if err := e.reindex(ctx, reindex); err != nil {
			return removed, again, err
		}
		for id, bySession := range stale {
			for s, hs := range bySession {
				n, err := e.drop(ctx, id, s, hs, reasonCrashed)
				removed += n
				if err != nil {
					return removed, again, err
				}
			}
		}
	}
	e.observeReaped(int64(removed))
	return removed, again, nil
}

// addTo adds counter hash h to the slices of session s of instance id.
func addTo(m map[string]map[int64][]string, id string, s int64, h string) {
	if m[id] == nil {
		m[id] = map[int64][]string{}
	}
	m[id][s] = append(m[id][s], h)
}

// reindex enters counter hashes in the indexes of the sessions they
// belong to, with the TTL the instances give their own.
func (e *engine) reindex(ctx context.Context, m map[string]map[int64][]string) error {
	if len(m) == 0 {
		return nil
	}
	pipe := e.client.Pipeline()
	for id, bySession := range m {
		for s, hs := range bySession {
			idx := e.cfg.space.Index(id, s)
			pipe.SAdd(ctx, idx, toAny(hs)...)
			pipe.PExpire(ctx, idx, e.cfg.counterTTL)
		}
	}
	_, err := pipe.Exec(ctx)
	return err
}

// canaries says whether an instance has a canary on some master, and on
// every master.
type canaries struct{ some, all bool }

// canariesOf reports where instance id has canaries left, remembering
// the answer in memo. On a single server there are none.
func (e *engine) canariesOf(ctx context.Context, id string, memo map[string]canaries) canaries {
	if c, ok := memo[id]; ok {
		return c
	}
	e.live.mu.Lock()
	keys := make([]string, 0, len(e.live.canaries))
	for _, c := range e.live.canaries {
		keys = append(keys, e.cfg.space.Canary(c.tag, id))
	}
	e.live.mu.Unlock()
	pipe := e.client.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Exists(ctx, k)
	}
	_, _ = pipe.Exec(ctx)
	c := canaries{all: true}
	for _, cmd := range cmds {
		// An error counts as a canary: a slice wrongly kept is ended by
		// its lease, one wrongly dropped is a live count missing.
		if n, err := cmd.Result(); err != nil || n > 0 {
			c.some = true
		} else {
			c.all = false
		}
	}
	memo[id] = c
	return c
}
