package icounter

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

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
