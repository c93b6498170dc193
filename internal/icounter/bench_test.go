package icounter

import (
	"context"
	"fmt"
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
	ctx := context.Background()
	benchLaxPairs(b, func(l *Lax, keys []string) func(int) {
		return func(i int) {
			_, _ = l.Inc(ctx, keys[i], 1)
			_, _ = l.Dec(ctx, keys[i], 1)
		}
	})
}

// The lax warm path through handles: BenchmarkLaxWarmIncDec's Inc and Dec
// on 10,000 counters, each looked up once (Lax.Handle) rather than by key
// at every change.
func BenchmarkLaxHandleIncDec(b *testing.B) {
	benchLaxPairs(b, func(l *Lax, keys []string) func(int) {
		hs := make([]*Handle, len(keys))
		for i, k := range keys {
			var err error
			if hs[i], err = l.Handle(k); err != nil {
				b.Fatal(err)
			}
		}
		return func(i int) {
			_, _ = hs[i].Inc(1)
			_, _ = hs[i].Dec(1)
		}
	})
}

// benchLaxPairs runs pair, made by prepare, on 10,000 counters of a Lax
// that each hold 1 (so that their states are warm), in parallel: the lax
// warm path's benchmarks.
func benchLaxPairs(b *testing.B, prepare func(l *Lax, keys []string) func(i int)) {
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
	pair := prepare(l, keys)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			pair(i % n)
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

// The cost of one heartbeat of an idle lax node holding slices in 10 and in
// 10,000 rooms, on a private server: Redis commands per tick as INFO
// commandstats counts them (script calls and the commands they run) and
// Redis CPU per tick. Lease renewals are not in it: each slice's falls due
// about every SliceLease/2 (5 minutes by default), paced over the ticks.
func BenchmarkHeartbeat(b *testing.B) {
	for _, rooms := range []int{10, 10000} {
		b.Run("rooms="+strconv.Itoa(rooms), func(b *testing.B) {
			cost := heartbeatCost(b, rooms, b.N)
			b.ReportMetric(cost.commands, "commands/tick")
			b.ReportMetric(cost.cpuMs, "redis-cpu-ms/tick")
		})
	}
}

type beatCost struct{ commands, cpuMs float64 }

// heartbeatCost runs ticks heartbeats of a node holding one slice in each of
// rooms rooms, alone on a server of its own, and returns their average cost.
func heartbeatCost(tb testing.TB, rooms, ticks int) beatCost {
	srv := redistest.NewServer(tb)
	c := srv.Client(tb)
	ctx := context.Background()
	// The heartbeat and flusher of their own never tick during the run:
	// the beats are called here, one at a time.
	l, err := NewLax(c, LaxOptions{Options: Options{Prefix: redistest.Prefix(tb),
		DeadInstanceThreshold: time.Hour}, FlushInterval: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Kill()
	for i := 0; i < rooms; i++ {
		if _, err := l.Inc(ctx, "room-"+strconv.Itoa(i), 1); err != nil {
			tb.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
	// One beat first, so that what starts once (canaries, the index's TTL)
	// is not counted.
	if err := l.e.guard(ctx, l.e.beat); err != nil {
		tb.Fatal(err)
	}
	cmd0, cpu0 := commandStats(tb, c).calls, redisCPUOf(tb, c)
	if b, ok := tb.(*testing.B); ok {
		b.ResetTimer()
	}
	for i := 0; i < ticks; i++ {
		if err := l.e.guard(ctx, l.e.beat); err != nil {
			tb.Fatal(err)
		}
	}
	if b, ok := tb.(*testing.B); ok {
		b.StopTimer()
	}
	cpu1 := redisCPUOf(tb, c)
	cmd1 := commandStats(tb, c).calls
	n := float64(ticks)
	return beatCost{commands: float64(cmd1-cmd0) / n, cpuMs: (cpu1 - cpu0).Seconds() * 1000 / n}
}

// cmdStats sums Redis' INFO commandstats, INFO itself left out: calls of
// every command, and the time (usec) of scripts (EVALSHA) and of the
// commands other than scripts, which for the counters' Lua are the
// commands the scripts run.
type cmdStats struct {
	calls                 int64
	scriptUsec, innerUsec int64
}

func commandStats(tb testing.TB, c *redis.Client) cmdStats {
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var st cmdStats
	for _, line := range strings.Split(info, "\n") {
		name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
			continue
		}
		var calls, usec int64
		if _, err := fmt.Sscanf(stats, "calls=%d,usec=%d,", &calls, &usec); err != nil {
			tb.Fatalf("commandstats line %q: %v", line, err)
		}
		st.calls += calls
		if name == "cmdstat_evalsha" {
			st.scriptUsec += usec
		} else {
			st.innerUsec += usec
		}
	}
	return st
}

func redisCPUOf(tb testing.TB, c *redis.Client) time.Duration {
	d, err := redisCPU(context.Background(), c)
	if err != nil {
		tb.Fatal(err)
	}
	return d
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

// BenchmarkFlushTick: one flush of a node holding 10,000 counters of which
// one changed since the last flush. The flusher visits the changed states,
// and every state only about once a heartbeat (ticks/full-scan), so its
// cost follows the changes, not the counters a node holds.
func BenchmarkFlushTick(b *testing.B) {
	c := redistest.Standalone(b)
	ctx := context.Background()
	l, err := NewLax(c, LaxOptions{Options: Options{Prefix: redistest.Prefix(b), DeadInstanceThreshold: time.Minute}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Kill()
	const n = 10000
	for i := range n {
		if _, err := l.Inc(ctx, "room-"+strconv.Itoa(i), 1); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := l.Inc(ctx, "room-"+strconv.Itoa(i%n), 1); err != nil {
			b.Fatal(err)
		}
		if err := l.e.flushTick(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(l.e.cfg.fullFlushEvery), "ticks/full-scan")
}

// GetMany of 10,000 counters (half of them held by this instance): what a
// node pays to read many counts at once (a presence page of many rooms, a
// metrics scrape with MetricsRooms). One pipeline; the cost is per
// counter, in Redis and in Go.
func BenchmarkGetMany(b *testing.B) {
	c := redistest.Standalone(b)
	ctx := context.Background()
	s, err := NewStrict(c, Options{Prefix: redistest.Prefix(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Kill()
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = "room-" + strconv.Itoa(i)
		if i%2 == 0 {
			if _, err := s.Inc(ctx, keys[i], 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.GetMany(ctx, keys); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/counter")
}

// The Redis cost of a member change, on a private server: every op flushes
// 25 changes in one script run, each a member of a group of its own coming
// in or going out, and reports Redis CPU (INFO cpu) and commands (INFO
// commandstats) per change. kind says what the counter is: a listed member
// (counted, listed, its joins and leaves kept and published), a counted
// one, or a plain counter of the same group for scale; with busy, another
// member stays in every group, so that no change occupies or vacates one.
func BenchmarkMemberChange(b *testing.B) {
	const groups = 25
	kinds := []struct {
		name string
		key  func(group, name string) string
		busy bool
	}{
		{"listed", Member, false},
		{"listed-busy", Member, true},
		{"counted", CountedMember, false},
		{"plain", func(group, _ string) string { return group }, false},
	}
	for _, k := range kinds {
		b.Run("kind="+k.name, func(b *testing.B) {
			srv := redistest.NewServer(b)
			c := srv.Client(b)
			ctx := context.Background()
			o := Options{Prefix: redistest.Prefix(b), DeadInstanceThreshold: time.Hour, Presence: &PresenceOptions{}}
			l, err := NewLax(c, LaxOptions{Options: o, FlushInterval: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Kill()
			change := func(key string, d int64) {
				if _, err := l.AddMember(key, d, `{"name":"Ann"}`); err != nil {
					b.Fatal(err)
				}
			}
			keys := make([]string, groups)
			for i := range keys {
				g := "r:" + strconv.Itoa(i)
				keys[i] = k.key(g, "ann")
				if k.busy {
					change(Member(g, "bob"), 1)
				}
			}
			step := func(d int64) {
				for _, key := range keys {
					change(key, d)
				}
				if err := l.Flush(ctx); err != nil {
					b.Fatal(err)
				}
			}
			step(1) // what a first change does once (the counters' keys) is not counted
			step(-1)
			st0, cpu0 := commandStats(b, c), redisCPUOf(b, c)
			b.ResetTimer()
			for i := range b.N {
				step(1 - 2*int64(i%2))
			}
			b.StopTimer()
			cpu1, st1 := redisCPUOf(b, c), commandStats(b, c)
			n := float64(b.N * groups)
			b.ReportMetric((cpu1-cpu0).Seconds()*1e6/n, "redis-cpu-us/change")
			b.ReportMetric(float64(st1.calls-st0.calls)/n, "commands/change")
			// A script's time includes the commands it runs: the rest is
			// the Lua around them and the calls into Redis.
			b.ReportMetric(float64(st1.scriptUsec-st0.scriptUsec)/n, "script-us/change")
			b.ReportMetric(float64(st1.innerUsec-st0.innerUsec)/n, "in-commands-us/change")
		})
	}
}
