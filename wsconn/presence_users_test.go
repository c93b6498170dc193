package wsconn

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// presenceOptions are testOptions with presence on: metadata from name=.
func presenceOptions(ns, id string, lax bool) Options {
	o := testOptions(ns, id)
	o.Presence = &PresenceOptions{
		Metadata: func(r *http.Request) string { return r.URL.Query().Get("name") },
		Visible:  func(*http.Request, string, string) bool { return true },
	}
	o.Lax = lax
	if lax {
		o.LaxRooms = func(string) bool { return true }
	}
	return o
}

// recorder collects a Watch's events.
type recorder struct {
	mu  sync.Mutex
	evs []PresenceEvent
}

func (r *recorder) add(e PresenceEvent) error {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
	return nil
}

func (r *recorder) all() []PresenceEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

func watch(t *testing.T, tr *Tracker, rooms ...string) *recorder {
	t.Helper()
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Watch(ctx, rooms, nil, rec.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	eventually(t, settleDeadline, "snapshots", func() (bool, string) {
		n := 0
		for _, e := range rec.all() {
			if e.Kind == EventSnapshot {
				n++
			}
		}
		return n == len(slices.Compact(slices.Sorted(slices.Values(rooms)))), fmt.Sprint(n) // a snapshot per room
	})
	return rec
}

// membersOn reads room's whole member list on tr as user -> connections,
// checking each user's metadata.
func membersOn(ctx context.Context, tr *Tracker, room string) (map[string]int64, error) {
	got := map[string]int64{}
	cursor := ""
	for {
		p, err := tr.Members(ctx, room, cursor, 2)
		if err != nil {
			return nil, err
		}
		for _, m := range p.Members {
			if m.Meta != "name of "+m.User {
				return nil, fmt.Errorf("%s: %s has metadata %q", room, m.User, m.Meta)
			}
			got[m.User] = m.Connections
		}
		if cursor = p.Next; cursor == "" {
			return got, nil
		}
	}
}

// TestUsersAcrossNodes: users with several tabs on three nodes, strict and
// lax, in rooms on every master: every node reads the same distinct users
// per room, tenant and overall, and member lists with connection counts
// and metadata. When one node is killed, within threshold + heartbeat + 1s
// (the sweep's promise) every node reads the others' users only, and each
// user whose last connection in a room was there has left it with reason
// crashed, exactly once; no user connected elsewhere leaves.
func TestUsersAcrossNodes(t *testing.T) {
	t.Parallel()
	for _, lax := range []bool{false, true} {
		t.Run(map[bool]string{false: "strict", true: "lax"}[lax], func(t *testing.T) {
			t.Parallel()
			redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
				usersAcrossNodes(t, c, lax)
			})
		})
	}
}

