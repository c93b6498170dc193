package wsconn

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/redistest"
)

// TestPresenceOptionsRefused: New refuses Presence without User, and a
// negative PresenceOptions.MaxMembers, History or Grace, with an error
// wrapping ErrInvalidOptions that names what is wrong (TestOptionsRefused
// covers the other options).
func TestPresenceOptionsRefused(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	for _, tc := range []struct {
		name string
		edit func(*Options)
		msg  []string
	}{
		{"presence without user", func(o *Options) { o.User = nil }, []string{"Presence needs User"}},
		{"negative MaxMembers", func(o *Options) { o.Presence.MaxMembers = -1 }, []string{"Presence", "MaxMembers:-1", "negative"}},
		{"negative History", func(o *Options) { o.Presence.History = -1 }, []string{"Presence", "History:-1", "negative"}},
		{"negative Grace", func(o *Options) { o.Presence.Grace = -1 }, []string{"Presence", "Grace:-1ns", "negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := presenceOptions(ns, "a", false)
			tc.edit(&o)
			tr, err := New(c, o)
			if err == nil {
				_ = tr.Close(ctxT(t))
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("error %q: want ErrInvalidOptions", err)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Fatalf("error %q: want it to name %q", err, m)
				}
			}
		})
	}
	// The same options without the fault are accepted: each refusal is
	// the fault's.
	tr, err := New(c, presenceOptions(ns, "a", false))
	if err != nil {
		t.Fatalf("valid presence options: %v", err)
	}
	_ = tr.Close(ctxT(t))
}

