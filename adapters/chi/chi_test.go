package wschi_test

import (
	"net/http"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	wschi "github.com/headcount-go/headcount/adapters/chi"
	"github.com/headcount-go/headcount/adapters/internal/adaptertest"
	"github.com/headcount-go/headcount/wsconn"
)

func TestMain(m *testing.M) { adaptertest.Main(m) }

// behave is the function the tests' Handler runs.
func behave(c *wsconn.Conn, r *http.Request) { adaptertest.Behave(r.Context(), c.WS()) }

// setups serve "/ws/{room}" with Handler and with Middleware (Router.With,
// Router.Group), bare and behind logging wrappers that forward only
// Unwrap: around the Router, as Router.Use middleware before the tracking
// and, for Middleware, also between it and the self-upgrading handler;
// one setup serves the route from a mounted subrouter.
var setups = []adaptertest.Setup{
	{Name: "Handler", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		r := chi.NewRouter()
		r.Method(http.MethodGet, "/ws/{room}", wschi.Handler(tr, behave, wschi.Options{}))
		return adaptertest.Serve(t, r)
	}},
	{Name: "Handler in a subrouter behind logging", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		r := chi.NewRouter()
		r.Use(log.Handler)
		r.Route("/ws", func(r chi.Router) {
			r.Method(http.MethodGet, "/{room}", wschi.Handler(tr, behave, wschi.Options{}))
		})
		return adaptertest.Serve(t, log.Handler(r))
	}},
	{Name: "Middleware", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		r := chi.NewRouter()
		r.With(wschi.Middleware(tr, wschi.Options{})).Method(http.MethodGet, "/ws/{room}", adaptertest.SelfUpgrading())
		return adaptertest.Serve(t, r)
	}},
	{Name: "Middleware in a group behind logging", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		r := chi.NewRouter()
		r.Use(log.Handler)
		r.Group(func(r chi.Router) {
			r.Use(wschi.Middleware(tr, wschi.Options{}), log.Handler)
			r.Method(http.MethodGet, "/ws/{room}", adaptertest.SelfUpgrading())
		})
		return adaptertest.Serve(t, log.Handler(r))
	}},
	{Name: "Handler behind chi's Recoverer", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		r := chi.NewRouter()
		r.Use(middleware.Recoverer)
		r.Method(http.MethodGet, "/ws/{room}", wschi.Handler(tr, behave, wschi.Options{}))
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

// TestRoomSources: Options.Param names another parameter; Options.Rooms
// replaces it; a route without the parameter joins no room; an escaped
// name is counted unescaped; Tracker rooms (wsconn.Options.Rooms) are
// added to the adapter's.
func TestRoomSources(t *testing.T) {
	t.Parallel()
	o := adaptertest.Options(t)
	o.Rooms = func(r *http.Request) []string { return r.URL.Query()["also"] }
	tr := adaptertest.NewTracker(t, o)
	fromQuery := func(r *http.Request) []string { return r.URL.Query()["r"] }
	r := chi.NewRouter()
	r.Method(http.MethodGet, "/h/chan/{channel}", wschi.Handler(tr, behave, wschi.Options{Param: "channel"}))
	r.Method(http.MethodGet, "/h/q/{room}", wschi.Handler(tr, behave, wschi.Options{Rooms: fromQuery}))
	r.Method(http.MethodGet, "/h/none", wschi.Handler(tr, behave, wschi.Options{}))
	mw := func(opts wschi.Options) chi.Router { return r.With(wschi.Middleware(tr, opts)) }
	mw(wschi.Options{Param: "channel"}).Method(http.MethodGet, "/m/chan/{channel}", adaptertest.SelfUpgrading())
	mw(wschi.Options{Rooms: fromQuery}).Method(http.MethodGet, "/m/q/{room}", adaptertest.SelfUpgrading())
	mw(wschi.Options{}).Method(http.MethodGet, "/m/none", adaptertest.SelfUpgrading())
	base := adaptertest.Serve(t, r)
	for _, form := range []string{"/h", "/m"} {
		adaptertest.InRooms(t, tr, base+form+"/chan/c1?also=x", "c1", "x")
		// chi routes on the raw path and gives "a%2Fb%20c": counted unescaped.
		adaptertest.InRooms(t, tr, base+form+"/chan/a%2Fb%20c", "a/b c")
		adaptertest.InRooms(t, tr, base+form+"/chan/b%20c", "b c")
		adaptertest.InRooms(t, tr, base+form+"/q/ignored?r=q1&r=q2", "q1", "q2")
		adaptertest.InRooms(t, tr, base+form+"/none")
	}
	// Behind StripSlashes chi routes on the decoded path: unescaped once.
	s := chi.NewRouter()
	s.Use(middleware.StripSlashes)
	s.Method(http.MethodGet, "/h/{room}", wschi.Handler(tr, behave, wschi.Options{}))
	adaptertest.InRooms(t, tr, adaptertest.Serve(t, s)+"/h/%41%2541/", "A%41")
}
