package wsconn

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/redistest"
)

// admitUser counts a connection of user in rooms through Admit (no
// WebSocket needed) and returns its lease.
func admitUser(t *testing.T, tr *Tracker, user string, rooms ...string) *Lease {
	t.Helper()
	q := url.Values{"user": {user}, "room": rooms, "name": {"name of " + user}}
	l, err := tr.Admit(ctxT(t), httptest.NewRequest(http.MethodGet, "/?"+q.Encode(), nil))
	if err != nil {
		t.Fatalf("Admit(%s): %v", user, err)
	}
	return l
}

// changes returns the events other than snapshots, as strings, room by
// room (rooms are independent: only each room's order is promised).
func changes(evs []PresenceEvent, after int64) []string {
	var out []string
	for _, e := range evs {
		if e.Kind != EventSnapshot && e.Seq > after {
			out = append(out, fmt.Sprintf("%s#%d %s %s %s", e.Room, e.Seq, e.Kind, e.User, e.Reason))
		}
	}
	slices.SortStableFunc(out, func(a, b string) int {
		ra, _, _ := strings.Cut(a, "#")
		rb, _, _ := strings.Cut(b, "#")
		return strings.Compare(ra, rb)
	})
	return out
}

// churn makes users join and leave room on tr: n joins, then n leaves,
// and waits until Redis has them all. (A leave and a join of one user on
// one node that ride in the same commit cancel out, and neither is
// announced: waiting keeps each churn's events its own.)
func churn(t *testing.T, tr *Tracker, room string, n int) {
	t.Helper()
	var ls []*Lease
	for i := range n {
		ls = append(ls, admitUser(t, tr, fmt.Sprintf("u%d", i), room))
	}
	for _, l := range ls {
		l.Release()
	}
	eventually(t, settleDeadline, "the leaves in Redis", func() (bool, string) {
		n, err := tr.RoomUsers(ctxT(t), room)
		return err == nil && n[room] == 0, fmt.Sprint(n, err)
	})
}

