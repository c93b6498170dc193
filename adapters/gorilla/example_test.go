package wsgorilla_test

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
	"github.com/gorilla/mux"
	"github.com/redis/go-redis/v9"

	wsgorilla "github.com/headcount-go/headcount/adapters/gorilla"
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

	r := mux.NewRouter()
	// The room is the {room} variable. Returning closes the connection.
	r.Handle("/ws/{room}", wsgorilla.Handler(tracker, func(c *wsconn.Conn, r *http.Request) {
		for {
			typ, msg, err := c.WS().Read(r.Context())
			if err != nil {
				return
			}
			if err := c.WS().Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	}, wsgorilla.Options{})).Methods(http.MethodGet)
	srv := httptest.NewServer(r)
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

// A handler that upgrades by itself, with any WebSocket library
// (gorilla/websocket too), is counted in the {room} variable's room while
// it runs.
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

	r := mux.NewRouter()
	ws := r.PathPrefix("/ws").Subrouter()
	ws.Use(wsgorilla.Middleware(tracker, wsgorilla.Options{}))
	ws.HandleFunc("/{room}", func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // answered
		}
		defer conn.CloseNow()
		if lease, ok := wsconn.LeaseFromContext(r.Context()); ok {
			_ = lease.Join(r.Context(), "everyone") // one more room
		}
		_ = conn.Write(r.Context(), websocket.MessageText, []byte("welcome"))
		_, _, _ = conn.Read(r.Context()) // until the client goes
	}).Methods(http.MethodGet)
	srv := httptest.NewServer(r)
	defer srv.Close()

	ctx := context.Background()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/lobby", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, _, _ = client.Read(ctx) // "welcome": the handler has joined
	counts, _ := tracker.Counts(ctx, "lobby", "everyone")
	fmt.Println("lobby:", counts["lobby"].Total, "everyone:", counts["everyone"].Total)

	_ = client.Close(websocket.StatusNormalClosure, "bye")
	for total, _ := tracker.Total(ctx); total.Total != 0; total, _ = tracker.Total(ctx) {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("closed")
	// Output:
	// lobby: 1 everyone: 1
	// closed
}