func usersAcrossNodes(t *testing.T, c redis.UniversalClient, lax bool) {
	ns := redistest.Prefix(t)
	nodes := startNodes(t, c, 3, func(i int) Options { return presenceOptions(ns, fmt.Sprintf("n%d", i), lax) }, nil)
	rooms := []string{"a", "b{x}", "c:é", "d", "e", "f"} // several tags: every master of 3
	// tabs[user] = node per tab, all in the user's rooms.
	type tab struct {
		user, room string
		node       int
	}
	tabs := []tab{
		{"ann", "a", 0}, {"ann", "a", 1}, {"ann", "b{x}", 0}, // ann: a on 0 and 1, b{x} on 0 only
		{"bob", "a", 0}, {"bob", "a", 0}, // bob: two tabs, both on 0
		{"c%3A}", "c:é", 2}, {"c%3A}", "d", 0}, {"c%3A}", "e", 1},
		{"dee", "f", 1}, {"dee", "f", 2},
	}
	rec := watch(t, nodes[2].tr, rooms...)
	for _, tb := range tabs {
		q := "?room=" + urlq(tb.room) + "&user=" + urlq(tb.user) + "&tenant=acme&name=" + urlq("name of "+tb.user)
		cl := mustDial(t, nodes[tb.node].url+q)
		t.Cleanup(func() { _ = cl.WS.CloseNow() })
	}
	want := func(dead int) map[string]map[string]int64 {
		out := map[string]map[string]int64{}
		for _, r := range rooms {
			out[r] = map[string]int64{}
		}
		for _, tb := range tabs {
			if tb.node != dead {
				out[tb.room][tb.user]++
			}
		}
		return out
	}
	check := func(dead int) (bool, string) {
		w := want(dead)
		for i, n := range nodes {
			if i == dead {
				continue
			}
			ctx := ctxT(t)
			users, err := n.tr.RoomUsers(ctx, rooms...)
			if err != nil {
				return false, err.Error()
			}
			for _, r := range rooms {
				got, err := membersOn(ctx, n.tr, r)
				if err != nil {
					return false, err.Error()
				}
				if !maps.Equal(got, w[r]) || users[r] != int64(len(w[r])) {
					return false, fmt.Sprintf("node %d room %q: members %v, users %d; want %v", i, r, got, users[r], w[r])
				}
			}
			online := map[string]bool{}
			for _, tb := range tabs {
				if tb.node != dead {
					online[tb.user] = true
				}
			}
			o, err := n.tr.OnlineUsers(ctx)
			if err != nil {
				return false, err.Error()
			}
			tu, err := n.tr.TenantUsers(ctx, "acme")
			if err != nil {
				return false, err.Error()
			}
			if o != int64(len(online)) || tu["acme"] != int64(len(online)) {
				return false, fmt.Sprintf("node %d: online %d, tenant %d; want %d", i, o, tu["acme"], len(online))
			}
		}
		return true, ""
	}
	// Strict: exact as soon as the dials returned; lax: within a flush.
	eventually(t, 2*time.Second, "presence on every node", func() (bool, string) { return check(-1) })
	before := len(rec.all())

	// Wanted crashed leaves: a room's users whose every tab was on node 0.
	var wantLeft []string
	w0, w := want(-1), want(0)
	for _, r := range rooms {
		for u := range w0[r] {
			if _, stays := w[r][u]; !stays {
				wantLeft = append(wantLeft, r+"/"+u)
			}
		}
	}
	slices.Sort(wantLeft)
	if len(wantLeft) == 0 {
		t.Fatal("no user had its last tab of a room on the killed node: the test proves nothing")
	}
	nodes[0].tr.kill()
	// Counts, lists and the leave events all within the sweep's promise.
	eventually(t, reapDeadline, "presence and crashed leaves after the kill", func() (bool, string) {
		if ok, got := check(0); !ok {
			return false, got
		}
		var left []string
		for _, e := range rec.all()[before:] {
			if e.Kind == EventLeave {
				if e.Reason != ReasonCrashed || e.Node != "n0" {
					return false, fmt.Sprintf("leave %+v", e)
				}
				left = append(left, e.Room+"/"+e.User)
			}
		}
		slices.Sort(left)
		return slices.Equal(left, wantLeft), fmt.Sprintf("leaves %q, want %q", left, wantLeft)
	})
	for _, e := range rec.all()[before:] {
		if e.Kind == EventJoin || e.Kind == EventOccupied || e.Kind == EventSnapshot {
			t.Errorf("unexpected event after the kill: %+v", e)
		}
	}
}

func urlq(s string) string {
	return strings.NewReplacer("%", "%25", "&", "%26", "+", "%2B", " ", "%20", "#", "%23", "{", "%7B", "}", "%7D").Replace(s)
}

