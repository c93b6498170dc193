package wsecho_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"

	wsecho "github.com/headcount-go/headcount/adapters/echo"
	"github.com/headcount-go/headcount/adapters/internal/adaptertest"
	"github.com/headcount-go/headcount/wsconn"
)

func TestMain(m *testing.M) { adaptertest.Main(m) }

// behave is the function the tests' Handler runs.
func behave(c echo.Context, conn *wsconn.Conn) error {
	adaptertest.Behave(c.Request().Context(), conn.WS())
	return nil
}

func newEcho() *echo.Echo {
	e := echo.New()
	e.Logger.SetOutput(io.Discard)
	return e
}

// logging is echo middleware that wraps the response's writer the way
// echo's own body-dump or gzip middlewares do, with log's writer (which
// forwards only Unwrap).
func logging(log *adaptertest.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Writer = log.Writer(c.Response().Writer)
			return next(c)
		}
	}
}

// recoverer turns a handler's panic into an error, as echo's Recover
// middleware does.
func recoverer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("recovered: %v", p)
			}
		}()
		return next(c)
	}
}

// setups serve "/ws/:room" with Handler and with Middleware, bare and
// behind logging wrappers that forward only Unwrap: echo middleware that
// replaces the response's writer, and a net/http wrapper around the Echo.
var setups = []adaptertest.Setup{
	{Name: "Handler", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		e := newEcho()
		e.GET("/ws/:room", wsecho.Handler(tr, behave, wsecho.Options{}))
		return adaptertest.Serve(t, e)
	}},
	{Name: "Handler behind logging and recover", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		e := newEcho()
		e.Use(logging(log), recoverer)
		e.GET("/ws/:room", wsecho.Handler(tr, behave, wsecho.Options{}))
		return adaptertest.Serve(t, log.Handler(e))
	}},
	{Name: "Middleware", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		e := newEcho()
		e.GET("/ws/:room", echo.WrapHandler(adaptertest.SelfUpgrading()), wsecho.Middleware(tr, wsecho.Options{}))
		return adaptertest.Serve(t, e)
	}},
	{Name: "Middleware on a group behind logging", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		e := newEcho()
		e.Use(logging(log))
		g := e.Group("/ws", wsecho.Middleware(tr, wsecho.Options{}), logging(log))
		g.GET("/:room", echo.WrapHandler(adaptertest.SelfUpgrading()))
		return adaptertest.Serve(t, log.Handler(e))
	}},
}

// TestEndings: counted on connect; uncounted exactly once on server close,
// client close, TCP reset or FIN without a close frame, and handler panic
// (also one recovered by echo middleware); never negative; also behind
// wrapping writers.
func TestEndings(t *testing.T) { adaptertest.Endings(t, setups) }

// TestRefusals: 429, 400 and 426 are answered through the adapter, and
// nothing refused is counted.
func TestRefusals(t *testing.T) { adaptertest.Refusals(t, setups) }

// TestRefusalStatus: echo middleware sees the status of a refused
// handshake, and the handler returns no error for it.
func TestRefusalStatus(t *testing.T) {
	t.Parallel()
	tr := adaptertest.NewTracker(t, adaptertest.Options(t))
	var status atomic.Int64
	var errs atomic.Int64
	e := newEcho()
	e.HTTPErrorHandler = func(err error, c echo.Context) { errs.Add(1); e.DefaultHTTPErrorHandler(err, c) }
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := next(c)
			status.Store(int64(c.Response().Status))
			return err
		}
	})
	e.GET("/h/:room", wsecho.Handler(tr, behave, wsecho.Options{}))
	e.GET("/m/:room", echo.WrapHandler(adaptertest.SelfUpgrading()), wsecho.Middleware(tr, wsecho.Options{}))
	base := adaptertest.Serve(t, e)
	for _, path := range []string{"/h/%7F", "/m/%7F"} {
		if _, resp, err := adaptertest.Dial(adaptertest.Ctx(t), base+path); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("dial %s: %v, %v", path, err, resp)
		}
		if got := status.Load(); got != http.StatusBadRequest {
			t.Fatalf("%s: echo middleware saw status %d, want 400", path, got)
		}
	}
	if n := errs.Load(); n != 0 {
		t.Fatalf("refusals reached the HTTP error handler %d times", n)
	}
	adaptertest.Balanced(t, tr, 0)
}

// TestHandlerError: an error returned by fn closes the connection with
// 1011, uncounts it, and reaches echo's HTTP error handler, which answers
// nothing more (the response is committed).
func TestHandlerError(t *testing.T) {
	t.Parallel()
	tr := adaptertest.NewTracker(t, adaptertest.Options(t))
	boom := errors.New("boom")
	got := make(chan error, 1)
	e := newEcho()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		got <- err
		e.DefaultHTTPErrorHandler(err, c)
	}
	e.GET("/ws/:room", wsecho.Handler(tr, func(c echo.Context, conn *wsconn.Conn) error {
		adaptertest.Behave(c.Request().Context(), conn.WS())
		return boom
	}, wsecho.Options{}))
	c := adaptertest.MustDial(t, adaptertest.Serve(t, e)+"/ws/"+adaptertest.Room)
	adaptertest.RoomIs(t, tr, adaptertest.Room, 1)
	c.Send(t, "close")
	if code := c.CloseStatus(t); code != websocket.StatusInternalError {
		t.Fatalf("close status %d, want 1011", code)
	}
	if err := <-got; !errors.Is(err, boom) {
		t.Fatalf("error handler got %v", err)
	}
	adaptertest.TotalIs(t, tr, 0)
	adaptertest.Balanced(t, tr, 1)
}

// TestRoomSources: Options.Param names another parameter; Options.Rooms
// replaces it; a route without the parameter joins no room; Tracker rooms
// (wsconn.Options.Rooms) are added to the adapter's; rooms are
// unescaped.
func TestRoomSources(t *testing.T) {
	t.Parallel()
	o := adaptertest.Options(t)
	o.Rooms = func(r *http.Request) []string { return r.URL.Query()["also"] }
	tr := adaptertest.NewTracker(t, o)
	fromQuery := func(c echo.Context) []string { return c.QueryParams()["r"] }
	e := newEcho()
	e.GET("/h/chan/:channel", wsecho.Handler(tr, behave, wsecho.Options{Param: "channel"}))
	e.GET("/h/q/:room", wsecho.Handler(tr, behave, wsecho.Options{Rooms: fromQuery}))
	e.GET("/h/none", wsecho.Handler(tr, behave, wsecho.Options{}))
	self := echo.WrapHandler(adaptertest.SelfUpgrading())
	e.GET("/m/chan/:channel", self, wsecho.Middleware(tr, wsecho.Options{Param: "channel"}))
	e.GET("/m/q/:room", self, wsecho.Middleware(tr, wsecho.Options{Rooms: fromQuery}))
	e.GET("/m/none", self, wsecho.Middleware(tr, wsecho.Options{}))
	base := adaptertest.Serve(t, e)
	for _, form := range []string{"/h", "/m"} {
		adaptertest.InRooms(t, tr, base+form+"/chan/c1?also=x", "c1", "x")
		// An escaped name is counted unescaped (echo gives such parameters escaped).
		adaptertest.InRooms(t, tr, base+form+"/chan/a%2Fb%20c", "a/b c")
		adaptertest.InRooms(t, tr, base+form+"/q/ignored?r=q1&r=q2", "q1", "q2")
		adaptertest.InRooms(t, tr, base+form+"/none")
	}
}
