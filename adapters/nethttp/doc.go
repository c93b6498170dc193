// Package wsnethttp counts WebSocket connections served by net/http handlers
// with a [wsconn.Tracker]; the room comes from a path wildcard of the
// matched ServeMux pattern (r.PathValue), "room" by default.
//
// Quick start:
//
//	rc := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	tracker, err := wsconn.New(rc, wsconn.Options{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	mux := http.NewServeMux()
//	mux.Handle("GET /ws/{room}", wsnethttp.Handler(tracker,
//		func(c *wsconn.Conn, r *http.Request) {
//			for { // echo until the client goes; returning closes c
//				typ, msg, err := c.WS().Read(r.Context())
//				if err != nil || c.WS().Write(r.Context(), typ, msg) != nil {
//					return
//				}
//			}
//		}, wsnethttp.Options{}))
//	mux.Handle("GET /presence", tracker.PresenceHandler())
//	srv := &http.Server{Addr: ":8080", Handler: mux}
//	// Serve srv until SIGTERM, then srv.Shutdown(ctx) and tracker.Shutdown(ctx),
//	// in that order: examples/nethttp in the repository is the whole program.
//
// [Handler] accepts with coder/websocket and closes the connection when the
// function returns or panics. [Middleware] is for handlers that upgrade by
// themselves, with any WebSocket library: it counts them while they run.
// Both refuse bad room names (400) and connections over a limit (429)
// before the upgrade, as wsconn does.
package wsnethttp
