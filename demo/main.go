// Command demo is headcount's chat demo: a page where you pick a room and a
// name, chat, and watch who is in each room and the live connection counts
// of every room, kept by headcount in Redis, cluster-wide and per node.
//
//	go run ./demo                  # embedded Redis, one node on :8080
//	go run ./demo -nodes 3         # three node processes behind one page
//	go run ./demo -redis localhost:6379 -addr :8081
//
// Run with -h for the flags and the endpoints. Each node serves:
//
//	GET /ws/{room}?user=U&tenant=T  chat WebSocket (JSON events, see hub.go)
//	GET /api/presence?room=a&room=b connection counts (wsconn.PresenceHandler)
//	GET /api/events?room=a&room=b   members, joins and leaves (wsconn.EventsHandler, SSE)
//	GET /api/info                   the node's settings and endpoints, for the page
//	GET /metrics                    Prometheus metrics
//	GET /                           the page
//
// A lone node is named after its host and port (-instance to choose).
// With -nodes N, N > 1, the process is a supervisor: it starts N nodes (this
// program again) on the ports after -addr, serves the page on -addr,
// proxies /node/{i}/... to node i, answers POST /node/{i}/crash (SIGKILL)
// and POST /node/{i}/restart, and serves /metrics: its own and every
// running node's headcount_* metrics, labelled node="ID". endpoints.go
// lists them all.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		os.Exit(2) // the error is printed already
	}
	// A node keeps catching both signals until it exits, so a second one
	// (the supervisor's SIGTERM after a Ctrl-C) does not cut its drain.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "headcount demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	if os.Getenv(listenerFDEnv) != "" { // a node started by the supervisor
		f := os.NewFile(3, "listener")
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("listener from the supervisor: %w", err)
		}
		return runNode(ctx, cfg, ln, true, os.Stdout, log)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	if cfg.nodes > 1 {
		return runSupervisor(ctx, cfg, ln, os.Stdout, os.Stderr, log)
	}
	return runNode(ctx, cfg, ln, false, os.Stdout, log)
}
