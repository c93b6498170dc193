package faults

// The nemesis test's presence checks: distinct users, member lists and
// presence events (wsconn's Options.Presence, on in every nemesis node),
// against the same model of the truth as the counts.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/headcount-go/headcount/wsconn"
)

// nemUsers are the users the workers give their connections, drawn at
// random, so that a user has several tabs, on several nodes: names with
// the characters member keys encode ('%', '{', '}', ':'), one not ASCII,
// and "" for an anonymous connection (counted, never a member).
var nemUsers = []string{"ann", "bob:x", "{cy}", "dé%", "eve", ""}

const (
	// nemMembersPage is the page size of the member lists the quiet
	// periods read: small, so that every list is paged through.
	nemMembersPage = 2
	// eventsDeadline is how much later than the counts the recorded events
	// must show the members: an event the subscription missed is fetched
	// at the watch's next poll (1s), plus 1s of slack.
	eventsDeadline = 2 * time.Second
	// lossSlack: a snapshot in the middle of a room's events is the
	// documented answer to a history that Redis lost; it is accepted when
	// such a loss (FLUSHALL, a restart empty) began at most this long
	// before the room's previous event was received, or after it: 2 s, and
	// the longest a partition holds a node's traffic, which delivers an
	// event published before the loss that much later.
	lossSlack = 2*time.Second + maxHold
)

// nemMeta is the metadata nemesisnode gives a user's connections.
func nemMeta(user string) string { return "meta-" + user }

// memberOrder is the key of a user in member list order: byte order of the
// name, with '%', '{', '}' and ':' as their percent-encodings.
func memberOrder(user string) string {
	if !strings.ContainsAny(user, "%{}:") {
		return user
	}
	return strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D", ":", "%3A").Replace(user)
}

// userPresence is what GET /api/presence answers with Options.Presence
// and members=1.
type userPresence struct {
	presence
	OnlineUsers *int64                    `json:"online_users"`
	RoomUsers   map[string]int64          `json:"room_users"`
	TenantUsers map[string]int64          `json:"tenant_users"`
	Members     map[string]wsconn.Members `json:"members"`
}

// readUsers reads inc's presence with member lists (pages of
// nemMembersPage): of every room and tenant, or of room alone from cursor.
func (run *nemRun) readUsers(ctx context.Context, inc *incarnation, room, cursor string) (*userPresence, error) {
	q := url.Values{"members": {"1"}, "limit": {strconv.Itoa(nemMembersPage)}}
	if room == "" {
		q["room"] = run.f.rooms
		q["tenant"] = run.f.tenants
	} else {
		q.Set("room", room)
		q.Set("cursor", cursor)
	}
	return getPresence[userPresence](ctx, run.f.api, inc.n.base, q)
}

