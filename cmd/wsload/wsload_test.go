package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// node serves what wsload expects of a node, through a real Tracker.
func node(t *testing.T, ns, id string) string {
	t.Helper()
	tr, err := wsconn.New(redistest.Standalone(t), wsconn.Options{
		Namespace:             ns,
		InstanceID:            id,
		DeadInstanceThreshold: 2 * time.Second,
		Rooms:                 func(r *http.Request) []string { return []string{r.PathValue("room")} },
		Tenant:                func(r *http.Request) string { return r.URL.Query().Get("tenant") },
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{room}", func(w http.ResponseWriter, r *http.Request) {
		c, err := tr.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		// Like a chat node, greet: wsload must not take it for a violation.
		if err := c.WS().Write(r.Context(), websocket.MessageText, []byte("welcome")); err != nil {
			return
		}
		for {
			if _, _, err := c.WS().Read(context.Background()); err != nil {
				return
			}
		}
	})
	mux.Handle("GET /api/presence", tr.PresenceHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		_ = tr.Shutdown(context.Background())
	})
	return srv.URL
}

func TestLoadTwoNodesExact(t *testing.T) {
	ns := redistest.Prefix(t)
	urls := node(t, ns, "n1") + "," + node(t, ns, "n2")
	cfg, err := parseFlags([]string{"-nodes", urls, "-conns", "300", "-rate", "3000", "-rooms", "12", "-settle", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.print(&out)
	t.Log("\n" + out.String())
	if !rep.OK() {
		t.Fatalf("run not exact:\n%s", out.String())
	}
	if rep.OpenCheck.Total != 300 || rep.ClosedCheck.Total != 0 {
		t.Fatalf("expected totals %d open, %d closed", rep.OpenCheck.Total, rep.ClosedCheck.Total)
	}
	if rep.P50ms <= 0 || rep.P99ms < rep.P50ms || rep.ConnectRate <= 0 {
		t.Fatalf("implausible figures: %+v", rep)
	}
}

func TestChurnAndInvalidRooms(t *testing.T) {
	ns := redistest.Prefix(t)
	url := node(t, ns, "n1")
	cfg, err := parseFlags([]string{"-nodes", url, "-conns", "100", "-rate", "1000", "-hold", "50ms", "-rooms", "5"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("churn run: %+v", rep)
	}
	// Room names the node refuses end the run with a clear error.
	cfg.roomPrefix = "bad\x01"
	cfg.conns, cfg.hold = 5, 0
	if _, err := run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("run with invalid room names: %v, want a 400 from the presence read", err)
	}
}

func TestOnlyLoopback(t *testing.T) {
	for _, nodes := range []string{"http://10.1.2.3:8080", "http://192.168.0.1", "ftp://127.0.0.1", "", "http://127.0.0.1:1,http://8.8.8.8:80"} {
		if _, err := parseFlags([]string{"-nodes", nodes}); err == nil {
			t.Errorf("-nodes %q accepted", nodes)
		}
	}
	for _, nodes := range []string{"http://127.0.0.1:8080", "http://[::1]:9000", "http://127.0.0.5:1/base/"} {
		if _, err := parseFlags([]string{"-nodes", nodes}); err != nil {
			t.Errorf("-nodes %q refused: %v", nodes, err)
		}
	}
	for _, args := range [][]string{{"-conns", "0"}, {"-rate", "0"}, {"-rooms", "0"}, {"-hold", "-1s"}, {"extra"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
