package main

// End-to-end tests: the demo binary, built by the test, runs as separate
// processes against real Redis (internal/redistest) or its embedded one,
// and is driven over HTTP and WebSocket as a browser would.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/internal/redistest"
)

// layout is where the test's connections are: room -> connections on each
// node, by node index.
type layout map[string][]int64

// check compares the presence every live node (index -> base URL) reports
// with l: each room's cluster-wide total and the node's own share, and the
// node's total, given that every connection is in exactly one room.
func (l layout) check(bases map[int]string) error {
	rooms := slices.Sorted(maps.Keys(l))
	var all int64
	for _, r := range rooms {
		for _, n := range l[r] {
			all += n
		}
	}
	for i, base := range bases {
		p, err := getPresence(base, rooms...)
		if err != nil {
			return err
		}
		var local int64
		for _, r := range rooms {
			var total int64
			for _, n := range l[r] {
				total += n
			}
			local += l[r][i]
			if want := (count{Total: total, Local: l[r][i]}); p.Rooms[r] != want {
				return fmt.Errorf("node %d: room %q total/local = %v, want %v", i+1, r, p.Rooms[r], want)
			}
		}
		if want := (count{Total: all, Local: local}); p.Total != want {
			return fmt.Errorf("node %d: total/local = %v, want %v", i+1, p.Total, want)
		}
		if len(p.Rooms) != len(rooms) {
			return fmt.Errorf("node %d: rooms %v, want %v", i+1, p.Rooms, rooms)
		}
	}
	return nil
}

