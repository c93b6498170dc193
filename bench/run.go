package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// config is what the flags set.
type config struct {
	addr   string
	rounds int
	round  time.Duration
	only   string // scenario names, comma-separated ("presence": the presence scenarios), or "" for all
	runID  string // names this run's keys; "" for a new one
	// churnRate is the connects per second of presence-churn; 0 for
	// defaultChurnRate.
	churnRate float64
}

// defaultChurnRate is presence-churn's rate when -churn-rate is not set.
const defaultChurnRate = 5000

// run runs the chosen scenarios in turn, prints each one's report and then
// the summary of every ratio, and returns the results. Every key a
// scenario wrote is deleted before it returns, whatever the outcome.
func run(ctx context.Context, cfg config, w io.Writer) ([]result, error) {
	if cfg.rounds < 1 || cfg.round <= 0 {
		return nil, fmt.Errorf("-rounds %d and -round %v: need at least one round of some duration", cfg.rounds, cfg.round)
	}
	if cfg.churnRate < 0 {
		return nil, fmt.Errorf("-churn-rate %v: negative", cfg.churnRate)
	}
	todo, err := choose(scenarios(cfg), cfg.only)
	if err != nil {
		return nil, err
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

// choose returns the scenarios only names (comma-separated; "presence"
// stands for every presence scenario), in the order they run; all of them
// if only is "".
func choose(all []scenario, only string) ([]scenario, error) {
	if only == "" {
		return all, nil
	}
	want := make(map[string]bool)
	for name := range strings.SplitSeq(only, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "presence":
			for _, p := range presenceScenarios {
				want[p] = true
			}
		case !slices.ContainsFunc(all, func(s scenario) bool { return s.name == name }):
			return nil, fmt.Errorf("-only %q: no scenario %q (have %v, and presence for %v)", only, name, scenarioNames(), presenceScenarios)
		default:
			want[name] = true
		}
	}
	return slices.DeleteFunc(all, func(s scenario) bool { return !want[s.name] }), nil
}

func scenarioNames() []string {
	var names []string
	for _, s := range scenarios(config{}) {
		names = append(names, s.name)
	}
	return names
}

// scenarios lists every scenario, in the order they run.
func scenarios(cfg config) []scenario {
	rate := cfg.churnRate
	if rate == 0 {
		rate = defaultChurnRate
	}
	return []scenario{
		connectScenario(1, 1),
		connectScenario(50, 1),
		connectScenario(50, 4),
		incScenario(),
		readScenario(),
		heartbeatScenario(),
		presenceConnectScenario(),
		presenceMembersScenario(false),
		presenceMembersScenario(true),
		presenceChurnScenario(rate),
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
