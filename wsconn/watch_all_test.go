package wsconn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/redistest"
)

// TestWatchReturnsFnError: Watch and WatchAll end with fn's error, as
// documented, whatever it wraps.
func TestWatchReturnsFnError(t *testing.T) {
	t.Parallel()
	o := presenceOptions(redistest.Prefix(t), "a", false)
	o.Presence.WatchAll = true
	tr := newTracker(t, redistest.Standalone(t), o)
	// Errors a fn may pass on from its own calls: neither is the watch's
	// Redis being away or its context ending.
	for _, fnErr := range []error{
		fmt.Errorf("fn's own read: %w", ErrUnavailable),
		fmt.Errorf("fn's own call: %w", context.Canceled),
	} {
		fn := func(PresenceEvent) error { return fnErr }
		if err := tr.Watch(ctxT(t), []string{"lobby"}, nil, fn); err != fnErr {
			t.Errorf("Watch with fn failing with %q: %v, want fn's error", fnErr, err)
		}
		// WatchAll calls fn on the first event of a room.
		done := make(chan error, 1)
		go func() { done <- tr.WatchAll(ctxT(t), nil, fn) }()
		var err error
		eventually(t, settleDeadline, "WatchAll ends", func() (bool, string) {
			admitUser(t, tr, "probe", "r").Release()
			select {
			case err = <-done:
				return true, ""
			default:
				return false, "still watching"
			}
		})
		if err != fnErr {
			t.Errorf("WatchAll with fn failing with %q: %v, want fn's error", fnErr, err)
		}
	}
}

// TestWatchRoomsCapped: Watch follows 1 to MaxWatchRooms rooms; none or
// one more is ErrInvalidName, and the same on EventsHandler is a 400. Watch
// and WatchAll return nil when their ctx ends, also before they could
// subscribe.
func TestWatchRoomsCapped(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), presenceOptions(redistest.Prefix(t), "a", false))
	rooms := make([]string, MaxWatchRooms+1)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("r%d", i)
	}
	noop := func(PresenceEvent) error { return nil }
	for _, n := range []int{0, MaxWatchRooms + 1} {
		if err := tr.Watch(ctxT(t), rooms[:n], nil, noop); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Watch of %d rooms: %v, want ErrInvalidName", n, err)
		}
		q := url.Values{"room": rooms[:n]}
		rec := httptest.NewRecorder()
		tr.EventsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/events?"+q.Encode(), nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("EventsHandler with %d rooms: %d %s, want 400", n, rec.Code, rec.Body)
		}
	}
	// A ctx that ends before the subscription is made ends the watch
	// as any end of ctx does: nil, not ErrUnavailable.
	ended, end := context.WithCancel(ctxT(t))
	end()
	if err := tr.Watch(ended, rooms[:1], nil, noop); err != nil {
		t.Errorf("Watch with its ctx ended: %v, want nil", err)
	}
	o := presenceOptions(redistest.Prefix(t), "b", false)
	o.Presence.WatchAll = true
	if err := newTracker(t, redistest.Standalone(t), o).WatchAll(ended, nil, noop); err != nil {
		t.Errorf("WatchAll with its ctx ended: %v, want nil", err)
	}
	// MaxWatchRooms rooms are watched: until ctx ends, then nil.
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- tr.Watch(ctx, rooms[:MaxWatchRooms], nil, noop) }()
	admitUser(t, tr, "ann", rooms[MaxWatchRooms-1]).Release()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch of %d rooms: %v, want nil once ctx ends", MaxWatchRooms, err)
	}
	// A deadline is an end of ctx too, once the watch is running (its
	// snapshots come within settleDeadline, as everywhere in these tests);
	// a room named twice counts once.
	twice := append(slices.Clone(rooms[:MaxWatchRooms]), rooms[0])
	ctx, cancel = context.WithTimeout(ctxT(t), settleDeadline)
	defer cancel()
	rec := &recorder{}
	if err := tr.Watch(ctx, twice, nil, rec.add); err != nil {
		t.Errorf("Watch past its ctx's deadline: %v, want nil", err)
	}
	if n := len(rec.all()); n < MaxWatchRooms {
		t.Errorf("%d events before the deadline, want a snapshot of each of %d rooms: not running yet", n, MaxWatchRooms)
	}
}

