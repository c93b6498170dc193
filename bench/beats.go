package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// beatGap is the least quiet between two bursts of a node's calls that
// tells them apart: far below the heartbeat interval, far above the pauses
// within one tick's work.
const beatGap = 200 * time.Millisecond

// beats watches an idle node's Redis client, where every call belongs to a
// heartbeat: a burst of calls after beatGap of quiet is one tick. It is a
// go-redis hook.
type beats struct {
	mu       sync.Mutex
	inflight int
	last     time.Time // a call began or ended
	bursts   int
	calls    int64
}

func (b *beats) begin() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if b.inflight == 0 && now.Sub(b.last) >= beatGap {
		b.bursts++
	}
	b.inflight++
	b.calls++
	b.last = now
}

func (b *beats) end() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inflight--
	b.last = time.Now()
}

// quiet reports whether no call is under way or ended within beatGap, and
// the bursts and calls so far.
func (b *beats) quiet() (ok bool, bursts int, calls int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inflight == 0 && time.Since(b.last) >= beatGap, b.bursts, b.calls
}

// between runs f (a read of the server's stats) between two of the
// node's bursts, retrying until no call of the node overlapped it, and
// returns the bursts seen before it. A node never quiet for beatGap within
// a minute fails it.
func (b *beats) between(ctx context.Context, f func() error) (int, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, time.Minute, errors.New("the node's Redis calls never paused for "+beatGap.String()))
	defer cancel()
	for {
		ok, bursts, calls := b.quiet()
		if ok {
			if err := f(); err != nil {
				return 0, err
			}
			if ok2, _, calls2 := b.quiet(); ok2 && calls2 == calls {
				return bursts, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (b *beats) DialHook(next redis.DialHook) redis.DialHook { return next }

func (b *beats) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		b.begin()
		defer b.end()
		return next(ctx, cmd)
	}
}

func (b *beats) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		b.begin()
		defer b.end()
		return next(ctx, cmds)
	}
}
