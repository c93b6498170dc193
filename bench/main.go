// Command bench compares headcount with its peers on one Redis, in one run:
// Centrifuge's Redis presence manager (with and without user mapping) and
// a trivial Lua script called with EVALSHA, the floor of any script-based
// counter. The sides of a scenario run interleaved, round after round, so
// that drift in the machine's load hits them alike; it reports every
// round's figures, their medians, and the ratios headcount/peer with their
// spread over the rounds.
//
//	go run . -redis 127.0.0.1:6379 -rounds 5 -round 2s [-only connect-50,presence] [-cpuprofile cpu.out]
//
// It is a separate module so that headcount itself never depends on its
// peers. Any error of either side fails the run (exit status 1): an error
// is a failed benchmark, not a slow one.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.addr, "redis", cmp.Or(os.Getenv("HEADCOUNT_REDIS_ADDR"), "127.0.0.1:6379"),
		"Redis `host:port`, one nothing else uses; $HEADCOUNT_REDIS_ADDR if set")
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds per scenario (each runs every side once)")
	flag.DurationVar(&cfg.round, "round", 2*time.Second, "how long each side runs in a round (heartbeat: its length in 1s ticks, 3 at least)")
	flag.StringVar(&cfg.only, "only", "", "run only the scenarios of these comma-separated `names`: "+strings.Join(scenarioNames(), ", ")+
		"; presence stands for "+strings.Join(presenceScenarios, ", "))
	flag.Float64Var(&cfg.churnRate, "churn-rate", defaultChurnRate, "connects per second of presence-churn")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (both sides) to `file`")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -cpuprofile:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, cfg, os.Stdout); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}