// TestWatchResumesAfterCut: a subscriber whose Redis link stalls and is then
// cut (its subscription loses what was published meanwhile) delivers the
// same events, in the same order, with the same sequences, as a subscriber
// that was never cut (the recorded model): the missed ones come from the
// history Redis keeps. A second subscriber stopped and started again with
// the last sequence it saw (from) continues with no gap and no duplicate.
func TestWatchResumesAfterCut(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ns := redistest.Prefix(t)
		rooms := []string{"lobby", "den{2}"}
		prod := newTracker(t, c, presenceOptions(ns, "producer", false))
		model := watch(t, prod, rooms...)

		var addrs []string
		var proxies []*faultproxy.Proxy
		srvAddrs := []string{}
		switch cc := c.(type) {
		case *redis.Client:
			srvAddrs = append(srvAddrs, cc.Options().Addr)
		case *redis.ClusterClient:
			// Only the standalone client can be proxied simply (a Cluster
			// client learns node addresses from Redis); the cluster run
			// covers resuming from a sequence below.
		}
		for _, a := range srvAddrs {
			p, err := faultproxy.New(a)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Close() })
			proxies = append(proxies, p)
			addrs = append(addrs, p.Addr())
		}
		var cut *recorder
		var sub *Tracker
		if len(addrs) == 1 {
			pc := redis.NewClient(&redis.Options{Addr: addrs[0], MaxRetries: -1})
			t.Cleanup(func() { _ = pc.Close() })
			o := presenceOptions(ns, "cut", false)
			o.RedisTimeout = 300 * time.Millisecond
			sub = newTracker(t, pc, o)
			cut = watch(t, sub, rooms...)
		}
		churn(t, prod, rooms[0], 3)
		if cut != nil {
			proxies[0].Stall(true)
		}
		churn(t, prod, rooms[0], 4)
		churn(t, prod, rooms[1], 2)
		if cut != nil {
			// The subscriber's link is stalled: its reads time out.
			if _, err := sub.RoomUsers(ctxT(t), rooms[0]); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("RoomUsers through the stalled link: %v, want ErrUnavailable", err)
			}
			proxies[0].CutAll()
			proxies[0].Stall(false)
		}
		churn(t, prod, rooms[1], 1)
		want := func() []string { return changes(model.all(), 0) }
		eventually(t, settleDeadline, "the model's events", func() (bool, string) {
			// churn(n) is n joins, n leaves, occupied and vacated.
			return len(want()) == (2*3+2)+(2*4+2)+(2*2+2)+(2*1+2), fmt.Sprint(want())
		})
		if cut != nil {
			eventually(t, 10*time.Second, "the cut subscriber's events", func() (bool, string) {
				got := changes(cut.all(), 0)
				return slices.Equal(got, want()), fmt.Sprintf("%q\nwant %q", got, want())
			})
			for _, e := range cut.all()[2:] {
				if e.Kind == EventSnapshot {
					t.Fatalf("a new snapshot %+v: the history held every missed event", e)
				}
			}
		}

		// Resume from a sequence: stop at the first room's seq, churn, go on.
		ctx, stop := context.WithCancel(ctxT(t))
		first := &recorder{}
		done := make(chan error, 1)
		go func() { done <- prod.Watch(ctx, rooms, nil, first.add) }()
		eventually(t, settleDeadline, "snapshots", func() (bool, string) { return len(first.all()) == 2, fmt.Sprint(first.all()) })
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		from := map[string]int64{}
		for _, e := range first.all() {
			from[e.Room] = e.Seq
		}
		churn(t, prod, rooms[0], 2)
		churn(t, prod, rooms[1], 2)
		second := &recorder{}
		ctx, stop = context.WithCancel(ctxT(t))
		defer stop()
		go func() { done <- prod.Watch(ctx, rooms, from, second.add) }()
		eventually(t, settleDeadline, "resumed events", func() (bool, string) {
			var w []string
			for _, e := range model.all() {
				if e.Kind != EventSnapshot && e.Seq > from[e.Room] {
					w = append(w, fmt.Sprintf("%s#%d %s %s %s", e.Room, e.Seq, e.Kind, e.User, e.Reason))
				}
			}
			got := changes(second.all(), 0)
			slices.Sort(got) // seqs of one room are equally long: sorted is in order
			slices.Sort(w)
			return len(w) == 2*(2*2+2) && slices.Equal(got, w), fmt.Sprintf("%q\nwant %q", got, w)
		})
		last := map[string]int64{}
		for _, e := range second.all() {
			if e.Kind == EventSnapshot {
				t.Fatalf("resumed with a snapshot %+v", e)
			}
			if e.Seq != from[e.Room]+1 && e.Seq != last[e.Room]+1 {
				t.Fatalf("room %s: seq %d after %d", e.Room, e.Seq, max(last[e.Room], from[e.Room]))
			}
			last[e.Room] = e.Seq
		}
	})
}

