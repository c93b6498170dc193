package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/headcount-go/headcount/wsconn"
)

// rooms is how many rooms the connect scenarios spread connections over.
const rooms = 100

// connectScenario: strict connect+disconnect from clients concurrent
// clients spread over nodes nodes. headcount counts each connection
// globally and in one of 100 rooms (Admit, then Release); Centrifuge adds
// and removes its presence in the room's channel (the room only).
func connectScenario(clients, nodes int) scenario {
	name := "connect-" + strconv.Itoa(clients)
	about := fmt.Sprintf("strict connect+disconnect, %d clients, 1 node", clients)
	if clients == 1 {
		about = "strict connect+disconnect, 1 client, 1 node"
	}
	if nodes > 1 {
		name += "x" + strconv.Itoa(nodes)
		about = fmt.Sprintf("strict connect+disconnect, %d clients over %d nodes", clients, nodes)
	}
	return scenario{
		name:    name,
		about:   about + ", 100 rooms",
		metrics: []string{"ops/s"},
		ratios:  []ratio{{0, 1}},
		warmup:  true,
		setup: func(ctx context.Context, e *env) ([]side, func(context.Context) error, error) {
			// Strict: the Options' zero values (no Lax, LaxRooms or AutoLax).
			hc, err := startHCNodes(e, nodes, wsconn.Options{Namespace: e.ns("hc")})
			if err != nil {
				return nil, nil, err
			}
			cf, err := startCFNodes(e, nodes, e.ns("cf"), false)
			if err != nil {
				return nil, nil, errors.Join(err, hc.close(ctx))
			}
			teardown := func(ctx context.Context) error {
				cf.close()
				return hc.close(ctx)
			}
			names := make([]string, rooms)
			for i := range names {
				names[i] = "room-" + strconv.Itoa(i)
			}
			// One request per room, reused: Admit only reads it.
			reqs := make([]*http.Request, rooms)
			for i := range reqs {
				reqs[i] = roomRequest(names[i])
			}
			headcount := func(ctx context.Context, d time.Duration) ([]float64, error) {
				return hc.checked(func() ([]float64, error) {
					rate, err := spin(ctx, clients, d, func(ctx context.Context, w int, i int64) error {
						return hc[w%nodes].connectDisconnect(ctx, reqs[i%rooms])
					})
					return []float64{rate}, err
				})
			}
			centrifuge := func(ctx context.Context, d time.Duration) ([]float64, error) {
				rate, err := spin(ctx, clients, d, func(ctx context.Context, w int, i int64) error {
					n, ch := cf[w%nodes], names[i%rooms]
					client, user := "c"+strconv.FormatInt(i, 10), "u"+strconv.Itoa(w)
					if err := n.join(ch, client, user); err != nil {
						return err
					}
					return n.leave(ch, client, user)
				})
				return []float64{rate}, err
			}
			return []side{{"headcount", headcount}, {"centrifuge", centrifuge}}, teardown, nil
		},
	}
}