// TestPresenceHandlerManyLocalRooms: without parameters the JSON handler
// lists this node's rooms, however many: the cap on names is for the names
// a request asks about.
func TestPresenceHandlerManyLocalRooms(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	tr := newTracker(t, c, testOptions(redistest.Prefix(t), "a"))
	const rooms = maxPresenceNames + 1
	for i := range rooms {
		l, err := tr.Admit(ctxT(t), WithRooms(httptest.NewRequest(http.MethodGet, "/", nil), fmt.Sprintf("r%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release()
	}
	rec := httptest.NewRecorder()
	tr.PresenceHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	var p struct {
		Rooms map[string]Count `json:"rooms"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &p); rec.Code != http.StatusOK || err != nil || len(p.Rooms) != rooms {
		t.Fatalf("status %d, %d rooms (%v), want 200 and %d: %.200s", rec.Code, len(p.Rooms), err, rooms, rec.Body.String())
	}
}

// TestOnlineUsersSpreadOverMasters: the users overall are counted in
// groups spread over the cluster's masters, not all on the global count's
// one, and OnlineUsers adds them up exactly, also as users leave.
func TestOnlineUsersSpreadOverMasters(t *testing.T) {
	t.Parallel()
	c := redistest.Cluster(t)
	ns := redistest.Prefix(t)
	a := newTracker(t, c, presenceOptions(ns, "a", false))
	b := newTracker(t, c, presenceOptions(ns, "b", false))
	const users = 60
	var leases []*Lease
	for i := range users {
		for _, tr := range []*Tracker{a, b} { // each user on both nodes
			l, err := tr.Admit(ctxT(t), httptest.NewRequest("GET", fmt.Sprintf("/?user=u%d", i), nil))
			if err != nil {
				t.Fatal(err)
			}
			leases = append(leases, l)
		}
	}
	// Release does not wait on Redis: its change lands within a round trip
	// or two, well inside settleDeadline.
	onlineIs := func(want int64) {
		t.Helper()
		eventually(t, settleDeadline, fmt.Sprintf("%d users online", want), func() (bool, string) {
			for _, tr := range []*Tracker{a, b} {
				if got, err := tr.OnlineUsers(ctxT(t)); err != nil || got != want {
					return false, fmt.Sprintf("OnlineUsers = %d, %v", got, err)
				}
			}
			return true, ""
		})
	}
	onlineIs(users)

	// Every master holds some users' keys of the users overall.
	pattern := "hc:*{" + ns + ":" + onlineKeyPrefix + "*"
	var mu sync.Mutex
	var perMaster []int
	err := c.ForEachMaster(ctxT(t), func(ctx context.Context, m *redis.Client) error {
		keys, err := m.Keys(ctx, pattern).Result()
		mu.Lock()
		perMaster = append(perMaster, len(keys))
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(perMaster) != 3 || slices.Contains(perMaster, 0) {
		t.Fatalf("keys of the users overall per master: %v, want some on each of 3", perMaster)
	}

	// Node a's tabs go: every user stays; then b's: every user leaves.
	for i, l := range leases {
		if i%2 == 0 {
			l.Release()
		}
	}
	onlineIs(users)
	for i, l := range leases {
		if i%2 == 1 {
			l.Release()
			if i == users-1 { // b's tabs of the first half of the users
				onlineIs(users / 2)
			}
		}
	}
	onlineIs(0)
}

// TestMetadataOfLatestConnection: a user's metadata in the member list is
// the one its latest connection set, an empty one included, and a
// connection closing leaves it as it is; strict and lax.
func TestMetadataOfLatestConnection(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	for _, lax := range []bool{false, true} {
		t.Run(fmt.Sprintf("lax=%v", lax), func(t *testing.T) {
			t.Parallel()
			tr := newTracker(t, c, presenceOptions(redistest.Prefix(t), "n0", lax))
			admit := func(name string) *Lease {
				t.Helper()
				l, err := tr.Admit(ctxT(t), httptest.NewRequest(http.MethodGet, "/?room=r&user=ann&name="+urlq(name), nil))
				if err != nil {
					t.Fatalf("Admit(%q): %v", name, err)
				}
				return l
			}
			// A lax change reaches Redis with the next flush: poll.
			metaIs := func(want string, conns int64) {
				t.Helper()
				eventually(t, 5*time.Second, fmt.Sprintf("ann listed with %d connections and %q", conns, want), func() (bool, string) {
					p, err := tr.Members(ctxT(t), "r", "", 10)
					if err != nil {
						return false, err.Error()
					}
					if len(p.Members) != 1 || p.Members[0].User != "ann" || p.Members[0].Meta != want || p.Members[0].Connections != conns {
						return false, fmt.Sprintf("%+v", p.Members)
					}
					return true, ""
				})
			}
			first := admit("Old name")
			metaIs("Old name", 1)
			second := admit("")
			metaIs("", 2)
			second.Release() // a connection out leaves the metadata as it is
			metaIs("", 1)
			third := admit("New name")
			metaIs("New name", 2)
			first.Release()
			third.Release()
			eventually(t, 5*time.Second, "ann gone", func() (bool, string) {
				p, err := tr.Members(ctxT(t), "r", "", 10)
				return err == nil && p.Users == 0, fmt.Sprintf("%+v %v", p, err)
			})
			// Back with no metadata: the old one does not come back with it.
			defer admit("").Release()
			metaIs("", 1)
		})
	}
}