// TestGraceSuppressesReload: with a grace period, a user's leave followed
// by a join within it (a reload, here onto another node) emits neither,
// and the member list keeps the user; a user who does not come back leaves
// once the grace is over, and only then.
func TestGraceSuppressesReload(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	const grace = 2 * time.Second
	opts := func(id string) Options {
		o := presenceOptions(ns, id, false)
		o.Presence.Grace = grace
		return o
	}
	a, b := newTracker(t, c, opts("a")), newTracker(t, c, opts("b"))
	rec := watch(t, b, "room")
	ann, bob := admitUser(t, a, "ann", "room"), admitUser(t, a, "bob", "room")
	eventually(t, settleDeadline, "joins", func() (bool, string) {
		return len(changes(rec.all(), 0)) == 3, fmt.Sprint(changes(rec.all(), 0))
	})
	ann.Release()
	bob.Release()
	left := time.Now()
	admitUser(t, b, "ann", "room") // ann reloads onto b within the grace
	if d := time.Since(left); d > grace/2 {
		t.Fatalf("the reload took %v, not well within the grace of %v: the test proves nothing", d, grace)
	}
	eventually(t, grace+2*time.Second, "bob's leave", func() (bool, string) {
		ch := changes(rec.all(), 0)
		return len(ch) == 4, fmt.Sprint(ch)
	})
	if since := time.Since(left); since < grace {
		t.Fatalf("bob left after %v, before the grace of %v", since, grace)
	}
	ch := changes(rec.all(), 0)
	if !strings.Contains(ch[3], "leave bob closed") {
		t.Fatalf("events %q: want bob's leave last", ch)
	}
	m, err := b.Members(ctxT(t), "room", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if m.Users != 1 || len(m.Members) != 1 || m.Members[0].User != "ann" || m.Members[0].Connections != 1 {
		t.Fatalf("members %+v: want ann alone, with her one connection", m)
	}
	// Nothing else comes: ann's held leave was taken by her join.
	time.Sleep(grace) // the window in which a wrongly held leave would fire
	if ch := changes(rec.all(), 0); len(ch) != 4 {
		t.Fatalf("events %q: want no more after bob's leave", ch)
	}
}

// TestPresenceVisibility: member lists and events are refused (403, no
// data) without PresenceOptions.Visible, and for any name it refuses, on the
// JSON and the SSE handler alike; the refusal comes before any Redis call
// (Redis here is stalled: a call would answer 503 after RedisTimeout).
func TestPresenceVisibility(t *testing.T) {
	t.Parallel()
	pc, p := faultproxy.Redis(t)
	ns := redistest.Prefix(t)
	open := presenceOptions(ns, "open", false)
	open.Presence.Visible = nil
	closed := presenceOptions(ns, "closed", false)
	closed.CountUsers = true
	closed.Presence.Visible = func(r *http.Request, kind, name string) bool {
		return r.Header.Get("X-User") == "staff" || kind == "room" && name == "public"
	}
	trOpen, trClosed := newTracker(t, pc, open), newTracker(t, pc, closed)
	p.Stall(true)
	defer p.Stall(false)
	for _, tc := range []struct {
		name string
		h    http.Handler
		path string
	}{
		{"json without Visible", trOpen.PresenceHandler(), "/?room=public&members=1"},
		{"sse without Visible", trOpen.EventsHandler(), "/?room=public"},
		{"json refused room", trClosed.PresenceHandler(), "/?room=public&room=secret&members=1"},
		{"json refused user", trClosed.PresenceHandler(), "/?room=public&user=ann"},
		{"sse refused room", trClosed.EventsHandler(), "/?room=public&room=secret"},
	} {
		rr := httptest.NewRecorder()
		start := time.Now()
		tc.h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rr.Code != http.StatusForbidden {
			t.Errorf("%s: %d %s, want 403", tc.name, rr.Code, rr.Body)
		}
		if strings.Contains(rr.Body.String(), "members") || strings.Contains(rr.Body.String(), "seq") {
			t.Errorf("%s: body %s carries data", tc.name, rr.Body)
		}
		if d := time.Since(start); d > closed.RedisTimeout/2 {
			t.Errorf("%s: answered after %v: it waited on Redis", tc.name, d)
		}
	}
}

// TestPresenceHandlerBadQuery: a bad PresenceHandler query gets 400 before
// Visible is asked and before any Redis call (Redis stalls here), and
// members=1 is bounded by the request, not by the node's rooms.
func TestPresenceHandlerBadQuery(t *testing.T) {
	t.Parallel()
	pc, p := faultproxy.Redis(t)
	o := presenceOptions(redistest.Prefix(t), "a", false)
	var asked atomic.Int64
	o.Presence.Visible = func(*http.Request, string, string) bool { asked.Add(1); return true }
	tr := newTracker(t, pc, o)
	p.Stall(true)
	defer p.Stall(false)
	// rooms(n) names n rooms, each of them twice.
	rooms := func(n int) string {
		q := ""
		for i := range 2 * n {
			q += fmt.Sprintf("room=r%d&", i%n)
		}
		return q
	}
	for _, path := range []string{
		"/?room=%01", // control character
		"/?room=ok&tenant=" + strings.Repeat("t", MaxNameLen+1),
		"/?members=1", // no room: not every room of the node
		"/?room=a&members=1&limit=0",
		"/?room=a&members=1&limit=" + fmt.Sprint(MaxMembersPage+1),
		"/?" + rooms(11) + "members=1&limit=1000", // 11 rooms of 1,000 members
		"/?room=a&cursor=x",                  // a cursor without members=1
		"/?room=a&room=b&members=1&cursor=x", // a cursor for two rooms
		"/?room=a&members=1&cursor=" + strings.Repeat("c", 4*MaxNameLen),
	} {
		rr := httptest.NewRecorder()
		start := time.Now()
		tr.PresenceHandler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
		if rr.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", path, rr.Code, rr.Body)
		}
		if d := time.Since(start); d > o.RedisTimeout/2 {
			t.Errorf("%s: answered after %v: it waited on Redis", path, d)
		}
	}
	// A malformed query is refused whole, by both handlers, not answered
	// for the pairs that can be read (room=%zz would read the node's
	// rooms).
	for _, path := range []string{"/?room=%zz", "/?room=a&room=b;c", "/?room=a&members=1&limit=%zz"} {
		for name, h := range map[string]http.Handler{"presence": tr.PresenceHandler(), "events": tr.EventsHandler()} {
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
			if rr.Code != http.StatusBadRequest || !strings.Contains(rr.Body.String(), "malformed query") {
				t.Errorf("%s %s: %d %s, want 400, malformed query", name, path, rr.Code, rr.Body)
			}
		}
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("Visible asked %d times about bad queries", n)
	}
	// A repeated room counts once: 10 rooms of 1,000 are within the bound,
	// so this one goes on to Visible (and to Redis, which its ended
	// context leaves unanswered).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rr := httptest.NewRecorder()
	tr.PresenceHandler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/?"+rooms(10)+"members=1&limit=1000", nil).WithContext(ctx))
	if rr.Code == http.StatusBadRequest || asked.Load() != 10 {
		t.Errorf("10 rooms asked twice each: %d %s, Visible asked %d times, want 10", rr.Code, rr.Body, asked.Load())
	}
}

