// Command gin is the gin quick start of the README, complete: a WebSocket
// echo server whose connections are counted per room in Redis, with their
// counts at /presence.
//
//	go run ./examples/gin -redis localhost:6379 -addr :8080
//
// It differs from examples/nethttp only in its routes. (GIN_MODE=release
// quiets gin's debug output.)
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	wsgin "github.com/headcount-go/headcount/adapters/gin"
	"github.com/headcount-go/headcount/wsconn"
)

func main() {
	redisAddr := flag.String("redis", cmp.Or(os.Getenv("REDIS_ADDR"), "localhost:6379"), "Redis `host:port`, or $REDIS_ADDR")
	addr := flag.String("addr", ":8080", "listen `address`")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *redisAddr, *addr); err != nil {
		log.Fatal(err)
	}
}

// run serves until ctx is done (SIGINT, SIGTERM), then shuts down.
func run(ctx context.Context, redisAddr, addr string) error {
	ln, err := net.Listen("tcp", addr) // a port in use fails here, at once
	if err != nil {
		return err
	}
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	tracker, err := wsconn.New(rc, wsconn.Options{ // see Configuration
		Tenant: func(r *http.Request) string { return r.Header.Get("X-Tenant") },
		Limits: wsconn.Limits{PerTenant: 1000},
	})
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: routes(tracker)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Printf("listening on %s", ln.Addr())
	select {
	case err = <-served: // the listener failed
	case <-ctx.Done():
	}
	// Shutdown stops the server and waits for plain requests, but leaves
	// hijacked connections alone: tracker.Shutdown then closes the
	// WebSockets (1001) and removes this process's counts from Redis.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(err, srv.Shutdown(sctx))
	return errors.Join(err, tracker.Shutdown(sctx))
}

// quickstart:start

// routes serves WebSockets at /ws/:room, echoing every message, counted
// in the room, and the counts at /presence?room=a&room=b.
func routes(tracker *wsconn.Tracker) http.Handler {
	r := gin.Default()
	r.GET("/ws/:room", wsgin.Handler(tracker,
		func(c *gin.Context, conn *wsconn.Conn) {
			ctx := c.Request.Context()
			for { // echo until the client goes; returning closes conn
				typ, msg, err := conn.WS().Read(ctx)
				if err != nil || conn.WS().Write(ctx, typ, msg) != nil {
					return
				}
			}
		}, wsgin.Options{}))
	r.GET("/presence", gin.WrapH(tracker.PresenceHandler()))
	return r
}

// quickstart:end
