package faults

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// handshakeSlack is what a handshake (or a presence read) may take beyond
// RedisTimeout when Redis does not answer: the HTTP and WebSocket work
// itself, on a busy machine under -race. A handshake that waited for a
// stalled or dead Redis would take the stall, or go-redis' 3s timeouts.
// Checks leave the machine's own stalls out (ran).
const handshakeSlack = time.Second

// newProxy starts a fault proxy to addr for f's nodes. When the test ends
// the proxy is healed before f stops its nodes (so that they can remove
// their counts), and closed after.
func newProxy(t *testing.T, f *fleet, addr string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	f.cleanups = append(f.cleanups, func() { _ = p.Close() })
	t.Cleanup(func() {
		p.Stall(false)
		p.SetLatency(0)
	})
	return p
}

// plus is v with n added to every total: a ceiling for a view that grows
// by at most n connections.
func plus(v view, n int64) view {
	out := view{total: wsconn.Count{Total: v.total.Total + n}, rooms: map[string]wsconn.Count{}, tenants: map[string]wsconn.Count{}}
	for k, c := range v.rooms {
		out.rooms[k] = wsconn.Count{Total: c.Total + n}
	}
	for k, c := range v.tenants {
		out.tenants[k] = wsconn.Count{Total: c.Total + n}
	}
	return out
}

// TestPartition blackholes one node's Redis traffic (its connections to
// Redis stay open, nothing goes through: a partition as the node sees it)
// for longer than the threshold. The other nodes reap its connections
// within threshold + heartbeat + 1s and are never reaped themselves; its
// clients keep working; it keeps admitting (fail-open, within RedisTimeout)
// and closing connections meanwhile. When traffic resumes, its counts, as
// they are now, come back exactly within heartbeat + 1s on every node,
// and are never counted twice. Two ways to end the partition:
//
//   - pause: what was held is delivered late (stale assertions reach Redis
//     after the reap);
//   - drop: what was held is lost with the node's Redis connections, so
//     only new writes (heartbeats) can bring the counts back.
//
// Not parallel with the other tests (its subtests run in parallel with each
// other): its handshake timings must not suffer the crash tests' load.
func TestPartition(t *testing.T) {
	t.Run("pause", func(t *testing.T) { t.Parallel(); partition(t, false) })
	t.Run("drop", func(t *testing.T) { t.Parallel(); partition(t, true) })
}

func partition(t *testing.T, drop bool) {
	addr := redistest.StandaloneServer(t).Addr()
	f := newFleet(t, names("room", 10), names("tenant", 3))
	p := newProxy(t, f, addr)
	const redisTimeout = 300 * time.Millisecond
	a := f.startNode("a", redis.NewClient(&redis.Options{Addr: p.Addr()}), func(o *wsconn.Options) { o.RedisTimeout = redisTimeout })
	b := f.startNode("b", redis.NewClient(&redis.Options{Addr: addr}), nil)
	c := f.startNode("c", redis.NewClient(&redis.Options{Addr: addr}), nil)
	all, others := []*node{a, b, c}, []*node{b, c}
	for i, n := range all {
		n.open(40, i, 8)
	}
	f.waitExact(time.Now(), settleDeadline, "before the partition", all, all)

	// b and c never change: their counts are a floor on every read; a
	// opens two connections and closes one while cut off, so the ceiling
	// is everything plus two. A partitioned node counted twice breaks it.
	var watchers []*watcher
	for _, obs := range others {
		watchers = append(watchers, f.watch(obs, bounds(f.expect(obs, others...), plus(f.expect(obs, all...), 2))))
	}

	p.Stall(true)
	cut := time.Now()
	for _, cn := range a.list() {
		if err := cn.alive(); err != nil {
			t.Fatalf("a's client connection broke during the partition: %v", err)
		}
	}
	f.waitReaped(cut, "a reaped by b and c", others)

	// a, cut off, reads nothing but keeps serving and counting locally.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := f.presence(ctx, a)
	cancel()
	var es *errStatus
	if !errors.As(err, &es) || es.code != http.StatusServiceUnavailable {
		t.Fatalf("a's presence during the partition: %v, want 503", err)
	}
	if d := ran(start); d > redisTimeout+handshakeSlack {
		t.Fatalf("a's presence read took %v of the machine running during the partition, RedisTimeout is %v", d, redisTimeout)
	}
	a.list()[0].close()
	for range 2 {
		start := time.Now()
		a.mustDial(f.rooms[0], f.tenants[0])
		if d := ran(start); d > redisTimeout+handshakeSlack {
			t.Fatalf("handshake on a took %v of the machine running during the partition, RedisTimeout is %v", d, redisTimeout)
		}
	}
	// Still cut off: the changes do not reach the others.
	for o := (outage{}); ; {
		d, failed := f.check(others, others)
		if d != "" {
			t.Fatalf("during the partition, after a's changes: %s", d)
		}
		if o.note(t, "during the partition", failed); failed == "" {
			break
		}
		time.Sleep(20 * time.Millisecond) // pace the retries of a failed read
	}
	if cutFor := time.Since(cut); cutFor < threshold {
		t.Fatalf("partition lasted %v, shorter than the threshold %v", cutFor, threshold)
	}

	if drop {
		p.CutAll() // while stalled: the held traffic is lost
	}
	p.Stall(false)
	healed := time.Now()
	f.waitExact(healed, healDeadline, "a back after the partition", all, all)
	f.stayExact(3*heartbeat, "after the partition", all, all)
	for _, w := range watchers {
		w.stop()
	}

	var reaped float64
	for _, n := range others {
		reaped += metric(t, n.tr, "headcount_reaped_slices_total")
	}
	if reaped == 0 {
		t.Error("b and c report no reaped slice, yet a's counts vanished")
	}

	for _, n := range all {
		for _, cn := range n.list() {
			cn.close()
		}
	}
	f.waitExact(time.Now(), settleDeadline, "every connection closed", all, all)
}
