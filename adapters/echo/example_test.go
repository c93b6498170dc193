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
	var tracker *wsconn.Tracker // from wsconn.New
	e := echo.New()
	ws := e.Group("/ws", wsecho.Middleware(tracker, wsecho.Options{}))
	ws.GET("/:room", func(c echo.Context) error {
		conn, err := websocket.Accept(c.Response(), c.Request(), nil)
		if err != nil {
			return nil // answered
		}
		defer conn.CloseNow()
		if lease, ok := wsconn.LeaseFromContext(c.Request().Context()); ok {
			_ = lease.Join(c.Request().Context(), "everyone") // one more room
		}
		// ... serve conn until the client goes ...
		return nil
	})
}
