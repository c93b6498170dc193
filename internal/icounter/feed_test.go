package icounter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/redistest"
)

// namedClient returns a new client to the same Redis as c whose
// connections carry name (CLIENT SETNAME), so that a test sharing the
// server with others can count its own.
func namedClient(t testing.TB, c redis.UniversalClient, name string) redis.UniversalClient {
	t.Helper()
	var nc redis.UniversalClient
	switch c := c.(type) {
	case *redis.ClusterClient:
		nc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Options().Addrs, ClientName: name})
	case *redis.Client:
		nc = redis.NewClient(&redis.Options{Addr: c.Options().Addr, ClientName: name})
	default:
		t.Fatalf("unexpected client %T", c)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return nc
}

// masters runs f on every master c reaches, one at a time.
func masters(ctx context.Context, c redis.UniversalClient, f func(*redis.Client) error) error {
	if cc, ok := c.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		return cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return f(m)
		})
	}
	return f(c.(*redis.Client))
}

// subscribers runs fn on each connection named name that holds a
// subscription, on every master, with the master and the connection's ID.
func subscribers(ctx context.Context, c redis.UniversalClient, name string, fn func(m *redis.Client, id string) error) error {
	return masters(ctx, c, func(m *redis.Client) error {
		list, err := m.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for line := range strings.Lines(list) {
			f := map[string]string{}
			for kv := range strings.FieldsSeq(line) {
				k, v, _ := strings.Cut(kv, "=")
				f[k] = v
			}
			if f["name"] == name && (f["sub"] != "0" || f["ssub"] != "0") {
				if err := fn(m, f["id"]); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// subscriptionConns counts the connections named name that hold a
// subscription, on every master.
func subscriptionConns(ctx context.Context, c redis.UniversalClient, name string) (int, error) {
	var n int
	err := subscribers(ctx, c, name, func(*redis.Client, string) error {
		n++
		return nil
	})
	return n, err
}

// shardSubscribers counts the subscribers of the sharded channel ch, on
// every master.
func shardSubscribers(ctx context.Context, c redis.UniversalClient, ch string) (int64, error) {
	var n int64
	err := masters(ctx, c, func(m *redis.Client) error {
		r, err := m.PubSubShardNumSub(ctx, ch).Result()
		n += r[ch]
		return err
	})
	return n, err
}

// TestFeedSharesConnections: a Feed of many groups holds one Redis
// connection on a single server and one per master serving its groups'
// channels on a Cluster; each event reaches it once, in order, under its
// group; a removed group is unsubscribed and the last one's removal closes
// the connections.
func TestFeedSharesConnections(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		a, b, f, name := feedPair(t, c, "feed-")

		const n = 12
		groups := make([]string, n)
		for i := range groups {
			groups[i] = fmt.Sprintf("r:room-%d", i)
		}
		// At once: later Adds queue behind the connection the first opens.
		var g errgroup.Group
		for _, grp := range groups {
			g.Go(func() error { return f.Add(ctx, grp) })
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		want := len(feedMasters(ctx, t, b, groups))
		if got, err := subscriptionConns(ctx, c, name); err != nil || got != want {
			t.Fatalf("subscription connections: %d %v, want %d for %d groups", got, err, want, n)
		}
		if err := f.Add(ctx, groups[0]); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("adding a group twice: %v, want ErrInvalidOptions", err)
		}

		join := func(g, user string) {
			t.Helper()
			if _, err := a.AddMember(Member(g, user), 1, ""); err != nil {
				t.Fatal(err)
			}
			if err := a.Sync(ctx, Member(g, user)); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string][]Event{}
		// collect takes messages until every group in gs has k events,
		// failing on one of another group.
		collect := func(gs []string, k int) {
			t.Helper()
			for {
				done := true
				for _, g := range gs {
					done = done && len(got[g]) >= k
				}
				if done {
					return
				}
				select {
				case m := <-f.Messages():
					if !slices.Contains(gs, m.Group) {
						t.Fatalf("a message of %q, not in the feed", m.Group)
					}
					e, err := ParseEvent(m.Payload)
					if err != nil {
						t.Fatal(err)
					}
					got[m.Group] = append(got[m.Group], e)
				case <-time.After(5 * time.Second):
					t.Fatalf("events after 5s: %v", got)
				}
			}
		}
		for _, g := range groups {
			join(g, "ann")
		}
		collect(groups, 2)

		removed, kept := groups[:n/2], groups[n/2:]
		for _, g := range removed {
			f.Remove(g)
		}
		eventually(t, 5*time.Second, "the removed groups unsubscribed", func() (bool, string) {
			for _, g := range removed {
				ch := b.e.cfg.space.GroupKey(g, "pc")
				if k, err := shardSubscribers(ctx, c, ch); err != nil || k != 0 {
					return false, fmt.Sprintf("%s: %d subscribers, %v", g, k, err)
				}
			}
			return true, ""
		})
		for _, g := range groups { // the removed ones first
			join(g, "bob")
		}
		collect(kept, 3)
		for _, g := range kept {
			var kinds []string
			for i, e := range got[g] {
				kinds = append(kinds, e.Kind+" "+e.Member)
				if i > 0 && e.Seq != got[g][i-1].Seq+1 {
					t.Fatalf("%s: sequences %+v, want consecutive", g, got[g])
				}
			}
			if w := []string{"occupied ", "join ann", "join bob"}; !slices.Equal(kinds, w) {
				t.Fatalf("%s: events %q, want %q", g, kinds, w)
			}
		}

		for _, g := range kept {
			f.Remove(g)
		}
		eventually(t, 5*time.Second, "no subscription connection left", func() (bool, string) {
			k, err := subscriptionConns(ctx, c, name)
			return err == nil && k == 0, fmt.Sprint(k, err)
		})
	})
}

// feedPair returns a presence instance a, which makes events, and b, whose
// Redis connections are named name (tag and the test's prefix) and whose
// Feed f the test reads; f is closed when the test ends.
func feedPair(t *testing.T, c redis.UniversalClient, tag string) (a, b *Lax, f *Feed, name string) {
	t.Helper()
	p := redistest.Prefix(t)
	name = tag + strings.NewReplacer(":", "-", "{", "", "}", "").Replace(p)
	a, b = newPresence(t, c, p, "a"), newPresence(t, namedClient(t, c, name), p, "b")
	f = b.NewFeed(5 * time.Second)
	t.Cleanup(func() { _ = f.Close() })
	return a, b, f, name
}

// joinUntilSeen has a join a user to each group now and then, until f has
// passed on an event of every group (some may come before its
// subscriptions are back), failing after within.
func joinUntilSeen(ctx context.Context, t *testing.T, a *Lax, f *Feed, groups []string, within time.Duration, when string) {
	t.Helper()
	seen := map[string]bool{}
	deadline := time.Now().Add(within)
	for user := 0; len(seen) < len(groups); user++ {
		if time.Now().After(deadline) {
			t.Fatalf("%s, events of %d of %d groups arrived: %v", when, len(seen), len(groups), seen)
		}
		for _, g := range groups {
			if seen[g] {
				continue
			}
			m := Member(g, fmt.Sprint("u", user))
			if _, err := a.AddMember(m, 1, ""); err != nil {
				t.Fatal(err)
			}
			if err := a.Sync(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		wait := time.After(200 * time.Millisecond)
	drain:
		for {
			select {
			case m := <-f.Messages():
				if slices.Contains(groups, m.Group) {
					seen[m.Group] = true
				}
			case <-wait:
				break drain
			}
		}
	}
}

// feedMasters returns the masters serving the event channels of groups of
// p, and how many slots of them each serves ("" on a single server).
func feedMasters(ctx context.Context, t *testing.T, p *Lax, groups []string) map[string]map[int]bool {
	t.Helper()
	out := map[string]map[int]bool{}
	for _, g := range groups {
		ch := p.e.cfg.space.GroupKey(g, "pc")
		addr := ""
		if cc, ok := p.e.client.(*redis.ClusterClient); ok {
			m, err := cc.MasterForKey(ctx, ch)
			if err != nil {
				t.Fatal(err)
			}
			addr = m.Options().Addr
		}
		if out[addr] == nil {
			out[addr] = map[int]bool{}
		}
		out[addr][keyspace.Slot(ch)] = true
	}
	return out
}

// TestFeedAfterReconnect: once Redis drops a Feed's connections, events of
// every group flow again. On a Cluster, go-redis subscribes a connection's
// channels again in one command, refused (CROSSSLOT) for a master's
// several slots; the Feed subscribes them again slot by slot.
func TestFeedAfterReconnect(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		a, b, f, name := feedPair(t, c, "feedre-")
		const n = 12
		groups := make([]string, n)
		for i := range groups {
			groups[i] = fmt.Sprintf("r:room-%d", i)
			if err := f.Add(ctx, groups[i]); err != nil {
				t.Fatal(err)
			}
		}
		if _, cluster := c.(*redis.ClusterClient); cluster {
			several := false
			for _, slots := range feedMasters(ctx, t, b, groups) {
				several = several || len(slots) > 1
			}
			if !several {
				t.Fatal("no master serves several of the groups' slots: the test shows nothing")
			}
		}
		if g := f.Gaps(); g != 0 {
			t.Fatalf("Gaps = %d before any connection was lost", g)
		}
		// Only the feed's connections: other tests share the servers.
		killed := 0
		if err := subscribers(ctx, c, name, func(m *redis.Client, id string) error {
			killed++
			return m.ClientKillByFilter(ctx, "ID", id).Err()
		}); err != nil || killed == 0 {
			t.Fatalf("killing the feed's connections: %d killed, %v", killed, err)
		}
		// 10 s: a reconnect takes a receive error, a dial and two subscribe
		// commands per slot, each done within milliseconds here.
		joinUntilSeen(ctx, t, a, f, groups, 10*time.Second, "after the reconnect")
		// The loss, and the subscriptions made again, tell subscribers
		// to look for what they missed.
		if g := f.Gaps(); g < 2 {
			t.Fatalf("Gaps = %d after a reconnect, want a loss and a resubscription at least", g)
		}
	})
}

// TestFeedWhileRedisStalls: an Add that Redis does not confirm returns at
// the caller's deadline, on a new connection and on one the Feed holds
// already; once Redis answers, Adds succeed and events flow.
func TestFeedWhileRedisStalls(t *testing.T) {
	t.Parallel()
	pc, proxy := faultproxy.Redis(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	b := newPresence(t, pc, p, "b")
	f := b.NewFeed(time.Second)
	defer f.Close()
	addWithin := func(g string) error {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := f.Add(ctx, g)
		// 1 s: the context's 200 ms and room for a busy machine, well
		// short of go-redis' 5 s dial timeout.
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Add of %s returned %v after %v; want it at the context's deadline, 200ms", g, err, d)
		}
		return err
	}

	// r:x opens the feed's connection, r:y joins the one r:x holds.
	for _, c := range []struct{ group, conn string }{{"r:x", "a new connection"}, {"r:y", "a held connection"}} {
		proxy.Stall(true)
		if err := addWithin(c.group); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Add of %s on %s while Redis stalls: %v, want the deadline", c.group, c.conn, err)
		}
		proxy.Stall(false)
		if err := f.Add(ctx, c.group); err != nil {
			t.Fatalf("Add of %s once Redis answers: %v", c.group, err)
		}
	}

	a := newPresence(t, redistest.Standalone(t), p, "a")
	for _, g := range []string{"r:x", "r:y"} {
		if _, err := a.AddMember(Member(g, "ann"), 1, ""); err != nil {
			t.Fatal(err)
		}
		if err := a.Sync(ctx, Member(g, "ann")); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case m := <-f.Messages():
			seen[m.Group] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("events of %v only", seen)
		}
	}
}

// TestFeedWithoutShardedPubSub: where Redis refuses SSUBSCRIBE (6.2; here
// an ACL user without sharded pub/sub stands in for it), a Feed subscribes
// with SUBSCRIBE, its later groups too, on the one connection, and gets the
// events the scripts PUBLISH.
func TestFeedWithoutShardedPubSub(t *testing.T) {
	t.Parallel()
	srv := redistest.NewServer(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	if err := srv.Client(t).Do(ctx, "ACL", "SETUSER", "legacy", "on", ">legacy-pw", "~*", "&*", "+@all", "-spublish", "-ssubscribe").Err(); err != nil {
		t.Fatal(err)
	}
	const name = "feed-legacy"
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "legacy", Password: "legacy-pw", ClientName: name})
	t.Cleanup(func() { _ = c.Close() })
	a := newPresence(t, c, p, "a")
	f := a.NewFeed(5 * time.Second)
	defer f.Close()
	groups := []string{"r:one", "r:two", "r:three"}
	for _, g := range groups {
		if err := f.Add(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := subscriptionConns(ctx, c, name); err != nil || n != 1 {
		t.Fatalf("subscription connections: %d %v, want 1", n, err)
	}
	for _, g := range groups {
		if _, err := a.AddMember(Member(g, "ann"), 1, ""); err != nil {
			t.Fatal(err)
		}
		if err := a.Sync(ctx, Member(g, "ann")); err != nil {
			t.Fatal(err)
		}
	}
	joins := map[string]bool{}
	for len(joins) < len(groups) {
		select {
		case m := <-f.Messages():
			e, err := ParseEvent(m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if e.Kind == EventJoin && e.Member == "ann" {
				joins[m.Group] = true
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("joins of %v only", joins)
		}
	}
}

// TestFeedAfterSlotMoves: when a group's hash slot moves to another master
// (resharding), the old master ends the group's subscription; the Feed
// subscribes the group again on the master that serves the slot now, and
// its events flow again. A group whose slot stays is not disturbed.
func TestFeedAfterSlotMoves(t *testing.T) {
	t.Parallel()
	c, servers := redistest.NewCluster(t)
	ctx := ctxT(t)
	a, b, f, _ := feedPair(t, c, "feedmv-")
	moving, staying := "r:moving", "r:staying"
	for _, g := range []string{moving, staying} {
		if err := f.Add(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	ch := b.e.cfg.space.GroupKey(moving, "pc")
	from, err := c.MasterForKey(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	var to *redis.Client
	for _, s := range servers {
		if s.Addr() != from.Options().Addr {
			to = s.Client(t)
			break
		}
	}
	moveSlot(ctx, t, servers, from, to, keyspace.Slot(ch))

	// 10 s: the old master's sunsubscribe arrives at once; the feed then
	// reads the cluster's slots and subscribes on the new master, within
	// milliseconds here.
	joinUntilSeen(ctx, t, a, f, []string{moving, staying}, 10*time.Second, "after the slot moved")
}

// moveSlot moves slot, and the keys in it, from one master to another, as
// a resharding does, and tells every master.
func moveSlot(ctx context.Context, t *testing.T, servers []*redistest.Server, from, to *redis.Client, slot int) {
	t.Helper()
	fromID, err := from.ClusterMyID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	toID, err := to.ClusterMyID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(to.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err())
	must(from.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err())
	host, port, _ := strings.Cut(to.Options().Addr, ":")
	for {
		keys, err := from.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(from.Do(ctx, args...).Err())
	}
	must(to.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	must(from.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	for _, s := range servers {
		if a := s.Addr(); a != from.Options().Addr && a != to.Options().Addr {
			must(s.Client(t).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
		}
	}
}