// TestDrainKeepsHeldLeavesClosed: a leave the grace held back when Drain
// begins is sent at once, with the reason it had (closed: the user went
// before the drain); the users Drain disconnects leave as drained.
func TestDrainKeepsHeldLeavesClosed(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	o := presenceOptions(ns, "a", false)
	o.Presence.Grace = time.Minute // only Drain sends ann's leave
	a, b := newTracker(t, c, o), newTracker(t, c, presenceOptions(ns, "b", false))
	rec := watch(t, b, "room")
	ann, bob := admitUser(t, a, "ann", "room"), admitUser(t, a, "bob", "room")
	go func() {
		<-bob.Context().Done() // Drain asks bob's owner to close
		bob.Release()
	}()
	ann.Release()
	eventually(t, settleDeadline, "the joins", func() (bool, string) {
		return len(changes(rec.all(), 0)) == 3, fmt.Sprint(changes(rec.all(), 0))
	})
	if err := a.Drain(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	want := []string{"leave ann closed", "leave bob drained", "vacated  drained"}
	eventually(t, settleDeadline, "the leaves", func() (bool, string) {
		ch := changes(rec.all(), 0)
		if len(ch) != 6 {
			return false, fmt.Sprint(ch)
		}
		for i, w := range want {
			if !strings.HasSuffix(ch[3+i], w) {
				return false, fmt.Sprint(ch)
			}
		}
		return true, ""
	})
}

// TestEventsEndedBeforeFirstEvent: a stream that EndStreams ends while its
// first snapshot waits on Redis (stalled here) answers an empty 200 event
// stream, which a browser's EventSource reconnects from, not an error
// status, after which it would give up.
func TestEventsEndedBeforeFirstEvent(t *testing.T) {
	t.Parallel()
	pc, p := faultproxy.Redis(t)
	o := presenceOptions(redistest.Prefix(t), "n", false)
	tr := newTracker(t, pc, o)
	p.Stall(true)
	defer p.Stall(false)
	rr := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.EventsHandler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/?room=a", nil))
	}()
	// The stream takes its end signal as it starts, so EndStreams is
	// repeated until it ends: well within RedisTimeout, after which the
	// stalled read would answer 503 instead.
	deadline := time.After(o.RedisTimeout / 2)
	for ended := false; !ended; {
		tr.EndStreams()
		select {
		case <-done:
			ended = true
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("the stream did not end within %v of EndStreams", o.RedisTimeout/2)
		}
	}
	if ct := rr.Header().Get("Content-Type"); rr.Code != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("ended before its first event: %d %q %s, want 200 text/event-stream", rr.Code, ct, rr.Body)
	}
	if strings.Contains(rr.Body.String(), "data:") {
		t.Fatalf("ended before its first event, yet sent %q", rr.Body)
	}
}

