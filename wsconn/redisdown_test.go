package wsconn

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/redistest"
)

// handshakeSlack is what a handshake may take beyond RedisTimeout on a busy
// machine under -race: the handshake itself, not Redis.
const handshakeSlack = 500 * time.Millisecond

// TestRedisDown kills the test's redis-server mid-run and restarts it: open
// connections keep echoing, fail-open admits, fail-closed refuses limited
// handshakes with 503, no handshake waits longer than RedisTimeout, counts
// are exact within one heartbeat + 1s after Redis returns (with its data
// lost), and no goroutine is left behind. Not parallel: goleak.
func TestRedisDown(t *testing.T) {
	srv := redistest.NewServer(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	if err := rc.Ping(ctxT(t)).Err(); err != nil {
		t.Fatal(err)
	}
	ignore := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, ignore,
		goleak.IgnoreAnyFunction("github.com/headcount-go/headcount/internal/redistest.(*process).wait"),
		// go-redis' own probe of a server its pool failed to dial: it
		// ends at its next try (a second apart) now that Redis answers,
		// which a busy machine may not reach before this check.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))

	const redisTimeout = 300 * time.Millisecond
	ns := redistest.Prefix(t)
	mk := func(id string, failClosed bool) (*Tracker, string, func()) {
		o := testOptions(ns, id)
		o.RedisTimeout = redisTimeout
		o.Limits.PerTenant = 100
		o.FailClosed = failClosed
		tr, err := New(rc, o)
		if err != nil {
			t.Fatal(err)
		}
		hs, url := serve(t, echo(tr, nil))
		return tr, url, func() { hs.Close(); _ = tr.Close(context.Background()) }
	}
	open, openURL, stopOpen := mk("open", false)
	closed, closedURL, stopClosed := mk("closed", true)

	var clients []*client
	dialOK := func(url string) *client {
		t.Helper()
		start := time.Now()
		c, resp, err := dial(ctxT(t), url)
		if err != nil {
			t.Fatalf("dial %s: %v, %v", url, err, resp)
		}
		if d := time.Since(start); d > redisTimeout+handshakeSlack {
			t.Fatalf("handshake took %v, RedisTimeout is %v", d, redisTimeout)
		}
		c.RoundTrip(t)
		clients = append(clients, c)
		return c
	}
	for range 3 {
		dialOK(openURL + "?tenant=t")
	}
	dialOK(closedURL + "?tenant=t")
	dialOK(closedURL + "?tenant=t")
	totalIs(t, open, Count{Total: 5, Local: 3})

	srv.Kill()
	for _, c := range clients {
		c.RoundTrip(t) // open connections are not dropped
	}
	dialOK(openURL + "?tenant=t") // fail-open: admitted, counted locally
	start := time.Now()
	_, resp, err := dial(ctxT(t), closedURL+"?tenant=t")
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("fail-closed handshake while Redis is down: %v, %+v; want 503 with Retry-After", err, resp)
	}
	if d := time.Since(start); d > redisTimeout+handshakeSlack {
		t.Fatalf("refusal took %v, RedisTimeout is %v", d, redisTimeout)
	}
	dialOK(closedURL) // no limit applies: counting fails open
	_ = clients[0].WS.Close(websocket.StatusNormalClosure, "")
	clients = clients[1:]
	start = time.Now()
	if _, err := open.Total(ctxT(t)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Total while Redis is down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > redisTimeout+handshakeSlack {
		t.Fatalf("read took %v, RedisTimeout is %v", d, redisTimeout)
	}

	srv.Restart(t)
	// open: 3 + 1 - 1 = 3 with tenant t; closed: 2 with tenant t + 1.
	took := eventually(t, testHeartbeat+time.Second, "exact counts after Redis returns", func() (bool, string) {
		var got [4]Count
		var err error
		for i, read := range []func(context.Context) (Count, error){open.Total, closed.Total,
			func(ctx context.Context) (Count, error) { return open.TenantCount(ctx, "t") },
			func(ctx context.Context) (Count, error) { return closed.TenantCount(ctx, "t") }} {
			if got[i], err = read(ctxT(t)); err != nil {
				return false, err.Error()
			}
		}
		want := [4]Count{{6, 3}, {6, 3}, {5, 3}, {5, 2}}
		return got == want, fmtCounts(got[:], want[:])
	})
	t.Logf("counts exact %v after Redis returned (heartbeat %v)", took, testHeartbeat)
	for _, c := range clients {
		c.RoundTrip(t)
		_ = c.WS.CloseNow()
	}
	totalIs(t, open, Count{})
	stopOpen()
	stopClosed()
}

// TestRedisStalled: a Redis that hangs (a partition: nothing answers, no
// error) holds no handshake longer than RedisTimeout, although go-redis'
// own read timeout is longer; a limit check that completes after its
// handshake gave up is undone, so counts end exact.
func TestRedisStalled(t *testing.T) {
	t.Parallel()
	p, err := faultproxy.New(redistest.StandaloneServer(t).Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	rc := redis.NewClient(&redis.Options{Addr: p.Addr()})
	t.Cleanup(func() { _ = rc.Close() })
	const redisTimeout = 200 * time.Millisecond
	ns := redistest.Prefix(t)
	mk := func(id string, failClosed bool) (*Tracker, string) {
		o := testOptions(ns, id)
		o.RedisTimeout = redisTimeout
		o.Limits.PerTenant = 2
		o.FailClosed = failClosed
		tr := newTracker(t, rc, o)
		_, url := serve(t, echo(tr, nil))
		return tr, url
	}
	open, openURL := mk("open", false)
	closed, closedURL := mk("closed", true)
	// A fail-open Tracker behind Middleware: its limit check comes before
	// the handler, its count at the upgrade, and the two share the
	// handshake's one RedisTimeout. Longer than handshakeSlack, so that
	// two waits of it would show.
	const mwTimeout = 3 * handshakeSlack
	o := testOptions(ns, "middleware")
	o.RedisTimeout = mwTimeout
	o.Limits.PerTenant = 2
	mw := newTracker(t, rc, o)
	_, mwURL := serve(t, mw.Middleware(selfUpgrading()))
	mustDial(t, openURL+"?tenant=t")
	mustDial(t, closedURL+"?tenant=t")

	p.Stall(true)
	start := time.Now()
	c, resp, err := dial(ctxT(t), openURL+"?tenant=t")
	if err != nil {
		t.Fatalf("fail-open handshake while Redis hangs: %v, %v", err, resp)
	}
	t.Cleanup(func() { _ = c.WS.CloseNow() })
	if d := time.Since(start); d > redisTimeout+handshakeSlack {
		t.Fatalf("handshake took %v, RedisTimeout is %v", d, redisTimeout)
	}
	start = time.Now()
	mc, resp, err := dial(ctxT(t), mwURL+"?tenant=t3")
	if err != nil {
		t.Fatalf("fail-open Middleware handshake while Redis hangs: %v, %v", err, resp)
	}
	t.Cleanup(func() { _ = mc.WS.CloseNow() })
	if d := time.Since(start); d > mwTimeout+handshakeSlack {
		t.Fatalf("Middleware handshake took %v, RedisTimeout is %v", d, mwTimeout)
	}
	start = time.Now()
	_, resp, err = dial(ctxT(t), closedURL+"?tenant=t2")
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("fail-closed handshake while Redis hangs: %v, %v; want 503", err, resp)
	}
	if d := time.Since(start); d > redisTimeout+handshakeSlack {
		t.Fatalf("refusal took %v, RedisTimeout is %v", d, redisTimeout)
	}
	p.Stall(false)
	// open holds 2 (one over the limit: fail-open), closed 1; the refused
	// t2 handshake's late limit check must have been undone.
	countIs(t, settleDeadline, "tenant t", Count{Total: 3, Local: 2}, func(ctx context.Context) (Count, error) { return open.TenantCount(ctx, "t") })
	countIs(t, settleDeadline, "tenant t2", Count{}, func(ctx context.Context) (Count, error) { return closed.TenantCount(ctx, "t2") })
	countIs(t, settleDeadline, "tenant t3", Count{Total: 1, Local: 1}, func(ctx context.Context) (Count, error) { return mw.TenantCount(ctx, "t3") })
	stable(t, 10*testFlush, Count{}, func(ctx context.Context) (Count, error) { return closed.TenantCount(ctx, "t2") })
	totalIs(t, closed, Count{Total: 4, Local: 1})
	if n := counterValue(open.met.timeouts) + counterValue(closed.met.timeouts); n == 0 {
		t.Fatal("no Redis timeout recorded")
	}
}
