package icounter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/lua"
	"github.com/headcount-go/headcount/internal/redistest"
)

func newPresence(t testing.TB, c redis.UniversalClient, prefix, id string) *Lax {
	t.Helper()
	o := testOptions(prefix, id)
	o.Presence = &PresenceOptions{}
	l, err := NewLax(c, LaxOptions{Options: o, FlushInterval: testFlush})
	if err != nil {
		t.Fatalf("NewLax: %v", err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// presenceModel is what a group's members must be: connections per member
// per instance.
type presenceModel map[string]map[string]map[int]int64 // group -> member -> node -> conns

func (m presenceModel) add(group, member string, node int, d int64) {
	if m[group] == nil {
		m[group] = map[string]map[int]int64{}
	}
	if m[group][member] == nil {
		m[group][member] = map[int]int64{}
	}
	m[group][member][node] += d
}

// want returns group's members and their connections, leaving out the
// nodes in gone.
func (m presenceModel) want(group string, gone ...int) map[string]int64 {
	out := map[string]int64{}
	for member, nodes := range m[group] {
		for n, c := range nodes {
			if !slices.Contains(gone, n) {
				out[member] += c
			}
		}
		if out[member] == 0 {
			delete(out, member)
		}
	}
	return out
}

// membersAre checks a full listing of group against want, with metadata.
func membersAre(ctx context.Context, r *Lax, group string, want map[string]int64) (bool, string) {
	got := map[string]int64{}
	cursor := ""
	for {
		p, err := r.Members(ctx, group, cursor, 3)
		if err != nil {
			return false, err.Error()
		}
		if p.Present != int64(len(want)) {
			return false, fmt.Sprintf("%s: present %d, want %d", group, p.Present, len(want))
		}
		for _, m := range p.Members {
			if m.Meta != "meta of "+m.Name {
				return false, fmt.Sprintf("%s: %q has metadata %q", group, m.Name, m.Meta)
			}
			got[m.Name] = m.Connections
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("%s: %v, want %v", group, got, want)
}

// TestPresenceExactAcrossCrash: three instances hold a random spread of
// members' connections (several per member, on several instances) in rooms
// on every master. Every instance lists each room's members exactly, with
// connection counts and metadata, paged. One instance is killed: within
// threshold + heartbeat + 1s the lists hold the others' members only, and
// each member whose last connection was on the dead instance has left with
// reason crashed exactly once; no one else has left.
func TestPresenceExactAcrossCrash(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		nodes := []*Lax{newPresence(t, c, p, "n0"), newPresence(t, c, p, "n1"), newPresence(t, c, p, "n2")}
		rnd := rand.New(rand.NewPCG(1, 2))
		groups := make([]string, 12) // 12 tags: every master of 3 gets some
		for i := range groups {
			groups[i] = fmt.Sprintf("r:room{%d}:é", i)
		}
		users := []string{"ann", "bob", "c:d", "e%3A", "}#f{", "ü"}
		model := presenceModel{}
		for range 200 {
			g, u, n := groups[rnd.IntN(len(groups))], users[rnd.IntN(len(users))], rnd.IntN(3)
			d := int64(1)
			if model[g][u][n] > 0 && rnd.IntN(3) == 0 {
				d = -1
			}
			model.add(g, u, n, d)
			if _, err := nodes[n].AddMember(Member(g, u), d, "meta of "+u); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range nodes {
			if err := n.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, g := range groups {
			for _, r := range nodes {
				if ok, got := membersAre(ctx, r, g, model.want(g)); !ok {
					t.Fatal(got)
				}
			}
		}
		before := map[string]int64{}
		for _, g := range groups {
			evs, err := nodes[1].Events(ctx, g, 0, 10000)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) > 0 {
				before[g] = evs[len(evs)-1].Seq
			}
		}

		nodes[0].Kill()
		for _, g := range groups {
			eventually(t, healDeadline, "members after the kill", func() (bool, string) {
				return membersAre(ctx, nodes[1], g, model.want(g, 0))
			})
		}
		crashed := 0
		for _, g := range groups {
			evs, err := nodes[2].Events(ctx, g, before[g], 10000)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, e := range evs {
				switch {
				case e.Kind == EventLeave && e.Reason == reasonCrashed && e.Instance == "n0":
					left = append(left, e.Member)
				case e.Kind == EventVacated && e.Reason == reasonCrashed:
				default:
					t.Errorf("%s: unexpected event after the kill: %+v", g, e)
				}
			}
			var want []string
			for u := range model.want(g) {
				if _, stays := model.want(g, 0)[u]; !stays {
					want = append(want, u)
				}
			}
			crashed += len(want)
			slices.Sort(left)
			slices.Sort(want)
			if !slices.Equal(left, want) {
				t.Errorf("%s: crashed leaves %q, want each of %q once", g, left, want)
			}
		}
		if crashed == 0 {
			t.Fatal("no member had its last connection on the killed node: the test proves nothing")
		}
	})
}

// TestPresenceEventsPublished: a subscriber to a group gets each event
// once, in sequence, as the history has it: join (with metadata) and
// occupied, a second connection of the same member (no event), leave and
// vacated, with the instance and reason (closed, then drained).
func TestPresenceEventsPublished(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		a, b := newPresence(t, c, p, "a"), newPresence(t, c, p, "b")
		const g = "r:lobby"
		ps, err := b.Subscribe(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		defer ps.Close()
		step := func(l *Lax, d int64) {
			t.Helper()
			if _, err := l.AddMember(Member(g, "ann"), d, "Ann"); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(ctx, Member(g, "ann")); err != nil {
				t.Fatal(err)
			}
		}
		step(a, 1)
		step(b, 1) // a second connection: no event
		step(a, -1)
		b.Draining()
		step(b, -1)
		want := []string{"occupied  closed a", "join ann closed a", "leave ann drained b", "vacated  drained b"}
		var got []string
		var seqs []int64
		for len(got) < len(want) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			m, err := ps.ReceiveMessage(ctx)
			cancel()
			if err != nil {
				t.Fatalf("after %q: %v", got, err)
			}
			e, err := ParseEvent(m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if e.Kind == EventJoin && e.Meta != "Ann" {
				t.Errorf("join carries metadata %q, want Ann", e.Meta)
			}
			got = append(got, strings.Join([]string{e.Kind, e.Member, e.Reason, e.Instance}, " "))
			seqs = append(seqs, e.Seq)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("events %q, want %q", got, want)
		}
		for i := 1; i < len(seqs); i++ {
			if seqs[i] != seqs[i-1]+1 {
				t.Fatalf("sequences %v: want consecutive", seqs)
			}
		}
		hist, err := a.Events(ctx, g, seqs[0]-1, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != len(want) || hist[0].Seq != seqs[0] || !hist[0].Start || hist[1].Start {
			t.Fatalf("history %+v: want the %d published events, the first one starting the sequence", hist, len(want))
		}
	})
}

// TestPresenceMetadataSurvivesDataLoss: metadata rides in every assertion
// of a member, so that a member Redis lost (a flush, a restart empty) comes
// back with it when the instance asserts its slices again, in the list and
// in the join event, also for a member whose total this instance holds at
// zero meanwhile.
func TestPresenceMetadataSurvivesDataLoss(t *testing.T) {
	t.Parallel()
	srv := redistest.NewServer(t)
	c := srv.Client(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	a := newPresence(t, c, p, "a")
	const g = "r:room"
	for _, u := range []string{"ann", "bob"} {
		if _, err := a.AddMember(Member(g, u), 1, "meta of "+u); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"ann": 1, "bob": 1}
	if ok, got := membersAre(ctx, a, g, want); !ok {
		t.Fatal(got)
	}
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// bob leaves and comes back while Redis is empty: his state is at zero
	// when the loss is noticed.
	if _, err := a.AddMember(Member(g, "bob"), -1, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddMember(Member(g, "bob"), 1, "meta of bob"); err != nil {
		t.Fatal(err)
	}
	eventually(t, healDeadline, "members back with their metadata", func() (bool, string) {
		return membersAre(ctx, a, g, want)
	})
	evs, err := a.Events(ctx, g, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Kind == EventJoin && e.Meta != "meta of "+e.Member {
			t.Errorf("join %+v after the loss: metadata lost", e)
		}
	}
}

// TestCountedMembers: counted members are counted (Present) but neither
// listed nor announced; a dead instance's are swept like any.
func TestCountedMembers(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		a, b := newPresence(t, c, p, "a"), newPresence(t, c, p, "b")
		// bob on both, ann on b only.
		for n, users := range map[*Lax][]string{a: {"bob"}, b: {"ann", "bob"}} {
			for _, u := range users {
				if _, err := n.AddMember(CountedMember("t:acme", u), 1, "x"); err != nil {
					t.Fatal(err)
				}
			}
			if err := n.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		got, err := a.Present(ctx, []string{"t:acme"})
		if err != nil || got[0] != 2 {
			t.Fatalf("Present = %v, %v; want 2", got, err)
		}
		pg, err := a.Members(ctx, "t:acme", "", 10)
		if err != nil || len(pg.Members) != 0 || pg.Seq != 0 {
			t.Fatalf("Members of a counted group = %+v, %v: want none listed, no events", pg, err)
		}
		b.Kill()
		eventually(t, healDeadline, "ann swept, bob kept", func() (bool, string) {
			got, err := a.Present(ctx, []string{"t:acme"})
			return err == nil && got[0] == 1, fmt.Sprint(got, err)
		})
		if _, err := a.AddMember(CountedMember("t:acme", "bob"), -1, ""); err != nil {
			t.Fatal(err)
		}
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, healDeadline, "no one counted", func() (bool, string) {
			got, err := a.Present(ctx, []string{"t:acme"})
			return err == nil && got[0] == 0, fmt.Sprint(got, err)
		})
	})
}

// TestMemberListVersioned: a whole list read again is served from the
// reader's copy only while Redis says it is unchanged: a second connection
// of a member or new metadata (no event) shows in the next read, on the
// instance that made it and on another.
func TestMemberListVersioned(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	a, b := newPresence(t, c, p, "a"), newPresence(t, c, p, "b")
	const g = "r:room"
	add := func(l *Lax, user string, d int64, meta string) {
		t.Helper()
		if _, err := l.AddMember(Member(g, user), d, meta); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(ctx, Member(g, user)); err != nil {
			t.Fatal(err)
		}
	}
	list := func(l *Lax) string {
		t.Helper()
		pg, err := l.Members(ctx, g, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(pg.Present, pg.Members)
	}
	add(a, "ann", 1, "Ann")
	add(a, "bob", 1, "Bob")
	want := "2 [{ann 1 Ann} {bob 1 Bob}]"
	for range 2 { // the second read is the held copy
		for _, l := range []*Lax{a, b} {
			if got := list(l); got != want {
				t.Fatalf("list %s, want %s", got, want)
			}
		}
	}
	add(b, "ann", 1, "Ann") // a second connection: no event
	want = "2 [{ann 2 Ann} {bob 1 Bob}]"
	for _, l := range []*Lax{a, b} {
		if got := list(l); got != want {
			t.Fatalf("after ann's second connection: %s, want %s", got, want)
		}
	}
	add(b, "bob", 1, "Robert") // new metadata, also no event
	want = "2 [{ann 2 Ann} {bob 2 Robert}]"
	for _, l := range []*Lax{a, b} {
		if got := list(l); got != want {
			t.Fatalf("after bob's new metadata: %s, want %s", got, want)
		}
	}
}

// TestMemberReadsShared: callers asking for the same page at the same time
// share one members.lua run (the member reader batches them, as the reader
// does counts), and each gets the whole list.
func TestMemberReadsShared(t *testing.T) {
	t.Parallel()
	c, f := ownClient(t, redistest.Standalone(t))
	ctx := ctxT(t)
	l := newPresence(t, c, redistest.Prefix(t), "a")
	const g, users, readers = "r:room", 10, 50
	for i := range users {
		m := Member(g, fmt.Sprintf("u%d", i))
		if _, err := l.AddMember(m, 1, ""); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var runs atomic.Int64
	count := func(cmds []redis.Cmder) {
		for _, cmd := range cmds {
			if a := cmd.Args(); cmd.Name() == "evalsha" && len(a) > 1 && a[1] == lua.Members.Hash() {
				runs.Add(1)
			}
		}
	}
	f.after.Store(&count)
	start := make(chan struct{})
	pages, errs := make([]MemberPage, readers), make([]error, readers)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Go(func() {
			<-start
			pages[i], errs[i] = l.Members(ctx, g, "", 100)
		})
	}
	close(start)
	wg.Wait()
	for i, p := range pages {
		if errs[i] != nil || p.Present != users || len(p.Members) != users {
			t.Fatalf("reader %d: %d present, %d listed, %v; want %d", i, p.Present, len(p.Members), errs[i], users)
		}
	}
	// A batch is one round trip: the readers that come while one is in
	// flight share the next.
	if n := runs.Load(); n > readers/5 {
		t.Fatalf("%d readers at once: %d runs of members.lua, want them shared", readers, n)
	}
}

// TestMemberCap: a group lists at most MemberCap members; those beyond are
// counted and announced, not listed, also once a listed one leaves.
func TestMemberCap(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx := ctxT(t)
	o := testOptions(redistest.Prefix(t), "a")
	o.Presence = &PresenceOptions{MemberCap: 2}
	l, err := NewLax(c, LaxOptions{Options: o, FlushInterval: testFlush})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	const g = "r:capped"
	for _, u := range []string{"a1", "a2", "a3", "a4"} {
		if _, err := l.AddMember(Member(g, u), 1, u); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(ctx, Member(g, u)); err != nil {
			t.Fatal(err)
		}
	}
	check := func(present int64, listed ...string) {
		t.Helper()
		for _, limit := range []int{1, 100} { // pages, and the whole list
			var names []string
			cursor := ""
			for {
				pg, err := l.Members(ctx, g, cursor, limit)
				if err != nil {
					t.Fatal(err)
				}
				if pg.Present != present {
					t.Fatalf("present %d, want %d", pg.Present, present)
				}
				for _, m := range pg.Members {
					names = append(names, m.Name)
				}
				if cursor = pg.Next; cursor == "" {
					break
				}
			}
			if !slices.Equal(names, listed) {
				t.Fatalf("limit %d: listed %q, want %q", limit, names, listed)
			}
		}
	}
	check(4, "a1", "a2")
	if _, err := l.AddMember(Member(g, "a1"), -1, ""); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(ctx, Member(g, "a1")); err != nil {
		t.Fatal(err)
	}
	check(3, "a2")
	evs, err := l.Events(ctx, g, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	joins := 0
	for _, e := range evs {
		if e.Kind == EventJoin {
			joins++
		}
	}
	if joins != 4 {
		t.Fatalf("%d joins announced, want 4 (listed or not)", joins)
	}
}

// TestMemberListDeltas: a reader holding a whole list catches up through
// the joins and leaves since (a short reply), and what it lists is, after
// every change, what a reader without a copy reads: members joining and
// leaving at random, beyond the cap too, with other members' connection
// counts changing in between (which a delta cannot carry: a whole read).
func TestMemberListDeltas(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		o := testOptions(redistest.Prefix(t), "a")
		o.Presence = &PresenceOptions{MemberCap: 6}
		a, err := NewLax(c, LaxOptions{Options: o, FlushInterval: testFlush})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close(context.Background()) })
		const g = "r:deltas"
		rnd := rand.New(rand.NewPCG(3, 4))
		conns := map[string]int64{}
		for step := range 300 {
			u := fmt.Sprintf("u%d:%%", rnd.IntN(9))
			d := int64(1)
			if conns[u] > 0 && rnd.IntN(2) == 0 {
				d = -1
			}
			conns[u] += d
			if _, err := a.AddMember(Member(g, u), d, "meta of "+u); err != nil {
				t.Fatal(err)
			}
			if err := a.Sync(ctx, Member(g, u)); err != nil {
				t.Fatal(err)
			}
			held, err := a.Members(ctx, g, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			a.e.lists = lists{} // a reader with no copy
			fresh, err := a.Members(ctx, g, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(held) != fmt.Sprint(fresh) {
				t.Fatalf("step %d: with a copy %+v, without %+v", step, held, fresh)
			}
			if step%3 == 0 { // leave a copy for the next step's read
				if _, err := a.Members(ctx, g, "", 100); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// TestResetMembersLeave: Del of a member, and Clear, take members out of
// their group as their last connection leaving would: the count, the list
// and a leave (and vacated) event. Before, the reset left them listed and
// counted, and their next join counted them twice.
func TestResetMembersLeave(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		a := newPresence(t, c, p, "a")
		const g = "room"
		join := func(u string) {
			t.Helper()
			if _, err := a.AddMember(Member(g, u), 1, "meta of "+u); err != nil {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		join("ann")
		join("bob")
		if _, err := a.Del(ctx, Member(g, "ann")); err != nil {
			t.Fatal(err)
		}
		if ok, why := membersAre(ctx, a, g, map[string]int64{"bob": 1}); !ok {
			t.Fatalf("after Del of ann: %s", why)
		}
		if err := a.Clear(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, why := membersAre(ctx, a, g, map[string]int64{}); !ok {
			t.Fatalf("after Clear: %s", why)
		}
		var kinds []string
		evs, err := a.Events(ctx, g, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			kinds = append(kinds, ev.Kind+" "+ev.Member)
		}
		want := []string{"occupied ", "join ann", "join bob", "leave ann", "leave bob", "vacated "}
		if fmt.Sprint(kinds) != fmt.Sprint(want) {
			t.Fatalf("events %q, want %q", kinds, want)
		}
		join("bob") // counted once, not on top of a stale count
		if ok, why := membersAre(ctx, a, g, map[string]int64{"bob": 1}); !ok {
			t.Fatalf("bob back: %s", why)
		}
	})
}

// TestPresenceCallsAfterClose: the presence calls return ErrClosed after
// Close, like every other call, rather than going on talking to Redis.
func TestPresenceCallsAfterClose(t *testing.T) {
	t.Parallel()
	o := testOptions(redistest.Prefix(t), "a")
	o.Presence = &PresenceOptions{AllGroups: true}
	p, err := NewStrict(redistest.Standalone(t), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	feed := p.NewFeed(time.Second)
	t.Cleanup(func() { _ = feed.Close() })
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"Members": func() error { _, err := p.Members(ctx, "r:room", "", 10); return err },
		"Events":  func() error { _, err := p.Events(ctx, "r:room", 0, 10); return err },
		"Subscribe": func() error {
			ps, err := p.Subscribe(ctx, "r:room")
			if ps != nil {
				_ = ps.Close()
			}
			return err
		},
		"SubscribeAll": func() error {
			ps, err := p.SubscribeAll(ctx)
			if ps != nil {
				_ = ps.Close()
			}
			return err
		},
		"Feed.Add": func() error { return feed.Add(ctx, "r:room") },
	} {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// allGroupsThroughProxy returns a Strict with AllGroups on, talking to
// Redis through a fault proxy, closed at the end of the test.
func allGroupsThroughProxy(t *testing.T) (*Strict, *faultproxy.Proxy) {
	t.Helper()
	pc, proxy := faultproxy.Redis(t)
	o := testOptions(redistest.Prefix(t), "a")
	o.Presence = &PresenceOptions{AllGroups: true}
	p, err := NewStrict(pc, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p, proxy
}

// TestSubscribeEndsWithContext: go-redis keeps a subscription's handshake
// going until its own timeouts (here a 5 s dial) whatever the context;
// Subscribe and SubscribeAll return when the context ends all the same,
// so that a watcher's deadline or cancellation holds while Redis does not
// answer.
func TestSubscribeEndsWithContext(t *testing.T) {
	t.Parallel()
	p, proxy := allGroupsThroughProxy(t)
	proxy.Stall(true)
	defer proxy.Stall(false)
	for name, subscribe := range map[string]func(context.Context) (*redis.PubSub, error){
		"Subscribe":    func(ctx context.Context) (*redis.PubSub, error) { return p.Subscribe(ctx, "r:room") },
		"SubscribeAll": p.SubscribeAll,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		ps, err := subscribe(ctx)
		cancel()
		if err == nil {
			_ = ps.Close()
			t.Fatalf("%s: subscribed while Redis did not answer", name)
		}
		// 1 s: the context's 200 ms and room for a busy machine, well
		// short of go-redis' 5 s.
		if d := time.Since(start); d > time.Second || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s returned %v after %v; want the context's deadline, at 200ms", name, err, d)
		}
	}
}

// TestReadAllReportsGap: ReadAll hands on SubscribeAll's messages in
// order, and once its connection broke (what was published meanwhile is
// lost) and go-redis subscribed again, it calls gap, before the messages
// published after that.
func TestReadAllReportsGap(t *testing.T) {
	t.Parallel()
	p, proxy := allGroupsThroughProxy(t)
	ctx := ctxT(t)
	ps, err := p.SubscribeAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ReadAll(ps, func(m string) { got <- m }, func() { got <- "gap" })
	}()
	direct := redistest.Standalone(t)
	// publish sends m every 100 ms until the subscriber has it (one sent
	// while the link is down is lost), and returns what came before it,
	// less copies of the messages published before.
	const within = 5 * time.Second // a reconnect: a round trip or two, with room for -race on a busy machine
	var sent []string
	publish := func(m string) (before []string) {
		t.Helper()
		send := func() {
			if err := direct.Publish(ctx, p.e.cfg.allChannel, m).Err(); err != nil {
				t.Fatal(err)
			}
		}
		send()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(within)
		for {
			select {
			case g := <-got:
				switch {
				case g == m:
					sent = append(sent, m)
					return before
				case !slices.Contains(sent, g):
					before = append(before, g)
				}
			case <-tick.C:
				send()
			case <-deadline:
				t.Fatalf("%q not received within %v; received %q", m, within, before)
			}
		}
	}
	if before := publish("one"); len(before) != 0 {
		t.Fatalf("%q before the first message", before)
	}
	proxy.CutAll()
	if before := publish("two"); !slices.Contains(before, "gap") {
		t.Fatalf("after a cut: %q before the next message, want a gap", before)
	}
	if before := publish("three"); len(before) != 0 {
		t.Fatalf("%q between two messages", before)
	}
	_ = ps.Close()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatal("ReadAll still reading after Close")
	}
}

// TestEventsOfSharedEntries: a join that occupies its group and a leave
// that vacates it share one history entry with the group event (see
// presence.lua), and still read as two events with consecutive sequences:
// Events from any point returns the events after it and no more than
// asked, and a member list held from any point catches up through them
// (members.lua's deltas) to what a reader without a copy gets.
func TestEventsOfSharedEntries(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		a := newPresence(t, c, redistest.Prefix(t), "a")
		const g = "r:shared"
		steps := []struct {
			user string
			d    int64
		}{{"ann", 1}, {"bob", 1}, {"ann", -1}, {"bob", -1}, {"ann", 1}, {"ann", -1}, {"cy", 1}}
		var marks []int64      // the group's sequence after each step
		var copies []wholeList // a copy of the list held after each step
		for _, s := range steps {
			if _, err := a.AddMember(Member(g, s.user), s.d, "meta of "+s.user); err != nil {
				t.Fatal(err)
			}
			if err := a.Sync(ctx, Member(g, s.user)); err != nil {
				t.Fatal(err)
			}
			a.e.lists = lists{}
			p, err := a.Members(ctx, g, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			marks = append(marks, p.Seq)
			copies = append(copies, a.e.lists.get(g))
		}
		all, err := a.Events(ctx, g, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i, e := range all {
			got = append(got, e.Kind+" "+e.Member)
			if i > 0 && e.Seq != all[i-1].Seq+1 {
				t.Fatalf("sequences not consecutive at %d: %+v", i, all)
			}
			if e.Start != (i == 0) {
				t.Errorf("event %d (%s) Start %v", i, got[i], e.Start)
			}
		}
		want := []string{"occupied ", "join ann", "join bob", "leave ann", "leave bob", "vacated ",
			"occupied ", "join ann", "leave ann", "vacated ", "occupied ", "join cy"}
		if !slices.Equal(got, want) {
			t.Fatalf("events %q, want %q", got, want)
		}
		if last := all[len(all)-1].Seq; last != marks[len(marks)-1] {
			t.Fatalf("last event %d, the list's sequence %d", last, marks[len(marks)-1])
		}
		for i := range all {
			after := all[i].Seq - 1
			for count := int64(1); count <= 3; count++ {
				evs, err := a.Events(ctx, g, after, count)
				if err != nil {
					t.Fatal(err)
				}
				if w := all[i:min(i+int(count), len(all))]; !slices.Equal(evs, w) {
					t.Fatalf("Events(after %d, count %d) = %+v, want %+v", after, count, evs, w)
				}
			}
		}
		fresh, err := a.Members(ctx, g, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		for i, held := range copies {
			a.e.lists = lists{}
			a.e.lists.put(g, held)
			vals, err := lua.Members.Run(ctx, c, a.listKeys(g), "", 100, held.tag).StringSlice()
			if err != nil {
				t.Fatal(err)
			}
			if form := vals[3]; i < len(copies)-1 && form != "3" {
				t.Errorf("a copy held after step %d: form %s, want 3 (the events since)", i, form)
			}
			p, err := a.Members(ctx, g, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(p) != fmt.Sprint(fresh) {
				t.Fatalf("a copy held after step %d: %+v, without a copy %+v", i, p, fresh)
			}
		}
	})
}