// TestWatchRoomNamedTwice: a room named twice in one Watch delivers each
// event once.
func TestWatchRoomNamedTwice(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), presenceOptions(redistest.Prefix(t), "a", false))
	rec := watch(t, tr, "r", "r")
	admitUser(t, tr, "ann", "r").Release()
	want := []string{"occupied", "join ann", "leave ann", "vacated"}
	eventually(t, settleDeadline, "each event once", func() (bool, string) {
		var got []string
		for _, e := range rec.all() {
			if e.Kind != EventSnapshot {
				got = append(got, strings.TrimSpace(e.Kind+" "+e.User))
			}
		}
		return slices.Equal(got, want), fmt.Sprint(rec.all())
	})
	if evs := rec.all(); len(evs) != 1+len(want) {
		t.Fatalf("%d events, want a snapshot and %v: %v", len(evs), want, evs)
	}
}

// watchAll runs tr.WatchAll from from until the test ends (and checks
// that it returns nil then), and returns what it delivers once its
// subscription is confirmed: once the events of a probe room, where a
// user of via comes and goes, show up. Until then, events may be missed.
func watchAll(t *testing.T, tr, via *Tracker, from map[string]int64) *recorder {
	t.Helper()
	rec := &recorder{}
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- tr.WatchAll(ctx, from, rec.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchAll: %v", err)
		}
	})
	eventually(t, settleDeadline, "the subscription", func() (bool, string) {
		admitUser(t, via, "probe", "probe").Release()
		for _, e := range rec.all() {
			if e.Room == "probe" {
				return true, ""
			}
		}
		return false, fmt.Sprint(rec.all())
	})
	return rec
}

// TestWatchAllRechecksAfterLoss: the events published while WatchAll's
// link to Redis is down are lost on the wire; once the link is back,
// WatchAll checks every room it knows, 1,000 a second, not only its 100 a
// second in turn: the leaves of 2,000 rooms, which the turns alone would
// reach in 20 s, come within 10 s (two ticks, and room for 2,000 reads of
// the history under -race on a busy machine).
func TestWatchAllRechecksAfterLoss(t *testing.T) {
	t.Parallel()
	pc, p := faultproxy.Redis(t)
	ns := redistest.Prefix(t)
	o := presenceOptions(ns, "watcher", false)
	o.Presence.WatchAll = true
	watcher := newTracker(t, pc, o)
	o = presenceOptions(ns, "writer", true) // lax: 2,000 joins in a few flushes
	o.Presence.WatchAll = true
	writer := newTracker(t, redistest.Standalone(t), o)
	rec := watchAll(t, watcher, watcher, nil) // the writer, lax, would cancel the probe out
	const rooms = 2000
	leases, names := make([]*Lease, rooms), make([]string, rooms)
	for i := range leases {
		names[i] = fmt.Sprintf("r%d", i)
		leases[i] = admitUser(t, writer, fmt.Sprintf("u%d", i), names[i])
	}
	count := func(kind string) int {
		n := 0
		for _, e := range rec.all() {
			if e.Kind == kind && e.Room != "probe" {
				n++
			}
		}
		return n
	}
	eventually(t, settleDeadline, "every room's join", func() (bool, string) {
		return count(EventJoin) == rooms, fmt.Sprintf("%d joins", count(EventJoin))
	})
	p.Stall(true)
	for _, l := range leases {
		l.Release()
	}
	// Once Redis holds the leaves (as a node of its own reads them), they
	// were published into the stalled link.
	reader := newTracker(t, redistest.Standalone(t), presenceOptions(ns, "reader", false))
	eventually(t, settleDeadline, "the leaves in Redis", func() (bool, string) {
		users, err := reader.RoomUsers(ctxT(t), names...)
		if err != nil {
			return false, err.Error()
		}
		for room, n := range users {
			if n != 0 {
				return false, fmt.Sprintf("%s: %d users", room, n)
			}
		}
		return true, ""
	})
	p.CutAll()
	p.Stall(false)
	eventually(t, 10*time.Second, "every room's leave", func() (bool, string) {
		return count(EventVacated) == rooms, fmt.Sprintf("%d rooms vacated", count(EventVacated))
	})
	if n := count(EventLeave); n != rooms {
		t.Fatalf("%d leaves, want %d", n, rooms)
	}
}

