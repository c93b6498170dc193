package counter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/headcount-go/headcount/internal/redistest"
)

// manual is a flush interval long enough that only the test flushes.
const manual = time.Hour

// 8 goroutines change 20 keys through two Lax writers (two processes) and
// a Strict one at random; after the flushes every key is exact.
func TestConcurrentMixed(t *testing.T) {
	const goroutines, ops, keys = 8, 5000, 20
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		p := redistest.Prefix(t)
		s := newStrict(t, c, p)
		l1, l2 := newLax(t, c, p, 0), newLax(t, c, p, 2*time.Millisecond)
		ctrs := []api{s, l1, l2}
		var want [keys]atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for g := range goroutines {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(g), 1))
				for range ops {
					k := r.IntN(keys)
					key := "k" + strconv.Itoa(k)
					ctr := ctrs[r.IntN(len(ctrs))]
					d := r.Int64N(5) + 1
					var err error
					switch r.IntN(5) {
					case 0, 1:
						_, err = ctr.Inc(ctx, key, d)
						want[k].Add(d)
					case 2, 3:
						_, err = ctr.Dec(ctx, key, d)
						want[k].Add(-d)
					case 4:
						_, err = ctr.Get(ctx, key)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, l := range []*Lax{l1, l2} {
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for k := range keys {
			key := "k" + strconv.Itoa(k)
			w := want[k].Load()
			if r := raw(t, c, p, key); r != strconv.FormatInt(w, 10) && !(w == 0 && r == "") {
				t.Errorf("%s: Redis holds %q, want %d", key, r, w)
			}
			for i, ctr := range ctrs {
				if v, err := ctr.Get(ctx, key); v != w || err != nil {
					t.Errorf("%s: counter %d Get = %d, %v; want %d", key, i, v, err, w)
				}
			}
		}
	})
}

// A flush whose reply is lost is sent again with the same batch number and
// counts once; changes made meanwhile wait for the next batch.
func TestExactlyOnceLostReply(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		p := redistest.Prefix(t)
		hook := &loseHook{}
		c.AddHook(hook)
		l := newLax(t, c, p, manual)
		expect := func(key string, rawWant string, getWant int64) {
			t.Helper()
			if r := raw(t, c, p, key); r != rawWant {
				t.Fatalf("%s: Redis holds %q, want %q", key, r, rawWant)
			}
			if v, err := l.Get(ctx, key); v != getWant || err != nil {
				t.Fatalf("%s: Get = %d, %v; want %d", key, v, err, getWant)
			}
		}

		// Reply lost after Redis applied the batch.
		_, _ = l.Inc(ctx, "a", 5)
		_, _ = l.Inc(ctx, "b", 7)
		hook.after.Store(1)
		if err := l.Flush(ctx); !errors.Is(err, errLost) {
			t.Fatalf("Flush with lost reply = %v, want errLost", err)
		}
		expect("a", "5", 5) // applied once, and Get does not add it again
		_, _ = l.Inc(ctx, "a", 3)
		expect("a", "5", 8)
		hook.after.Store(2) // the resend's reply is lost too
		if err := l.Flush(ctx); err == nil {
			t.Fatal("Flush with lost reply succeeded")
		}
		if err := l.Flush(ctx); err == nil {
			t.Fatal("Flush with lost reply succeeded")
		}
		expect("a", "5", 8)                  // the +3 waits for the +5 to be confirmed
		if err := l.Flush(ctx); err != nil { // the +5 confirmed, then the +3
			t.Fatal(err)
		}
		expect("a", "8", 8)
		expect("b", "7", 7)

		// Batch lost before it reached Redis: resent, applied once.
		_, _ = l.Dec(ctx, "a", 10)
		hook.before.Store(1)
		if err := l.Flush(ctx); !errors.Is(err, errLost) {
			t.Fatalf("Flush with lost request = %v, want errLost", err)
		}
		expect("a", "8", -2)
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		expect("a", "-2", -2)

		// Set, Del and IncIf settle an unanswered batch first, without
		// counting it twice, and send the changes that waited for it.
		for _, tc := range []struct {
			name string
			op   func() (int64, error)
			want int64 // result of op
			end  string
		}{
			{"Set", func() (int64, error) { return l.Set(ctx, "c", 100) }, 100, "100"},
			{"Del", func() (int64, error) { return l.Del(ctx, "c") }, 6, ""},
			{"IncIf", func() (int64, error) {
				v, ok, err := l.IncIf(ctx, "c", 1, Cond{Op: Eq, Operand: 6})
				if !ok && err == nil {
					err = errors.New("not applied")
				}
				return v, err
			}, 7, "7"},
		} {
			if _, err := l.Del(ctx, "c"); err != nil {
				t.Fatal(err)
			}
			_, _ = l.Inc(ctx, "c", 4)
			hook.after.Store(1)
			if err := l.Flush(ctx); err == nil {
				t.Fatalf("%s: Flush with lost reply succeeded", tc.name)
			}
			_, _ = l.Inc(ctx, "c", 2) // waits for the +4
			if v, err := tc.op(); v != tc.want || err != nil {
				t.Fatalf("%s = %d, %v; want %d", tc.name, v, err, tc.want)
			}
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if r := raw(t, c, p, "c"); r != tc.end {
				t.Fatalf("after %s Redis holds %q, want %q", tc.name, r, tc.end)
			}
		}
	})
}

