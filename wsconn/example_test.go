package wsconn_test

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

	"github.com/headcount-go/headcount/wsconn"
)

// newRedis returns a client to an in-memory Redis, enough for examples;
// use a real Redis (or Cluster) client in production.
func newRedis() (*redis.Client, func()) {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return c, func() { c.Close(); mr.Close() }
}

func ExampleTracker_Accept() {
	rc, stop := newRedis()
	defer stop()
	tracker, err := wsconn.New(rc, wsconn.Options{
		InstanceID: "node-1",
		Rooms:      func(r *http.Request) []string { return r.URL.Query()["room"] },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tracker.Shutdown(context.Background())

	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := tracker.Accept(w, r, nil)
		if err != nil {
			return // refused and answered (400, 429, 503...)
		}
		defer c.Close(websocket.StatusNormalClosure, "")
		for { // echo until the client goes
			typ, msg, err := c.WS().Read(r.Context())
			if err != nil {
				return
			}
			if err := c.WS().Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws?room=lobby", nil)
	if err != nil {
		log.Fatal(err)
	}
	// Once the first message comes back, the connection is counted.
	_ = ws.Write(ctx, websocket.MessageText, []byte("hi"))
	_, _, _ = ws.Read(ctx)
	total, _ := tracker.Total(ctx)
	lobby, _ := tracker.Count(ctx, "lobby")
	fmt.Printf("total %d (here %d), lobby %d\n", total.Total, total.Local, lobby.Total)

	ws.Close(websocket.StatusNormalClosure, "bye")
	for total.Total != 0 {
		time.Sleep(time.Millisecond)
		total, _ = tracker.Total(ctx)
	}
	fmt.Println("after close:", total.Total)
	// Output:
	// total 1 (here 1), lobby 1
	// after close: 0
}

// A handler that hands its connection to a hub goroutine and returns at
// once calls Detach, so that the connection stays counted until it closes.
func ExampleConn_Detach() {
	rc, stop := newRedis()
	defer stop()
	tracker, err := wsconn.New(rc, wsconn.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer tracker.Shutdown(context.Background())

	hub := make(chan *wsconn.Conn)
	go func() {
		for c := range hub {
			go func() {
				defer c.Close(websocket.StatusNormalClosure, "")
				for { // the hub keeps reading: that is how it sees the peer go
					if _, _, err := c.WS().Read(context.Background()); err != nil {
						return
					}
				}
			}()
		}
	}()
	requests := make(chan context.Context, 1) // for the example: to see the request end
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := tracker.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.Detach()
		hub <- c
		requests <- r.Context()
	}))
	defer srv.Close()
	defer close(hub)

	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	<-(<-requests).Done() // the handler has returned, its request is over
	total, _ := tracker.Total(ctx)
	fmt.Println("counted while the hub has it:", total.Total)
	ws.Close(websocket.StatusNormalClosure, "")
	for total.Total != 0 {
		time.Sleep(time.Millisecond)
		total, _ = tracker.Total(ctx)
	}
	fmt.Println("after close:", total.Total)
	// Output:
	// counted while the hub has it: 1
	// after close: 0
}

// Admit counts a connection upgraded by another WebSocket library; the
// code that sees the connection end calls Release.
func ExampleTracker_Admit() {
	rc, stop := newRedis()
	defer stop()
	tracker, err := wsconn.New(rc, wsconn.Options{
		Tenant: func(r *http.Request) string { return r.Header.Get("X-Tenant") },
		Limits: wsconn.Limits{PerTenant: 1},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tracker.Shutdown(context.Background())

	var leases []*wsconn.Lease
	handler := func(w http.ResponseWriter, r *http.Request) {
		lease, err := tracker.Admit(r.Context(), r)
		if err != nil {
			tracker.WriteError(w, err) // 429 with Retry-After, 400, 503
			return
		}
		// Upgrade with any library here and hand the connection over;
		// whoever sees it end calls lease.Release(), and closes it when
		// lease.Context() is done (Drain).
		leases = append(leases, lease)
		w.WriteHeader(http.StatusSwitchingProtocols)
	}
	defer func() {
		for _, l := range leases {
			l.Release()
		}
	}()
	for range 2 {
		r := httptest.NewRequest(http.MethodGet, "/ws", nil)
		r.Header.Set("X-Tenant", "acme")
		w := httptest.NewRecorder()
		handler(w, r)
		fmt.Printf("%d Retry-After=%q\n", w.Code, w.Header().Get("Retry-After"))
	}
	// Output:
	// 101 Retry-After=""
	// 429 Retry-After="1"
}

// Shutdown goes right after http.Server.Shutdown, which neither closes
// hijacked connections nor waits for them.
func ExampleTracker_Shutdown() {
	rc, stop := newRedis()
	defer stop()
	tracker, err := wsconn.New(rc, wsconn.Options{})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: "127.0.0.1:0", Handler: http.NewServeMux()}
	// ... srv.ListenAndServe() in a goroutine, until a signal arrives ...
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	if err := tracker.Shutdown(ctx); err != nil {
		log.Print(err)
	}
	fmt.Println("drained and removed from Redis")
	// Output: drained and removed from Redis
}

// Middleware counts handlers that upgrade by themselves, with any library,
// for as long as they run; they find their Lease in the request context.
func ExampleTracker_Middleware() {
	rc, stop := newRedis()
	defer stop()
	tracker, err := wsconn.New(rc, wsconn.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer tracker.Shutdown(context.Background())

	ws := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil) // or gorilla's Upgrader.Upgrade
		if err != nil {
			return
		}
		defer c.CloseNow()
		if lease, ok := wsconn.LeaseFromContext(r.Context()); ok {
			if err := lease.Join(r.Context(), "lobby"); err != nil {
				c.Close(websocket.StatusTryAgainLater, "")
				return
			}
		}
		_ = c.Write(r.Context(), websocket.MessageText, []byte("welcome"))
		// Serve c until the client goes; returning uncounts it.
		for {
			if _, _, err := c.Read(r.Context()); err != nil {
				return
			}
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", tracker.Middleware(ws))
	mux.Handle("/presence", tracker.PresenceHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, msg, _ := client.Read(ctx) // sent once the handler has joined
	total, _ := tracker.Total(ctx)
	lobby, _ := tracker.Count(ctx, "lobby")
	fmt.Printf("%s: total %d, lobby %d\n", msg, total.Total, lobby.Total)

	client.Close(websocket.StatusNormalClosure, "")
	for total.Total != 0 || lobby.Total != 0 {
		time.Sleep(time.Millisecond)
		total, _ = tracker.Total(ctx)
		lobby, _ = tracker.Count(ctx, "lobby")
	}
	fmt.Println("after close:", total.Total, lobby.Total)
	// Output:
	// welcome: total 1, lobby 1
	// after close: 0 0
}

// Presence: distinct users, member lists and who may see them. The
// handlers sit behind the application's authentication, which Visible
// reads (here a header that the middleware would set).
func ExamplePresenceOptions() {
	rc, stop := newRedis()
	defer stop()
	tracker, err := wsconn.New(rc, wsconn.Options{
		InstanceID: "node-1",
		User:       func(r *http.Request) string { return r.Header.Get("X-User") }, // set by authentication
		Rooms:      func(r *http.Request) []string { return r.URL.Query()["room"] },
		Presence: &wsconn.PresenceOptions{
			Metadata: func(r *http.Request) string { return r.Header.Get("X-Name") },
			// Signed-in users may see who is in a room; nobody else may
			// see anything.
			Visible: func(r *http.Request, kind, name string) bool {
				return r.Header.Get("X-User") != "" && kind == "room"
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tracker.Shutdown(context.Background())

	ctx := context.Background()
	var leases []*wsconn.Lease // released when their connections end
	defer func() {
		for _, l := range leases {
			l.Release()
		}
	}()
	connect := func(user, name string) {
		r := httptest.NewRequest(http.MethodGet, "/ws?room=lobby", nil)
		r.Header.Set("X-User", user)
		r.Header.Set("X-Name", name)
		l, err := tracker.Admit(ctx, r) // Accept, for coder/websocket
		if err != nil {
			log.Fatal(err)
		}
		leases = append(leases, l)
	}
	connect("ann", "Ann") // two tabs
	connect("ann", "Ann")
	connect("bob", "Bob")

	users, _ := tracker.RoomUsers(ctx, "lobby")
	fmt.Println("lobby:", users["lobby"], "users")
	page, _ := tracker.Members(ctx, "lobby", "", 10)
	for _, m := range page.Members {
		fmt.Printf("%s (%s): %d connections\n", m.User, m.Meta, m.Connections)
	}

	presence := tracker.PresenceHandler() // behind the authentication middleware
	for _, user := range []string{"ann", ""} {
		r := httptest.NewRequest(http.MethodGet, "/presence?room=lobby&members=1", nil)
		r.Header.Set("X-User", user)
		w := httptest.NewRecorder()
		presence.ServeHTTP(w, r)
		fmt.Printf("members asked by %q: %d\n", user, w.Code)
	}
	// Output:
	// lobby: 2 users
	// ann (Ann): 2 connections
	// bob (Bob): 1 connections
	// members asked by "ann": 200
	// members asked by "": 403
}
