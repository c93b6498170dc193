package faults

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// soakEnv holds the soak's duration; unset, TestIdleSoak runs a short
// soak of ten thresholds.
const soakEnv = "HEADCOUNT_SOAK"

// soakThreshold is short so that a late heartbeat would show quickly.
const soakThreshold = time.Second

// TestIdleSoak holds idle connections on three nodes with a 1s threshold
// (heartbeat threshold/3, the default) for HEADCOUNT_SOAK (e.g. 5m), on the
// standalone server and the cluster at once, while every node, and a
// fourth one holding no connection, reads the counts every few
// milliseconds. Every read, all along, must be exact: a count that drops
// is a false reap of a live node. At the end no node may have reaped a
// slice, and every connection must still answer a ping.
func TestIdleSoak(t *testing.T) {
	d := 10 * soakThreshold
	if v := os.Getenv(soakEnv); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration such as 5m", soakEnv, v)
		}
		t.Parallel()
	}
	// The short soak runs alone (serial tests finish before the parallel
	// ones start): it checks heartbeats, not how a starved CPU keeps time.
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		addr := redistest.StandaloneServer(t).Addr()
		soak(t, d, func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: addr}) })
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		addrs := redistest.ClusterAddrs(t)
		soak(t, d, func() redis.UniversalClient { return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs}) })
	})
}

func soak(t *testing.T, d time.Duration, newClient func() redis.UniversalClient) {
	f := newFleet(t, names("room", 20), names("tenant", 3))
	short := func(o *wsconn.Options) {
		o.DeadInstanceThreshold = soakThreshold
		o.HeartbeatInterval = 0 // the default, threshold/3
	}
	holders := []*node{f.startNode("a", newClient(), short), f.startNode("b", newClient(), short), f.startNode("c", newClient(), short)}
	reader := f.startNode("reader", newClient(), short)
	all := append([]*node{reader}, holders...)
	for i, n := range holders {
		n.open(50, i, 8)
	}
	f.waitExact(time.Now(), settleDeadline, "before the soak", all, holders)

	start := time.Now()
	end := start.Add(d)
	reads, lastLog := 0, start
	var o outage
	for time.Now().Before(end) {
		diff, failed := f.check(all, holders)
		if diff != "" {
			t.Fatalf("after %v idle and %d exact reads: %s", time.Since(start).Round(time.Millisecond), reads, diff)
		}
		o.note(t, "idle soak", failed)
		reads++
		if time.Since(lastLog) >= time.Minute {
			lastLog = time.Now()
			t.Logf("%v idle, %d exact reads of %d nodes", time.Since(start).Round(time.Second), reads, len(all))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var reaped []string
	for _, n := range all {
		if r := metric(t, n.tr, "headcount_reaped_slices_total"); r != 0 {
			reaped = append(reaped, n.name)
		}
	}
	if len(reaped) > 0 {
		t.Fatalf("nodes %s reaped slices during an idle soak where every node lives", strings.Join(reaped, ", "))
	}
	for _, n := range holders {
		for _, c := range n.list() {
			if err := c.alive(); err != nil {
				t.Fatalf("a connection of %s died during the soak: %v", n.name, err)
			}
		}
	}
	t.Logf("soak: %v, %d exact reads of %d nodes, no reap", d, reads, len(all))
}
