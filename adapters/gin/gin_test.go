package wsgin_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/gin-gonic/gin"

	wsgin "github.com/headcount-go/headcount/adapters/gin"
	"github.com/headcount-go/headcount/adapters/internal/adaptertest"
	"github.com/headcount-go/headcount/wsconn"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode) // no route listing on stdout
	adaptertest.Main(m)
}

// behave is the function the tests' Handler runs.
func behave(c *gin.Context, conn *wsconn.Conn) { adaptertest.Behave(c.Request.Context(), conn.WS()) }

// selfUpgrading is the handler behind Middleware.
var selfUpgrading = gin.WrapH(adaptertest.SelfUpgrading())

// loggedWriter is what gin's logging middlewares put in c.Writer: a
// gin.ResponseWriter whose status and body go through log's writer, which
// forwards only Unwrap (gin's own writer, embedded, does the rest).
type loggedWriter struct {
	gin.ResponseWriter
	log http.ResponseWriter
}

func (w *loggedWriter) WriteHeader(code int)        { w.log.WriteHeader(code) }
func (w *loggedWriter) Write(b []byte) (int, error) { return w.log.Write(b) }

// logging is gin middleware that replaces c.Writer with a loggedWriter.
func logging(log *adaptertest.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Writer = &loggedWriter{ResponseWriter: c.Writer, log: log.Writer(c.Writer)}
		c.Next()
	}
}

// recovery is gin.Recovery, quiet: it recovers the handler's panic.
var recovery = gin.RecoveryWithWriter(io.Discard)

// setups serve "/ws/:room" with Handler and with Middleware, bare and
// behind gin's Recovery and logging middleware that replaces c.Writer:
// before the tracking and, for Middleware, also between it and the
// self-upgrading handler. (A net/http wrapper around the Engine that hides
// Hijack is not one of them: gin's own writer cannot hijack through it.)
var setups = []adaptertest.Setup{
	{Name: "Handler", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		r := gin.New()
		r.GET("/ws/:room", wsgin.Handler(tr, behave, wsgin.Options{}))
		return adaptertest.Serve(t, r)
	}},
	{Name: "Handler behind Recovery and logging", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		r := gin.New()
		r.Use(recovery, logging(log))
		r.GET("/ws/:room", wsgin.Handler(tr, behave, wsgin.Options{}))
		return adaptertest.Serve(t, r)
	}},
	{Name: "Middleware", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		r := gin.New()
		r.GET("/ws/:room", wsgin.Middleware(tr, wsgin.Options{}), selfUpgrading)
		return adaptertest.Serve(t, r)
	}},
	{Name: "Middleware on a group behind Recovery and logging", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		r := gin.New()
		r.Use(recovery, logging(log))
		ws := r.Group("/ws", wsgin.Middleware(tr, wsgin.Options{}), logging(log))
		ws.GET("/:room", selfUpgrading)
		return adaptertest.Serve(t, r)
	}},
}

// TestEndings: counted on connect; uncounted exactly once on server close,
// client close, TCP reset or FIN without a close frame, and handler panic;
// never negative; also behind wrapping writers.
func TestEndings(t *testing.T) { adaptertest.Endings(t, setups) }

// TestRefusals: 429, 400 and 426 are answered through the adapter, and
// nothing refused is counted.
func TestRefusals(t *testing.T) { adaptertest.Refusals(t, setups) }

// TestRefusalAborts: a handshake Middleware refuses never reaches the
// handlers after it; a plain request passes through to them.
func TestRefusalAborts(t *testing.T) {
	t.Parallel()
	o := adaptertest.Options(t)
	o.Limits.PerRoom = 1
	tr := adaptertest.NewTracker(t, o)
	reached := make(chan string, 10)
	r := gin.New()
	r.GET("/ws/:room", wsgin.Middleware(tr, wsgin.Options{}), func(c *gin.Context) {
		reached <- c.Request.URL.Path
		selfUpgrading(c)
	})
	base := adaptertest.Serve(t, r)
	adaptertest.MustDial(t, base+"/ws/"+adaptertest.Room)
	<-reached
	for _, path := range []string{"/ws/" + adaptertest.Room, "/ws/%7F"} {
		if _, resp, err := adaptertest.Dial(adaptertest.Ctx(t), base+path); err == nil || resp == nil || resp.StatusCode < 400 {
			t.Fatalf("dial %s: %v, %v; want a refusal", path, err, resp)
		}
	}
	if code := adaptertest.Get(t, base+"/ws/plain"); code != http.StatusUpgradeRequired {
		t.Fatalf("plain GET: HTTP %d, want 426 from the handler", code)
	}
	if got := <-reached; got != "/ws/plain" {
		t.Fatalf("a refused handshake reached the handler: %s", got)
	}
	select {
	case got := <-reached:
		t.Fatalf("the handler was reached again: %s", got)
	default:
	}
}

// TestRoomSources: Options.Param names another parameter; Options.Rooms
// replaces it; a route without the parameter joins no room; Tracker rooms
// (wsconn.Options.Rooms) are added to the adapter's.
func TestRoomSources(t *testing.T) {
	t.Parallel()
	o := adaptertest.Options(t)
	o.Rooms = func(r *http.Request) []string { return r.URL.Query()["also"] }
	tr := adaptertest.NewTracker(t, o)
	fromQuery := func(c *gin.Context) []string { return c.QueryArray("r") }
	r := gin.New()
	r.GET("/h/chan/:channel", wsgin.Handler(tr, behave, wsgin.Options{Param: "channel"}))
	r.GET("/h/q/:room", wsgin.Handler(tr, behave, wsgin.Options{Rooms: fromQuery}))
	r.GET("/h/none", wsgin.Handler(tr, behave, wsgin.Options{}))
	r.GET("/m/chan/:channel", wsgin.Middleware(tr, wsgin.Options{Param: "channel"}), selfUpgrading)
	r.GET("/m/q/:room", wsgin.Middleware(tr, wsgin.Options{Rooms: fromQuery}), selfUpgrading)
	r.GET("/m/none", wsgin.Middleware(tr, wsgin.Options{}), selfUpgrading)
	base := adaptertest.Serve(t, r)
	for _, form := range []string{"/h", "/m"} {
		adaptertest.InRooms(t, tr, base+form+"/chan/c1?also=x", "c1", "x")
		// gin routes on the decoded path by default: %20 is a space.
		adaptertest.InRooms(t, tr, base+form+"/chan/b%20c", "b c")
		adaptertest.InRooms(t, tr, base+form+"/q/ignored?r=q1&r=q2", "q1", "q2")
		adaptertest.InRooms(t, tr, base+form+"/none")
	}
}
