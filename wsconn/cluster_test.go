package wsconn

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// node is one server of a test cluster: a Tracker and its HTTP server.
type node struct {
	tr  *Tracker
	url string
}

// startNodes starts n Trackers with the same namespace and their servers.
// lastAccept is stamped with the time each Accept returns.
func startNodes(t *testing.T, c redis.UniversalClient, n int, opts func(i int) Options, lastAccept *atomic.Int64) []node {
	t.Helper()
	nodes := make([]node, n)
	for i := range nodes {
		tr := newTracker(t, c, opts(i))
		_, url := serve(t, echo(tr, func(*Conn) {
			if lastAccept != nil {
				lastAccept.Store(time.Now().UnixNano())
			}
		}))
		nodes[i] = node{tr, url}
	}
	return nodes
}

// dialAll opens perNode connections to every node at once and returns them
// once each has made an echo round trip (so every Accept has returned).
func dialAll(t *testing.T, nodes []node, perNode int, query string) [][]*client {
	t.Helper()
	out := make([][]*client, len(nodes))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, n := range nodes {
		out[i] = make([]*client, perNode)
		for j := range perNode {
			wg.Go(func() {
				c, resp, err := dial(ctxT(t), n.url+query)
				if err != nil {
					t.Errorf("node %d dial: %v (%v)", i, err, resp)
					return
				}
				t.Cleanup(func() { _ = c.WS.CloseNow() })
				c.RoundTrip(t)
				mu.Lock()
				out[i][j] = c
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// readAll reads the total, a room and a tenant on tr.
func readAll(ctx context.Context, tr *Tracker) ([3]Count, error) {
	var out [3]Count
	var err error
	if out[0], err = tr.Total(ctx); err != nil {
		return out, err
	}
	if out[1], err = tr.Count(ctx, "lobby"); err != nil {
		return out, err
	}
	out[2], err = tr.TenantCount(ctx, "acme")
	return out, err
}

// TestThreeNodes: three Trackers on one Redis, 20 concurrent clients each.
// Strict: every Tracker reads the exact totals as soon as the connections
// are up. Lax: all converge within 2 x FlushInterval.
func TestThreeNodes(t *testing.T) {
	const perNode = 20
	const query = "?room=lobby&tenant=acme"
	// "strict, predicate": LaxRooms is set but never says lax, so every
	// room is asked about on every join and still counted strictly.
	for _, mode := range []string{"strict", "strict, predicate"} {
		t.Run(mode, func(t *testing.T) {
			redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
				t.Parallel()
				ns := redistest.Prefix(t)
				nodes := startNodes(t, c, 3, func(i int) Options {
					o := testOptions(ns, fmt.Sprint("node", i))
					if mode != "strict" {
						o.LaxRooms = func(string) bool { return false }
					}
					return o
				}, nil)
				clients := dialAll(t, nodes, perNode, query)
				for i, n := range nodes {
					got, err := readAll(ctxT(t), n.tr)
					if err != nil {
						t.Fatal(err)
					}
					want := Count{Total: 3 * perNode, Local: perNode}
					if got != [3]Count{want, want, want} {
						t.Fatalf("node %d reads %+v right after the connects, want %+v each", i, got, want)
					}
				}
				for _, cs := range clients {
					for _, cl := range cs {
						_ = cl.WS.CloseNow()
					}
				}
				for _, n := range nodes {
					totalIs(t, n.tr, Count{})
					roomIs(t, n.tr, "lobby", Count{})
				}
			})
		})
	}
	t.Run("lax", func(t *testing.T) {
		redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
			t.Parallel()
			const flush = 250 * time.Millisecond
			ns := redistest.Prefix(t)
			var last atomic.Int64
			nodes := startNodes(t, c, 3, func(i int) Options {
				o := testOptions(ns, fmt.Sprint("node", i))
				o.FlushInterval = flush
				o.Lax = true
				o.LaxRooms = func(string) bool { return true }
				return o
			}, &last)
			dialAll(t, nodes, perNode, query)
			want := Count{Total: 3 * perNode, Local: perNode}
			var took time.Duration
			for {
				all := true
				for _, n := range nodes {
					got, err := readAll(ctxT(t), n.tr)
					if err != nil {
						t.Fatal(err)
					}
					all = all && got == [3]Count{want, want, want}
				}
				took = time.Since(time.Unix(0, last.Load()))
				if all {
					break
				}
				// The promise is FlushInterval plus a round trip; the
				// second FlushInterval (250 ms) is the round trip's
				// allowance, and the reads' on a busy machine.
				if took > 2*flush {
					t.Fatalf("lax counts did not converge within 2 x FlushInterval (%v)", 2*flush)
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("lax counts converged %v after the last Accept (FlushInterval %v)", took, flush)
		})
	})
}
