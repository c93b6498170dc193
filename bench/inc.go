package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/headcount-go/headcount/counter"
)

// incScenario: strict Inc from 50 callers over 100 distinct keys with the
// public counter.PerInstance, against the floor of any script-based
// counter: a one-INCR Lua script called with EVALSHA from 50 callers over
// 100 keys of its own.
func incScenario() scenario {
	const callers, keys = 50, 100
	return scenario{
		name:    "inc-50x100",
		about:   "strict Inc, 50 callers over 100 keys, vs a one-INCR EVALSHA",
		metrics: []string{"ops/s"},
		ratios:  []ratio{{0, 1}},
		warmup:  true,
		setup: func(ctx context.Context, e *env) ([]side, func(context.Context) error, error) {
			hcClient, floorClient := newClient(e.cfg.addr), newClient(e.cfg.addr)
			closeClients := func() error { return errors.Join(hcClient.Close(), floorClient.Close()) }
			pc, err := counter.NewPerInstance(hcClient, counter.PerInstanceOptions{Prefix: e.ns("hc")})
			if err != nil {
				return nil, nil, errors.Join(fmt.Errorf("headcount: %w", err), closeClients())
			}
			teardown := func(ctx context.Context) error {
				err := pc.Close(ctx)
				if errors.Is(err, counter.ErrClosed) {
					err = nil
				}
				return errors.Join(err, closeClients())
			}
			sha, err := floorClient.ScriptLoad(ctx, "return redis.call('INCR', KEYS[1])").Result()
			if err != nil {
				return nil, nil, errors.Join(fmt.Errorf("script load: %w", err), teardown(ctx))
			}
			hcKeys, floorKeys := make([]string, keys), make([]string, keys)
			floorNS := e.ns("evalsha")
			for i := range keys {
				hcKeys[i] = "k-" + strconv.Itoa(i)
				floorKeys[i] = floorNS + ":k-" + strconv.Itoa(i)
			}
			headcount := func(ctx context.Context, d time.Duration) ([]float64, error) {
				rate, err := spin(ctx, callers, d, func(ctx context.Context, _ int, i int64) error {
					if _, err := pc.Inc(ctx, hcKeys[i%keys], 1); err != nil {
						return fmt.Errorf("headcount Inc: %w", err)
					}
					return nil
				})
				return []float64{rate}, err
			}
			evalsha := func(ctx context.Context, d time.Duration) ([]float64, error) {
				rate, err := spin(ctx, callers, d, func(ctx context.Context, _ int, i int64) error {
					if err := floorClient.EvalSha(ctx, sha, floorKeys[i%keys:i%keys+1]).Err(); err != nil {
						return fmt.Errorf("EVALSHA: %w", err)
					}
					return nil
				})
				return []float64{rate}, err
			}
			return []side{{"headcount", headcount}, {"evalsha", evalsha}}, teardown, nil
		},
	}
}
