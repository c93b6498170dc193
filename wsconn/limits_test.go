package wsconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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
	countIs(t, settleDeadline, "tenant after a room refusal", Count{Total: 1, Local: 1},
		func(ctx context.Context) (Count, error) { return tr.TenantCount(ctx, "t") })
	countIs(t, settleDeadline, "user u2", Count{}, func(ctx context.Context) (Count, error) { return tr.UserCount(ctx, "u2") })
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
// close frame with the reason instead of a failed handshake, through
// Accept and through Middleware; Middleware, which does not know its
// handler's accept options, takes the first subprotocol offered (without
// which a browser fails the handshake first).
func TestRejectWithClose(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		handler     func(*Tracker) http.Handler
		subprotocol string
	}{
		{"Accept", func(tr *Tracker) http.Handler { return echo(tr, nil) }, ""},
		{"Middleware", func(tr *Tracker) http.Handler { return tr.Middleware(selfUpgrading()) }, "chat.v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := testOptions(redistest.Prefix(t), "a")
			o.Limits.PerTenant = 1
			o.RejectWithClose = true
			tr := newTracker(t, redistest.Standalone(t), o)
			_, url := serve(t, tc.handler(tr))
			mustDial(t, url+"?tenant=t")
			ws, _, err := websocket.Dial(ctxT(t), url+"?tenant=t", &websocket.DialOptions{Subprotocols: []string{"chat.v2", "chat"}})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer ws.CloseNow()
			if ws.Subprotocol() != tc.subprotocol {
				t.Errorf("subprotocol %q, want %q", ws.Subprotocol(), tc.subprotocol)
			}
			_, _, err = ws.Read(ctxT(t))
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusTryAgainLater || ce.Reason != "tenant limit reached" {
				t.Fatalf("read: %v; want close 1013 %q", err, "tenant limit reached")
			}
			countIs(t, settleDeadline, "tenant", Count{Total: 1, Local: 1}, func(ctx context.Context) (Count, error) { return tr.TenantCount(ctx, "t") })
			totalIs(t, tr, Count{Total: 1, Local: 1})
		})
	}
}

// TestTenantCapFunction: a tenant whose cap function answers 3 gets a 429
// on its 4th connection, with a JSON body naming the cap, 3 and the usage;
// once the function answers 5, two more connections are admitted without a
// restart and the 6th is refused. The cap in force is in the metrics.
func TestTenantCapFunction(t *testing.T) {
	t.Parallel()
	var plan atomic.Int64
	plan.Store(3)
	o := testOptions(redistest.Prefix(t), "a")
	o.MetricsTenants = true
	o.Limits.TenantCap = func(tenant string) int64 {
		if tenant == "acme" {
			return plan.Load()
		}
		return 0 // no cap for other tenants
	}
	tr := newTracker(t, redistest.Standalone(t), o)
	_, url := serve(t, echo(tr, nil))

	refused := func(limit, usage int64) {
		t.Helper()
		_, resp, err := dial(ctxT(t), url+"?tenant=acme")
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("connection over a cap of %d: %v, %+v; want 429", limit, err, resp)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("429 body: %v", err)
		}
		want := map[string]any{"error": "limit", "cap": "tenant", "name": "acme",
			"limit": float64(limit), "usage": float64(usage)}
		for k, v := range want {
			if body[k] != v {
				t.Errorf("429 body %v: %s = %v, want %v", body, k, body[k], v)
			}
		}
		if msg, _ := body["message"].(string); !strings.Contains(msg, fmt.Sprintf("tenant limit of %d", limit)) {
			t.Errorf("429 message %q", msg)
		}
	}
	capMetric := func(want float64) {
		t.Helper()
		if got := series(families(t, tr), "headcount_tenant_connection_limit")["tenant=acme"]; got != want {
			t.Errorf("headcount_tenant_connection_limit{tenant=acme} = %v, want %v", got, want)
		}
	}

	for range 3 {
		mustDial(t, url+"?tenant=acme")
	}
	refused(3, 3)
	capMetric(3)
	// The same refusal through Admit: a *LimitError with the usage.
	_, err := tr.Admit(ctxT(t), httptest.NewRequest(http.MethodGet, "/?tenant=acme", nil))
	var le *LimitError
	if !errors.As(err, &le) || *le != (LimitError{Kind: LimitTenant, Name: "acme", Limit: 3, Usage: 3}) {
		t.Fatalf("Admit over the cap: %v; want a LimitError with limit 3 and usage 3", err)
	}
	// Another tenant has no cap.
	for range 4 {
		mustDial(t, url+"?tenant=other")
	}

	plan.Store(5) // the plan changes; no restart
	mustDial(t, url+"?tenant=acme")
	mustDial(t, url+"?tenant=acme")
	refused(5, 5)
	capMetric(5)
	countIs(t, settleDeadline, "acme", Count{Total: 5, Local: 5},
		func(ctx context.Context) (Count, error) { return tr.TenantCount(ctx, "acme") })

	// Lowered below what is open: open connections stay, new ones are
	// refused with the usage above the cap.
	plan.Store(2)
	refused(2, 5)
	countIs(t, settleDeadline, "acme after lowering the cap", Count{Total: 5, Local: 5},
		func(ctx context.Context) (Count, error) { return tr.TenantCount(ctx, "acme") })
}