// Close sends what is buffered and leaves no goroutine behind.
func TestCloseFlushesNoLeak(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ignore := goleak.IgnoreCurrent()
		ctx := ctxT(t)
		p := redistest.Prefix(t)
		l, err := NewLax(c, LaxOptions{Options: Options{Prefix: p}, FlushInterval: manual})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			if _, err := l.Inc(ctx, "k"+strconv.Itoa(i%10), 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			if r := raw(t, c, p, "k"+strconv.Itoa(i)); r != "10" {
				t.Fatalf("k%d: Redis holds %q after Close, want 10", i, r)
			}
		}
		goleak.VerifyNone(t, ignore)
	})
}

// Close waits for Inc calls under way: every Inc that returned without an
// error is in Redis after Close.
func TestCloseRacesInc(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		p := redistest.Prefix(t)
		l := newLax(t, c, p, time.Millisecond)
		var ok atomic.Int64
		var wg sync.WaitGroup
		started := make(chan struct{}, 4)
		for range 4 {
			wg.Go(func() {
				started <- struct{}{}
				for {
					if _, err := l.Inc(ctx, "k", 1); err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Error(err)
						}
						return
					}
					ok.Add(1)
				}
			})
		}
		for range 4 {
			<-started
		}
		for ok.Load() < 10_000 {
			runtime.Gosched()
		}
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if r, w := raw(t, c, p, "k"), strconv.FormatInt(ok.Load(), 10); r != w {
			t.Fatalf("Redis holds %s after Close, %s Inc calls succeeded", r, w)
		}
	})
}

// The flusher keeps its pace while Inc and Get hammer the same keys: the
// value in Redis keeps growing.
func TestFlusherUnderLoad(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		p := redistest.Prefix(t)
		l := newLax(t, c, p, 0)
		stop := make(chan struct{})
		var incs atomic.Int64
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := l.Inc(ctx, "hot", 1); err != nil {
						t.Error(err)
						return
					}
					// Let the flusher and poller run even with GOMAXPROCS=1,
					// as goroutines blocking on I/O in a real server would.
					if incs.Add(1)%64 == 0 {
						runtime.Gosched()
					}
					if g == 0 {
						if _, err := l.Get(ctx, "hot"); err != nil {
							t.Error(err)
							return
						}
					}
				}
			})
		}
		// Each of 20 rises must come within 50 flush intervals: lenient
		// for -race on a busy machine, far below a stalled flusher.
		const rises, within = 20, 50 * DefaultFlushInterval
		poll := time.NewTicker(DefaultFlushInterval / 4)
		defer poll.Stop()
		last, worst := int64(0), time.Duration(0)
		for i := range rises {
			since := time.Now()
			for {
				v, _ := strconv.ParseInt(raw(t, c, p, "hot"), 10, 64)
				if v > last {
					last = v
					break
				}
				if time.Since(since) > within {
					close(stop)
					wg.Wait()
					t.Fatalf("rise %d: Redis value stuck at %d for %v under load", i, v, within)
				}
				<-poll.C
			}
			worst = max(worst, time.Since(since))
		}
		close(stop)
		wg.Wait()
		t.Logf("%d Inc calls, slowest rise %v", incs.Load(), worst)
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if r, w := raw(t, c, p, "hot"), strconv.FormatInt(incs.Load(), 10); r != w {
			t.Fatalf("Redis holds %s, want %s", r, w)
		}
	})
}

// After SCRIPT FLUSH, strict calls and pipelined lax flushes reload the
// scripts and go on.
func TestNoScript(t *testing.T) {
	for name, c := range map[string]redis.UniversalClient{
		"standalone": redistest.NewServer(t).Client(t),
		"cluster":    func() redis.UniversalClient { c, _ := redistest.NewCluster(t); return c }(),
	} {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			p := redistest.Prefix(t)
			s, l := newStrict(t, c, p), newLax(t, c, p, manual)
			for round := range 2 {
				if err := c.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				if v, err := s.Inc(ctx, "s", 1); v != int64(round+1) || err != nil {
					t.Fatalf("strict Inc after SCRIPT FLUSH = %d, %v", v, err)
				}
				if err := c.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				for i := range 20 { // keys on every master
					_, _ = l.Inc(ctx, "l"+strconv.Itoa(i), 1)
				}
				if err := l.Flush(ctx); err != nil {
					t.Fatalf("lax Flush after SCRIPT FLUSH: %v", err)
				}
				for i := range 20 {
					if r := raw(t, c, p, "l"+strconv.Itoa(i)); r != strconv.Itoa(round+1) {
						t.Fatalf("l%d: Redis holds %q, want %d", i, r, round+1)
					}
				}
				if err := c.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				if _, ok, err := l.IncIf(ctx, "i", 1, Cond{Op: Ge, Operand: 0}); !ok || err != nil {
					t.Fatalf("lax IncIf after SCRIPT FLUSH = %v, %v", ok, err)
				}
			}
		})
	}
}

