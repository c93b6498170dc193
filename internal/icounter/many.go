package icounter

import (
	"context"
	"time"

	"github.com/headcount-go/headcount/internal/lua"
)

// getMany reads many counters in one pipeline: one round trip per Redis
// node. It answers from Redis, like a strict Get of each key, without
// sending this instance's pending changes first; Total counts this
// instance's slice as it is in memory.
func (e *engine) getMany(ctx context.Context, keys []string) ([]Value, error) {
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, err
		}
	}
	if err := e.enter(ctx); err != nil {
		return nil, err
	}
	defer e.ops.Leave()
	calls := make([]*lua.Call, len(keys))
	for i, k := range keys {
		h := e.cfg.space.Key(k)
		calls[i] = &lua.Call{Script: lua.Read, Keys: []string{h, h + seenSuffix},
			Args: []any{e.cfg.id, e.session, e.cfg.thresholdMs, e.cfg.reapPerCall}}
	}
	var err error
	if derr := e.detach(ctx, func(ctx context.Context) {
		start := time.Now()
		err = lua.RunBatch(ctx, e.client, calls)
		e.observeScript("read", start, err)
	}); derr != nil {
		return nil, derr
	}
	if err != nil {
		return nil, err
	}
	out := make([]Value, len(keys))
	for i, k := range keys {
		rep, err := parseInts(calls[i].Cmd, 4)
		if err != nil {
			return nil, err
		}
		e.observeReaped(rep[3])
		local := e.localOf(k)
		out[i] = Value{Total: rep[0] - rep[1] + local, Mine: local}
	}
	return out, nil
}

// localOf returns this instance's slice of key as it is in memory.
func (e *engine) localOf(key string) int64 {
	sh := e.shard(key)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if st := sh.m[key]; st != nil {
		return st.local.Load()
	}
	return 0
}

// dirtyCount is how many counters hold changes Redis has not acknowledged.
func (e *engine) dirtyCount() int {
	n := 0
	e.each(func(st *state) {
		if st.dirty() {
			n++
		}
	})
	return n
}
