package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// sseEvent is one Server-Sent Event of GET /api/events.
type sseEvent struct {
	ID, Kind string
	wsconn.PresenceEvent
}

// subscribe reads GET /api/events?room=... of base until the test ends, and
// sends each event on the channel it returns (closed when the stream ends).
func subscribe(t *testing.T, base string, rooms ...string) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	u := base + "/api/events?" + url.Values{"room": rooms}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		resp.Body.Close()
		t.Fatalf("GET %s: %s, Content-Type %q; want 200 text/event-stream", u, resp.Status, ct)
	}
	ch := make(chan sseEvent, 64)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if data == "" {
					continue // after a comment (keep-alive)
				}
				if err := json.Unmarshal([]byte(data), &ev.PresenceEvent); err != nil {
					t.Errorf("event data %q: %v", data, err)
					return
				}
				select {
				case ch <- ev:
				case <-ctx.Done():
					return
				}
				ev, data = sseEvent{}, ""
			case strings.HasPrefix(line, "id: "):
				ev.ID = line[len("id: "):]
			case strings.HasPrefix(line, "event: "):
				ev.Kind = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				data = line[len("data: "):]
			}
		}
	}()
	return ch
}

// nextEvent returns the next event of ch that match accepts, failing the
// test if none comes by deadline (the events it skipped are in the error).
func nextEvent(t *testing.T, ch <-chan sseEvent, deadline time.Time, what string, match func(sseEvent) bool) sseEvent {
	t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var skipped []string
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("%s: the event stream ended; skipped %v", what, skipped)
			}
			if match(ev) {
				return ev
			}
			skipped = append(skipped, fmt.Sprintf("%+v", ev))
		case <-timer.C:
			t.Fatalf("%s: none by the deadline; skipped %v", what, skipped)
		}
	}
}

// Two nodes on one real Redis: a subscriber of node b's GET /api/events
// gets the room's members, a join on b, and, once node a is SIGKILLed, the
// leave of a user that was on a alone, with reason crashed, within the
// dead-instance threshold plus a heartbeat (plus a second), as wsconn
// promises; and the sweep counts the user out.
func TestEventsCrashedLeave(t *testing.T) {
	bin := buildDemo(t)
	addr := redistest.StandaloneServer(t).Addr()
	const threshold = 2 * time.Second
	const heartbeat = threshold / 3 // the default
	ns := redistest.Prefix(t)
	var procs []*demoProc
	for _, name := range []string{"a", "b"} {
		procs = append(procs, startDemo(t, bin, name, "-addr", "127.0.0.1:0", "-redis", addr,
			"-instance", name, "-threshold", threshold.String(), "-namespace", ns))
	}
	a, b := procs[0].url, procs[1].url

	dial(t, a, "lobby", "zed", "") // on node a only
	events := subscribe(t, b, "lobby")
	snap := nextEvent(t, events, time.Now().Add(10*time.Second), "snapshot", func(e sseEvent) bool { return true })
	if snap.Kind != wsconn.EventSnapshot || snap.Room != "lobby" || snap.Members == nil || snap.Members.Users != 1 ||
		len(snap.Members.Members) != 1 || snap.Members.Members[0] != (wsconn.Member{User: "zed", Connections: 1, Meta: "zed"}) {
		t.Fatalf("first event %+v (members %+v): want lobby's snapshot with zed alone", snap, snap.Members)
	}
	if want := fmt.Sprintf("lobby=%d", snap.Seq); snap.ID != want {
		t.Errorf("snapshot's id %q, want %q", snap.ID, want)
	}

	// A join, on the subscriber's node, with the user's name as metadata.
	dial(t, b, "lobby", "amy", "")
	join := nextEvent(t, events, time.Now().Add(5*time.Second), "amy's join", func(e sseEvent) bool { return e.Kind == wsconn.EventJoin })
	if join.User != "amy" || join.Meta != "amy" || join.Node != "b" || join.Seq <= snap.Seq {
		t.Errorf("join %+v: want amy's, on b, after the snapshot", join)
	}
	// The same, with members=1 on node a: the member list, which plain
	// /api/presence (in the shape of counts only) leaves out.
	body, code, err := get(a + "/api/presence?room=lobby&members=1")
	if err != nil || code != http.StatusOK {
		t.Fatalf("presence with members=1: %d %v %s", code, err, body)
	}
	var withMembers struct {
		RoomUsers map[string]int64          `json:"room_users"`
		Members   map[string]wsconn.Members `json:"members"`
	}
	if err := json.Unmarshal([]byte(body), &withMembers); err != nil || withMembers.RoomUsers["lobby"] != 2 || len(withMembers.Members["lobby"].Members) != 2 {
		t.Errorf("presence with members=1: %s (%v): want lobby's 2 users listed", body, err)
	}
	if body, _, _ := get(a + "/api/presence?room=lobby"); strings.Contains(body, "users") {
		t.Errorf("presence without members=1: %s: want connection counts only", body)
	}

	killed := time.Now()
	procs[0].signal(syscall.SIGKILL)
	within := threshold + heartbeat + time.Second
	leave := nextEvent(t, events, killed.Add(within), "zed's leave (crashed)", func(e sseEvent) bool { return e.Kind == wsconn.EventLeave })
	took := time.Since(killed)
	if leave.User != "zed" || leave.Reason != wsconn.ReasonCrashed || leave.Node != "a" || leave.Room != "lobby" {
		t.Fatalf("leave %+v: want zed's, reason crashed, of node a", leave)
	}
	t.Logf("zed's leave (crashed) came %v after node a's SIGKILL (threshold %v, heartbeat %v)", took.Round(time.Millisecond), threshold, heartbeat)
	if p, err := getPresence(b, "lobby"); err != nil || p.Rooms["lobby"] != (count{1, 1}) {
		t.Errorf("lobby on b after the leave: %+v, %v; want amy's connection alone", p, err)
	}
}

