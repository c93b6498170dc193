package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/headcount-go/headcount/wsconn"
)

const (
	// shutdownTimeout bounds the drain on SIGTERM/SIGINT.
	shutdownTimeout = 10 * time.Second
	// maxMessage is the longest chat message a client may send (bytes);
	// a longer one closes its connection with 1009.
	maxMessage = 4096
	// pingEvery is how often a client is pinged, to notice a peer that
	// vanished without closing (see wsconn's package doc).
	pingEvery = 20 * time.Second
	// writeTimeout bounds one write (or ping) to a client.
	writeTimeout = 10 * time.Second
)

// node is one demo server: a Tracker counting its WebSocket connections in
// Redis, the chat hub, and their HTTP API.
type node struct {
	cfg       config
	redisDesc string // what the page says about Redis
	tracker   *wsconn.Tracker
	hub       *hub
	log       *slog.Logger
	handlers  sync.WaitGroup // WebSocket handlers still running
}

// runNode serves one node on ln until ctx ends, then drains it: new
// handshakes get 503, open connections are closed with 1001, and this
// node's counts are removed from Redis before it returns. A supervised node
// (started by -nodes) says where it listens; a lone one says what to open.
func runNode(ctx context.Context, cfg config, ln net.Listener, supervised bool, stdout io.Writer, log *slog.Logger) error {
	defer ln.Close()
	rc, err := openRedis(ctx, cfg.redis, stdout)
	if err != nil {
		return err
	}
	defer rc.close()
	h, err := newHub(ctx, rc.client, cfg.namespace, log)
	if err != nil {
		return err
	}
	defer h.close()
	topts := cfg.trackerOptions()
	topts.Logger = log
	if topts.InstanceID == "" {
		topts.InstanceID = defaultInstance(ln.Addr())
	}
	tracker, err := wsconn.New(rc.client, topts)
	if err != nil {
		return err
	}
	n := &node{cfg: cfg, redisDesc: rc.desc, tracker: tracker, hub: h, log: log}
	fmt.Fprintf(stdout, "headcount demo: instance %s, namespace %q, threshold %v, heartbeat %v\n",
		tracker.InstanceID(), cfg.namespace, cfg.threshold, cfg.heartbeatEvery())
	if supervised {
		fmt.Fprintf(stdout, "headcount demo: listening on %s\n", ln.Addr())
	} else {
		fmt.Fprintf(stdout, "headcount demo: open %s\n", pageURL(ln.Addr()))
	}
	return n.serve(ctx, ln)
}

// serve serves HTTP on ln until ctx ends, then shuts down: the server, then
// the Tracker (drain, and remove this node's counts).
func (n *node) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-served:
		_ = n.tracker.Close(context.Background())
		return err
	}
	n.log.Info("shutting down: draining connections")
	// srv.Shutdown waits for open requests, and an event stream does not
	// end by itself: browsers reconnect, to another node with -nodes.
	n.tracker.EndStreams()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := errors.Join(srv.Shutdown(sctx), n.tracker.Shutdown(sctx))
	n.handlers.Wait() // their last events (leave) are published
	if err == nil {
		n.log.Info("drained; this node's counts are removed from Redis")
	}
	return err
}

// defaultInstance names a lone node without -instance after this host and
// the port it listens on ("myhost:8080"): a name the page can show, unique
// among the nodes of one machine, and stable, so that a restarted demo
// takes over its predecessor's counts at once.
func defaultInstance(addr net.Addr) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "demo"
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	_, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return host
	}
	return host + ":" + port
}

// pageURL is the address to open in a browser for a listener on addr.
func pageURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

