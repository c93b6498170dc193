package main

import (
	"context"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestScenarios runs every scenario once, with tiny rounds, against
// $HEADCOUNT_REDIS_ADDR, and checks that the harness works: every side of
// every scenario produced positive figures, every ratio is positive and
// finite, the report ends with the summary, and no key of the run is
// left. It checks no speed.
func TestScenarios(t *testing.T) {
	addr := os.Getenv("HEADCOUNT_REDIS_ADDR")
	if addr == "" {
		t.Fatal("HEADCOUNT_REDIS_ADDR is not set: it names the Redis server (host:port) the scenarios run on, " +
			"one nothing else uses; e.g. scripts/redis-up.sh /tmp/r && source /tmp/r/env (stop it with scripts/redis-down.sh /tmp/r)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	runID := "hcbench-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var out strings.Builder
	results, err := run(ctx, config{addr: addr, rounds: 1, round: 200 * time.Millisecond, runID: runID}, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	names := scenarioNames()
	if len(results) != len(names) {
		t.Fatalf("%d results, want one of each scenario: %v", len(results), names)
	}
	for i, r := range results {
		if r.sc.name != names[i] {
			t.Errorf("result %d is of %s, want %s", i, r.sc.name, names[i])
		}
		for s, side := range r.sides {
			for m, metric := range r.sc.metrics {
				if v := r.vals[s][m]; len(v) != 1 || !(v[0] > 0) {
					t.Errorf("%s: %s %s = %v, want one positive value", r.sc.name, side, metric, v)
				}
			}
		}
		if len(r.sc.ratios) == 0 {
			t.Errorf("%s: no ratio", r.sc.name)
		}
		for _, q := range r.sc.ratios {
			for m, metric := range r.sc.metrics {
				for _, x := range r.ratioRounds(q, m) {
					if !(x > 0) || math.IsInf(x, 0) {
						t.Errorf("%s: %s %s = %v, want positive and finite", r.sc.name, r.ratioName(q), metric, x)
					}
				}
			}
		}
	}
	if !strings.Contains(out.String(), "== summary") {
		t.Error("no summary in the report")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	var left []string
	iter := c.Scan(ctx, 0, "*"+runID+"-*", 1000).Iterator()
	for iter.Next(ctx) {
		left = append(left, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("%d keys of the run left in Redis, e.g. %q", len(left), left[0])
	}
}
