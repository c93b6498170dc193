package faults

import (
	"strings"
	"testing"
	"time"

	"github.com/headcount-go/headcount/internal/redistest"
)

// Sizes of the crash test.
const (
	crashNodes    = 3
	crashConns    = 3000 // in all, spread evenly over the nodes
	crashRooms    = 100
	crashParallel = 64 // handshakes in flight at once
)

// TestCrash runs 3 demo processes holding 3,000 connections over 100 rooms
// (every room has connections on every node), SIGKILLs one, and checks
// that both survivors report the exact counts (global and every room,
// cluster-wide and local) within threshold + heartbeat + 1s of the kill,
// that no read in between ever dropped below the survivors' own
// connections or rose above the total, and that the counts stay exact.
// On the Redis Cluster, the rooms include one whose key sits on each master.
func TestCrash(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		f := newFleet(t, names("room", crashRooms), nil)
		crash(t, f, redistest.StandaloneServer(t).Addr(), nil)
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		f := newFleet(t, nil, nil)
		masters := redistest.ClusterServers(t)
		onMasters := roomsOnMasters(t, redistest.Cluster(t), f.ns, masters, 1)
		f.rooms = append(onMasters, names("room", crashRooms-len(onMasters))...)
		crash(t, f, strings.Join(redistest.ClusterAddrs(t), ","), func() { mustBeOn(t, f.ns, onMasters, masters, 1) })
	})
}

// crash runs the crash test on f through the Redis at redisArg; counted,
// if set, runs once all connections are counted.
func crash(t *testing.T, f *fleet, redisArg string, counted func()) {
	nodes := make([]*node, crashNodes)
	for i := range nodes {
		nodes[i] = f.startDemo("node"+string(rune('a'+i)), redisArg)
	}
	start := time.Now()
	f.openOn(nodes, crashConns/crashNodes, 0, crashParallel)
	t.Logf("%d connections open in %v", crashConns, time.Since(start).Round(time.Millisecond))
	f.waitExact(time.Now(), settleDeadline, "before the crash", nodes, nodes)
	if counted != nil {
		counted()
	}

	victim := nodes[1]
	survivors := []*node{nodes[0], nodes[2]}
	for _, obs := range survivors {
		f.watch(obs, bounds(f.expect(obs, survivors...), f.expect(obs, nodes...)))
	}
	killed := victim.kill()
	f.waitReaped(killed, victim.name+" reaped after SIGKILL", survivors)
	f.stayExact(2*heartbeat, "after the crash", survivors, survivors)
}