// TestEventsEndedDuringChecks: EndStreams ends the streams whose handler
// has started, even one still checking its request (here EndStreams runs
// inside the Visible callback): the stream answers an empty 200 at once
// rather than running until its client goes.
func TestEventsEndedDuringChecks(t *testing.T) {
	t.Parallel()
	o := presenceOptions(redistest.Prefix(t), "n", false)
	var tr *Tracker
	var once sync.Once
	o.Presence.Visible = func(*http.Request, string, string) bool {
		once.Do(func() { tr.EndStreams() })
		return true
	}
	tr = newTracker(t, redistest.Standalone(t), o)
	rr := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.EventsHandler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/?room=a", nil))
	}()
	// The request has no deadline: only the end signal ends it.
	select {
	case <-done:
	case <-time.After(settleDeadline):
		t.Fatalf("the stream did not end within %v of an EndStreams during its checks", settleDeadline)
	}
	if rr.Code != http.StatusOK || strings.Contains(rr.Body.String(), "data:") {
		t.Fatalf("ended during its checks: %d %q, want an empty 200 stream", rr.Code, rr.Body)
	}
}

// unwrapOnly wraps a ResponseWriter and exposes only Unwrap, as some
// middlewares do.
type unwrapOnly struct{ w http.ResponseWriter }

func (u unwrapOnly) Header() http.Header         { return u.w.Header() }
func (u unwrapOnly) Write(b []byte) (int, error) { return u.w.Write(b) }
func (u unwrapOnly) WriteHeader(code int)        { u.w.WriteHeader(code) }
func (u unwrapOnly) Unwrap() http.ResponseWriter { return u.w }

// TestEventsThroughUnwrappingWriter: a ResponseWriter that can flush only
// through Unwrap (as http.ResponseController follows it) streams events.
func TestEventsThroughUnwrappingWriter(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), presenceOptions(redistest.Prefix(t), "n", false))
	h := tr.EventsHandler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(unwrapOnly{w}, r)
	}))
	t.Cleanup(srv.Close)
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, srv.URL+"/?room=a", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("through an unwrapping writer: %d, want 200", resp.StatusCode)
	}
	// The first snapshot arrives while the stream is open: it was flushed.
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") {
			return
		}
	}
	t.Fatalf("the stream ended without a snapshot: %v", sc.Err())
}

