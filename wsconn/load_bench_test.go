package wsconn

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// The load benchmarks count connections with Admit and Release, the
// counting path Accept takes, without WebSocket traffic, so that they
// measure headcount's cost alone.

// tally counts what a client sends to Redis: round trips (a pipeline is
// one) and script calls (each EVALSHA, pipelined or not).
type tally struct{ trips, scripts atomic.Int64 }

func (t *tally) DialHook(next redis.DialHook) redis.DialHook { return next }
func (t *tally) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		t.trips.Add(1)
		if cmd.Name() == "evalsha" {
			t.scripts.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (t *tally) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		t.trips.Add(1)
		for _, c := range cmds {
			if c.Name() == "evalsha" {
				t.scripts.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// loadTracker is a Tracker on its own client, with a tally of its traffic.
// Connections are counted globally and in one of 100 rooms.
func loadTracker(b *testing.B, id string, lax bool) (*Tracker, *tally) {
	addr := redistest.StandaloneServer(b).Addr()
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	b.Cleanup(func() { _ = c.Close() })
	t := &tally{}
	c.AddHook(t)
	o := Options{Namespace: redistest.Prefix(b), InstanceID: id, Lax: lax}
	if lax {
		o.LaxRooms = func(string) bool { return true }
	}
	return newTracker(b, c, o), t
}

func roomRequest(i int) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	return WithRooms(r, "room-"+strconv.Itoa(i%100))
}

// BenchmarkChurnTraffic runs the same churn, 5,000 connects per second over
// 100 rooms, each connection open for 100ms, through a strict and a lax
// Tracker, and reports the Redis round trips and script calls per second
// of each and their ratios (targets: lax >= 50x fewer round trips and >= 5x
// fewer script calls). One op is one second of churn.
func BenchmarkChurnTraffic(b *testing.B) {
	const rate, hold = 5000, 100 * time.Millisecond
	strict, st := loadTracker(b, "strict", false)
	lax, lt := loadTracker(b, "lax", true)
	churn := func(tr *Tracker, d time.Duration) {
		var wg sync.WaitGroup
		start := time.Now()
		for i := 0; time.Since(start) < d; i++ {
			if wait := time.Until(start.Add(time.Duration(i) * time.Second / rate)); wait > 0 {
				time.Sleep(wait)
			}
			wg.Go(func() {
				l, err := tr.Admit(context.Background(), roomRequest(i))
				if err != nil {
					b.Error(err)
					return
				}
				time.Sleep(hold)
				l.Release()
			})
		}
		wg.Wait()
	}
	measure := func(tr *Tracker, t *tally) (trips, scripts float64) {
		churn(tr, 200*time.Millisecond) // warm up
		t0, s0, start := t.trips.Load(), t.scripts.Load(), time.Now()
		churn(tr, time.Duration(b.N)*time.Second)
		secs := time.Since(start).Seconds()
		return float64(t.trips.Load()-t0) / secs, float64(t.scripts.Load()-s0) / secs
	}
	b.ResetTimer()
	sTrips, sScripts := measure(strict, st)
	lTrips, lScripts := measure(lax, lt)
	b.ReportMetric(sTrips, "strict-trips/s")
	b.ReportMetric(lTrips, "lax-trips/s")
	b.ReportMetric(sScripts, "strict-scripts/s")
	b.ReportMetric(lScripts, "lax-scripts/s")
	b.ReportMetric(sTrips/lTrips, "trips-strict/lax")
	b.ReportMetric(sScripts/lScripts, "scripts-strict/lax")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkStrictConnectDisconnect: 50 concurrent clients each count a
// connection and uncount it (Admit, Release) through a strict Tracker,
// against a trivial EVALSHA from 50 clients on the same server in the same
// run (target: >= 0.5 of its rate); also the p99 of one connect+disconnect.
func BenchmarkStrictConnectDisconnect(b *testing.B) {
	const clients = 50
	tr, _ := loadTracker(b, "strict", false)
	raw := redistest.StandaloneServer(b).Client(b)
	ctx := context.Background()
	sha, err := raw.ScriptLoad(ctx, "return 1").Result()
	if err != nil {
		b.Fatal(err)
	}
	run := func(n int, op func(i int) error) (float64, []time.Duration) {
		var next atomic.Int64
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Go(func() {
				var mine []time.Duration
				for i := next.Add(1); i <= int64(n); i = next.Add(1) {
					t0 := time.Now()
					if err := op(int(i)); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		return float64(n) / time.Since(start).Seconds(), lat
	}
	pair := func(i int) error {
		l, err := tr.Admit(ctx, roomRequest(i))
		if err != nil {
			return err
		}
		l.Release()
		return nil
	}
	run(500, pair) // warm up
	n := max(b.N, 2000)
	b.ResetTimer()
	evalRate, _ := run(n, func(int) error { return raw.EvalSha(ctx, sha, nil).Err() })
	pairRate, lat := run(n, pair)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(evalRate, "evalsha/s")
	b.ReportMetric(pairRate, "connect+disconnect/s")
	b.ReportMetric(pairRate/evalRate, "strict/evalsha")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMemoryPerConnection holds 20,000 counted connections (Admit,
// over 100 rooms, strict) and reports the heap they take per connection:
// what tracking adds to a connection, beyond the WebSocket library's own
// (target: < 1 KiB).
func BenchmarkMemoryPerConnection(b *testing.B) {
	const conns = 20000
	tr, _ := loadTracker(b, "mem", false)
	ctx := context.Background()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	var perConn float64
	for range b.N {
		leases := make([]*Lease, 0, conns)
		reqs := make([]*http.Request, conns)
		for i := range reqs {
			reqs[i] = roomRequest(i)
		}
		before := heap()
		for i := range conns {
			l, err := tr.Admit(ctx, reqs[i])
			if err != nil {
				b.Fatal(err)
			}
			leases = append(leases, l)
		}
		perConn = float64(heap()-before) / conns
		for _, l := range leases {
			l.Release()
		}
		runtime.KeepAlive(reqs)
	}
	b.ReportMetric(perConn, "bytes/conn")
	b.ReportMetric(0, "ns/op")
	if testing.Verbose() {
		fmt.Printf("%d tracked connections: %.0f bytes each\n", conns, perConn)
	}
}
