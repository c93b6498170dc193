// Package wschi counts WebSocket connections served through a go-chi/chi
// (v5) Router with a [wsconn.Tracker]; the room comes from a URL parameter
// of the matched route (chi.URLParam), "room" by default.
//
// Quick start (the complete program is examples/chi in the repository):
//
//	rc := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	tracker, err := wsconn.New(rc, wsconn.Options{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	r := chi.NewRouter()
//	r.Method(http.MethodGet, "/ws/{room}", wschi.Handler(tracker,
//		func(c *wsconn.Conn, r *http.Request) {
//			for { // echo until the client goes; returning closes c
//				typ, msg, err := c.WS().Read(r.Context())
//				if err != nil || c.WS().Write(r.Context(), typ, msg) != nil {
//					return
//				}
//			}
//		}, wschi.Options{}))
//	r.Method(http.MethodGet, "/presence", tracker.PresenceHandler())
//	srv := &http.Server{Addr: ":8080", Handler: r}
//	// Serve srv until SIGTERM, then srv.Shutdown(ctx) and tracker.Shutdown(ctx),
//	// in that order: examples/chi in the repository is the whole program.
//
// [Handler] accepts with coder/websocket and closes the connection when the
// function returns (1000) or panics (1011, and the panic goes on to a
// Recoverer middleware or net/http); either way it is uncounted exactly
// once. The function must not keep the connection after returning: for a
// hub goroutine, call Tracker.Accept, then Conn.Detach, in a handler of
// your own.
//
// [Middleware] is for handlers that upgrade by themselves, with any
// WebSocket library (gorilla/websocket too): it counts them while they
// run, and they find the connection's Lease, to join more rooms, with
// [wsconn.LeaseFromContext]. chi runs the middlewares of Router.Use before
// it matches a route, when there are no URL parameters yet: add Middleware
// to routes with Router.With, or inside Router.Group, instead.
//
// Both refuse bad room names (400) and connections over a limit (429)
// before the upgrade, as wsconn does. The package is the net/http adapter,
// [wsnethttp], with the room taken from chi.URLParam instead of
// r.PathValue.
package wschi
