package wsconn

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// TestCountUpDown: a connection accepted through a plain net/http handler
// is counted (globally, in its room and tenant) and uncounted exactly once
// whichever way it ends.
func TestCountUpDown(t *testing.T) {
	type ending struct {
		name    string
		handler func(tr *Tracker) http.Handler
		end     func(t *testing.T, c *client)
		// code is the close status the client sees, -1 for none.
		code websocket.StatusCode
	}
	endings := []ending{
		{"server close", func(tr *Tracker) http.Handler { return echo(tr, nil) },
			func(t *testing.T, c *client) { _ = c.WS.Write(ctxT(t), websocket.MessageText, []byte("close")) },
			websocket.StatusNormalClosure},
		{"client close", func(tr *Tracker) http.Handler { return echo(tr, nil) },
			func(t *testing.T, c *client) { _ = c.WS.Close(websocket.StatusNormalClosure, "bye") },
			-2},
		{"abrupt TCP close", func(tr *Tracker) http.Handler { return echo(tr, nil) },
			func(t *testing.T, c *client) { c.DropTCP(true) }, -2},
		{"handler panic", func(tr *Tracker) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := tr.Accept(w, r, nil)
				if err != nil {
					return
				}
				_, _, _ = c.WS().Read(r.Context()) // "ping"
				_ = c.WS().Write(r.Context(), websocket.MessageText, []byte("ping"))
				_, _, _ = c.WS().Read(r.Context()) // "panic"
				panic(http.ErrAbortHandler)
			})
		}, func(t *testing.T, c *client) { _ = c.WS.Write(ctxT(t), websocket.MessageText, []byte("panic")) },
			websocket.StatusInternalError},
		{"handler returns without closing", func(tr *Tracker) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := tr.Accept(w, r, nil)
				if err != nil {
					return
				}
				_, _, _ = c.WS().Read(r.Context())
				_ = c.WS().Write(r.Context(), websocket.MessageText, []byte("ping"))
				_, _, _ = c.WS().Read(r.Context())
			})
		}, func(t *testing.T, c *client) { _ = c.WS.Write(ctxT(t), websocket.MessageText, []byte("return")) },
			websocket.StatusInternalError},
		{"websocket.Conn closed directly", func(tr *Tracker) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := tr.Accept(w, r, nil)
				if err != nil {
					return
				}
				c.Detach() // only the direct close may uncount it
				echoLoop(context.Background(), c.WS())
			})
		}, func(t *testing.T, c *client) { _ = c.WS.Write(ctxT(t), websocket.MessageText, []byte("close")) },
			websocket.StatusNormalClosure},
		{"hub: detached, peer drops TCP", func(tr *Tracker) http.Handler { return hub(tr) },
			func(t *testing.T, c *client) { c.DropTCP(true) }, -2},
		{"hub: detached, peer closes", func(tr *Tracker) http.Handler { return hub(tr) },
			func(t *testing.T, c *client) { _ = c.WS.Close(websocket.StatusNormalClosure, "") }, -2},
	}
	redistest.Each(t, func(t *testing.T, rc redis.UniversalClient) {
		for _, e := range endings {
			t.Run(e.name, func(t *testing.T) {
				t.Parallel()
				tr := newTracker(t, rc, testOptions(redistest.Prefix(t), "a"))
				_, url := serve(t, e.handler(tr))
				watchNonNegative(t, tr, "lobby", 1)
				c := mustDial(t, url+"?room=lobby&tenant=acme")
				one := Count{Total: 1, Local: 1}
				totalIs(t, tr, one)
				roomIs(t, tr, "lobby", one)
				countIs(t, settleDeadline, "tenant", one, func(ctx context.Context) (Count, error) { return tr.TenantCount(ctx, "acme") })
				if got := tr.LocalRooms(); len(got) != 1 || got[0] != "lobby" {
					t.Fatalf("LocalRooms = %q", got)
				}

				e.end(t, c)
				if e.code != -2 {
					_, _, err := c.WS.Read(ctxT(t))
					if got := websocket.CloseStatus(err); got != e.code {
						t.Fatalf("client sees close status %d (%v), want %d", got, err, e.code)
					}
				}
				totalIs(t, tr, Count{})
				roomIs(t, tr, "lobby", Count{})
				countIs(t, settleDeadline, "tenant", Count{}, func(ctx context.Context) (Count, error) { return tr.TenantCount(ctx, "acme") })
				balanced(t, tr, 1)
				stable(t, 5*testFlush, Count{}, tr.Total)
				if got := tr.LocalRooms(); len(got) != 0 {
					t.Fatalf("LocalRooms after close = %q", got)
				}
			})
		}
	})
}

// hub accepts, hands the connection to a goroutine that echoes until a read
// fails and then just returns (no Close: only drop detection can uncount
// it), and returns at once.
func hub(tr *Tracker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := tr.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.Detach()
		go func() {
			ctx := context.Background()
			for {
				typ, b, err := c.WS().Read(ctx)
				if err != nil {
					return
				}
				if err := c.WS().Write(ctx, typ, b); err != nil {
					return
				}
			}
		}()
	})
}

// TestHubStaysCounted: a detached connection outlives its handler and stays
// counted until it closes.
func TestHubStaysCounted(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), testOptions(redistest.Prefix(t), "a"))
	_, url := serve(t, hub(tr))
	c := mustDial(t, url+"?room=r")
	one := Count{Total: 1, Local: 1}
	totalIs(t, tr, one)
	stable(t, 10*testFlush, one, tr.Total) // the handler has long returned
	c.RoundTrip(t)
	_ = c.WS.Close(websocket.StatusNormalClosure, "")
	totalIs(t, tr, Count{})
	balanced(t, tr, 1)
}

// TestNotAHandshake: plain requests to the WebSocket endpoint are answered
// by coder/websocket and counted nowhere.
func TestNotAHandshake(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), testOptions(redistest.Prefix(t), "a"))
	srv, _ := serve(t, echo(tr, nil))
	resp, err := http.Get(srv.URL + "?room=r")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET: %d, want 426", resp.StatusCode)
	}
	totalIs(t, tr, Count{})
	if n := counterValue(tr.met.opened); n != 0 {
		t.Fatalf("opened = %d", n)
	}
}

// TestAcceptFailsAfterCount: a handshake coder/websocket refuses after the
// count (here: a cross-origin request) is uncounted.
func TestAcceptFailsAfterCount(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), testOptions(redistest.Prefix(t), "a"))
	_, url := serve(t, echo(tr, nil))
	h := http.Header{"Origin": {"https://evil.example"}}
	_, resp, err := websocket.Dial(ctxT(t), url, &websocket.DialOptions{HTTPHeader: h})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin dial: %v, %v", err, resp)
	}
	totalIs(t, tr, Count{})
	if o, c := counterValue(tr.met.opened), counterValue(tr.met.closed); o != c {
		t.Fatalf("opened %d, closed %d", o, c)
	}
	if errors.Is(err, ErrLimit) {
		t.Fatal("unexpected")
	}
}
