package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// One node in the test process, on the embedded Redis, so that the race
// detector of go test -race watches the node and the chat hub: concurrent
// chatters, counts, then a drain on cancel.
func TestNodeInProcess(t *testing.T) {
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0", "-instance", "solo", "-lax", "lax"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out lockedBuffer
	done := make(chan error, 1)
	go func() { done <- runNode(ctx, cfg, ln, false, &out, slog.New(slog.DiscardHandler)) }()
	base := "http://" + ln.Addr().String()
	eventually(t, 10*time.Second, "the node answers", func() error {
		_, code, err := get(base + "/api/info")
		if err == nil && code != 200 {
			err = fmt.Errorf("info: %d", code)
		}
		return err
	})
	if s := out.String(); !strings.Contains(s, "embedded Redis (miniredis) on 127.0.0.1:") || !strings.Contains(s, "open "+base+"/") {
		t.Errorf("printed:\n%s", s)
	}

	// Other methods get the handlers' own 405, which names what they take.
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodPost, "/api/presence", "GET, HEAD"},
		{http.MethodPost, "/api/events?room=a", "GET"},
		{http.MethodHead, "/api/events?room=a", "GET"},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tc.allow ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d, Allow %q, %s; want 405, Allow %q, JSON", tc.method, tc.path, resp.StatusCode,
				resp.Header.Get("Allow"), resp.Header.Get("Content-Type"), tc.allow)
		}
	}

	const n, each = 5, 10
	var cs []*chatter
	for i := range n {
		room := "lobby"
		if i == n-1 {
			room = "lax"
		}
		cs = append(cs, dial(t, base, room, fmt.Sprintf("u%d", i), ""))
	}
	eventually(t, 5*time.Second, "counts", func() error {
		return layout{"lobby": {n - 1}, "lax": {1}}.check(map[int]string{0: base})
	})
	var wg sync.WaitGroup
	for _, c := range cs[:n-1] {
		wg.Go(func() {
			for i := range each {
				if err := c.ws.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "%s %d", c.name, i)); err != nil {
					t.Errorf("%s: %v", c.name, err)
					return
				}
			}
		})
	}
	for _, c := range cs[:n-1] {
		for range (n - 1) * each {
			if ev := c.next("message"); ev.Room != "lobby" {
				t.Fatalf("%s got %+v", c.name, ev)
			}
		}
	}
	wg.Wait()
	// A leave is stamped when its user leaves: after what they said last.
	leaver := dial(t, base, "lobby", "leaver", "")
	leaver.say("bye")
	said := cs[0].next("message")
	_ = leaver.ws.Close(websocket.StatusNormalClosure, "")
	if left := cs[0].next("leave"); left.User != "leaver" || left.Time.Before(said.Time) {
		t.Errorf("leave %+v after %+v: want leaver's, stamped after its last message", left, said)
	}

	closed := make(chan error, n)
	for _, c := range cs {
		go func() { closed <- c.closed() }()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runNode after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("runNode did not return within 15s of cancel")
	}
	for range n {
		if err := <-closed; websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("client: %v, want close 1001", err)
		}
	}
}

// A lone node without -instance is named after its host and port, not a
// random UUID; /api/info says so and lists the node's endpoints, which the
// page shows.
func TestLoneNodeNameAndEndpoints(t *testing.T) {
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out lockedBuffer
	done := make(chan error, 1)
	go func() { done <- runNode(ctx, cfg, ln, false, &out, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runNode: %v", err)
		}
	}()
	base := "http://" + ln.Addr().String()
	var in info
	eventually(t, 10*time.Second, "the node answers", func() error {
		body, code, err := get(base + "/api/info")
		if err == nil && code != 200 {
			err = fmt.Errorf("info: %d", code)
		}
		if err == nil {
			err = json.Unmarshal([]byte(body), &in)
		}
		return err
	})
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".")
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if want := host + ":" + port; in.Instance != want || defaultInstance(ln.Addr()) != want {
		t.Errorf("instance %q, want %q (host and port)", in.Instance, want)
	}
	if _, err := uuid.Parse(in.Instance); err == nil {
		t.Errorf("instance %q is a UUID", in.Instance)
	}
	if s := out.String(); !strings.Contains(s, "instance "+in.Instance+",") {
		t.Errorf("printed:\n%s\nwant the instance %s", s, in.Instance)
	}
	if !reflect.DeepEqual(in.Endpoints, nodeEndpoints) {
		t.Errorf("endpoints %+v, want %+v", in.Endpoints, nodeEndpoints)
	}
	// Every endpoint listed without parameters answers.
	for _, e := range nodeEndpoints {
		if e.Method != "GET" || strings.ContainsAny(e.Path, "{?") {
			continue
		}
		if _, code, err := get(base + e.Path); err != nil || code != 200 {
			t.Errorf("GET %s: %d %v", e.Path, code, err)
		}
	}
	// The page has the places for the node's name and the endpoints, and
	// its script fills them from /api/info.
	page, _, _ := get(base + "/")
	script, _, _ := get(base + "/static/app.js")
	for _, want := range []string{`id="node-name"`, `id="endpoints-body"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page has no %s", want)
		}
	}
	for _, want := range []string{`$("node-name").textContent = info.instance`, "info.endpoints", "showEndpoints()"} {
		if !strings.Contains(script, want) {
			t.Errorf("app.js has no %s", want)
		}
	}
}
