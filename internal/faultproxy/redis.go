package faultproxy

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// Redis returns a client of the shared standalone redis-server
// (internal/redistest) that goes through a new proxy, and the proxy:
// Stall(true) makes Redis hang for that client as a stopped server would
// (connections stay open, nothing answers). The client keeps go-redis' default timeouts and retries, about
// ten seconds per command, so a call that returns sooner is bounded by the
// code under test, not by the client. Standalone only: a cluster client
// dials the nodes' own addresses, past any proxy. Both are closed when the
// test ends.
func Redis(tb testing.TB) (*redis.Client, *Proxy) {
	tb.Helper()
	p, err := New(redistest.StandaloneServer(tb).Addr())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	c := redis.NewClient(&redis.Options{Addr: p.Addr()})
	tb.Cleanup(func() { _ = c.Close() })
	return c, p
}