// presenceKeys returns the keys of namespace ns on the standalone server c
// that presence writes: member counters (see keyspace.SplitMember) and
// their groups' presence keys (companions "pp", "pu", "pl", "pe", "pc"),
// and whether the room count of room is among the keys, which shows that
// the scan saw the namespace.
func presenceKeys(t *testing.T, c *redis.Client, ns, room string) (keys []string, sawRoom bool) {
	t.Helper()
	sp, err := keyspace.NewSpace("i", ns)
	if err != nil {
		t.Fatal(err)
	}
	it := c.Scan(ctxT(t), 0, sp.Pattern(), 1000).Iterator()
	for it.Next(ctxT(t)) {
		key := it.Val()
		sawRoom = sawRoom || key == sp.Key(roomKey(room))
		if k, ok := sp.Parse(key); ok {
			if _, _, _, member := keyspace.SplitMember(k); member {
				keys = append(keys, key)
			}
			continue
		}
		i := strings.LastIndexByte(key, ':')
		if _, ok := sp.Parse(key[:max(i, 0)]); ok && slices.Contains([]string{"pp", "pu", "pl", "pe", "pc"}, key[i+1:]) {
			keys = append(keys, key)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return keys, sawRoom
}

// TestPresenceOff: without Options.Presence, EventsHandler answers 400,
// PresenceHandler with members=1 answers 400 (ErrPresenceOff), RoomUsers,
// Members, Watch and WatchAll fail with ErrPresenceOff, and a connection
// with a user, a tenant and a room writes no member key and no presence
// key to Redis ("while it is off no member key is written").
func TestPresenceOff(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	tr := newTracker(t, c, testOptions(ns, "a"))

	for _, tc := range []struct {
		name string
		h    http.Handler
		path string
	}{
		{"EventsHandler", tr.EventsHandler(), "/?room=a"},
		{"PresenceHandler members=1", tr.PresenceHandler(), "/?members=1&room=a"},
	} {
		rr := httptest.NewRecorder()
		tc.h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rr.Code != http.StatusBadRequest || !strings.Contains(rr.Body.String(), ErrPresenceOff.Error()) {
			t.Errorf("%s %s: %d %s, want 400 with %q", tc.name, tc.path, rr.Code, rr.Body, ErrPresenceOff)
		}
	}
	noop := func(PresenceEvent) error { return nil }
	_, errUsers := tr.RoomUsers(ctxT(t), "a")
	_, errMembers := tr.Members(ctxT(t), "a", "", 10)
	for name, err := range map[string]error{
		"RoomUsers": errUsers,
		"Members":   errMembers,
		"Watch":     tr.Watch(ctxT(t), []string{"a"}, nil, noop),
		"WatchAll":  tr.WatchAll(ctxT(t), nil, noop),
	} {
		if !errors.Is(err, ErrPresenceOff) {
			t.Errorf("%s: %v, want ErrPresenceOff", name, err)
		}
	}

	q := url.Values{"user": {"ann"}, "tenant": {"acme"}, "room": {"a", "b{x}"}}
	l, err := tr.Admit(ctxT(t), httptest.NewRequest(http.MethodGet, "/?"+q.Encode(), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	// Admit is strict: Redis holds the room's count once it returns.
	pk, sawRoom := presenceKeys(t, c, ns, "a")
	if !sawRoom {
		t.Fatal("no count of room a: the scan proves nothing")
	}
	if len(pk) > 0 {
		t.Fatalf("presence off, yet member or presence keys were written: %q", pk)
	}
}

// TestWatchAllNeedsOption: with Presence but without
// PresenceOptions.WatchAll, WatchAll fails with an error wrapping
// ErrPresenceOff, while Watch works.
func TestWatchAllNeedsOption(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), presenceOptions(redistest.Prefix(t), "a", false))
	err := tr.WatchAll(ctxT(t), nil, func(PresenceEvent) error { return nil })
	if !errors.Is(err, ErrPresenceOff) {
		t.Fatalf("WatchAll with PresenceOptions.WatchAll off: %v, want ErrPresenceOff", err)
	}
	watch(t, tr, "a") // presence itself is on: Watch gets its snapshot
}

// TestResumePastTrimmedHistory: a Watch resumed from a sequence whose
// next events PresenceOptions.History no longer keeps gets a new snapshot
// of the room (its members and latest sequence) first, not the part of the
// events Redis still has, and then the events after the snapshot; one
// resumed from the latest sequence gets no snapshot and no event but the
// next change.
func TestResumePastTrimmedHistory(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	o := presenceOptions(redistest.Prefix(t), "a", false)
	o.Presence.History = 10 // any value >= 1 is allowed; 0 is the default
	tr := newTracker(t, c, o)
	const room = "r"
	churn(t, tr, room, 5)
	m, err := tr.Members(ctxT(t), room, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	early := m.Seq
	if early == 0 {
		t.Fatal("no events after a churn")
	}
	// Churn until the history no longer holds the event after early
	// (trimming is approximate: whole stream nodes at a time).
	trimmed := func() bool {
		evs, err := tr.strict.Events(ctxT(t), roomKey(room), early, 1)
		if err != nil || len(evs) == 0 {
			t.Fatalf("history after %d: %v %v", early, evs, err)
		}
		return evs[0].Seq != early+1
	}
	for i := 0; ; i++ {
		churn(t, tr, room, 10)
		if trimmed() {
			break
		}
		if i == 50 {
			t.Fatalf("the history kept the event after %d through %d churns", early, i)
		}
	}
	stay := []*Lease{admitUser(t, tr, "stay1", room), admitUser(t, tr, "stay2", room)}
	defer func() {
		for _, l := range stay {
			l.Release()
		}
	}()
	m, err = tr.Members(ctxT(t), room, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	latest := m.Seq

	resume := func(from int64, rooms ...string) *recorder {
		rec := &recorder{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- tr.Watch(ctx, rooms, map[string]int64{room: from}, rec.add) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Watch: %v", err)
			}
		})
		return rec
	}
	ofRoom := func(rec *recorder) []PresenceEvent {
		return slices.DeleteFunc(rec.all(), func(e PresenceEvent) bool { return e.Room != room })
	}

	// From early: a snapshot first, then the next change.
	rec := resume(early, room)
	eventually(t, settleDeadline, "the snapshot", func() (bool, string) {
		return len(ofRoom(rec)) > 0, "no event"
	})
	first := ofRoom(rec)[0]
	if first.Kind != EventSnapshot || first.Seq != latest || first.Members == nil {
		t.Fatalf("resumed from %d (trimmed), first event %+v: want a snapshot at %d", early, first, latest)
	}
	got := map[string]int64{}
	for _, mb := range first.Members.Members {
		got[mb.User] = mb.Connections
	}
	if want := map[string]int64{"stay1": 1, "stay2": 1}; !maps.Equal(got, want) || first.Members.Users != 2 {
		t.Fatalf("snapshot members %+v: want %v", *first.Members, want)
	}
	zed := admitUser(t, tr, "zed", room)
	defer zed.Release()
	wantNext := fmt.Sprintf("%s#%d %s zed %s", room, latest+1, EventJoin, ReasonClosed)
	eventually(t, settleDeadline, "zed's join after the snapshot", func() (bool, string) {
		evs := ofRoom(rec)
		ch := changes(evs, 0)
		return len(evs) == 2 && slices.Equal(ch, []string{wantNext}), fmt.Sprintf("%+v", evs)
	})
	latest++

	// From the latest: nothing until the next change, which comes alone.
	// (The other room's snapshot shows the Watch running; the assertion
	// holds whenever its sync runs.)
	rec = resume(latest, room, "other")
	eventually(t, settleDeadline, "the other room's snapshot", func() (bool, string) {
		return len(rec.all()) > 0, "no event"
	})
	yan := admitUser(t, tr, "yan", room)
	defer yan.Release()
	wantNext = fmt.Sprintf("%s#%d %s yan %s", room, latest+1, EventJoin, ReasonClosed)
	eventually(t, settleDeadline, "yan's join, alone", func() (bool, string) {
		evs := ofRoom(rec)
		return len(evs) == 1 && evs[0].Kind == EventJoin && slices.Equal(changes(evs, 0), []string{wantNext}), fmt.Sprintf("%+v", evs)
	})
}

// TestSameNodeReloadCancelsOut: with Grace 0, a user's leave of a room and
// her join of it again on the same node, back to back (a reload within the
// 10 ms a strict close is held), ride in one commit and announce nothing:
// the room has no event of hers after her first join, and she stays listed.
// Sentinels show that every commit that could hold her leave is in: bob's
// leave, released after her, goes with her held leave or after it, and
// cat's join (strict) after that. A reload that took the hold or longer (a
// busy machine) may be announced, rightly: it is tried again in a new room.
func TestSameNodeReloadCancelsOut(t *testing.T) {
	t.Parallel()
	const hold = 10 * time.Millisecond // half the default FlushInterval
	c := redistest.Standalone(t)
	tr := newTracker(t, c, presenceOptions(redistest.Prefix(t), "a", false))
	for try := range 5 {
		room := fmt.Sprintf("room%d", try)
		rec := watch(t, tr, room)
		ann := admitUser(t, tr, "ann", room)
		var joined int64
		eventually(t, settleDeadline, "ann's join", func() (bool, string) {
			for _, e := range rec.all() {
				if e.Kind == EventJoin && e.User == "ann" {
					joined = e.Seq
					return true, ""
				}
			}
			return false, fmt.Sprint(changes(rec.all(), 0))
		})
		start := time.Now()
		ann.Release()
		ann = admitUser(t, tr, "ann", room) // the reload: no wait in between
		defer ann.Release()
		if d := time.Since(start); d >= hold {
			t.Logf("the reload took %v, not within the hold: again", d)
			continue
		}
		admitUser(t, tr, "bob", room).Release()
		eventually(t, settleDeadline, "bob's leave", func() (bool, string) {
			ch := changes(rec.all(), joined)
			return slices.ContainsFunc(ch, func(s string) bool { return strings.Contains(s, " leave bob ") }), fmt.Sprint(ch)
		})
		cat := admitUser(t, tr, "cat", room)
		defer cat.Release()
		eventually(t, settleDeadline, "cat's join", func() (bool, string) {
			ch := changes(rec.all(), joined)
			return slices.ContainsFunc(ch, func(s string) bool { return strings.Contains(s, " join cat ") }), fmt.Sprint(ch)
		})
		var want []string
		for i, s := range []string{"join bob", "leave bob", "join cat"} {
			want = append(want, fmt.Sprintf("%s#%d %s %s", room, joined+1+int64(i), s, ReasonClosed))
		}
		if ch := changes(rec.all(), joined); !slices.Equal(ch, want) {
			t.Fatalf("events after ann's join %q:\nwant %q (ann's reload announced nothing)", ch, want)
		}
		m, err := membersOn(ctxT(t), tr, room)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]int64{"ann": 1, "cat": 1}; !maps.Equal(m, want) {
			t.Fatalf("members %v, want %v", m, want)
		}
		return
	}
	t.Fatalf("5 reloads in a row took %v or longer", hold)
}