// TestEventsHandlerStream: the SSE handler sends a snapshot per room, then
// each event with an id holding every room's last sequence; a client that
// reconnects with that id as Last-Event-ID gets what came after it and no
// snapshot.
func TestEventsHandlerStream(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	tr := newTracker(t, c, presenceOptions(redistest.Prefix(t), "n", false))
	srv := httptest.NewServer(tr.EventsHandler())
	t.Cleanup(srv.Close)
	type sse struct{ id, event, data string }
	// open streams the events of rooms a and b, sent after lastID.
	open := func(ctx context.Context, lastID string) <-chan sse {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"?room=a&room=b", nil)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
			t.Fatalf("status %d, content type %q", resp.StatusCode, ct)
		}
		out := make(chan sse, 16)
		go func() {
			defer resp.Body.Close()
			defer close(out)
			var cur sse
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				switch {
				case line == "":
					if cur.event != "" {
						out <- cur
					}
					cur = sse{}
				case strings.HasPrefix(line, "id: "):
					cur.id = line[4:]
				case strings.HasPrefix(line, "event: "):
					cur.event = line[7:]
				case strings.HasPrefix(line, "data: "):
					cur.data = line[6:]
				}
			}
		}()
		return out
	}
	next := func(ch <-chan sse) sse {
		t.Helper()
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("stream ended")
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
		}
		return sse{}
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	first := open(ctx, "")
	if a, b := next(first), next(first); a.event != "snapshot" || b.event != "snapshot" {
		t.Fatalf("first events %+v, %+v: want two snapshots", a, b)
	}
	l := admitUser(t, tr, "ann", "a")
	occ, join := next(first), next(first)
	var e PresenceEvent
	if err := json.Unmarshal([]byte(join.data), &e); err != nil {
		t.Fatal(err)
	}
	if occ.event != "occupied" || join.event != "join" || e.User != "ann" || e.Meta != "name of ann" || e.Room != "a" {
		t.Fatalf("after ann's join: %+v, %+v", occ, join)
	}
	cancel() // the browser goes away; ann leaves meanwhile
	l.Release()
	second := open(ctxT(t), join.id)
	if a, b := next(second), next(second); a.event != "leave" || b.event != "vacated" {
		t.Fatalf("after Last-Event-ID %q: %+v, %+v; want leave then vacated", join.id, a, b)
	}
	// EndStreams (for http.Server.RegisterOnShutdown) ends open streams.
	tr.EndStreams()
	select {
	case e, ok := <-second:
		if ok {
			t.Fatalf("after EndStreams: %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream is still open 5s after EndStreams")
	}

	// The JSON handler adds distinct users only when asked (users=1), so
	// that a plain count request answers as it did before presence.
	for q, want := range map[string]bool{"?room=a": false, "?room=a&users=1": true} {
		rr := httptest.NewRecorder()
		tr.PresenceHandler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/"+q, nil))
		if got := strings.Contains(rr.Body.String(), `"online_users"`); rr.Code != 200 || got != want {
			t.Errorf("%s: %d %s; online_users present %v, want %v", q, rr.Code, rr.Body, got, want)
		}
	}
}

// TestPresenceWithoutShardedPubSub: where Redis refuses SPUBLISH and
// SSUBSCRIBE (6.2 has neither; here an ACL user without them stands in for
// it), events still reach subscribers, over PUBLISH and SUBSCRIBE.
func TestPresenceWithoutShardedPubSub(t *testing.T) {
	t.Parallel()
	srv := redistest.NewServer(t)
	admin := srv.Client(t)
	if err := admin.Do(ctxT(t), "ACL", "SETUSER", "legacy", "on", ">legacy-pw", "~*", "&*", "+@all", "-spublish", "-ssubscribe").Err(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "legacy", Password: "legacy-pw"})
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Do(ctxT(t), "SPUBLISH", "x", "y").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("SPUBLISH as the legacy user: %v, want NOPERM", err)
	}
	tr := newTracker(t, c, presenceOptions(redistest.Prefix(t), "n", false))
	rec := watch(t, tr, "room")
	l := admitUser(t, tr, "ann", "room")
	eventually(t, settleDeadline, "occupied and join", func() (bool, string) {
		ch := changes(rec.all(), 0)
		return len(ch) == 2 && strings.Contains(ch[1], "join ann"), fmt.Sprint(ch)
	})
	l.Release()
	eventually(t, settleDeadline, "leave and vacated", func() (bool, string) {
		ch := changes(rec.all(), 0)
		return len(ch) == 4 && strings.Contains(ch[2], "leave ann closed"), fmt.Sprint(ch)
	})
	// A second room joins the first one's connection, with SUBSCRIBE too.
	rec2 := watch(t, tr, "other")
	admitUser(t, tr, "bob", "other")
	eventually(t, settleDeadline, "the second room's occupied and join", func() (bool, string) {
		ch := changes(rec2.all(), 0)
		return len(ch) == 2 && strings.Contains(ch[1], "join bob"), fmt.Sprint(ch)
	})
}

