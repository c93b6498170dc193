package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/headcount-go/headcount/wsconn"
)

// The heartbeat scenario's node: lax, beating every second.
const (
	beatInterval  = time.Second
	beatThreshold = 3 * time.Second
)

// heartbeatScenario: what the heartbeat of one idle lax node costs Redis,
// per tick, when it holds 10 rooms and when it holds 10,000: the commands
// Redis executes (an EVALSHA and each command its script runs) and its CPU
// time, from INFO. Each round starts a node, fills its rooms, lets the
// first flush and a heartbeat go by, and measures the ticks of about
// -round (3 at least) with nothing else using Redis; then the node closes
// and its keys go. The CPU figure includes Redis's own idle work
// (serverCron), the same for both sizes.
func heartbeatScenario() scenario {
	return scenario{
		name:    "heartbeat",
		about:   "Redis work per heartbeat tick of an idle lax node, 10 rooms vs 10,000 rooms",
		metrics: []string{"commands/tick", "redis-cpu-ms/tick"},
		ratios:  []ratio{{1, 0}},
		setup: func(ctx context.Context, e *env) ([]side, func(context.Context) error, error) {
			node := func(rooms int) func(context.Context, time.Duration) ([]float64, error) {
				return func(ctx context.Context, d time.Duration) ([]float64, error) {
					ticks := max(3, int(math.Ceil(d.Seconds()/beatInterval.Seconds())))
					return idleNode(ctx, e, rooms, ticks)
				}
			}
			none := func(context.Context) error { return nil }
			return []side{{"10-rooms", node(10)}, {"10k-rooms", node(10000)}}, none, nil
		},
	}
}

// idleNode measures one node holding a connection in each of rooms rooms
// over about ticks heartbeats.
func idleNode(ctx context.Context, e *env, rooms, ticks int) (_ []float64, err error) {
	ns := e.ns("beat" + strconv.Itoa(rooms))
	b := &beats{}
	node, err := newHCNode(e.cfg.addr, wsconn.Options{
		Namespace:             ns,
		Lax:                   true,
		LaxRooms:              func(string) bool { return true },
		DeadInstanceThreshold: beatThreshold,
		HeartbeatInterval:     beatInterval,
	}, b)
	if err != nil {
		return nil, err
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		err = errors.Join(err, node.close(ctx), e.drop(ctx, ns))
	}()
	return hcNodes{node}.checked(func() ([]float64, error) {
		for i := range rooms {
			if _, err := node.tr.Admit(ctx, roomRequest("room-"+strconv.Itoa(i))); err != nil {
				return nil, fmt.Errorf("headcount Admit: %w", err)
			}
		}
		// The admissions' flush, then one heartbeat at least.
		if err := sleep(ctx, beatInterval+beatGap); err != nil {
			return nil, err
		}
		var s0, s1 serverStats
		b0, err := b.between(ctx, func() (err error) { s0, err = readServerStats(ctx, e.admin); return err })
		if err != nil {
			return nil, err
		}
		if err := sleep(ctx, time.Duration(ticks)*beatInterval); err != nil {
			return nil, err
		}
		b1, err := b.between(ctx, func() (err error) { s1, err = readServerStats(ctx, e.admin); return err })
		if err != nil {
			return nil, err
		}
		n := float64(b1 - b0)
		if n < 1 {
			return nil, fmt.Errorf("no heartbeat in %v", time.Duration(ticks)*beatInterval)
		}
		return []float64{float64(s1.commands-s0.commands) / n, (s1.cpu - s0.cpu) * 1000 / n}, nil
	})
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