// TestUserAndRoomCapFunctions: UserCap and RoomCap work like TenantCap, at
// the handshake and on Join; UserCap turns per-user counting on.
func TestUserAndRoomCapFunctions(t *testing.T) {
	t.Parallel()
	o := testOptions(redistest.Prefix(t), "a")
	o.Limits.UserCap = func(user string) int64 { return map[string]int64{"vip": 2}[user] }
	o.Limits.RoomCap = func(room string) int64 { return map[string]int64{"small": 1}[room] }
	tr := newTracker(t, redistest.Standalone(t), o)
	conns := make(chan *Conn, 10)
	_, url := serve(t, echo(tr, func(c *Conn) { conns <- c }))

	mustDial(t, url+"?user=vip")
	mustDial(t, url+"?user=vip&room=small")
	_, err := tr.Admit(ctxT(t), httptest.NewRequest(http.MethodGet, "/?user=vip", nil))
	var le *LimitError
	if !errors.As(err, &le) || *le != (LimitError{Kind: LimitUser, Name: "vip", Limit: 2, Usage: 2}) {
		t.Fatalf("third connection of vip: %v", err)
	}
	countIs(t, settleDeadline, "UserCount(vip)", Count{Total: 2, Local: 2},
		func(ctx context.Context) (Count, error) { return tr.UserCount(ctx, "vip") })
	for range 3 { // no cap for other users and rooms
		mustDial(t, url+"?user=u&room=big")
	}
	<-conns
	<-conns
	c := <-conns // a connection of u in big
	err = c.Join(ctxT(t), "small")
	if !errors.As(err, &le) || *le != (LimitError{Kind: LimitRoom, Name: "small", Limit: 1, Usage: 1}) {
		t.Fatalf("Join of a full room: %v", err)
	}
	if err := c.Join(ctxT(t), "other"); err != nil {
		t.Fatalf("Join of a room without a cap: %v", err)
	}
	if got := fmt.Sprint(c.Rooms()); got != "[big other]" {
		t.Fatalf("Rooms = %s", got)
	}
}

// TestCapOptionsRefused: a fixed cap and a cap function of the same kind
// are refused together.
func TestCapOptionsRefused(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	f := func(string) int64 { return 1 }
	for _, l := range []Limits{{PerTenant: 1, TenantCap: f}, {PerUser: 1, UserCap: f}, {PerRoom: 1, RoomCap: f}} {
		if tr, err := New(c, Options{Namespace: redistest.Prefix(t), Limits: l}); !errors.Is(err, ErrInvalidOptions) {
			if err == nil {
				_ = tr.Close(ctxT(t))
			}
			t.Errorf("Limits with a fixed cap and a function of one kind: %v, want ErrInvalidOptions", err)
		}
	}
}
