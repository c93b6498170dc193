// Package wsecho counts WebSocket connections served by echo (v4) handlers
// with a [wsconn.Tracker]; the room comes from a path parameter of the
// matched route (c.Param), "room" by default.
//
// Quick start:
//
//	rc := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	tracker, err := wsconn.New(rc, wsconn.Options{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	e := echo.New()
//	e.GET("/ws/:room", wsecho.Handler(tracker,
//		func(c echo.Context, conn *wsconn.Conn) error {
//			ctx := c.Request().Context()
//			for { // echo until the client goes; returning closes conn
//				typ, msg, err := conn.WS().Read(ctx)
//				if err != nil || conn.WS().Write(ctx, typ, msg) != nil {
//					return nil
//				}
//			}
//		}, wsecho.Options{}))
//	e.GET("/presence", echo.WrapHandler(tracker.PresenceHandler()))
//	// Serve e until SIGTERM, then e.Shutdown(ctx) and tracker.Shutdown(ctx),
//	// in that order: examples/echo in the repository is the whole program.
//
// [Handler] accepts with coder/websocket and closes the connection when the
// function returns or panics. [Middleware] is for handlers that upgrade by
// themselves, with any WebSocket library: it counts them while they run.
// Both refuse bad room names (400) and connections over a limit (429)
// before the upgrade, as wsconn does.
package wsecho
