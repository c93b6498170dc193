package wsconn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// TestLimitRace: three Trackers, a tenant cap of 10, 60 simultaneous
// handshakes: exactly 10 are accepted and 50 get 429 with Retry-After.
// Killing a node frees its share within threshold + heartbeat + 1s.
func TestLimitRace(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		t.Parallel()
		const limit, perNode = 10, 20
		ns := redistest.Prefix(t)
		nodes := startNodes(t, c, 3, func(i int) Options {
			o := testOptions(ns, fmt.Sprint("node", i))
			o.Limits.PerTenant = limit
			return o
		}, nil)
		start := make(chan struct{})
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			accepted = make([][]*client, len(nodes))
			refused  int
		)
		for i, n := range nodes {
			for range perNode {
				wg.Go(func() {
					<-start
					cl, resp, err := dial(ctxT(t), n.url+"?tenant=acme")
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						t.Cleanup(func() { _ = cl.WS.CloseNow() })
						accepted[i] = append(accepted[i], cl)
						return
					}
					if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
						t.Errorf("refused handshake: %v, %+v; want 429 with Retry-After: 1", err, resp)
					}
					refused++
				})
			}
		}
		close(start)
		wg.Wait()
		n := 0
		for _, a := range accepted {
			n += len(a)
		}
		if n != limit || refused != 3*perNode-limit {
			t.Fatalf("%d accepted, %d refused; want %d and %d", n, refused, limit, 3*perNode-limit)
		}
		for _, nd := range nodes {
			got, err := nd.tr.TenantCount(ctxT(t), "acme")
			if err != nil || got.Total != limit {
				t.Fatalf("TenantCount = %+v, %v; want total %d", got, err, limit)
			}
		}
		// Kill the node holding the most places; the others must see its
		// share freed, and admit that many again.
		victim := 0
		for i := range accepted {
			if len(accepted[i]) > len(accepted[victim]) {
				victim = i
			}
		}
		share := int64(len(accepted[victim]))
		nodes[victim].tr.kill()
		survivor := nodes[(victim+1)%len(nodes)]
		took := countIs(t, reapDeadline, "tenant count after the kill", Count{Total: limit - share, Local: int64(len(accepted[(victim+1)%len(nodes)]))},
			func(ctx context.Context) (Count, error) { return survivor.tr.TenantCount(ctx, "acme") })
		t.Logf("node %d killed holding %d places; freed after %v (promise %v)", victim, share, took, reapDeadline)
		for range share {
			mustDial(t, survivor.url+"?tenant=acme")
		}
		if _, resp, err := dial(ctxT(t), survivor.url+"?tenant=acme"); err == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("handshake over the limit after refilling: %v, %v", err, resp)
		}
	})
}

// TestLimitsEachKind: tenant, user and room limits, at the handshake and
// on Join, and a refusal gives back the places taken before it.
func TestLimitsEachKind(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	o := testOptions(redistest.Prefix(t), "a")
	o.Limits = Limits{PerTenant: 3, PerUser: 2, PerRoom: 1}
	tr := newTracker(t, c, o)
	var conns = make(chan *Conn, 10)
	_, url := serve(t, echo(tr, func(c *Conn) { conns <- c }))

	refusedWith := func(query string, kind LimitKind) {
		t.Helper()
		_, resp, err := dial(ctxT(t), url+query)
		if err == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s: %v, %v; want 429", query, err, resp)
		}
		if got := counterValue(tr.met.rejections.WithLabelValues("limit_" + string(kind))); got == 0 {
			t.Fatalf("%s: no %s rejection recorded", query, kind)
		}
	}
	mustDial(t, url+"?tenant=t&user=u&room=r1")
	refusedWith("?tenant=t&user=u2&room=r1", LimitRoom)
	// The room refusal gave the tenant and user places back.
	countIs(t, 5*time.Second, "tenant after a room refusal", Count{Total: 1, Local: 1},
		func(ctx context.Context) (Count, error) { return tr.TenantCount(ctx, "t") })
	countIs(t, 5*time.Second, "user u2", Count{}, func(ctx context.Context) (Count, error) { return tr.UserCount(ctx, "u2") })
	mustDial(t, url+"?tenant=t&user=u&room=r2")
	refusedWith("?tenant=t&user=u&room=r3", LimitUser)
	mustDial(t, url+"?tenant=t&user=u3")
	refusedWith("?tenant=t&user=u4", LimitTenant)

	// Join honours the room limit, with a typed error.
	<-conns
	c2 := <-conns
	err := c2.Join(ctxT(t), "r1")
	var le *LimitError
	if !errors.As(err, &le) || le.Kind != LimitRoom || le.Name != "r1" || le.Limit != 1 || !errors.Is(err, ErrLimit) {
		t.Fatalf("Join over the room limit: %v", err)
	}
	if err := c2.Join(ctxT(t), "r4"); err != nil {
		t.Fatal(err)
	}
	roomIs(t, tr, "r4", Count{Total: 1, Local: 1})
	if got := c2.Rooms(); fmt.Sprint(got) != "[r2 r4]" {
		t.Fatalf("Rooms = %q", got)
	}
}

// TestRejectWithClose: with RejectWithClose a refused browser sees a 1013
// close frame with the reason instead of a failed handshake.
func TestRejectWithClose(t *testing.T) {
	t.Parallel()
	o := testOptions(redistest.Prefix(t), "a")
	o.Limits.PerTenant = 1
	o.RejectWithClose = true
	tr := newTracker(t, redistest.Standalone(t), o)
	_, url := serve(t, echo(tr, nil))
	mustDial(t, url+"?tenant=t")
	cl, _, err := dial(ctxT(t), url+"?tenant=t")
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	_, _, err = cl.WS.Read(ctxT(t))
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusTryAgainLater || ce.Reason != "tenant limit reached" {
		t.Fatalf("read: %v; want close 1013 %q", err, "tenant limit reached")
	}
	countIs(t, 5*time.Second, "tenant", Count{Total: 1, Local: 1}, func(ctx context.Context) (Count, error) { return tr.TenantCount(ctx, "t") })
	totalIs(t, tr, Count{Total: 1, Local: 1})
}