// usersExact reads inc's counts, distinct users and member lists (every
// page) once the workers are paused, and returns how they differ from the
// model ("" if exact). It adds each room's sequence (Members.Seq) to seqs.
func (run *nemRun) usersExact(inc *incarnation, seqs map[string][]int64) string {
	m := run.m
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := run.readUsers(ctx, inc, "", "")
	m.mu.Lock()
	m.stats.quietReads++
	d := ""
	if err != nil {
		d = err.Error()
	} else {
		d = m.exactDiff(inc, &p.presence)
	}
	m.mu.Unlock()
	if d != "" {
		return d // the counts first
	}
	lists := map[string][]wsconn.Member{}
	pages := 0
	for _, room := range m.rooms {
		pg, ok := p.Members[room]
		if !ok {
			return fmt.Sprintf("room %s: no member list in the answer", room)
		}
		seqs[room] = append(seqs[room], pg.Seq)
		first := pg
		var all []wsconn.Member
		for i := 0; ; i++ {
			pages++
			if len(pg.Members) > nemMembersPage || len(pg.Members) == 0 && pg.Next != "" {
				return fmt.Sprintf("room %s: page %d of %d members (limit %d), next %q", room, i, len(pg.Members), nemMembersPage, pg.Next)
			}
			if pg.Users != first.Users {
				return fmt.Sprintf("room %s: page %d counts %d users, the first %d", room, i, pg.Users, first.Users)
			}
			all = append(all, pg.Members...)
			if pg.Next == "" {
				break
			}
			if i > 100 {
				return fmt.Sprintf("room %s: more than 100 pages of members", room)
			}
			q, err := run.readUsers(ctx, inc, room, pg.Next)
			if err != nil {
				return fmt.Sprintf("room %s: page %d (cursor %q): %v", room, i+1, pg.Next, err)
			}
			if pg, ok = q.Members[room]; !ok {
				return fmt.Sprintf("room %s: page %d (cursor %q): no member list in the answer", room, i+1, first.Next)
			}
		}
		lists[room] = all
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.userReads++
	m.stats.memberPages += pages
	return m.usersDiff(p, lists)
}

// truthUsers is the model's presence, every operation having returned:
// the live connections of each user per room, per tenant and overall.
type truthUsers struct {
	rooms   map[string]map[string]int64
	tenants map[string]map[string]int64
	online  map[string]int64
}

// wantUsers computes the model's presence. Call with mu held.
func (m *model) wantUsers() truthUsers {
	tu := truthUsers{rooms: map[string]map[string]int64{}, tenants: map[string]map[string]int64{}, online: map[string]int64{}}
	for _, r := range m.rooms {
		tu.rooms[r] = map[string]int64{}
	}
	for _, tn := range m.tenant {
		tu.tenants[tn] = map[string]int64{}
	}
	for key, ms := range m.members {
		var into map[string]int64
		switch {
		case key == "total":
			into = tu.online
		case strings.HasPrefix(key, "r:"):
			into = tu.rooms[key[2:]]
		case strings.HasPrefix(key, "t:"):
			into = tu.tenants[key[2:]]
		}
		for _, mb := range ms {
			if into != nil && live(mb) && mb.c.user != "" {
				into[mb.c.user]++
			}
		}
	}
	return tu
}

func fmtUsers(us map[string]int64) string {
	var b []string
	for _, u := range slices.SortedFunc(maps.Keys(us), func(a, b string) int { return strings.Compare(memberOrder(a), memberOrder(b)) }) {
		b = append(b, fmt.Sprintf("%s×%d", u, us[u]))
	}
	return "[" + strings.Join(b, " ") + "]"
}

// usersDiff compares distinct users and full member lists with the model.
// Call with mu held.
func (m *model) usersDiff(p *userPresence, lists map[string][]wsconn.Member) string {
	tu := m.wantUsers()
	var d []string
	switch {
	case p.OnlineUsers == nil:
		d = append(d, "online_users missing")
	case *p.OnlineUsers != int64(len(tu.online)):
		d = append(d, fmt.Sprintf("online users %d, want %d %s", *p.OnlineUsers, len(tu.online), fmtUsers(tu.online)))
	}
	for _, tn := range m.tenant {
		if got, want := p.TenantUsers[tn], int64(len(tu.tenants[tn])); got != want {
			d = append(d, fmt.Sprintf("tenant %s users %d, want %d %s", tn, got, want, fmtUsers(tu.tenants[tn])))
		}
	}
	for _, room := range m.rooms {
		want := tu.rooms[room]
		if got := p.RoomUsers[room]; got != int64(len(want)) {
			d = append(d, fmt.Sprintf("room %s users %d, want %d %s", room, got, len(want), fmtUsers(want)))
		}
		if got := p.Members[room].Users; got != int64(len(want)) {
			d = append(d, fmt.Sprintf("room %s member list counts %d users, want %d %s", room, got, len(want), fmtUsers(want)))
		}
		got := map[string]int64{}
		var bad []string
		for i, mb := range lists[room] {
			if i > 0 && memberOrder(lists[room][i-1].User) >= memberOrder(mb.User) {
				bad = append(bad, fmt.Sprintf("%q after %q (out of order or twice)", mb.User, lists[room][i-1].User))
			}
			if mb.Meta != nemMeta(mb.User) {
				bad = append(bad, fmt.Sprintf("%q has metadata %q, want %q", mb.User, mb.Meta, nemMeta(mb.User)))
			}
			got[mb.User] = mb.Connections
		}
		if len(bad) > 0 || !maps.Equal(got, want) {
			d = append(d, fmt.Sprintf("room %s members %s, want %s %s", room, fmtUsers(got), fmtUsers(want), strings.Join(bad, ", ")))
		}
	}
	return strings.Join(d, "; ")
}

// ---------------------------------------------------------------------
// Presence events.

// roomEvents is what the events of one room replay into.
type roomEvents struct {
	have     bool // a snapshot came: the events after it continue it
	last     int64
	lastRecv time.Time
	set      map[string]bool // the room's members
}

// nemEvent is a join or leave recorded, to check against the model.
type nemEvent struct {
	wsconn.PresenceEvent
	at  time.Time
	via string // the node whose stream delivered it
}

// subscriber records every presence event of the model's rooms: one event
// stream (EventsHandler, over HTTP) at a time, on a live node picked at
// random; every few seconds, or when its node is killed, it opens a new
// one on another node, resuming from the last sequence of each room.
type subscriber struct {
	run    *nemRun
	r      *rand.Rand
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	client *http.Client
	once   sync.Once

	mu      sync.Mutex
	rooms   map[string]*roomEvents
	pending []nemEvent  // joins and leaves since the last check
	losses  []time.Time // when a fault that loses Redis data began
	via     string      // the node of the current stream
	st      struct {
		streams, cutOff, hops, unavailable int
		events, snapshots, resumedSnaps    int
		newSeqs                            int
	}
}

// subscribe starts run's event subscriber.
func (run *nemRun) subscribe(seed, stream uint64) {
	s := &subscriber{run: run, r: rand.New(rand.NewPCG(seed, stream+1000)), done: make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{}}, rooms: map[string]*roomEvents{}}
	for _, r := range run.m.rooms {
		s.rooms[r] = &roomEvents{set: map[string]bool{}}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	run.sub = s
	run.t.Cleanup(s.stop)
	go s.loop()
}

func (s *subscriber) stop() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.client.CloseIdleConnections()
	})
}

