// Package wsgin counts WebSocket connections served by gin handlers with a
// [wsconn.Tracker]; the room comes from a path parameter of the matched
// route (c.Param), "room" by default.
//
// Quick start (the complete program is examples/gin in the repository):
//
//	rc := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	tracker, err := wsconn.New(rc, wsconn.Options{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	r := gin.Default()
//	r.GET("/ws/:room", wsgin.Handler(tracker,
//		func(c *gin.Context, conn *wsconn.Conn) {
//			ctx := c.Request.Context()
//			for { // echo until the client goes; returning closes conn
//				typ, msg, err := conn.WS().Read(ctx)
//				if err != nil || conn.WS().Write(ctx, typ, msg) != nil {
//					return
//				}
//			}
//		}, wsgin.Options{}))
//	r.GET("/presence", gin.WrapH(tracker.PresenceHandler()))
//	srv := &http.Server{Addr: ":8080", Handler: r}
//	// Serve srv until SIGTERM, then srv.Shutdown(ctx) and tracker.Shutdown(ctx),
//	// in that order: examples/gin in the repository is the whole program.
//
// [Handler] accepts with coder/websocket and closes the connection when the
// function returns (1000) or panics (1011, and the panic goes on to
// gin.Recovery or net/http); either way it is uncounted exactly once. The
// function must not keep the connection after returning: for a hub
// goroutine, call Tracker.Accept, then Conn.Detach, in a handler of your
// own. Refused handshakes never reach the function: Tracker.Accept answers
// them through c.Writer (400 for a bad room name, 429 for a limit, 503
// while shutting down or under FailClosed, 426 for a request that is not a
// WebSocket handshake; and coder/websocket's own: 403 for an Origin it
// does not allow, 400 for a malformed handshake). gin answers a handshake
// with another method than the route's 404, or 405 with
// Engine.HandleMethodNotAllowed.
//
// [Middleware] is for the handlers after it that upgrade by themselves,
// with any WebSocket library (gorilla/websocket too): it counts the
// connection while they run, answers a refused handshake and aborts the
// chain. They find the connection's Lease, to join more rooms, with
// [wsconn.LeaseFromContext](c.Request.Context()). gin matches the route
// before it runs any middleware, so Middleware works on the Engine, a
// group or a route alike.
//
// The room is c.Param as gin gives it: unescaped, unless the Engine routes
// on the raw path (UseRawPath, UseEscapedPath) without UnescapePathValues;
// then set Options.Rooms. gin matches the unescaped path by default, so a
// room name holding '/' (sent as %2F) finds no route (404): such names
// need UseRawPath, whose unescaping also turns '+' into a space. A route without the parameter joins no room
// from the path. Options.Rooms, when set, replaces Options.Param; either
// way the rooms add to those of the Tracker's Options.Rooms.
package wsgin
