package icounter

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// The lax warm path: Inc then Dec on 10,000 keys, in parallel. Target: under
// 100 ns/op and 0 allocs/op.
func BenchmarkLaxWarmIncDec(b *testing.B) {
	c := redistest.Standalone(b)
	ctx := context.Background()
	l, err := NewLax(c, LaxOptions{Options: Options{Prefix: redistest.Prefix(b)}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Kill()
	const n = 10000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "room-" + strconv.Itoa(i)
		if _, err := l.Inc(ctx, keys[i], 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			k := keys[i%n]
			_, _ = l.Inc(ctx, k, 1)
			_, _ = l.Dec(ctx, k, 1)
			i += 7
		}
	})
}

// Strict Inc with 50 concurrent callers on one instance against a trivial
// EVALSHA on the same server, measured in one run. Group commit lets one
// script run serve many callers of a key; on many distinct keys every
// change is a script run of its own.
func BenchmarkStrictVsEvalSha(b *testing.B) {
	c := redistest.Standalone(b)
	ctx := context.Background()
	sha, err := c.ScriptLoad(ctx, "return 1").Result()
	if err != nil {
		b.Fatal(err)
	}
	const callers = 50
	run := func(b *testing.B, op func(g, i int) error) float64 {
		var wg sync.WaitGroup
		per := b.N/callers + 1
		start := time.Now()
		for g := 0; g < callers; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < per; i++ {
					if err := op(g, i); err != nil {
						b.Error(err)
						return
					}
				}
			}(g)
		}
		wg.Wait()
		return float64(per*callers) / time.Since(start).Seconds()
	}
	for _, keys := range []int{1, 50} {
		b.Run("keys="+strconv.Itoa(keys), func(b *testing.B) {
			s, err := NewStrict(c, Options{Prefix: redistest.Prefix(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Kill()
			b.ResetTimer()
			evalsha := run(b, func(g, i int) error { return c.EvalSha(ctx, sha, nil).Err() })
			strict := run(b, func(g, i int) error {
				_, err := s.Inc(ctx, "k"+strconv.Itoa(g%keys), 1)
				return err
			})
			b.ReportMetric(evalsha, "evalsha/s")
			b.ReportMetric(strict, "strict-inc/s")
			b.ReportMetric(strict/evalsha, "strict/evalsha")
		})
	}
}

// One heartbeat of a node holding slices in 10,000 rooms: round trips per
// tick, and the Redis CPU it costs, from INFO cpu (the only client then).
func BenchmarkHeartbeat10kRooms(b *testing.B) {
	c := redistest.Standalone(b)
	ctx := context.Background()
	own, f := ownClient(b, c)
	l, err := NewLax(own, LaxOptions{Options: Options{Prefix: redistest.Prefix(b),
		DeadInstanceThreshold: time.Hour}, FlushInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Kill()
	for i := 0; i < 10000; i++ {
		if _, err := l.Inc(ctx, "room-"+strconv.Itoa(i), 1); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	cpu0, err := redisCPU(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	trips, scripts := f.roundTrip.Load(), f.commands.Load()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := l.e.tick(ctx, true); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu1, err := redisCPU(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	n := float64(b.N)
	b.ReportMetric(float64(f.roundTrip.Load()-trips)/n, "round-trips/tick")
	b.ReportMetric(float64(f.commands.Load()-scripts)/n, "scripts/tick")
	b.ReportMetric((cpu1-cpu0).Seconds()*1000/n, "redis-cpu-ms/tick")
}

// redisCPU is the Redis server's CPU time so far (user + system).
func redisCPU(ctx context.Context, c *redis.Client) (time.Duration, error) {
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second)), nil
}