// TestWatchAllForgetsRooms: the rooms WatchAll forgets leave its polls at
// once, so that rooms coming and going do not grow them.
func TestWatchAllForgetsRooms(t *testing.T) {
	a := &allWatch{rooms: make(map[string]*roomWatch), gone: make(map[string]goneRoom)}
	for i := range 1000 {
		w := a.add(fmt.Sprintf("r%d", i))
		w.ready = true
		if i%3 != 0 { // an empty room, as a vacated event leaves it
			w.kind = EventVacated
			a.forget(w)
		} else {
			w.users, w.kind = 1, EventJoin
		}
	}
	if len(a.order) != len(a.rooms) || len(a.rooms) != 334 {
		t.Fatalf("%d rooms polled, %d watched, want 334 of each", len(a.order), len(a.rooms))
	}
	for i, w := range a.order {
		if w.at != i || a.rooms[w.room] != w {
			t.Fatalf("order[%d] is %s at %d, watched: %v", i, w.room, w.at, a.rooms[w.room] == w)
		}
	}
}

// TestWatchAllNegativeResume: a negative sequence in WatchAll's from is no
// resume point: the room starts with its next event, as one not named.
func TestWatchAllNegativeResume(t *testing.T) {
	t.Parallel()
	o := presenceOptions(redistest.Prefix(t), "a", false)
	o.Presence.WatchAll = true
	tr := newTracker(t, redistest.Standalone(t), o)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- tr.WatchAll(ctx, map[string]int64{"r": -1}, rec.add) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchAll: %v", err)
		}
	}()
	// The subscription may come after the first tries: try until one shows.
	eventually(t, settleDeadline, "r's events", func() (bool, string) {
		admitUser(t, tr, "ann", "r").Release()
		evs := rec.all()
		return len(evs) > 0 && evs[len(evs)-1].Kind == EventVacated, fmt.Sprint(evs)
	})
}

// TestWatchAllRooms: a subscriber of every room (WatchAll) gets each
// room's events in order, rooms on every master alike; a room already
// occupied when it shows up comes with a snapshot instead of its first
// event (taken after it, so it holds it). When a node is
// killed, its users' leaves (reason crashed) reach it too. A second
// subscriber that resumes from the first one's sequences gets what came
// after, without snapshots.
func TestWatchAllRooms(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ns := redistest.Prefix(t)
		opts := func(id string) Options {
			o := presenceOptions(ns, id, false)
			o.Presence.WatchAll = true
			return o
		}
		a, b := newTracker(t, c, opts("a")), newTracker(t, c, opts("b"))
		admitUser(t, b, "early", "r0") // r0 is occupied before the watch
		rec := watchAll(t, a, b, nil)
		rooms := []string{"r0", "r1{a}", "r2{b}", "r3{c}", "r4"}
		var leases []*Lease
		for i, room := range rooms {
			leases = append(leases, admitUser(t, b, fmt.Sprintf("u%d", i), room))
		}
		want := map[string][]string{
			"r0":    {"snapshot early,u0"}, // its first event (u0's join) has it snapshotted
			"r1{a}": {"occupied ", "join u1"},
			"r2{b}": {"occupied ", "join u2"},
			"r3{c}": {"occupied ", "join u3"},
			"r4":    {"occupied ", "join u4"},
		}
		perRoom := func() map[string][]string {
			got := map[string][]string{}
			for _, e := range rec.all() {
				if e.Room == "probe" {
					continue
				}
				s := e.Kind + " " + e.User
				if e.Kind == EventSnapshot {
					var us []string
					for _, m := range e.Members.Members {
						us = append(us, m.User)
					}
					s = e.Kind + " " + strings.Join(us, ",")
				}
				got[e.Room] = append(got[e.Room], s)
			}
			// On a Cluster the namespace channel reaches a subscriber on
			// another master through the cluster bus: early's events,
			// published before the subscription, may still reach it, and
			// then r0 starts with them (its sequence starting) instead of
			// a snapshot. Both are right.
			if r0 := got["r0"]; len(r0) >= 3 && slices.Equal(r0[:3], []string{"occupied ", "join early", "join u0"}) {
				got["r0"] = append([]string{"snapshot early,u0"}, r0[3:]...)
			}
			return got
		}
		eventually(t, settleDeadline, "every room's events", func() (bool, string) {
			got := perRoom()
			for r, w := range want {
				if !slices.Equal(got[r], w) {
					return false, fmt.Sprintf("%s: %q, want %q", r, got[r], w)
				}
			}
			return true, ""
		})
		from := map[string]int64{}
		for _, e := range rec.all() {
			from[e.Room] = e.Seq
		}
		b.kill()
		for r := range want {
			want[r] = append(want[r], "leave u"+strings.TrimPrefix(strings.Split(r, "{")[0], "r"), "vacated ")
		}
		want["r0"] = []string{"snapshot early,u0", "leave early", "leave u0", "vacated "}
		eventually(t, reapDeadline+2*time.Second, "crashed leaves in every room", func() (bool, string) {
			got := perRoom()
			for r, w := range want {
				g := slices.Clone(got[r])
				if len(g) == len(w) && r == "r0" { // early and u0 leave in either order
					slices.Sort(g[1:3])
				}
				if !slices.Equal(g, w) {
					return false, fmt.Sprintf("%s: %q, want %q", r, got[r], w)
				}
			}
			return true, ""
		})
		for _, e := range rec.all() {
			if e.Kind == EventLeave && e.Room != "probe" && (e.Reason != ReasonCrashed || e.Node != "b") {
				t.Errorf("leave %+v: want reason crashed, node b", e)
			}
		}
		// Resume from the sequences before the kill. The probe room, whose
		// last release goes to Redis asynchronously, is left out of it:
		// its events may come in any order with the others'.
		delete(from, "probe")
		rec2 := &recorder{}
		ctx2, cancel2 := context.WithCancel(ctxT(t))
		defer cancel2()
		go func() { _ = a.WatchAll(ctx2, from, rec2.add) }()
		eventually(t, settleDeadline, "the resumed events", func() (bool, string) {
			n := 0
			for _, e := range rec2.all() {
				if e.Room == "probe" {
					continue
				}
				if e.Kind == EventSnapshot {
					return false, fmt.Sprintf("a snapshot on resume: %+v", e)
				}
				if e.Seq <= from[e.Room] {
					return false, fmt.Sprintf("a duplicate: %+v", e)
				}
				n++
			}
			return n == 2*len(want)+1, fmt.Sprint(rec2.all()) // a leave and vacated a room, r0 one more leave
		})
	})
}

