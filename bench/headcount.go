package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/wsconn"
)

// hcNode is one headcount node: a Tracker on a Redis client of its own.
type hcNode struct {
	rc  *redis.Client
	tr  *wsconn.Tracker
	reg *prometheus.Registry
}

// newHCNode starts a Tracker on a new client; hooks, if any, see that
// client's traffic.
func newHCNode(addr string, o wsconn.Options, hooks ...redis.Hook) (*hcNode, error) {
	rc := newClient(addr)
	for _, h := range hooks {
		rc.AddHook(h)
	}
	tr, err := wsconn.New(rc, o)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("headcount: %w", err)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(tr.Collector()); err != nil {
		_ = tr.Close(context.Background())
		rc.Close()
		return nil, fmt.Errorf("headcount metrics: %w", err)
	}
	return &hcNode{rc: rc, tr: tr, reg: reg}, nil
}

// failures returns how many Redis calls of the node failed or timed out so
// far, from its metrics. Strict counting fails open (Admit succeeds while
// Redis is away), so this is where headcount's errors show.
func (n *hcNode) failures() (float64, error) {
	families, err := n.reg.Gather()
	if err != nil {
		return 0, fmt.Errorf("headcount metrics: %w", err)
	}
	var sum float64
	for _, f := range families {
		switch f.GetName() {
		case "headcount_redis_errors_total", "headcount_redis_timeouts_total":
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum, nil
}

func (n *hcNode) close(ctx context.Context) error {
	err := n.tr.Close(ctx)
	if errors.Is(err, wsconn.ErrClosed) {
		err = nil
	}
	return errors.Join(err, n.rc.Close())
}

// hcNodes is the headcount side of a scenario: one node or more.
type hcNodes []*hcNode

func startHCNodes(e *env, n int, o wsconn.Options) (hcNodes, error) {
	var nodes hcNodes
	for i := range n {
		o.InstanceID = fmt.Sprintf("node-%d", i)
		node, err := newHCNode(e.cfg.addr, o)
		if err != nil {
			return nil, errors.Join(err, nodes.close(context.Background()))
		}
		nodes = append(nodes, node)
	}
	return nodes, nil
}

func (ns hcNodes) close(ctx context.Context) error {
	var err error
	for _, n := range ns {
		err = errors.Join(err, n.close(ctx))
	}
	return err
}

// checked runs f and fails if any node's Redis calls failed or timed out
// meanwhile.
func (ns hcNodes) checked(f func() ([]float64, error)) ([]float64, error) {
	before, err := ns.failures()
	if err != nil {
		return nil, err
	}
	v, err := f()
	if err != nil {
		return nil, err
	}
	after, err := ns.failures()
	if err != nil {
		return nil, err
	}
	if after > before {
		return nil, fmt.Errorf("headcount: %.0f Redis calls failed or timed out (see headcount_redis_errors_total, headcount_redis_timeouts_total)", after-before)
	}
	return v, nil
}

func (ns hcNodes) failures() (float64, error) {
	var sum float64
	for _, n := range ns {
		f, err := n.failures()
		if err != nil {
			return 0, err
		}
		sum += f
	}
	return sum, nil
}

// roomRequest is a handshake request of a connection in room, as an
// adapter hands it to the Tracker.
func roomRequest(room string) *http.Request {
	return wsconn.WithRooms(httptest.NewRequest(http.MethodGet, "/", nil), room)
}

// admit counts a connection on n through Admit.
func (n *hcNode) admit(ctx context.Context, r *http.Request) (*wsconn.Lease, error) {
	l, err := n.tr.Admit(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("headcount Admit: %w", err)
	}
	return l, nil
}

// release ends a lease, which must not have ended before.
func release(l *wsconn.Lease) error {
	if !l.Release() {
		return errors.New("headcount Release: lease released twice")
	}
	return nil
}

// connectDisconnect counts a connection on n and uncounts it.
func (n *hcNode) connectDisconnect(ctx context.Context, r *http.Request) error {
	l, err := n.admit(ctx, r)
	if err != nil {
		return err
	}
	return release(l)
}
