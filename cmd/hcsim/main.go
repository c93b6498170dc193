// Command hcsim runs many headcount nodes in one process against a Redis
// Cluster on loopback and reports what they cost Redis: CPU and commands
// per master at rest and under churn, memory per connection, room and
// node, Go heap and goroutines per node, and how long a crashed node's
// counts take to disappear. It checks every count against its own model
// and exits non-zero when one is not exact in time. See SCALING.md.
//
//	go run ./cmd/hcsim -nodes 100 -rooms 100000 -conns 1000000 -crash 10
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/headcount-go/headcount/internal/sim"
)

func main() {
	var c sim.Config
	addrs := flag.String("addrs", "", "comma-separated `host:port` seeds of an existing Redis Cluster (default: start -masters redis-servers on loopback)")
	flag.IntVar(&c.Masters, "masters", 3, "masters to start when -addrs is empty")
	flag.IntVar(&c.Nodes, "nodes", 10, "nodes (a Tracker and a Redis client each)")
	flag.IntVar(&c.Rooms, "rooms", 1000, "rooms")
	flag.IntVar(&c.Conns, "conns", 10000, "connections, one room each (at least one per room)")
	flag.Float64Var(&c.LaxNodes, "lax", 0.2, "fraction of nodes that count lax (Options.Lax, every room lax); the others count strict")
	flag.IntVar(&c.Crash, "crash", 1, "nodes to crash (abandoned without Close)")
	flag.IntVar(&c.Users, "users", 0, "if set, presence on, each connection one of this many users at random: distinct users and member lists checked too, and the crashed nodes' leave events")
	flag.DurationVar(&c.Threshold, "threshold", 30*time.Second, "DeadInstanceThreshold")
	flag.DurationVar(&c.Heartbeat, "heartbeat", 0, "HeartbeatInterval (0: threshold/3)")
	flag.DurationVar(&c.Flush, "flush", 0, "FlushInterval (0: wsconn's default, 20ms)")
	flag.IntVar(&c.ChurnRate, "churn", 1000, "connects per second (and as many disconnects) in each churn window; 0 skips churn")
	flag.DurationVar(&c.ChurnFor, "churn-for", 10*time.Second, "length of each churn window (strict nodes, then lax nodes)")
	flag.DurationVar(&c.Rest, "rest", 20*time.Second, "length of the window at rest (0 skips it)")
	flag.DurationVar(&c.RenewFor, "renew-for", 0, "if set, a window at rest this long while the slices' leases are renewed (from 5 minutes after the build-up): the cost at rest, renewals included")
	flag.IntVar(&c.Workers, "workers", 256, "concurrent Admits while building up")
	flag.IntVar(&c.Steps, "steps", 10, "build-up steps, a progress line each")
	flag.IntVar(&c.ReadChecks, "check-nodes", 0, "surviving nodes that read every count after the crash (0: all)")
	flag.StringVar(&c.Namespace, "namespace", "hcsim", "Namespace")
	logNodes := flag.Bool("log", false, "write every node's log (sweeps of crashed nodes, warnings) to stderr")
	flag.Parse()
	if *logNodes {
		c.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if *addrs != "" {
		c.Addrs = strings.Split(*addrs, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("$ hcsim %s\n", strings.Join(os.Args[1:], " "))
	rep, err := sim.Run(ctx, c, os.Stdout)
	if rep != nil {
		rep.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hcsim:", err)
		os.Exit(1)
	}
}
