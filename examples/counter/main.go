// Command counter is the quick start of the counter package: it counts
// page views across every process that shares its Redis. POST
// /hit/{page} adds a view, GET /views/{page} reads them, cluster-wide.
//
//	go run ./examples/counter -redis localhost:6379 -addr :8080
//	curl -X POST localhost:8080/hit/home   # {"page":"home","views":1}
//	curl localhost:8080/views/home
//
// Its main is that of the WebSocket quick starts (examples/nethttp).
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/counter"
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

// quickstart:start

// run serves until ctx is done (SIGINT, SIGTERM), then shuts down.
func run(ctx context.Context, redisAddr, addr string) error {
	ln, err := net.Listen("tcp", addr) // a port in use fails here, at once
	if err != nil {
		return err
	}
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	// A view stays counted when its process exits: a shared counter.
	// (What a process holds, such as jobs running, takes a per-instance
	// one, which a crash cannot leave behind.)
	views, err := counter.NewShared(rc, counter.SharedOptions{Prefix: "views"})
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: routes(views)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Printf("listening on %s", ln.Addr())
	select {
	case err = <-served: // the listener failed
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(err, srv.Shutdown(sctx)) // waits for requests under way
	return errors.Join(err, views.Close(sctx))
}

// routes adds a view of a page at POST /hit/{page} and reads a page's
// views at GET /views/{page}, both answering {"page":"…","views":n}.
func routes(views *counter.Shared) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hit/{page}", func(w http.ResponseWriter, r *http.Request) {
		n, err := views.Inc(r.Context(), r.PathValue("page"), 1)
		reply(w, r.PathValue("page"), n, err)
	})
	mux.HandleFunc("GET /views/{page}", func(w http.ResponseWriter, r *http.Request) {
		n, err := views.Get(r.Context(), r.PathValue("page"))
		reply(w, r.PathValue("page"), n, err)
	})
	return mux
}

// reply writes a page's views as JSON, or the error: 400 for a page name
// the counter refuses, 503 when Redis fails.
func reply(w http.ResponseWriter, page string, views int64, err error) {
	switch {
	case errors.Is(err, counter.ErrInvalidKey):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"page": page, "views": views})
	}
}

// quickstart:end
