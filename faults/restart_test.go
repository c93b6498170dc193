package faults

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// TestRedisRestart crashes redis-server (SIGKILL: every count is lost)
// under three nodes. While it is down, open connections keep working,
// presence reads fail fast with 503, and connections open (fail-open,
// within RedisTimeout) and close. Once Redis answers again, empty, every
// node reports exact counts (global, rooms, tenants) within heartbeat +
// 1s, they stay exact, and nothing is ever counted twice.
//
// Not parallel: its handshake timings must not suffer the crash tests' load.
func TestRedisRestart(t *testing.T) {
	srv := redistest.NewServer(t)
	f := newFleet(t, names("room", 10), names("tenant", 3))
	const redisTimeout = 300 * time.Millisecond
	mk := func(name string) *node {
		return f.startNode(name, redis.NewClient(&redis.Options{Addr: srv.Addr()}),
			func(o *wsconn.Options) { o.RedisTimeout = redisTimeout })
	}
	a, b, c := mk("a"), mk("b"), mk("c")
	all := []*node{a, b, c}
	for i, n := range all {
		n.open(40, i, 8)
	}
	f.waitExact(time.Now(), settleDeadline, "before the crash", all, all)
	// b opens three connections while Redis is down.
	w := f.watch(c, bounds(view{}, plus(f.expect(c, all...), 3)))

	srv.Kill()
	for _, n := range all {
		for _, cn := range n.list() {
			if err := cn.alive(); err != nil {
				t.Fatalf("a client connection of %s broke with Redis: %v", n.name, err)
			}
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := f.presence(ctx, a)
	cancel()
	var es *errStatus
	if !errors.As(err, &es) || es.code != http.StatusServiceUnavailable {
		t.Fatalf("presence with Redis down: %v, want 503", err)
	}
	if d := ran(start); d > redisTimeout+handshakeSlack {
		t.Fatalf("presence read took %v of the machine running with Redis down, RedisTimeout is %v", d, redisTimeout)
	}
	for _, cn := range a.list()[:3] {
		cn.close()
	}
	for i := range 3 {
		start := time.Now()
		b.mustDial(f.rooms[i], f.tenants[i])
		if d := ran(start); d > redisTimeout+handshakeSlack {
			t.Fatalf("handshake took %v of the machine running with Redis down, RedisTimeout is %v", d, redisTimeout)
		}
	}

	srv.Restart(t)
	back := time.Now()
	f.waitExact(back, healDeadline, "after Redis restarted empty", all, all)
	f.stayExact(3*heartbeat, "after the restart", all, all)
	w.stop()

	for _, n := range all {
		for _, cn := range n.list() {
			cn.close()
		}
	}
	f.waitExact(time.Now(), settleDeadline, "every connection closed", all, all)
}

// TestScriptFlush empties Redis' script cache (SCRIPT FLUSH on every
// master) under three nodes, then at once opens and closes connections in
// parallel: every script call, alone or pipelined, must load its script
// again and succeed. No node logs a NOSCRIPT error; no Redis error and no
// timeout is recorded (but while the machine stood still or Redis was too
// slow for heartbeats, which holds any call past its bound); and counts
// are exact within heartbeat + 1s. Then the same with FLUSHALL too (data
// and scripts gone, Redis still up).
func TestScriptFlush(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		srv := redistest.NewServer(t)
		scriptFlush(t, []*redistest.Server{srv}, func() redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: srv.Addr()})
		})
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		_, masters := redistest.NewCluster(t)
		addrs := make([]string, len(masters))
		for i, m := range masters {
			addrs[i] = m.Addr()
		}
		scriptFlush(t, masters, func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		})
	})
}

func scriptFlush(t *testing.T, masters []*redistest.Server, newClient func() redis.UniversalClient) {
	f := newFleet(t, names("room", 12), names("tenant", 3))
	all := []*node{f.startNode("a", newClient(), nil), f.startNode("b", newClient(), nil), f.startNode("c", newClient(), nil)}
	for i, n := range all {
		n.open(30, i, 8)
	}
	f.waitExact(time.Now(), settleDeadline, "before the flush", all, all)
	troubles := func() (errs, timeouts float64) {
		for _, n := range all {
			errs += metric(t, n.tr, "headcount_redis_errors_total")
			timeouts += metric(t, n.tr, "headcount_redis_timeouts_total")
		}
		return errs, timeouts
	}
	errs0, timeouts0 := troubles()
	doubts0 := doubts(all)
	began := time.Now()

	for round, flushAll := range []bool{false, true} {
		what := "SCRIPT FLUSH"
		if flushAll {
			what = "FLUSHALL and SCRIPT FLUSH"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, m := range masters {
			c := m.Client(t)
			if flushAll {
				if err := c.FlushAll(ctx).Err(); err != nil {
					t.Fatalf("FLUSHALL on %s: %v", m.Addr(), err)
				}
			}
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatalf("SCRIPT FLUSH on %s: %v", m.Addr(), err)
			}
		}
		cancel()
		flushed := time.Now()
		// Closes and handshakes at once, on every node: strict counts,
		// group-committed, each needing the scripts again.
		var wg sync.WaitGroup
		for _, n := range all {
			for _, c := range n.list()[:4] {
				wg.Go(c.close)
			}
		}
		f.openOn(all, 6, round, 18)
		wg.Wait()
		f.waitExact(flushed, healDeadline, "after "+what, all, all)
		f.stayExact(2*heartbeat, "after "+what, all, all)
	}
	for _, n := range all {
		if strings.Contains(n.logs.String(), "NOSCRIPT") {
			t.Errorf("%s logged a script missing from Redis' cache:\n%s", n.name, n.logs)
		}
	}
	if errs, timeouts := troubles(); errs != errs0 || timeouts != timeouts0 {
		// A machine stall (see stall_test.go) holds a call past its bound
		// whatever the scripts: a heartbeat gives up after half a
		// threshold, a wait at RedisTimeout. So does Redis starved of CPU
		// (the masters share the machine's cores), which the nodes see as
		// a pause of their heartbeats. Only without either is an error
		// the script cache's doing.
		report := t.Errorf
		stood := stalls.within(began, time.Now())
		paused := doubts(all) - doubts0
		if stood > 0 || paused > 0 {
			report = t.Logf
		}
		report("after SCRIPT FLUSH: Redis errors %v -> %v, timeouts %v -> %v; want none unless the machine stood still (it did for %v) or Redis was too slow for heartbeats (%d pauses logged)",
			errs0, errs, timeouts0, timeouts, stood.Round(time.Millisecond), paused)
		for _, n := range all {
			t.Logf("%s logged:\n%s", n.name, n.logs)
		}
	}
}
