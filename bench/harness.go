package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// A scenario pits sides against each other on one measure or more. Each
// round runs every side once, for the round's duration, one after the
// other; who goes first rotates from round to round, so that a drift in
// the machine's load hits every side alike.
type scenario struct {
	name    string
	about   string
	metrics []string // what a side's round returns, in order (e.g. "ops/s")
	ratios  []ratio
	// warmup runs every side once, unmeasured, before the rounds: loads
	// the scripts, fills the connection pools.
	warmup bool
	// setup builds the sides; teardown undoes it (closes clients, stops
	// nodes). The keys left in Redis are dropped by the harness.
	setup func(ctx context.Context, e *env) (sides []side, teardown func(context.Context) error, err error)
}

// A side is one contender of a scenario.
type side struct {
	name string
	// round runs the side for about d and returns one value per metric of
	// its scenario.
	round func(ctx context.Context, d time.Duration) ([]float64, error)
}

// ratio compares two sides, by index, on every metric: num/den.
type ratio struct{ num, den int }

// result holds every value a scenario's rounds produced.
type result struct {
	sc    scenario
	sides []string
	vals  [][][]float64 // [side][metric][round]
}

// ratioRounds returns the per-round ratios of q on metric m.
func (r result) ratioRounds(q ratio, m int) []float64 {
	num, den := r.vals[q.num][m], r.vals[q.den][m]
	out := make([]float64, len(num))
	for i := range num {
		out[i] = num[i] / den[i]
	}
	return out
}

func (r result) ratioName(q ratio) string { return r.sides[q.num] + "/" + r.sides[q.den] }

// runScenario sets sc up, runs its rounds and tears it down.
func runScenario(ctx context.Context, e *env, sc scenario) (res result, err error) {
	sides, teardown, err := sc.setup(ctx, e)
	if err != nil {
		return res, fmt.Errorf("setup: %w", err)
	}
	defer func() {
		if terr := teardown(context.WithoutCancel(ctx)); terr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", terr))
		}
	}()
	res = result{sc: sc, vals: make([][][]float64, len(sides))}
	for i, s := range sides {
		res.sides = append(res.sides, s.name)
		res.vals[i] = make([][]float64, len(sc.metrics))
	}
	if sc.warmup {
		for _, s := range sides {
			if _, err := s.round(ctx, e.warm()); err != nil {
				return res, fmt.Errorf("%s, warming up: %w", s.name, err)
			}
		}
	}
	for r := range e.cfg.rounds {
		for k := range sides {
			i := (r + k) % len(sides)
			v, err := sides[i].round(ctx, e.cfg.round)
			if err == nil && len(v) != len(sc.metrics) {
				err = fmt.Errorf("%d values for %d metrics", len(v), len(sc.metrics))
			}
			if err != nil {
				return res, fmt.Errorf("%s, round %d: %w", sides[i].name, r+1, err)
			}
			for m, x := range v {
				if x <= 0 || math.IsNaN(x) || math.IsInf(x, 0) {
					return res, fmt.Errorf("%s, round %d: %s = %v", sides[i].name, r+1, sc.metrics[m], x)
				}
				res.vals[i][m] = append(res.vals[i][m], x)
			}
		}
	}
	return res, nil
}
