package wsgorilla_test

import (
	"net/http"
	"testing"

	"github.com/gorilla/mux"

	wsgorilla "github.com/headcount-go/headcount/adapters/gorilla"
	"github.com/headcount-go/headcount/adapters/internal/adaptertest"
	"github.com/headcount-go/headcount/wsconn"
)

func TestMain(m *testing.M) { adaptertest.Main(m) }

// behave is the function the tests' Handler runs.
func behave(c *wsconn.Conn, r *http.Request) { adaptertest.Behave(r.Context(), c.WS()) }

// setups serve "/ws/{room}" with Handler and with Middleware (Router.Use),
// bare and behind logging wrappers that forward only Unwrap: around the
// Router, and as Router middleware before (and, for Middleware, after) the
// tracking.
var setups = []adaptertest.Setup{
	{Name: "Handler", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		r := mux.NewRouter()
		r.Handle("/ws/{room}", wsgorilla.Handler(tr, behave, wsgorilla.Options{})).Methods(http.MethodGet)
		return adaptertest.Serve(t, r)
	}},
	{Name: "Handler behind logging", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		r := mux.NewRouter()
		r.Use(log.Handler)
		r.Handle("/ws/{room}", wsgorilla.Handler(tr, behave, wsgorilla.Options{})).Methods(http.MethodGet)
		return adaptertest.Serve(t, log.Handler(r))
	}},
	{Name: "Middleware", Serve: func(t *testing.T, tr *wsconn.Tracker, _ *adaptertest.Logger) string {
		r := mux.NewRouter()
		r.Use(wsgorilla.Middleware(tr, wsgorilla.Options{}))
		r.Handle("/ws/{room}", adaptertest.SelfUpgrading()).Methods(http.MethodGet)
		return adaptertest.Serve(t, r)
	}},
	{Name: "Middleware on a subrouter behind logging", Logged: true, Serve: func(t *testing.T, tr *wsconn.Tracker, log *adaptertest.Logger) string {
		r := mux.NewRouter()
		r.Use(log.Handler)
		ws := r.PathPrefix("/ws").Subrouter()
		ws.Use(wsgorilla.Middleware(tr, wsgorilla.Options{}), log.Handler)
		ws.Handle("/{room}", adaptertest.SelfUpgrading()).Methods(http.MethodGet)
		return adaptertest.Serve(t, log.Handler(r))
	}},
}

// TestEndings: counted on connect; uncounted exactly once on server close,
// client close, TCP reset or FIN without a close frame, and handler panic;
// never negative; also behind wrapping writers.
func TestEndings(t *testing.T) { adaptertest.Endings(t, setups) }

// TestRefusals: 429, 400 and 426 are answered through the adapter, and
// nothing refused is counted.
func TestRefusals(t *testing.T) { adaptertest.Refusals(t, setups) }

// TestRoomSources: Options.Param names another variable; Options.Rooms
// replaces it; a route without the variable joins no room; Tracker rooms
// (wsconn.Options.Rooms) are added to the adapter's.
func TestRoomSources(t *testing.T) {
	t.Parallel()
	o := adaptertest.Options(t)
	o.Rooms = func(r *http.Request) []string { return r.URL.Query()["also"] }
	tr := adaptertest.NewTracker(t, o)
	fromQuery := func(r *http.Request) []string { return r.URL.Query()["r"] }
	r := mux.NewRouter()
	r.Handle("/h/chan/{channel}", wsgorilla.Handler(tr, behave, wsgorilla.Options{Param: "channel"}))
	r.Handle("/h/q/{room}", wsgorilla.Handler(tr, behave, wsgorilla.Options{Rooms: fromQuery}))
	r.Handle("/h/none", wsgorilla.Handler(tr, behave, wsgorilla.Options{}))
	sub := func(prefix string, opts wsgorilla.Options) *mux.Router {
		s := r.PathPrefix(prefix).Subrouter()
		s.Use(wsgorilla.Middleware(tr, opts))
		return s
	}
	sub("/m/chan", wsgorilla.Options{Param: "channel"}).Handle("/{channel}", adaptertest.SelfUpgrading())
	sub("/m/q", wsgorilla.Options{Rooms: fromQuery}).Handle("/{room}", adaptertest.SelfUpgrading())
	sub("/m/none", wsgorilla.Options{}).Handle("", adaptertest.SelfUpgrading())
	base := adaptertest.Serve(t, r)
	for _, form := range []string{"/h", "/m"} {
		adaptertest.InRooms(t, tr, base+form+"/chan/c1?also=x", "c1", "x")
		adaptertest.InRooms(t, tr, base+form+"/q/ignored?r=q1&r=q2", "q1", "q2")
		adaptertest.InRooms(t, tr, base+form+"/none")
	}
}
