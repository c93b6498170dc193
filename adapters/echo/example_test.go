package wsecho_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	wsecho "github.com/headcount-go/headcount/adapters/echo"
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

	e := echo.New()
	// The room is the :room parameter. Returning closes the connection.
	e.GET("/ws/:room", wsecho.Handler(tracker, func(c echo.Context, conn *wsconn.Conn) error {
		ctx := c.Request().Context()
		for {
			typ, msg, err := conn.WS().Read(ctx)
			if err != nil {
				return nil // the client went away
			}
			if err := conn.WS().Write(ctx, typ, msg); err != nil {
				return nil
			}
		}
	}, wsecho.Options{}))
	srv := httptest.NewServer(e)
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

// A handler that upgrades by itself, with any WebSocket library, is
// counted in the :room parameter's room while it runs.
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

	e := echo.New()
	ws := e.Group("/ws", wsecho.Middleware(tracker, wsecho.Options{}))
	ws.GET("/:room", func(c echo.Context) error {
		ctx := c.Request().Context()
		conn, err := websocket.Accept(c.Response(), c.Request(), nil)
		if err != nil {
			return nil // answered
		}
		defer conn.CloseNow()
		if lease, ok := wsconn.LeaseFromContext(ctx); ok {
			_ = lease.Join(ctx, "everyone") // one more room
		}
		_ = conn.Write(ctx, websocket.MessageText, []byte("welcome"))
		_, _, _ = conn.Read(ctx) // until the client goes
		return nil
	})
	srv := httptest.NewServer(e)
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
