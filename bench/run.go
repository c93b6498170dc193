package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"
)

// config is what the flags set.
type config struct {
	addr   string
	rounds int
	round  time.Duration
	only   string // one scenario's name, or "" for all
	runID  string // names this run's keys; "" for a new one
}

// run runs the chosen scenarios in turn, prints each one's report and then
// the summary of every ratio, and returns the results. Every key a
// scenario wrote is deleted before it returns, whatever the outcome.
func run(ctx context.Context, cfg config, w io.Writer) ([]result, error) {
	if cfg.rounds < 1 || cfg.round <= 0 {
		return nil, fmt.Errorf("-rounds %d and -round %v: need at least one round of some duration", cfg.rounds, cfg.round)
	}
	todo := scenarios()
	if cfg.only != "" {
		i := slices.IndexFunc(todo, func(s scenario) bool { return s.name == cfg.only })
		if i < 0 {
			return nil, fmt.Errorf("-only %q: no such scenario (have %v)", cfg.only, scenarioNames())
		}
		todo = todo[i : i+1]
	}
	e, err := newEnv(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()
	fmt.Fprintf(w, "redis %s (%s), %d round(s) of %v per side, run %s\n\n", cfg.addr, e.version, cfg.rounds, cfg.round, e.runID)
	var results []result
	for _, sc := range todo {
		fmt.Fprintf(w, "== %s: %s\n", sc.name, sc.about)
		res, err := runScenario(ctx, e, sc)
		if err != nil {
			err = fmt.Errorf("%s: %w", sc.name, err)
		}
		// Whatever a scenario left (after an error, say) goes before the
		// next one starts, so that it runs on a clean server.
		if derr := e.dropRun(context.WithoutCancel(ctx)); derr != nil {
			err = errors.Join(err, derr)
		}
		if err != nil {
			return results, err
		}
		report(w, res)
		results = append(results, res)
	}
	summary(w, results)
	return results, nil
}

func scenarioNames() []string {
	var names []string
	for _, s := range scenarios() {
		names = append(names, s.name)
	}
	return names
}

// scenarios lists every scenario, in the order they run.
func scenarios() []scenario {
	return []scenario{
		connectScenario(1, 1),
		connectScenario(50, 1),
		connectScenario(50, 4),
		incScenario(),
		readScenario(),
		heartbeatScenario(),
	}
}

// count formats n with a thousands separator, for scenario descriptions.
func count(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
