package wsnethttp_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	wsnethttp "github.com/headcount-go/headcount/adapters/nethttp"
	"github.com/headcount-go/headcount/wsconn"
)

func ExampleHandler() {
	// An in-memory Redis for the example; use a real one in production.
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rc.Close()

	tracker, err := wsconn.New(rc, wsconn.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer tracker.Shutdown(context.Background())

	mux := http.NewServeMux()
	// The room is the {room} wildcard. Returning closes the connection.
	mux.Handle("GET /ws/{room}", wsnethttp.Handler(tracker, func(c *wsconn.Conn, r *http.Request) {
		for {
			typ, msg, err := c.WS().Read(r.Context())
			if err != nil {
				return
			}
			if err := c.WS().Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	}, wsnethttp.Options{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/lobby", nil)
	if err != nil {
		log.Fatal(err)
	}
	// Once the first message comes back, the connection is counted.
	_ = ws.Write(ctx, websocket.MessageText, []byte("hi"))
	_, _, _ = ws.Read(ctx)
	lobby, _ := tracker.Count(ctx, "lobby")
	fmt.Println("in lobby:", lobby.Total)

	_ = ws.Close(websocket.StatusNormalClosure, "bye")
	for lobby.Total != 0 {
		time.Sleep(time.Millisecond)
		lobby, _ = tracker.Count(ctx, "lobby")
	}
	fmt.Println("after close:", lobby.Total)
	// Output:
	// in lobby: 1
	// after close: 0
}

func ExampleMiddleware() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rc.Close()
	tracker, err := wsconn.New(rc, wsconn.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer tracker.Shutdown(context.Background())

	// A handler that upgrades by itself (any WebSocket library) is counted
	// in the {room} wildcard's room while it runs; its Lease joins more.
	counted := wsnethttp.Middleware(tracker, wsnethttp.Options{})
	mux := http.NewServeMux()
	mux.Handle("GET /ws/{room}", counted(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		if lease, ok := wsconn.LeaseFromContext(r.Context()); ok {
			_ = lease.Join(r.Context(), "everyone")
		}
		_ = ws.Write(r.Context(), websocket.MessageText, []byte("welcome"))
		_, _, _ = ws.Read(r.Context()) // until the client goes
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/lobby", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, _, _ = ws.Read(ctx) // "welcome": the handler has joined
	counts, _ := tracker.Counts(ctx, "lobby", "everyone")
	fmt.Println("lobby:", counts["lobby"].Total, "everyone:", counts["everyone"].Total)

	_ = ws.Close(websocket.StatusNormalClosure, "bye")
	for total, _ := tracker.Total(ctx); total.Total != 0; total, _ = tracker.Total(ctx) {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("closed")
	// Output:
	// lobby: 1 everyone: 1
	// closed
}
