package wsnethttp_test

import (
	"net/http"
	"testing"

	"github.com/headcount-go/headcount/adapters/internal/adaptertest"
	wsnethttp "github.com/headcount-go/headcount/adapters/nethttp"
	"github.com/headcount-go/headcount/wsconn"
)

func TestMain(m *testing.M) { adaptertest.Main(m) }

// behave is the function the tests' Handler runs.
func behave(c *wsconn.Conn, r *http.Request) { adaptertest.Behave(r.Context(), c.WS()) }

// setups serve "/ws/{room}" with Handler and with Middleware, bare and
// behind logging wrappers that forward only Unwrap: around the whole mux
// and, for Middleware, also between it and the self-upgrading handler.
var setups = []adaptertest.Setup{
	{Name: "Handler", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		mux := http.NewServeMux()
		mux.Handle("GET /ws/{room}", wsnethttp.Handler(tr, behave, wsnethttp.Options{}))
		return adaptertest.Serve(t, mux)
	}},
	{Name: "Handler behind logging", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		mux := http.NewServeMux()
		mux.Handle("GET /ws/{room}", wsnethttp.Handler(tr, behave, wsnethttp.Options{}))
		return adaptertest.Serve(t, log.Handler(mux))
	}},
	{Name: "Middleware", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		mux := http.NewServeMux()
		mux.Handle("GET /ws/{room}", wsnethttp.Middleware(tr, wsnethttp.Options{})(adaptertest.SelfUpgrading()))
		return adaptertest.Serve(t, mux)
	}},
	{Name: "Middleware behind logging", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		mux := http.NewServeMux()
		mw := wsnethttp.Middleware(tr, wsnethttp.Options{})
		mux.Handle("GET /ws/{room}", mw(log.Handler(adaptertest.SelfUpgrading())))
		return adaptertest.Serve(t, log.Handler(mux))
	}},
}

// TestEndings: counted on connect; uncounted exactly once on server close,
// client close, TCP reset or FIN without a close frame, and handler panic;
// never negative; also behind wrapping writers.
func TestEndings(t *testing.T) { adaptertest.Endings(t, setups) }

// TestRefusals: 429, 400 and 426 are answered through the adapter, and
// nothing refused is counted.
func TestRefusals(t *testing.T) { adaptertest.Refusals(t, setups) }

// TestRoomSources: Options.Param names another wildcard; Options.Rooms
// replaces it; a pattern without the wildcard joins no room; Tracker
// rooms (wsconn.Options.Rooms) are added to the adapter's.
func TestRoomSources(t *testing.T) {
	t.Parallel()
	o := adaptertest.Options(t)
	o.Rooms = func(r *http.Request) []string { return r.URL.Query()["also"] }
	tr := adaptertest.NewTracker(t, o)
	fromQuery := func(r *http.Request) []string { return r.URL.Query()["r"] }
	mux := http.NewServeMux()
	mux.Handle("GET /h/chan/{channel}", wsnethttp.Handler(tr, behave, wsnethttp.Options{Param: "channel"}))
	mux.Handle("GET /h/q/{room}", wsnethttp.Handler(tr, behave, wsnethttp.Options{Rooms: fromQuery}))
	mux.Handle("GET /h/none", wsnethttp.Handler(tr, behave, wsnethttp.Options{}))
	mw := func(opts wsnethttp.Options) http.Handler {
		return wsnethttp.Middleware(tr, opts)(adaptertest.SelfUpgrading())
	}
	mux.Handle("GET /m/chan/{channel}", mw(wsnethttp.Options{Param: "channel"}))
	mux.Handle("GET /m/q/{room}", mw(wsnethttp.Options{Rooms: fromQuery}))
	mux.Handle("GET /m/none", mw(wsnethttp.Options{}))
	base := adaptertest.Serve(t, mux)
	for _, form := range []string{"/h", "/m"} {
		adaptertest.InRooms(t, tr, base+form+"/chan/c1?also=x", "c1", "x")
		// An escaped name is counted unescaped (r.PathValue unescapes).
		adaptertest.InRooms(t, tr, base+form+"/chan/a%2Fb%20c", "a/b c")
		adaptertest.InRooms(t, tr, base+form+"/q/ignored?r=q1&r=q2", "q1", "q2")
		adaptertest.InRooms(t, tr, base+form+"/none")
	}
}