// TestWatchesShareSubscription: the watches of one room on a node share one
// Redis subscription (Redis counts one subscriber of the room's channel,
// not one per watch), a watch that does not take its events holds up no
// other, every watch gets every event in order, and the subscription goes
// once the last watch ends.
func TestWatchesShareSubscription(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	tr := newTracker(t, c, presenceOptions(ns, "n", false))
	shardChannels := func() []string {
		chs, err := c.PubSubShardChannels(ctxT(t), "*"+ns+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return chs
	}
	const watches = 20
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	recs := make([]*recorder, watches)
	done := make(chan error, watches+1)
	for i := range recs {
		recs[i] = &recorder{}
		go func() { done <- tr.Watch(ctx, []string{"a"}, nil, recs[i].add) }()
	}
	// One more watch whose callback blocks after the snapshot, until
	// unblocked: a subscriber that does not read.
	unblock := make(chan struct{})
	slow := &recorder{}
	go func() {
		done <- tr.Watch(ctx, []string{"a"}, nil, func(e PresenceEvent) error {
			_ = slow.add(e)
			if e.Kind != EventSnapshot {
				<-unblock
			}
			return nil
		})
	}()
	// kinds lists r's events, checking that their sequence has no gap
	// (the room's first event starts a sequence of its own after the
	// snapshot's 0).
	kinds := func(r *recorder) string {
		var ks []string
		evs := r.all()
		for i, e := range evs {
			if i > 1 && e.Seq != evs[i-1].Seq+1 {
				return fmt.Sprintf("gap: %+v", evs)
			}
			ks = append(ks, e.Kind)
		}
		return strings.Join(ks, " ")
	}
	allHave := func(what string, want func(string) bool) {
		t.Helper()
		eventually(t, settleDeadline, what, func() (bool, string) {
			for _, r := range append(slices.Clone(recs), slow) {
				if k := kinds(r); !want(k) {
					return false, k
				}
			}
			return true, ""
		})
	}
	allHave("every watch's snapshot", func(k string) bool { return k == "snapshot" })
	chs := shardChannels()
	if len(chs) != 1 {
		t.Fatalf("shard channels of the namespace: %q, want the room's alone", chs)
	}
	n, err := c.PubSubShardNumSub(ctxT(t), chs[0]).Result()
	if err != nil || n[chs[0]] != 1 {
		t.Fatalf("subscribers of %s: %v %v; want 1 for %d watches", chs[0], n, err, watches+1)
	}
	// ann comes and goes, then bob, while the slow watch holds the first
	// event it got.
	const want = "snapshot occupied join leave vacated occupied join leave vacated"
	for i, user := range []string{"ann", "bob"} {
		l := admitUser(t, tr, user, "a")
		l.Release()
		eventually(t, settleDeadline, "the others' events, the slow watch blocked", func() (bool, string) {
			for _, r := range recs {
				if k := kinds(r); k != want[:len("snapshot occupied join leave vacated")+i*len(" occupied join leave vacated")] {
					return false, k
				}
			}
			return true, ""
		})
	}
	close(unblock)
	allHave("every event on every watch, in order", func(k string) bool { return k == want })
	cancel()
	for range watches + 1 {
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}
	eventually(t, settleDeadline, "the subscription gone with the last watch", func() (bool, string) {
		chs := shardChannels()
		return len(chs) == 0, fmt.Sprint(chs)
	})
}

// TestWatchesOfRoomsShareConnection: the watches of different rooms on a
// node, in one Watch or several, hold one Redis connection between them on
// a single server, and at most one per master on a Cluster (9 rooms spread
// over as many slots); the connections go with the last watch.
func TestWatchesOfRoomsShareConnection(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		const name = "wsconn-watch-rooms"
		c := redis.NewClient(&redis.Options{Addr: redistest.StandaloneServer(t).Addr(), ClientName: name})
		t.Cleanup(func() { _ = c.Close() })
		watchesShareConnections(t, c, name, 1)
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		const name = "wsconn-watch-rooms-cluster"
		addrs := redistest.ClusterAddrs(t)
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ClientName: name})
		t.Cleanup(func() { _ = c.Close() })
		watchesShareConnections(t, c, name, len(addrs))
	})
}