// TestEventsHandlerAll: all=1 needs PresenceOptions.WatchAll (400) and
// Visible(r, "all", "") (403), before any Redis call.
func TestEventsHandlerAll(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	off := presenceOptions(ns, "off", false)
	on := presenceOptions(ns, "on", false)
	on.Presence.WatchAll = true
	on.Presence.Visible = func(r *http.Request, kind, name string) bool { return kind != "all" || r.Header.Get("X-Staff") == "1" }
	for _, tc := range []struct {
		o    Options
		path string
		code int
	}{
		{off, "/?all=1", http.StatusBadRequest},
		{on, "/?all=1&room=a", http.StatusBadRequest},
		{on, "/?all=1", http.StatusForbidden},
	} {
		tr := newTracker(t, c, tc.o)
		rr := httptest.NewRecorder()
		tr.EventsHandler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rr.Code != tc.code {
			t.Errorf("%s (WatchAll %v): %d %s, want %d", tc.path, tc.o.Presence.WatchAll, rr.Code, rr.Body, tc.code)
		}
	}
}

// TestWatchAllEndsWithClose: Close ends a WatchAll, also one that has seen
// no room (a quiet namespace), as it ends Watch.
func TestWatchAllEndsWithClose(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	o := presenceOptions(redistest.Prefix(t), "a", false)
	o.Presence.WatchAll = true
	tr, err := New(c, o)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	done := make(chan error, 1)
	go func() { done <- tr.WatchAll(context.Background(), nil, rec.add) }()
	// Running once an event shows up; quiet again once its room is vacated
	// (and forgotten).
	eventually(t, settleDeadline, "the watch running, then quiet", func() (bool, string) {
		admitUser(t, tr, "probe", "probe").Release()
		evs := rec.all()
		return len(evs) > 0 && evs[len(evs)-1].Kind == EventVacated, fmt.Sprint(evs)
	})
	// And a Watch, which ends as soon.
	watched := make(chan error, 1)
	wrec := &recorder{}
	go func() { watched <- tr.Watch(context.Background(), []string{"probe"}, nil, wrec.add) }()
	eventually(t, settleDeadline, "the Watch's snapshot", func() (bool, string) { return len(wrec.all()) > 0, "" })
	if err := tr.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]chan error{"WatchAll": done, "Watch": watched} {
		select {
		case err := <-c:
			if err != nil {
				t.Errorf("%s after Close: %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s still running 5s after Close", name)
		}
	}
}
