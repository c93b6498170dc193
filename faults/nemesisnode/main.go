// Command nemesisnode is the server that the fault suite's nemesis test
// (faults/nemesis_test.go) runs as real processes, so that a crash is a
// SIGKILL. It counts WebSocket connections with wsconn and lets its
// clients join and leave rooms:
//
//	GET /ws/{room}?tenant=T&user=U
//	                         Accept (the room and tenant counted, limits
//	                         taken); the server sends "hello" once Accept
//	                         has returned, then answers commands, each in a
//	                         goroutine of its own (so that two joins of one
//	                         connection run at once):
//	                           {"id":1,"op":"join","room":"r"}
//	                           {"id":2,"op":"leave","room":"r"}
//	                         with {"id":1,"rooms":[...]} (Join or Leave
//	                         returned nil; the connection's rooms after it)
//	                         or {"id":1,"err":"limit","kind":"room",
//	                         "name":"r","msg":"..."} (err is limit,
//	                         unavailable, closed or other)
//	GET /api/presence        wsconn's PresenceHandler
//	GET /api/events          wsconn's EventsHandler (presence events, SSE)
//	GET /metrics             the Tracker's Prometheus metrics
//
// Presence is on: a connection's user is its ?user= parameter ("" or none:
// anonymous), its metadata "meta-" and the user, and every room, tenant and
// user is visible to every request.
//
// It prints "listening on ADDR" once it serves, and on SIGTERM shuts down
// (http.Server.Shutdown, then Tracker.Shutdown) and exits 0. Redis traffic
// can go through fault proxies: -via maps each Redis address (seeds and the
// cluster's nodes as CLUSTER SLOTS names them) to the proxy to dial
// instead. It is a test fixture, not an example: see ./demo for that.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/wsconn"
)

// command is what a client sends on its WebSocket.
type command struct {
	ID   int64  `json:"id"`
	Op   string `json:"op"` // join, leave
	Room string `json:"room"`
}

// reply answers a command.
type reply struct {
	ID    int64    `json:"id"`
	Rooms []string `json:"rooms,omitempty"`
	Err   string   `json:"err,omitempty"` // limit, unavailable, closed, other
	Kind  string   `json:"kind,omitempty"`
	Name  string   `json:"name,omitempty"`
	Msg   string   `json:"msg,omitempty"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	redisAddrs := flag.String("redis", "", "Redis host:port, or the comma-separated seeds of a cluster with -cluster")
	cluster := flag.Bool("cluster", false, "Redis is a cluster")
	via := flag.String("via", "", "comma-separated redis=proxy address pairs: dial the proxy instead")
	o := wsconn.Options{}
	flag.StringVar(&o.Namespace, "namespace", "", "wsconn Namespace")
	flag.StringVar(&o.InstanceID, "instance", "", "wsconn InstanceID")
	flag.DurationVar(&o.DeadInstanceThreshold, "threshold", 0, "DeadInstanceThreshold")
	flag.DurationVar(&o.HeartbeatInterval, "heartbeat", 0, "HeartbeatInterval")
	flag.DurationVar(&o.FlushInterval, "flush", 0, "FlushInterval")
	flag.DurationVar(&o.RedisTimeout, "redis-timeout", 0, "RedisTimeout")
	flag.Int64Var(&o.Limits.PerRoom, "per-room", 0, "Limits.PerRoom")
	flag.Int64Var(&o.Limits.PerTenant, "per-tenant", 0, "Limits.PerTenant")
	flag.BoolVar(&o.FailClosed, "fail-closed", false, "FailClosed")
	flag.BoolVar(&o.Lax, "lax", false, "Lax (global and tenant counters)")
	laxRooms := flag.String("lax-rooms", "", "rooms with this prefix are lax (LaxRooms)")
	flag.Parse()

	if err := run(*addr, *redisAddrs, *cluster, *via, *laxRooms, o); err != nil {
		fmt.Fprintln(os.Stderr, "nemesisnode:", err)
		os.Exit(1)
	}
}

func run(addr, redisAddrs string, cluster bool, via, laxRooms string, o wsconn.Options) error {
	proxyOf := map[string]string{}
	for pair := range strings.SplitSeq(via, ",") {
		if pair == "" {
			continue
		}
		from, to, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("-via %q: want redis=proxy pairs", via)
		}
		proxyOf[from] = to
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if p, ok := proxyOf[addr]; ok {
			addr = p
		}
		return dialer.DialContext(ctx, network, addr)
	}
	var rc redis.UniversalClient
	if cluster {
		rc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(redisAddrs, ","), Dialer: dial})
	} else {
		rc = redis.NewClient(&redis.Options{Addr: redisAddrs, Dialer: dial})
	}
	defer rc.Close()
	if laxRooms != "" {
		o.LaxRooms = func(room string) bool { return strings.HasPrefix(room, laxRooms) }
	}
	o.Tenant = func(r *http.Request) string { return r.URL.Query().Get("tenant") }
	o.User = func(r *http.Request) string { return r.URL.Query().Get("user") }
	o.Presence = &wsconn.PresenceOptions{
		Metadata: func(r *http.Request) string {
			if u := r.URL.Query().Get("user"); u != "" {
				return "meta-" + u
			}
			return ""
		},
		Visible: func(*http.Request, string, string) bool { return true },
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tr, err := wsconn.New(rc, o)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(tr.Collector()); err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{room}", func(w http.ResponseWriter, r *http.Request) {
		c, err := tr.Accept(w, wsconn.WithRooms(r, r.PathValue("room")), nil)
		if err != nil {
			return // answered: 400, 429, 503
		}
		_ = c.Serve(func() error { return serve(r.Context(), c) })
	})
	mux.Handle("GET /api/presence", tr.PresenceHandler())
	mux.Handle("GET /api/events", tr.EventsHandler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("nemesisnode %s listening on %s\n", tr.InstanceID(), ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return tr.Shutdown(sctx)
}

// serve says hello (Accept has returned: the connection is counted) and
// answers commands until the connection ends.
func serve(ctx context.Context, c *wsconn.Conn) error {
	if err := c.WS().Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		return nil
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		_, msg, err := c.WS().Read(ctx)
		if err != nil {
			return nil
		}
		var cmd command
		if err := json.Unmarshal(msg, &cmd); err != nil {
			return fmt.Errorf("bad command %q: %v", msg, err)
		}
		wg.Go(func() {
			rep := run1(ctx, c, cmd)
			b, _ := json.Marshal(rep)
			_ = c.WS().Write(ctx, websocket.MessageText, b)
		})
	}
}

func run1(ctx context.Context, c *wsconn.Conn, cmd command) reply {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	switch cmd.Op {
	case "join":
		err = c.Join(ctx, cmd.Room)
	case "leave":
		err = c.Leave(ctx, cmd.Room)
	default:
		err = fmt.Errorf("unknown op %q", cmd.Op)
	}
	rep := reply{ID: cmd.ID}
	var le *wsconn.LimitError
	switch {
	case err == nil:
		rep.Rooms = c.Rooms()
		return rep
	case errors.As(err, &le):
		rep.Err, rep.Kind, rep.Name = "limit", string(le.Kind), le.Name
	case errors.Is(err, wsconn.ErrUnavailable):
		rep.Err = "unavailable"
	case errors.Is(err, wsconn.ErrClosed):
		rep.Err = "closed"
	default:
		rep.Err = "other"
	}
	rep.Msg = err.Error()
	return rep
}
