package icounter

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// getMany reads many counters in one pipeline (a plain HMGET each): one
// round trip per Redis node. It answers from Redis, like a strict Get of each key, without
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
	fields := e.readFields()
	cmds := make([]*redis.SliceCmd, len(keys))
	var err error
	if derr := e.detach(ctx, func(ctx context.Context) {
		pipe := e.client.Pipeline()
		for i, k := range keys {
			cmds[i] = pipe.HMGet(ctx, e.cfg.space.Key(k), fields...)
		}
		start := time.Now()
		_, err = pipe.Exec(ctx)
		e.observeScript("read", start, err)
	}); derr != nil {
		return nil, derr
	}
	if err != nil {
		return nil, err
	}
	out := make([]Value, len(keys))
	for i, k := range keys {
		total, _, slice, err := parseRead(cmds[i])
		if err != nil {
			return nil, err
		}
		local := e.localOf(k)
		out[i] = Value{Total: total - slice + local, Mine: local}
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
