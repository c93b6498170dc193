package faults

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// TestSlowRedis puts a proxy that adds 200ms in each direction (a round
// trip of 400ms or more) between two nodes and Redis, with RedisTimeout
// 100ms and a per-tenant limit that is full. Every handshake returns within
// the timeout plus slowSlack, less than one round trip, so none waited for
// Redis: the fail-open node admits over the limit, the FailClosed node
// refuses a limited handshake with 503 and Retry-After and admits one no
// limit applies to; presence reads fail fast with 503. Meanwhile the slow
// nodes' heartbeats still land (a third node never sees their counts drop),
// and once the latency is removed every node reports exact counts within
// heartbeat + 1s: the late limit check of the refused handshake is undone.
//
// Not parallel: its timings are tight, and must not suffer the crash tests'
// load.
func TestSlowRedis(t *testing.T) {
	const (
		latency      = 200 * time.Millisecond
		redisTimeout = 100 * time.Millisecond
		// slowSlack is what a handshake may take beyond RedisTimeout here:
		// together less than one Redis round trip (2*latency), so a
		// handshake that waited for Redis fails the test.
		slowSlack = 2*latency - latency/4 - redisTimeout
		limit     = 3
	)
	addr := redistest.StandaloneServer(t).Addr()
	f := newFleet(t, names("room", 2), []string{"t", "u"})
	p := newProxy(t, f, addr)
	limited := func(failClosed bool) func(*wsconn.Options) {
		return func(o *wsconn.Options) {
			o.RedisTimeout = redisTimeout
			o.Limits.PerTenant = limit
			o.FailClosed = failClosed
		}
	}
	open := f.startNode("open", redis.NewClient(&redis.Options{Addr: p.Addr()}), limited(false))
	closed := f.startNode("closed", redis.NewClient(&redis.Options{Addr: p.Addr()}), limited(true))
	obs := f.startNode("observer", redis.NewClient(&redis.Options{Addr: addr}), nil)
	all := []*node{open, closed, obs}
	open.mustDial("room0", "t")
	open.mustDial("room1", "t")
	closed.mustDial("room0", "t") // t is full
	closed.mustDial("room1", "u")
	f.waitExact(time.Now(), settleDeadline, "before the latency", all, all)
	// Nothing is lost while Redis is slow; two connections are added.
	w := f.watch(obs, bounds(f.expect(obs, all...), plus(f.expect(obs, all...), 2)))

	p.SetLatency(latency)
	timed := func(what string, fn func()) {
		t.Helper()
		start := time.Now()
		fn()
		d := time.Since(start)
		t.Logf("%s: %v", what, d.Round(time.Millisecond))
		if d > redisTimeout+slowSlack {
			t.Fatalf("%s took %v; RedisTimeout is %v and a Redis round trip at least %v", what, d, redisTimeout, 2*latency)
		}
	}
	timed("fail-open handshake over the tenant limit", func() { open.mustDial("room0", "t") })
	timed("fail-closed handshake with a tenant limit", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := closed.dial(ctx, "room1", "u")
		if err == nil {
			c.close()
			t.Fatal("fail-closed handshake admitted while Redis is too slow to check the limit")
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("fail-closed handshake: %v (%s), want 503 with Retry-After", err, status(resp))
		}
	})
	timed("fail-closed handshake without a limit", func() { closed.mustDial("room1", "") })
	timed("presence read", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := f.presence(ctx, open)
		var es *errStatus
		if !errors.As(err, &es) || es.code != http.StatusServiceUnavailable {
			t.Fatalf("presence with Redis slow: %v, want 503", err)
		}
	})
	for _, n := range all {
		for _, c := range n.list() {
			if err := c.alive(); err != nil {
				t.Fatalf("a client connection of %s broke with Redis slow: %v", n.name, err)
			}
		}
	}

	p.SetLatency(0)
	fast := time.Now()
	f.waitExact(fast, healDeadline, "after the latency is removed", all, all)
	f.stayExact(2*heartbeat, "after the latency is removed", all, all)
	w.stop()
	for _, n := range []*node{open, closed} {
		if metric(t, n.tr, "headcount_redis_timeouts_total") == 0 {
			t.Errorf("%s recorded no Redis timeout", n.name)
		}
	}
}