// watchesShareConnections is TestWatchesOfRoomsShareConnection on c, whose
// connections are named name, on a Redis of masters masters.
func watchesShareConnections(t *testing.T, c redis.UniversalClient, name string, masters int) {
	tr := newTracker(t, c, presenceOptions(redistest.Prefix(t), "n", false))
	subscribed := func() int {
		n := 0
		count := func(ctx context.Context, m *redis.Client) error {
			list, err := m.ClientList(ctx).Result()
			for line := range strings.Lines(list) {
				if strings.Contains(line, " name="+name+" ") && !strings.Contains(line, " ssub=0 ") {
					n++
				}
			}
			return err
		}
		var err error
		if cc, ok := c.(*redis.ClusterClient); ok {
			var mu sync.Mutex
			err = cc.ForEachMaster(ctxT(t), func(ctx context.Context, m *redis.Client) error {
				mu.Lock()
				defer mu.Unlock()
				return count(ctx, m)
			})
		} else {
			err = count(ctxT(t), c.(*redis.Client))
		}
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	recs := []*recorder{{}, {}, {}}
	rooms := [][]string{{"a", "b", "c", "d"}, {"e", "f", "g", "h"}, {"a", "e", "i"}}
	done := make(chan error, len(recs))
	for i, r := range recs {
		go func() { done <- tr.Watch(ctx, rooms[i], nil, r.add) }()
	}
	eventually(t, settleDeadline, "every watch's snapshots", func() (bool, string) {
		for i, r := range recs {
			if len(r.all()) != len(rooms[i]) {
				return false, fmt.Sprint(i, r.all())
			}
		}
		return true, ""
	})
	if n := subscribed(); n < 1 || n > masters {
		t.Fatalf("connections holding a subscription: %d, want 1 to %d (one per master) for 9 rooms in 3 watches", n, masters)
	}
	admitUser(t, tr, "ann", "a", "h", "i")
	eventually(t, settleDeadline, "ann's joins", func() (bool, string) {
		want := []int{1, 1, 2} // the rooms of each watch that ann joined
		for i, r := range recs {
			n := 0
			for _, e := range r.all() {
				if e.Kind == EventJoin && e.User == "ann" {
					n++
				}
			}
			if n != want[i] {
				return false, fmt.Sprintf("watch %d: %d joins", i, n)
			}
		}
		return true, ""
	})
	cancel()
	for range recs {
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}
	eventually(t, settleDeadline, "the connection gone with the last watch", func() (bool, string) {
		n := subscribed()
		return n == 0, fmt.Sprint(n)
	})
}

// TestWatchWhileRedisStalls: watches of a room that Redis does not answer
// fail with ErrUnavailable once RedisTimeout passes, all of them, and the
// subscription is not kept: once Redis answers, a new watch subscribes
// anew and gets the room's events.
func TestWatchWhileRedisStalls(t *testing.T) {
	t.Parallel()
	pc, p := faultproxy.Redis(t)
	o := presenceOptions(redistest.Prefix(t), "n", false)
	o.RedisTimeout = 300 * time.Millisecond
	tr := newTracker(t, pc, o)
	p.Stall(true)
	errs := make(chan error, 3)
	start := time.Now()
	for range 3 {
		go func() { errs <- tr.Watch(ctxT(t), []string{"a"}, nil, func(PresenceEvent) error { return nil }) }()
	}
	for range 3 {
		if err := <-errs; !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Watch while Redis stalls: %v, want ErrUnavailable", err)
		}
	}
	// RedisTimeout, and room for a busy machine.
	if d := time.Since(start); d > o.RedisTimeout+2*time.Second {
		t.Fatalf("the watches failed after %v, RedisTimeout is %v", d, o.RedisTimeout)
	}
	p.Stall(false)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		// The stalled attempt may still hold a subscription being made
		// (go-redis gives up at its own timeouts): a watch started now may
		// share it, fail with it, and is then started again.
		for {
			err := tr.Watch(ctx, []string{"a"}, nil, rec.add)
			if !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
				done <- err
				return
			}
		}
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	eventually(t, 10*time.Second, "a snapshot once Redis answers", func() (bool, string) {
		return len(rec.all()) > 0, fmt.Sprint(rec.all())
	})
	admitUser(t, tr, "ann", "a")
	eventually(t, settleDeadline, "ann's join", func() (bool, string) {
		ch := changes(rec.all(), 0)
		return len(ch) == 2 && strings.HasSuffix(ch[1], "join ann closed"), fmt.Sprint(ch)
	})
}
