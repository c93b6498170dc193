package icounter

import (
	"context"
	"strconv"
	"time"

	"github.com/headcount-go/headcount/internal/lua"
)

// sweepScan is how many index entries one SSCAN step asks for.
const sweepScan = 5000

// goSweep sweeps session of instance id, which this instance has claimed
// in the registry, in the background, unless it is being swept here
// already. If this process stops first, the claim lapses and another
// instance takes the sweep over.
func (e *engine) goSweep(ctx context.Context, id string, session int64) {
	tag := strconv.FormatInt(session, 10) + ":" + id
	e.live.mu.Lock()
	if e.live.sweeping[tag] {
		e.live.mu.Unlock()
		return
	}
	e.live.sweeping[tag] = true
	e.live.mu.Unlock()
	done := func() {
		e.live.mu.Lock()
		delete(e.live.sweeping, tag)
		e.live.mu.Unlock()
	}
	started := e.goBackground(func() {
		defer done()
		start := time.Now()
		n, err := e.sweepSession(ctx, id, session)
		e.observeScript("sweep", start, err)
		if err != nil {
			if ctx.Err() == nil {
				e.cfg.log.Warn("headcount: sweeping a dead instance failed; its claim lapses and the sweep is taken up again",
					"instance", id, "err", err)
			}
			return
		}
		e.cfg.log.Info("headcount: swept a dead instance", "instance", id, "slices", n, "took", time.Since(start))
		// A write of the dead session held by a stalled link may still
		// land. On a counter in the index, the drop's tombstone refuses
		// it, also when the write is the counter's first (its entry went
		// ahead of it); an entry that itself lands late, with its write,
		// is found by the passes that follow, every heartbeat for two
		// thresholds (an SSCAN of a missing key when there is none).
		t := time.NewTicker(e.cfg.heartbeat)
		defer t.Stop()
		for end := time.Now().Add(2 * e.cfg.threshold); time.Now().Before(end); {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			if _, err := e.sweepSession(ctx, id, session); err != nil && ctx.Err() == nil {
				e.cfg.log.Warn("headcount: a later pass of a sweep failed; leases end what it missed", "instance", id, "err", err)
			}
		}
	})
	if !started {
		done() // shutting down: the claim lapses and another instance sweeps
	}
}

// sweepSession drops the slices of session of instance id from every
// counter of its index, in pipelined batches, then deletes the index and
// the claim, and reports and returns how many non-zero slices it removed.
// Each drop applies to that session (or an older one) only and is
// idempotent, so a sweep that runs twice, or races the instance's return
// under a newer session, never subtracts twice.
func (e *engine) sweepSession(ctx context.Context, id string, session int64) (int, error) {
	idx := e.cfg.space.Index(id, session)
	removed := 0
	var cursor uint64
	for {
		hs, next, err := e.client.SScan(ctx, idx, cursor, "", sweepScan).Result()
		if err != nil {
			return removed, err
		}
		n, err := e.drop(ctx, id, session, hs, reasonCrashed)
		removed += n
		if err != nil {
			return removed, err
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	// Reported before the claim goes: whoever sees the sweep done sees it
	// counted.
	e.observeReaped(int64(removed))
	pipe := e.client.Pipeline()
	pipe.Del(ctx, idx)
	pipe.ZRem(ctx, e.live.keys[2], strconv.FormatInt(session, 10)+":"+id)
	_, err := pipe.Exec(ctx)
	return removed, err
}

// drop removes the slices of session of instance id from the counters
// hs, in one pipeline, and returns how many were not zero.
func (e *engine) drop(ctx context.Context, id string, session int64, hs []string, reason string) (int, error) {
	groups := groupBy(hs, e.batchKey)
	calls := make([]*lua.Call, len(groups))
	for i, g := range groups {
		keys := make([]string, 0, 2*len(g))
		for _, h := range g {
			keys = append(keys, h, h+seenSuffix)
		}
		calls[i] = &lua.Call{Script: lua.Drop, Keys: keys, Args: []any{id, session, e.spec(reason), e.cfg.counterTTLMs}}
	}
	err := lua.RunBatch(ctx, e.client, calls)
	n := 0
	for _, c := range calls {
		vals, cerr := c.Cmd.Slice()
		if cerr != nil {
			continue
		}
		for _, v := range vals {
			if s, _ := v.(string); s != "" && s != "0" {
				n++
			}
		}
	}
	return n, err
}