func (s *subscriber) node() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.via
}

// dataLoss records that a fault losing Redis data (and with it the
// events' history) begins.
func (run *nemRun) dataLoss() {
	if s := run.sub; s != nil {
		s.mu.Lock()
		s.losses = append(s.losses, time.Now())
		s.mu.Unlock()
	}
}

func (s *subscriber) loop() {
	defer close(s.done)
	var prev *incarnation
	for s.ctx.Err() == nil {
		var cands []*incarnation
		for _, inc := range s.run.alive() {
			if inc != prev {
				cands = append(cands, inc)
			}
		}
		if len(cands) == 0 {
			if prev == nil || s.run.m.killed(prev) {
				s.sleep(50 * time.Millisecond)
				continue
			}
			cands = []*incarnation{prev}
		}
		prev = cands[s.r.IntN(len(cands))]
		s.stream(prev)
	}
}

func (s *subscriber) sleep(d time.Duration) {
	select {
	case <-s.ctx.Done():
	case <-time.After(d):
	}
}

// stream reads one event stream from inc, for a few seconds.
func (s *subscriber) stream(inc *incarnation) {
	m := s.run.m
	hop := time.Duration(2000+s.r.IntN(8000)) * time.Millisecond
	ctx, cancel := context.WithTimeout(s.ctx, hop)
	defer cancel()
	q := url.Values{"room": m.rooms}
	from := url.Values{}
	s.mu.Lock()
	for room, st := range s.rooms {
		if st.have {
			from.Set(room, strconv.FormatInt(st.last, 10))
		}
	}
	s.mu.Unlock()
	if len(from) > 0 {
		q.Set("last_event_id", from.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, inc.n.base+"/api/events?"+q.Encode(), nil)
	if err != nil {
		m.failf("events: %v", err)
		return
	}
	t0 := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		s.ended(ctx, inc, t0, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t1 := time.Now()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		m.mu.Lock()
		if resp.StatusCode == http.StatusServiceUnavailable {
			s.st.unavailable++
			m.note("events on %s: 503 %s", inc.name, strings.TrimSpace(string(b)))
			if !m.unavailableOK(inc, t0, t1) {
				m.fail("events on %s [%s, %s]: 503 (%s) while no fault of Redis or of the node was active or healing", inc.name, m.rel(t0), m.rel(t1), strings.TrimSpace(string(b)))
			}
		} else if inc.killStart.IsZero() {
			m.fail("events on %s: HTTP %d: %s", inc.name, resp.StatusCode, strings.TrimSpace(string(b)))
		}
		m.mu.Unlock()
		s.sleep(100 * time.Millisecond)
		return
	}
	s.mu.Lock()
	s.via = inc.name
	s.st.streams++
	s.mu.Unlock()
	m.notef("events: stream on %s from %q", inc.name, from.Encode())
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var kind, data string
	for sc.Scan() {
		switch line := sc.Text(); {
		case line == "":
			if data != "" {
				s.event(inc, kind, data)
			}
			kind, data = "", ""
		case strings.HasPrefix(line, "event: "):
			kind = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
	err = sc.Err()
	if err == nil {
		err = io.EOF
	}
	s.ended(ctx, inc, t0, err)
}

// ended: inc's stream, opened at t0, ended, because the subscriber moves
// on or stops, or because the node was killed (then the next stream
// resumes where this one stopped), or because Watch failed with
// ErrUnavailable as it started (it reads every room once subscribed, and
// gives up if one read fails; the stream has begun, so it just ends, and
// the next resumes): while a fault of Redis or of the node lasts or heals,
// within RedisTimeout plus slack. Else a failure.
func (s *subscriber) ended(ctx context.Context, inc *incarnation, t0 time.Time, err error) {
	m := s.run.m
	t1 := time.Now()
	m.mu.Lock()
	unavailable := stalls.ran(t0, t1) <= nemRedisTimeout+nemBoundSlack && m.unavailableOK(inc, t0, t1)
	m.mu.Unlock()
	switch {
	case s.ctx.Err() != nil:
	case ctx.Err() != nil:
		s.mu.Lock()
		s.st.hops++
		s.mu.Unlock()
	case m.killed(inc):
		s.mu.Lock()
		s.st.cutOff++
		s.mu.Unlock()
		m.notef("events: stream on %s cut off (node killed): %v", inc.name, err)
	case unavailable:
		s.mu.Lock()
		s.st.unavailable++
		s.mu.Unlock()
		m.notef("events: stream on %s [%s, %s] ended as it started, while a fault lasts or heals: %v", inc.name, m.rel(t0), m.rel(t1), err)
		s.sleep(100 * time.Millisecond)
	default:
		m.failf("events: the stream on %s [%s, %s] ended while the node lives: %v", inc.name, m.rel(t0), m.rel(t1), err)
		s.sleep(100 * time.Millisecond)
	}
}

// lostSince reports whether a fault losing Redis data began after t.
// Call with s.mu held.
func (s *subscriber) lostSince(t time.Time) bool {
	return slices.ContainsFunc(s.losses, func(l time.Time) bool { return l.After(t) })
}

// newSequence reports whether seq starts a new sequence at about now: Redis
// TIME in milliseconds times 1000 (internal/lua/presence.lua).
func newSequence(seq int64, now time.Time) bool {
	ms := now.UnixMilli()
	return seq%1000 == 0 && seq/1000 > ms-time.Minute.Milliseconds() && seq/1000 < ms+time.Minute.Milliseconds()
}

// event replays one event into its room's members and checks its
// sequence: every event but a snapshot is one more than the one before in
// its room (across streams: a new one resumes after the last), or starts
// a new sequence in a room seen empty; a snapshot comes first, or after a
// loss of Redis data.
func (s *subscriber) event(inc *incarnation, kind, data string) {
	m := s.run.m
	var e wsconn.PresenceEvent
	if err := json.Unmarshal([]byte(data), &e); err != nil {
		m.failf("events on %s: %v: %s", inc.name, err, data)
		return
	}
	var fails []string
	bad := func(format string, args ...any) {
		fails = append(fails, fmt.Sprintf("events on %s: room %s: ", inc.name, e.Room)+fmt.Sprintf(format, args...))
	}
	now := time.Now()
	s.mu.Lock()
	st := s.rooms[e.Room]
	switch {
	case st == nil:
		s.mu.Unlock()
		m.failf("events on %s: an event of a room not watched: %s", inc.name, data)
		return
	case e.Kind != kind:
		bad("event %q carries kind %q", kind, e.Kind)
	}
	s.st.events++
	note := fmt.Sprintf("event via %s: %s #%d %s", inc.name, e.Room, e.Seq, e.Kind)
	if e.Kind == wsconn.EventSnapshot {
		s.st.snapshots++
		if st.have {
			s.st.resumedSnaps++
			if !s.lostSince(st.lastRecv.Add(-lossSlack)) {
				bad("a snapshot at #%d after #%d while Redis lost no data: the history should have continued", e.Seq, st.last)
			}
		}
		st.set = map[string]bool{}
		if e.Members == nil {
			bad("a snapshot without members")
		} else {
			var us []string
			for _, mb := range e.Members.Members {
				if st.set[mb.User] || mb.Connections < 1 || mb.Meta != nemMeta(mb.User) {
					bad("snapshot member %+v: twice, without connections or with the wrong metadata", mb)
				}
				st.set[mb.User] = true
				us = append(us, fmt.Sprintf("%s×%d", mb.User, mb.Connections))
			}
			if e.Members.Users != int64(len(st.set)) || e.Members.Next != "" {
				bad("a snapshot of %d users listing %d, next %q", e.Members.Users, len(st.set), e.Members.Next)
			}
			note += fmt.Sprintf(" %v", us)
		}
		st.have, st.last = true, e.Seq
	} else {
		note += fmt.Sprintf(" %q reason %s node %s", e.User, e.Reason, e.Node)
		dup := false
		switch {
		case !st.have:
			bad("%s #%d before any snapshot", e.Kind, e.Seq)
		case e.Seq <= st.last:
			dup = true
			bad("%s #%d after #%d: a duplicate", e.Kind, e.Seq, st.last)
		case e.Seq == st.last+1:
		case len(st.set) == 0 && e.Kind == wsconn.EventOccupied && newSequence(e.Seq, now):
			// A room's first event after its presence keys expired or were
			// lost starts a new sequence, above any before: a subscriber
			// that saw the room empty takes it with no snapshot.
			s.st.newSeqs++
		default:
			bad("%s #%d after #%d: a gap", e.Kind, e.Seq, st.last)
		}
		if !dup {
			st.last = e.Seq
			switch e.Kind {
			case wsconn.EventJoin:
				if st.set[e.User] {
					bad("join of %q, a member already (#%d)", e.User, e.Seq)
				}
				if e.Meta != nemMeta(e.User) {
					bad("join of %q with metadata %q, want %q", e.User, e.Meta, nemMeta(e.User))
				}
				st.set[e.User] = true
				s.pending = append(s.pending, nemEvent{e, now, inc.name})
			case wsconn.EventLeave:
				if !st.set[e.User] {
					bad("leave of %q, not a member (#%d)", e.User, e.Seq)
				}
				delete(st.set, e.User)
				s.pending = append(s.pending, nemEvent{e, now, inc.name})
			case wsconn.EventOccupied:
				if len(st.set) != 0 {
					bad("occupied (#%d) with %d members", e.Seq, len(st.set))
				}
			case wsconn.EventVacated:
				if len(st.set) != 0 {
					bad("vacated (#%d) with %d members", e.Seq, len(st.set))
				}
			default:
				bad("an event of kind %q", e.Kind)
			}
		}
	}
	st.lastRecv = now
	s.mu.Unlock()
	m.mu.Lock()
	m.note("%s", note)
	for _, f := range fails {
		m.fail("%s", f)
	}
	m.mu.Unlock()
}

// diff compares the members the events replay into with the model, and
// each room's last event with the sequences the member lists read (seqs):
// "" if they agree. Call with m.mu held.
func (s *subscriber) diff(seqs map[string][]int64) string {
	tu := s.run.m.wantUsers()
	s.mu.Lock()
	defer s.mu.Unlock()
	var d []string
	for _, room := range s.run.m.rooms {
		st := s.rooms[room]
		if !st.have {
			d = append(d, fmt.Sprintf("room %s: no snapshot yet", room))
			continue
		}
		want := tu.rooms[room]
		wantSet := map[string]bool{}
		for u := range want {
			wantSet[u] = true
		}
		if !maps.Equal(st.set, wantSet) {
			d = append(d, fmt.Sprintf("room %s: events say %v, want %s", room, slices.Sorted(maps.Keys(st.set)), fmtUsers(want)))
		}
		for _, q := range seqs[room] {
			if q != st.last {
				d = append(d, fmt.Sprintf("room %s: last event #%d, the member list is at #%d", room, st.last, q))
				break
			}
		}
	}
	return strings.Join(d, "; ")
}

// checkEvents checks the joins and leaves recorded since the last time
// against the model's connections: each by a node (its InstanceID) on which
// a connection of the user was in the room; a leave with reason "closed"
// needs one of them to have left, closed or failed while its node lived,
// "crashed" one whose node was killed before its removal surely reached
// Redis, or one whose node's Redis traffic (or all of Redis) failed
// meanwhile; a leave of a user whose connections there all ended with
// their node's death is "crashed", and "drained" never comes (no node
// drains during the run). Call with m.mu held.
func (run *nemRun) checkEvents() {
	s, m := run.sub, run.m
	if s == nil {
		return
	}
	s.mu.Lock()
	evs := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, e := range evs {
		key := "r:" + e.Room
		var cands []*member
		for _, ms := range [][]*member{m.members[key], m.gone[key]} {
			for _, mb := range ms {
				if mb.c.user == e.User && mb.c.inc.id == e.Node {
					cands = append(cands, mb)
				}
			}
		}
		what := fmt.Sprintf("%s of %q in %s (#%d, reason %q, node %s, via %s at %s)", e.Kind, e.User, e.Room, e.Seq, e.Reason, e.Node, e.via, m.rel(e.at))
		k := e.Kind
		if e.Kind == wsconn.EventLeave {
			k += " " + e.Reason
		}
		m.stats.events[k]++
		if len(cands) == 0 {
			m.fail("%s: no connection of the user was ever in the room on a node %s", what, e.Node)
			continue
		}
		if e.Kind != wsconn.EventLeave {
			continue
		}
		switch e.Reason {
		case wsconn.ReasonClosed:
			if !slices.ContainsFunc(cands, mayLeaveClosed) {
				m.fail("%s: every connection of the user there ended with its node's death (want reason %q), or lives: %s", what, wsconn.ReasonCrashed, m.describe(cands))
			}
		case wsconn.ReasonCrashed:
			if !slices.ContainsFunc(cands, m.mayLeaveCrashed) {
				m.fail("%s: no connection of the user there had its node killed, or partitioned, or Redis failing: %s", what, m.describe(cands))
			}
		default:
			m.fail("%s: want reason %q or %q", what, wsconn.ReasonClosed, wsconn.ReasonCrashed)
		}
	}
}

// mayLeaveClosed: mb's membership may end with a leave of reason closed:
// the connection left or closed while its node lived, or the operation
// that added it failed (undone) or was uncertain.
func mayLeaveClosed(mb *member) bool {
	k := mb.c.inc.killStart
	switch {
	case mb.uncertain:
		return true
	case mb.failed:
		return k.IsZero() || k.After(mb.rmEnd)
	case !mb.rmStart.IsZero():
		return k.IsZero() || !mb.rmStart.After(k)
	}
	return false
}

// mayLeaveCrashed: mb's membership may be swept: its node was killed
// before its removal surely reached Redis, or a fault of Redis or of its
// node's traffic began while it was (or may have been) counted. Call with
// mu held.
func (m *model) mayLeaveCrashed(mb *member) bool {
	inc := mb.c.inc
	end := m.visEnd(mb, true)
	if !inc.killStart.IsZero() && inc.killStart.Before(end) {
		return true
	}
	return slices.ContainsFunc(m.allWindows, func(w *window) bool {
		return (w.slot < 0 || w.slot == inc.s.i) && w.start.Before(end) && !w.end().Before(mb.start)
	})
}

// presenceStats sums up the presence checks for the run's log.
func (run *nemRun) presenceStats() string {
	m := run.m
	var ev []string
	for _, k := range slices.Sorted(maps.Keys(m.stats.events)) {
		ev = append(ev, fmt.Sprintf("%s %d", k, m.stats.events[k]))
	}
	out := fmt.Sprintf("%d quiet reads of users and member lists (%d pages) exact; joins and leaves checked: %s", m.stats.userReads, m.stats.memberPages, strings.Join(ev, ", "))
	if s := run.sub; s != nil {
		s.mu.Lock()
		out += fmt.Sprintf("; %d events (%d snapshots, %d of them after data loss; %d new sequences) over %d streams (%d moved on, %d cut off by a kill, %d refused or ended at once while a fault lasted)",
			s.st.events, s.st.snapshots, s.st.resumedSnaps, s.st.newSeqs, s.st.streams, s.st.hops, s.st.cutOff, s.st.unavailable)
		s.mu.Unlock()
	}
	return out
}