// The page's case: -nodes 2 on the embedded Redis, the stream read through
// the supervisor's proxy from node 1, node 2 crashed with POST
// /node/2/crash; then a stop with the stream still open.
func TestEventsThroughSupervisor(t *testing.T) {
	bin := buildDemo(t)
	const threshold = 2 * time.Second
	sup := startDemo(t, bin, "supervisor", "-nodes", "2", "-addr", "127.0.0.1:0", "-threshold", threshold.String())
	node := func(i int) string { return fmt.Sprintf("%s/node/%d", sup.url, i) }
	alice := dial(t, node(1), "lobby", "alice", "")
	events := subscribe(t, node(1), "lobby")
	if snap := nextEvent(t, events, time.Now().Add(10*time.Second), "snapshot", func(sseEvent) bool { return true }); snap.Kind != wsconn.EventSnapshot || snap.Members.Users != 1 {
		t.Fatalf("first event %+v: want the snapshot of lobby, alice alone", snap)
	}
	dial(t, node(2), "lobby", "bob", "")
	if join := nextEvent(t, events, time.Now().Add(5*time.Second), "bob's join", func(e sseEvent) bool { return e.Kind == wsconn.EventJoin }); join.User != "bob" || join.Node != "node2" {
		t.Fatalf("join %+v: want bob's on node2", join)
	}
	crashed := time.Now()
	resp, err := http.Post(sup.url+"/node/2/crash", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("crash: %v %v", resp, err)
	}
	resp.Body.Close()
	leave := nextEvent(t, events, crashed.Add(threshold+threshold/3+time.Second), "bob's leave (crashed)", func(e sseEvent) bool { return e.Kind == wsconn.EventLeave })
	if leave.User != "bob" || leave.Reason != wsconn.ReasonCrashed {
		t.Fatalf("leave %+v: want bob's, reason crashed", leave)
	}
	t.Logf("bob's leave (crashed) came %v after the crash", time.Since(crashed).Round(time.Millisecond))

	// A stream open does not hold a node's drain up: SIGTERM ends it, and
	// the supervisor and node 1 exit 0 at once.
	go func() { _ = alice.closed() }() // reads, as browsers do, so that the close handshake ends
	start := time.Now()
	sup.signal(syscall.SIGTERM)
	if took := time.Since(start); took > shutdownTimeout/2 {
		t.Errorf("stopping took %v with an event stream open", took)
	}
	for range events {
	}
}