// Redis down at construction is only logged; down during a flush keeps the
// changes, which count once when it is back.
func TestRedisDown(t *testing.T) {
	srv := redistest.NewServer(t)
	// Fail fast while Redis is down instead of retrying dials for seconds.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	ctx := ctxT(t)
	p := redistest.Prefix(t)
	srv.Kill()

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s, err := NewStrict(c, Options{Prefix: p, Logger: log})
	if err != nil {
		t.Fatalf("NewStrict with Redis down: %v", err)
	}
	defer s.Close(ctx)
	l, err := NewLax(c, LaxOptions{Options: Options{Prefix: p, Logger: log}, FlushInterval: manual})
	if err != nil {
		t.Fatalf("NewLax with Redis down: %v", err)
	}
	defer l.Close(ctx)
	if !strings.Contains(logs.String(), "loading counter scripts failed") {
		t.Errorf("nothing logged for Redis down at construction; log: %s", logs.String())
	}
	if _, err := s.Inc(ctx, "k", 1); err == nil {
		t.Fatal("strict Inc with Redis down succeeded")
	}
	_, _ = l.Inc(ctx, "k", 5)
	if err := l.Flush(ctx); err == nil {
		t.Fatal("Flush with Redis down succeeded")
	}
	_, _ = l.Inc(ctx, "k", 2)

	srv.Restart(t)
	if v, err := s.Inc(ctx, "k", 10); v != 10 || err != nil {
		t.Fatalf("strict Inc after restart = %d, %v; want 10", v, err)
	}
	// The +5 goes first, then the +2 with the next batch.
	for range 2 {
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := s.Get(ctx, "k"); v != 17 || err != nil {
		t.Fatalf("Get after restart = %d, %v; want 17", v, err)
	}
}

// Entries of keys left idle are dropped; the key works as before.
func TestIdleEntriesDropped(t *testing.T) {
	c := redistest.Standalone(t)
	ctx := ctxT(t)
	p := redistest.Prefix(t)
	l := newLax(t, c, p, manual)
	l.evict = 2
	_, _ = l.Inc(ctx, "k", 3)
	for range 4 {
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if l.lookup("k") != nil {
		t.Fatal("idle entry kept")
	}
	if v, err := l.Get(ctx, "k"); v != 3 || err != nil {
		t.Fatalf("Get = %d, %v; want 3", v, err)
	}
	_, _ = l.Inc(ctx, "k", 1)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if r := raw(t, c, p, "k"); r != "4" {
		t.Fatalf("Redis holds %q, want 4", r)
	}
}

// The warm path of Inc and Dec does not allocate.
func TestLaxIncAllocs(t *testing.T) {
	c := redistest.Standalone(t)
	ctx := context.Background()
	l := newLax(t, c, redistest.Prefix(t), manual)
	_, _ = l.Inc(ctx, "k", 1)
	if n := testing.AllocsPerRun(1000, func() {
		_, _ = l.Inc(ctx, "k", 1)
		_, _ = l.Dec(ctx, "k", 1)
	}); n != 0 {
		t.Fatalf("Inc+Dec allocate %v times", n)
	}
}

func BenchmarkLaxIncDec(b *testing.B) {
	c := redistest.Standalone(b)
	l := newLax(b, c, redistest.Prefix(b), 0)
	ctx := context.Background()
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("room-%d", i)
		_, _ = l.Inc(ctx, keys[i], 0)
	}
	var seed atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seed.Add(1), 2))
		for pb.Next() {
			k := keys[r.IntN(len(keys))]
			if _, err := l.Inc(ctx, k, 1); err != nil {
				b.Fatal(err)
			}
			if _, err := l.Dec(ctx, k, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStrictIncDec is the same load one Redis round trip per call, for
// the ratio to BenchmarkLaxIncDec.
func BenchmarkStrictIncDec(b *testing.B) {
	c := redistest.Standalone(b)
	s := newStrict(b, c, redistest.Prefix(b))
	ctx := context.Background()
	var seed atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seed.Add(1), 2))
		for pb.Next() {
			k := "room-" + strconv.Itoa(r.IntN(10_000))
			if _, err := s.Inc(ctx, k, 1); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Dec(ctx, k, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// syncBuffer is a bytes.Buffer safe for a logger shared by goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
