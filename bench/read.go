package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/headcount-go/headcount/wsconn"
)

// readScenario: 50 concurrent readers of one room's count while the room
// holds 1,000 connections (of 1,000 users): Tracker.Count against
// Centrifuge's PresenceStats with user mapping (counts kept in Redis) and
// without (every presence entry loaded and counted by the node). Every
// read is checked to see all 1,000.
func readScenario() scenario {
	const readers, conns, room = 50, 1000, "lobby"
	return scenario{
		name:    "read-1000",
		about:   "room count read, 50 readers, a room of 1,000 connections",
		metrics: []string{"reads/s"},
		ratios:  []ratio{{0, 1}, {0, 2}},
		warmup:  true,
		setup: func(ctx context.Context, e *env) ([]side, func(context.Context) error, error) {
			hc, err := startHCNodes(e, 1, wsconn.Options{Namespace: e.ns("hc")})
			if err != nil {
				return nil, nil, err
			}
			var cf cfNodes
			teardown := func(ctx context.Context) error {
				cf.close()
				return hc.close(ctx)
			}
			for _, mapped := range []bool{true, false} {
				n, err := newCFNode(e.cfg.addr, e.ns("cf"), mapped)
				if err != nil {
					return nil, nil, errors.Join(err, teardown(ctx))
				}
				cf = append(cf, n)
			}
			// The 1,000 connections, on every side. The leases stay
			// counted until the Tracker closes.
			req := roomRequest(room)
			for i := range conns {
				if _, err := hc[0].tr.Admit(ctx, req); err != nil {
					return nil, nil, errors.Join(fmt.Errorf("headcount Admit: %w", err), teardown(ctx))
				}
				for _, n := range cf {
					if err := n.join(room, "c"+strconv.Itoa(i), "u"+strconv.Itoa(i)); err != nil {
						return nil, nil, errors.Join(err, teardown(ctx))
					}
				}
			}
			headcount := func(ctx context.Context, d time.Duration) ([]float64, error) {
				return hc.checked(func() ([]float64, error) {
					rate, err := spin(ctx, readers, d, func(ctx context.Context, _ int, _ int64) error {
						c, err := hc[0].tr.Count(ctx, room)
						switch {
						case err != nil:
							return fmt.Errorf("headcount Count: %w", err)
						case c.Total != conns:
							return fmt.Errorf("headcount Count = %d, want %d", c.Total, conns)
						}
						return nil
					})
					return []float64{rate}, err
				})
			}
			stats := func(n *cfNode, mapped bool) func(context.Context, time.Duration) ([]float64, error) {
				return func(ctx context.Context, d time.Duration) ([]float64, error) {
					rate, err := spin(ctx, readers, d, func(context.Context, int, int64) error {
						s, err := n.pm.PresenceStats(room)
						switch {
						case err != nil:
							return fmt.Errorf("centrifuge PresenceStats (user mapping %v): %w", mapped, err)
						case s.NumClients != conns || s.NumUsers != conns:
							return fmt.Errorf("centrifuge PresenceStats (user mapping %v) = %+v, want %d clients of %d users",
								mapped, s, conns, conns)
						}
						return nil
					})
					return []float64{rate}, err
				}
			}
			return []side{
				{"headcount", headcount},
				{"centrifuge-usermap", stats(cf[0], true)},
				{"centrifuge", stats(cf[1], false)},
			}, teardown, nil
		},
	}
}
