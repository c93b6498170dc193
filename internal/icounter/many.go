package icounter

import (
	"context"
)

// getMany reads many counters with the reader (see readRedis): a plain
// HMGET each, in one pipeline, one round trip per Redis node, shared with
// other callers' reads. It answers from Redis, like a strict Get of each key, without
// sending this instance's pending changes first; Total counts this
// instance's slice as it is in memory.
func (e *engine) getMany(ctx context.Context, keys []string) ([]Value, error) {
	for _, k := range keys {
		if err := e.checkKey(k); err != nil {
			return nil, err
		}
	}
	if err := e.enter(ctx); err != nil {
		return nil, err
	}
	defer e.ops.Leave()
	hs := make([]string, len(keys))
	for i, k := range keys {
		hs[i] = e.cfg.space.Key(k)
	}
	reads := e.reads.putAllBy(ctx, hs, newRead)
	e.reads.wake()
	out := make([]Value, len(keys))
	for i, k := range keys {
		select {
		case <-reads[i].done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := reads[i].err; err != nil {
			return nil, err
		}
		local := e.localOf(k)
		out[i] = Value{Total: reads[i].total - reads[i].mine + local, Mine: local}
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
