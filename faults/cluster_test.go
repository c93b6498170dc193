package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// roomKey is the Redis key of a room's counter in namespace ns, as wsconn
// lays it out (internal/keyspace, wsconn/names.go): an instance-aware
// counter "r:<room>" under the namespace, hc:v1:i:{<ns>:r:<room>}.
func roomKey(t testing.TB, ns, room string) string {
	t.Helper()
	sp, err := keyspace.NewSpace("i", ns)
	if err != nil {
		t.Fatal(err)
	}
	return sp.Key("r:" + room)
}

// masterOf returns, for each key, the index in masters of the master that
// serves its slot (CLUSTER KEYSLOT, CLUSTER SLOTS).
func masterOf(t testing.TB, cc *redis.ClusterClient, masters []*redistest.Server, keys ...string) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SLOTS: %v", err)
	}
	out := make([]int, len(keys))
	for i, k := range keys {
		slot, err := cc.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", k, err)
		}
		out[i] = -1
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				for j, m := range masters {
					if m.Addr() == s.Nodes[0].Addr {
						out[i] = j
					}
				}
			}
		}
		if out[i] < 0 {
			t.Fatalf("slot %d of %s: no master among %v serves it (CLUSTER SLOTS %+v)", slot, k, masters, slots)
		}
	}
	return out
}

// roomsOnMasters returns per rooms for each master, in master order: names
// whose counters' keys, in namespace ns, hash to a slot that master serves.
func roomsOnMasters(t testing.TB, cc *redis.ClusterClient, ns string, masters []*redistest.Server, per int) []string {
	t.Helper()
	found := make([][]string, len(masters))
	missing := len(masters) * per
	for i := 0; missing > 0; i++ {
		if i > 1000 {
			t.Fatalf("no room name found on every master of %v: %v", masters, found)
		}
		room := fmt.Sprintf("slot-room%d", i)
		m := masterOf(t, cc, masters, roomKey(t, ns, room))[0]
		if len(found[m]) < per {
			found[m] = append(found[m], room)
			missing--
		}
	}
	var out []string
	for i, rooms := range found {
		t.Logf("rooms on master %d (%s): %v", i, masters[i].Addr(), rooms)
		out = append(out, rooms...)
	}
	return out
}

// mustBeOn checks that each room's counter key exists on the master
// roomsOnMasters chose for it: the key layout the choice relies on is
// the one wsconn writes.
func mustBeOn(t testing.TB, ns string, rooms []string, masters []*redistest.Server, per int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, room := range rooms {
		m := masters[i/per]
		c := redis.NewClient(&redis.Options{Addr: m.Addr()})
		n, err := c.Exists(ctx, roomKey(t, ns, room)).Result()
		_ = c.Close()
		if err != nil || n != 1 {
			t.Fatalf("room %s: key %s on master %s: EXISTS %d, %v; want 1 (has the key layout changed?)", room, roomKey(t, ns, room), m.Addr(), n, err)
		}
	}
}

// TestClusterMasterRestart: on a private 3-master cluster, with rooms on
// each master, each master in turn crashes (SIGKILL) and comes back empty.
// While it is down, connections in its rooms open (fail-open, within
// RedisTimeout) and close. The last one stays down until the cluster
// declares itself down (CLUSTERDOWN on every master), which lasts longer
// than the threshold: no heartbeat of any node lands meanwhile, and that
// must not get any node swept as dead. Once the cluster is whole again,
// every node reports exact counts within heartbeat + 1s, and nothing is
// ever counted twice.
func TestClusterMasterRestart(t *testing.T) {
	t.Parallel()
	cc, masters := redistest.NewCluster(t)
	addrs := make([]string, len(masters))
	for i, m := range masters {
		addrs[i] = m.Addr()
	}
	const per = 2
	f := newFleet(t, nil, names("tenant", 3))
	f.rooms = roomsOnMasters(t, cc, f.ns, masters, per)
	const redisTimeout = 300 * time.Millisecond
	mk := func(name string) *node {
		return f.startNode(name, redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs}),
			func(o *wsconn.Options) { o.RedisTimeout = redisTimeout })
	}
	all := []*node{mk("a"), mk("b"), mk("c")}
	for i, n := range all {
		n.open(30, i, 8)
	}
	f.waitExact(time.Now(), settleDeadline, "before the restarts", all, all)
	mustBeOn(t, f.ns, f.rooms, masters, per)
	// Each round opens 2 connections and closes 2: the ceiling is the
	// start plus 2.
	f.watch(all[1], bounds(view{}, plus(f.expect(all[1], all...), 2)))

	for i, m := range masters {
		m.Kill()
		room := f.rooms[i*per]
		// Close two connections in rooms of this master, open two.
		closed := 0
		for _, n := range all {
			for _, c := range n.list() {
				if closed < 2 && c.room == room {
					c.close()
					closed++
				}
			}
		}
		for _, n := range all[:2] {
			start := time.Now()
			n.mustDial(f.rooms[i*per+1], f.tenants[i])
			if d := ran(start); d > redisTimeout+handshakeSlack {
				t.Fatalf("handshake took %v of the machine running with master %d down, RedisTimeout is %v", d, i, redisTimeout)
			}
		}
		if i == len(masters)-1 {
			m.WaitClusterDown(t)
		}
		m.Restart(t)
		back := time.Now()
		// The wall time, to read the nodes' logs against.
		f.waitExact(back, healDeadline, fmt.Sprintf("master %d (%s) restarted empty, back at %s", i, m.Addr(), back.Format("15:04:05.000")), all, all)
	}
	f.stayExact(2*heartbeat, "after the restarts", all, all)
}
