// Command wsload opens and closes WebSocket connections against one or more
// headcount nodes at a target rate, spread over N rooms, and reports the
// connect rate, handshake latency, errors, and the presence totals it
// expects against those the nodes report.
//
//	wsload -nodes http://127.0.0.1:8081,http://127.0.0.1:8082 \
//	       -conns 3000 -rate 1000 -rooms 100
//
// Nodes must serve GET /ws/{room} (WebSocket) and GET /api/presence?room=…
// like the demo does. wsload only targets loopback addresses: it is a test
// tool, and refuses any other host.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(1)
	}
	if cfg.jsonOut {
		_ = json.NewEncoder(os.Stdout).Encode(rep)
	} else {
		rep.print(os.Stdout)
	}
	if !rep.OK() {
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var c config
	var nodes string
	fs := flag.NewFlagSet("wsload", flag.ContinueOnError)
	fs.StringVar(&nodes, "nodes", "http://127.0.0.1:8080", "comma-separated base URLs of the nodes (loopback only)")
	fs.IntVar(&c.conns, "conns", 1000, "connections to open in all")
	fs.Float64Var(&c.rate, "rate", 500, "connects per second")
	fs.IntVar(&c.rooms, "rooms", 10, "rooms to spread the connections over (load-0 … load-N-1)")
	fs.DurationVar(&c.hold, "hold", 0, "close each connection this long after it opened (churn); 0 keeps all open until the presence check")
	fs.DurationVar(&c.duration, "duration", time.Minute, "give up after this long")
	fs.DurationVar(&c.settle, "settle", 5*time.Second, "how long the nodes may take to report the expected totals")
	fs.StringVar(&c.tenant, "tenant", "", "tenant query parameter for every connection")
	fs.StringVar(&c.roomPrefix, "room-prefix", "load-", "prefix of the room names")
	fs.BoolVar(&c.jsonOut, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if c.nodes, err = parseNodes(nodes); err != nil {
		return c, err
	}
	switch {
	case c.conns < 1:
		return c, fmt.Errorf("-conns %d: want at least 1", c.conns)
	case c.rate <= 0:
		return c, fmt.Errorf("-rate %v: want more than 0", c.rate)
	case c.rooms < 1:
		return c, fmt.Errorf("-rooms %d: want at least 1", c.rooms)
	case c.hold < 0 || c.duration <= 0 || c.settle < 0:
		return c, fmt.Errorf("-hold, -duration and -settle must not be negative (and -duration not zero)")
	}
	return c, nil
}