// Three nodes on one real Redis: counts on every node, chat across nodes,
// bad names, the tenant cap, a crash reaped within threshold + heartbeat,
// and a SIGTERM whose share is gone at once.
func TestThreeNodes(t *testing.T) {
	bin := buildDemo(t)
	addr := redistest.StandaloneServer(t).Addr()
	const threshold = 2 * time.Second
	const heartbeat = threshold / 3 // the default
	common := []string{"-addr", "127.0.0.1:0", "-threshold", threshold.String(),
		"-tenant-cap", "2", "-lax", "lax-*", "-namespace", redistest.Prefix(t)}
	redisFlag := []string{addr, addr, "redis://" + addr + "/0"} // node 3 through a URL
	nodes := make([]*demoProc, 3)
	bases := map[int]string{}
	for i := range nodes {
		name := fmt.Sprintf("n%d", i+1)
		nodes[i] = startDemo(t, bin, name, append([]string{"-redis", redisFlag[i], "-instance", name}, common...)...)
		bases[i] = nodes[i].url
	}

	body, code, err := get(bases[0] + "/api/presence")
	if want := `{"instance":"n1","total":{"total":0,"local":0},"rooms":{}}`; err != nil || code != 200 || strings.TrimSpace(body) != want {
		t.Fatalf("presence before any connection: %d %s %v; want %s", code, body, err, want)
	}

	alice := dial(t, bases[0], "lobby", "alice", "acme")
	bob := dial(t, bases[0], "lobby", "bob", "")
	carol := dial(t, bases[1], "lobby", "carol", "")
	dave := dial(t, bases[1], "games", "dave", "")
	erin := dial(t, bases[2], "lobby", "erin", "")
	frank := dial(t, bases[2], "lobby", "frank", "")
	dial(t, bases[2], "lax-1", "gina", "acme") // a lax room: seen by the others within a flush
	l := layout{"lobby": {2, 1, 2}, "games": {0, 1, 0}, "lax-1": {0, 0, 1}, "never": {0, 0, 0}}
	// Strict rooms are in Redis once a client has its first message.
	for i, base := range bases {
		p, err := getPresence(base, "lobby", "games")
		if err != nil || p.Rooms["lobby"] != (count{5, l["lobby"][i]}) || p.Rooms["games"] != (count{1, l["games"][i]}) {
			t.Fatalf("node %d right after the handshakes: %+v, %v", i+1, p, err)
		}
	}
	eventually(t, 5*time.Second, "counts on every node", func() error { return l.check(bases) })
	if p, err := getPresence(bases[1]); err != nil || !slices.Equal(slices.Sorted(maps.Keys(p.Rooms)), []string{"games", "lobby"}) {
		t.Fatalf("node 2 without room=: %+v, %v; want its own rooms, games and lobby", p, err)
	}

	t.Run("chat", func(t *testing.T) {
		alice.say("hi all")
		for _, c := range []*chatter{alice, bob, carol, erin, frank} {
			if ev := c.next("message"); ev.Text != "hi all" || ev.User != "alice" || ev.Instance != "n1" || ev.Room != "lobby" {
				t.Fatalf("%s got %+v", c.name, ev)
			}
		}
		// node2 relayed "hi all" (to carol) before this: dave, in games on
		// node2, sees his own message first, not lobby's.
		dave.say("in games")
		if ev := dave.next("message"); ev.Text != "in games" || ev.Room != "games" {
			t.Fatalf("dave got %+v: another room's message", ev)
		}
	})

	t.Run("bad names get 400", func(t *testing.T) {
		for _, tc := range []struct{ room, user, tenant string }{
			{"\x01", "u", ""}, {"", "u", ""}, {strings.Repeat("r", 129), "u", ""},
			{"lobby", "bad\nuser", ""}, {"lobby", "u", "\x7f"},
		} {
			_, resp, err := dialWS(bases[0], tc.room, tc.user, tc.tenant)
			if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Errorf("room %q user %q tenant %q: %v %v, want 400", tc.room, tc.user, tc.tenant, resp, err)
			}
		}
		if _, code, err := get(bases[0] + "/api/presence?room=%01"); code != http.StatusBadRequest {
			t.Errorf("presence of a bad room: %d %v, want 400", code, err)
		}
	})

	t.Run("tenant over its cap gets 429", func(t *testing.T) {
		_, resp, err := dialWS(bases[1], "lobby", "heidi", "acme") // alice and gina have acme's 2
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("third acme connection: %v %v, want 429 with Retry-After", resp, err)
		}
	})
	if t.Failed() {
		return
	}

	// SIGKILL: node3 removes nothing; the survivors reap its connections
	// once it has been unseen for the threshold.
	nodes[2].signal(syscall.SIGKILL)
	delete(bases, 2)
	l = layout{"lobby": {2, 1, 0}, "games": {0, 1, 0}, "lax-1": {0, 0, 0}, "never": {0, 0, 0}}
	took := eventually(t, threshold+heartbeat+time.Second, "node3's connections reaped on nodes 1 and 2",
		func() error { return l.check(bases) })
	t.Logf("node3's connections reaped %v after its SIGKILL (threshold %v, heartbeat %v)", took.Round(time.Millisecond), threshold, heartbeat)
	// ... and its share of acme's cap with them.
	heidi := dial(t, bases[1], "lobby", "heidi", "acme")
	l["lobby"] = []int64{2, 2, 0}
	if err := l.check(bases); err != nil {
		t.Fatal(err)
	}

	// SIGTERM: node2 closes its connections with 1001, removes its share
	// from Redis and exits 0; node1 sees it gone on its very next read.
	closed := make(chan error, 3)
	for _, c := range []*chatter{carol, dave, heidi} {
		go func() { closed <- c.closed() }() // keep reading, as browsers do
	}
	nodes[1].signal(syscall.SIGTERM)
	delete(bases, 1)
	l = layout{"lobby": {2, 0, 0}, "games": {0, 0, 0}, "lax-1": {0, 0, 0}, "never": {0, 0, 0}}
	if err := l.check(bases); err != nil {
		t.Fatalf("right after node2 exited: %v", err)
	}
	for range 3 {
		if err := <-closed; websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("node2's client: %v, want close 1001", err)
		}
	}

	metrics, code, err := get(bases[0] + "/metrics")
	if err != nil || code != 200 || !strings.Contains(metrics, "\nheadcount_connections 2\n") {
		t.Errorf("metrics: %d %v, want headcount_connections 2 (this node's) in:\n%.2000s", code, err, metrics)
	}
}

