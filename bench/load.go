package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// spin runs op from workers goroutines until d has passed and returns the
// completed operations per second. Each op gets its worker's index and a
// sequence number shared by all workers (0, 1, 2...). A worker finishes
// the op it has started when d passes, and the rate's time includes it.
// The first error stops every worker and is returned.
func spin(ctx context.Context, workers int, d time.Duration, op func(ctx context.Context, w int, i int64) error) (float64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if err := op(ctx, w, next.Add(1)-1); err != nil {
					cancel(err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}