func (n *node) routes() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.tracker.Collector(), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	mux := http.NewServeMux()
	servePage(mux)
	mux.HandleFunc("GET /ws/{room...}", n.serveWS)
	// The handlers answer other methods themselves (405, in JSON, with the
	// methods they take: GET and HEAD, GET alone for the event stream).
	mux.Handle("/api/presence", n.tracker.PresenceHandler())
	// The rooms' members, then each join and leave, as Server-Sent Events
	// (see PresenceOptions.Visible in config.go: the demo lets anyone read
	// them); ended at shutdown by EndStreams.
	mux.Handle("/api/events", n.tracker.EventsHandler())
	mux.HandleFunc("GET /api/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.info())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// info describes a node (or, with nodes, a supervisor) to the page.
type info struct {
	Instance    string     `json:"instance,omitempty"`
	Namespace   string     `json:"namespace"`
	Redis       string     `json:"redis"`
	ThresholdMS int64      `json:"threshold_ms"`
	HeartbeatMS int64      `json:"heartbeat_ms"`
	FlushMS     int64      `json:"flush_ms"`
	Lax         []string   `json:"lax"`
	TenantCap   int64      `json:"tenant_cap"`
	Nodes       []nodeInfo `json:"nodes,omitempty"`
	Endpoints   []endpoint `json:"endpoints"`
}

func (c *config) info(redisDesc string) info {
	return info{
		Namespace:   c.namespace,
		Redis:       redisDesc,
		ThresholdMS: c.threshold.Milliseconds(),
		HeartbeatMS: c.heartbeatEvery().Milliseconds(),
		FlushMS:     c.flush.Milliseconds(),
		Lax:         append([]string{}, c.lax...),
		TenantCap:   c.tenantCap,
	}
}

func (n *node) info() info {
	i := n.cfg.info(n.redisDesc)
	i.Instance = n.tracker.InstanceID()
	i.Endpoints = nodeEndpoints
	return i
}

// serveWS is GET /ws/{room}?user=U&tenant=T: a chat connection, counted in
// the room, the tenant and the node. Refusals are answered by Accept
// before the upgrade: 400 for a bad name, 429 over the tenant cap, 503
// while draining.
func (n *node) serveWS(w http.ResponseWriter, r *http.Request) {
	n.handlers.Add(1) // before the hijack, while srv.Shutdown still waits for us
	defer n.handlers.Done()
	room := r.PathValue("room")
	if room == "" { // WithRooms would take it for a route without a room
		n.tracker.WriteError(w, fmt.Errorf("%w: empty room: use /ws/{room}", wsconn.ErrInvalidName))
		return
	}
	c, err := n.tracker.Accept(w, wsconn.WithRooms(r, room), nil)
	if err != nil {
		n.log.Info("handshake refused", "room", room, "err", err)
		return
	}
	defer c.Close(websocket.StatusNormalClosure, "")
	ws := c.WS()
	ws.SetReadLimit(maxMessage)
	ctx := r.Context() // cancelled when this handler returns
	ev := func(typ, text string) event {
		return event{Type: typ, Room: room, User: c.User(), Instance: n.tracker.InstanceID(), Text: text, Time: time.Now().UTC()}
	}

	welcome, _ := json.Marshal(ev("welcome", ""))
	cl := n.hub.join(room, welcome)
	defer n.hub.leave(cl)
	go n.writeLoop(ctx, ws, cl)
	n.publish(ctx, ev("join", ""))
	defer func() { n.publish(context.WithoutCancel(ctx), ev("leave", "")) }() // stamped when it happens
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			return // closed by the peer, by Drain, or the network
		}
		if typ == websocket.MessageText {
			n.publish(ctx, ev("message", string(data)))
		}
	}
}

func (n *node) publish(ctx context.Context, e event) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := n.hub.publish(ctx, e); err != nil {
		n.log.Warn("chat: publish failed", "room", e.Room, "err", err)
	}
}

// writeLoop sends cl's events to ws, and pings, until ctx ends or a write
// fails (which closes the connection: wsconn uncounts it).
func (n *node) writeLoop(ctx context.Context, ws *websocket.Conn, cl *client) {
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case msg := <-cl.send:
			wctx, cancel := context.WithTimeout(ctx, writeTimeout)
			err = ws.Write(wctx, websocket.MessageText, msg)
			cancel()
		case <-ping.C:
			wctx, cancel := context.WithTimeout(ctx, writeTimeout)
			err = ws.Ping(wctx)
			cancel()
		}
		if err != nil {
			_ = ws.CloseNow()
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}