// -nodes 2 on the embedded Redis (miniredis): the page, the proxy (HTTP
// and WebSocket), crash, restart, and a clean stop of the whole group.
func TestSupervisor(t *testing.T) {
	bin := buildDemo(t)
	const threshold = 2 * time.Second
	sup := startDemo(t, bin, "supervisor", "-nodes", "2", "-addr", "127.0.0.1:0", "-threshold", threshold.String(),
		"-instance", "web-", "-tenant-cap", "1", "-lax", "a/*")
	base := sup.url

	var in info
	infoOf := func() info {
		body, code, err := get(base + "/api/info")
		if err != nil || code != 200 {
			t.Fatalf("info: %d %v %s", code, err, body)
		}
		var i info
		if err := json.Unmarshal([]byte(body), &i); err != nil {
			t.Fatal(err)
		}
		return i
	}
	in = infoOf()
	if in.Redis != "embedded" || len(in.Nodes) != 2 || in.Nodes[0].Instance != "web-1" || in.Nodes[1].State != stateUp || in.ThresholdMS != 2000 {
		t.Fatalf("info %+v", in)
	}
	if !reflect.DeepEqual(in.Endpoints, supervisorEndpoints) {
		t.Errorf("supervisor's endpoints %+v, want %+v", in.Endpoints, supervisorEndpoints)
	}
	for _, path := range []string{"/", "/static/app.js", "/static/style.css", "/node/2/"} {
		if body, code, err := get(base + path); err != nil || code != 200 || len(body) == 0 {
			t.Errorf("GET %s: %d %v", path, code, err)
		}
	}

	node := func(i int) string { return fmt.Sprintf("%s/node/%d", base, i) }
	a := dial(t, node(1), "lobby", "a", "")
	b := dial(t, node(2), "lobby", "b", "")
	// An escaped room name survives the proxy; the room is lax (-lax a/*).
	dial(t, node(2), "a/b", "c", "acme")
	a.say("hello")
	if ev := b.next("message"); ev.Text != "hello" || ev.Instance != "web-1" {
		t.Fatalf("b got %+v", ev)
	}
	eventually(t, 5*time.Second, "node 1's presence", func() error {
		p, err := getPresence(node(1), "lobby", "a/b")
		if err == nil && (p.Instance != "web-1" || p.Rooms["lobby"] != count{2, 1} || p.Rooms["a/b"] != count{1, 0}) {
			err = fmt.Errorf("presence %+v", p)
		}
		return err
	})
	if _, resp, err := dialWS(node(1), "x", "d", "acme"); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second acme connection with -tenant-cap 1: %v %v, want 429", resp, err)
	}

	// The supervisor's /metrics: its own, and every node's, labelled.
	metricsHas := func(what string, lines ...string) {
		t.Helper()
		body, code, err := get(base + "/metrics")
		if err != nil || code != 200 {
			t.Fatalf("supervisor /metrics %s: %d %v", what, code, err)
		}
		for _, l := range lines {
			if !strings.Contains(body, "\n"+l+"\n") {
				t.Errorf("supervisor /metrics %s: no line %q in:\n%.3000s", what, l, body)
			}
		}
	}
	metricsHas("with both nodes up",
		`headcount_demo_node_up{node="web-1"} 1`, `headcount_demo_node_up{node="web-2"} 1`,
		`headcount_connections{node="web-1"} 1`, `headcount_connections{node="web-2"} 2`,
		`headcount_cluster_connections{node="web-1"} 3`, `headcount_cluster_connections{node="web-2"} 3`,
		`headcount_cluster_room_connections{node="web-2",room="a/b"} 1`,
		`# TYPE go_goroutines gauge`)

	post := func(path string) int {
		resp, err := http.Post(base+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/node/2/crash", "/node/2/restart"} {
		resp, err := http.Get(base + path) // not proxied to the node's own path
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
			t.Errorf("GET %s: %d, Allow %q; want 405, POST", path, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	if _, code, _ := get(base + "/node/02/api/info"); code != http.StatusNotFound {
		t.Errorf("node 02: %d, want 404", code)
	}
	if code := post("/node/2/crash"); code != 200 {
		t.Fatalf("crash: %d", code)
	}
	if in = infoOf(); in.Nodes[1].State != stateCrashed {
		t.Fatalf("after crash: %+v", in.Nodes[1])
	}
	if err := b.closed(); err == nil {
		t.Fatal("b still connected to a crashed node")
	}
	if _, code, _ := get(node(2) + "/api/presence"); code != http.StatusBadGateway {
		t.Errorf("presence of a crashed node: %d, want 502", code)
	}
	if code := post("/node/2/crash"); code != http.StatusConflict {
		t.Errorf("crash of a crashed node: %d, want 409", code)
	}
	metricsHas("with node 2 crashed", `headcount_demo_node_up{node="web-1"} 1`, `headcount_demo_node_up{node="web-2"} 0`)
	if body, _, _ := get(base + "/metrics"); strings.Contains(body, `headcount_connections{node="web-2"}`) {
		t.Errorf("supervisor /metrics has a crashed node's connections")
	}
	took := eventually(t, threshold+threshold/3+time.Second, "web-2's connections reaped on the embedded Redis", func() error {
		p, err := getPresence(node(1), "lobby", "a/b")
		if err == nil && (p.Rooms["lobby"] != count{1, 1} || p.Rooms["a/b"] != count{} || p.Total != count{1, 1}) {
			err = fmt.Errorf("presence %+v", p)
		}
		return err
	})
	t.Logf("reaped %v after the crash", took.Round(time.Millisecond))
	d := dial(t, node(1), "x", "d", "acme") // the crashed node's share of the cap is freed

	if code := post("/node/2/restart"); code != 200 {
		t.Fatalf("restart: %d", code)
	}
	if _, code, err := get(node(2) + "/api/info"); code != 200 { // restart answers once the node does
		t.Errorf("right after its restart, node 2 answers %d %v", code, err)
	}
	if code := post("/node/2/restart"); code != http.StatusConflict {
		t.Errorf("restart of a running node: %d, want 409", code)
	}
	eventually(t, 10*time.Second, "web-2 back", func() error {
		p, err := getPresence(node(2), "lobby")
		if err == nil && (p.Instance != "web-2" || p.Rooms["lobby"] != count{1, 0}) {
			err = fmt.Errorf("presence %+v", p)
		}
		return err
	})

	pids := []int{}
	for _, n := range infoOf().Nodes {
		pids = append(pids, n.PID)
	}
	closed := make(chan error, 2)
	for _, c := range []*chatter{a, d} {
		go func() { closed <- c.closed() }()
	}
	start := time.Now()
	sup.signal(syscall.SIGTERM)
	t.Logf("the supervisor and its nodes stopped in %v", time.Since(start).Round(time.Millisecond))
	for range 2 {
		if err := <-closed; websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("node 1's client: %v, want close 1001", err)
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("node pid %d still there after the supervisor exited: %v", pid, err)
		}
	}
}

// -redis with several addresses: a Redis Cluster.
func TestRedisCluster(t *testing.T) {
	bin := buildDemo(t)
	seeds := strings.Join(redistest.ClusterAddrs(t), ",")
	ns := redistest.Prefix(t)
	var bases []string
	for i := range 2 {
		n := startDemo(t, bin, fmt.Sprintf("c%d", i+1), "-addr", "127.0.0.1:0", "-redis", seeds, "-namespace", ns, "-threshold", "3s")
		bases = append(bases, n.url)
	}
	a := dial(t, bases[0], "lobby", "a", "t1")
	b := dial(t, bases[1], "lobby", "b", "t2")
	dial(t, bases[1], "other", "c", "t3")
	for i, base := range bases {
		p, err := getPresence(base, "lobby", "other")
		if err != nil || p.Rooms["lobby"] != (count{2, 1}) || p.Rooms["other"].Total != 1 || p.Total.Total != 3 {
			t.Fatalf("node %d: %+v, %v", i+1, p, err)
		}
	}
	b.say("over the cluster")
	if ev := a.next("message"); ev.Text != "over the cluster" {
		t.Fatalf("a got %+v", ev)
	}
}
