// Package wsgorilla counts WebSocket connections served through a
// gorilla/mux Router with a [wsconn.Tracker]; the room comes from a route
// variable (mux.Vars), "room" by default.
//
// Quick start:
//
//	rc := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	tracker, err := wsconn.New(rc, wsconn.Options{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	r := mux.NewRouter()
//	r.Handle("/ws/{room}", wsgorilla.Handler(tracker,
//		func(c *wsconn.Conn, r *http.Request) {
//			for { // echo until the client goes; returning closes c
//				typ, msg, err := c.WS().Read(r.Context())
//				if err != nil || c.WS().Write(r.Context(), typ, msg) != nil {
//					return
//				}
//			}
//		}, wsgorilla.Options{})).Methods(http.MethodGet)
//	r.Handle("/presence", tracker.PresenceHandler())
//	srv := &http.Server{Addr: ":8080", Handler: r}
//	// Serve srv until SIGTERM, then srv.Shutdown(ctx) and tracker.Shutdown(ctx),
//	// in that order: examples/gorilla in the repository is the whole program.
//
// [Handler] accepts with coder/websocket and closes the connection when the
// function returns or panics. [Middleware], for Router.Use, is for handlers
// that upgrade by themselves, with any WebSocket library (gorilla/websocket
// too): it counts them while they run. Both refuse bad room names (400)
// and connections over a limit (429) before the upgrade, as wsconn does.
//
// The package is the net/http adapter, [wsnethttp], with the room taken
// from mux.Vars instead of r.PathValue.
package wsgorilla
