package icounter

// The pitfalls of DESIGN.md section 3, one test each, with the expected
// values written there.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/lua"
	"github.com/headcount-go/headcount/internal/redistest"
)

// dies kills victim and waits until reader has reaped it. The victim holds a
// slice of 1 on a witness key of its own, touched just before the kill, so
// the witness dropping to 0 proves the reap happened.
func dies(t *testing.T, victim, reader counter) {
	t.Helper()
	ctx := ctxT(t)
	witness := "witness-" + victim.InstanceID()
	must[Value](t)(victim.Inc(ctx, witness, 1))
	if l, ok := victim.(*Lax); ok {
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	victim.Kill()
	eventuallyTotal(t, reader, witness, 0, healDeadline)
}

// 1. A has 40, B has 60, A Set(10), B dies and is reaped -> total 10.
func TestPitfall01SetThenDeath(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		a, b := newStrict(t, c, p, "A"), newStrict(t, c, p, "B")
		must[Value](t)(a.Inc(ctx, "k", 40))
		must[Value](t)(b.Inc(ctx, "k", 60))
		must[Value](t)(a.Set(ctx, "k", 10))
		dies(t, b, a)
		if got := total(t, a, "k"); got != 10 {
			t.Fatalf("total = %d, want 10", got)
		}
	})
}

// 2. A 100, B 100, A Del, A Inc(5), B dies -> 5.
func TestPitfall02DelIncThenDeath(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		a, b := newStrict(t, c, p, "A"), newStrict(t, c, p, "B")
		must[Value](t)(a.Inc(ctx, "k", 100))
		must[Value](t)(b.Inc(ctx, "k", 100))
		must[Value](t)(a.Del(ctx, "k"))
		must[Value](t)(a.Inc(ctx, "k", 5))
		dies(t, b, a)
		if got := total(t, a, "k"); got != 5 {
			t.Fatalf("total = %d, want 5", got)
		}
	})
}

// 3. A Set(100), stale B reads, B Inc(1) -> 101; then B dies -> 100.
func TestPitfall03StaleWriterAfterSet(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		a, b := newStrict(t, c, p, "A"), newStrict(t, c, p, "B")
		must[Value](t)(b.Inc(ctx, "k", 7)) // B knows the old epoch
		must[Value](t)(a.Set(ctx, "k", 100))
		if v := must[Value](t)(b.Inc(ctx, "k", 1)); v != (Value{Total: 101, Mine: 1}) {
			t.Fatalf("stale B Inc(1) = %+v, want {101 1}", v)
		}
		if got := total(t, a, "k"); got != 101 {
			t.Fatalf("total = %d, want 101", got)
		}
		dies(t, b, a)
		if got := total(t, a, "k"); got != 100 {
			t.Fatalf("total after B died = %d, want 100", got)
		}
	})
}

// 4. An instance reaped during a partition comes back and writes to k1 only
// -> its slices on k1 AND k2 are restored by the next heartbeat, epoch
// unchanged.
func TestPitfall04ReapedDuringPartition(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		bc, cut := ownClient(t, c)
		a, b := newStrict(t, c, p, "A"), newStrict(t, bc, p, "B")
		must[Value](t)(a.Inc(ctx, "k1", 10))
		must[Value](t)(a.Inc(ctx, "k2", 20))
		must[Value](t)(b.Inc(ctx, "k1", 3))
		must[Value](t)(b.Inc(ctx, "k2", 4))
		epochs := func() [2]string {
			var e [2]string
			for i, k := range []string{"k1", "k2"} {
				e[i] = c.HGet(ctx, a.e.cfg.space.Key(k), "e").Val()
			}
			return e
		}
		before := epochs()

		cut.cut.Store(true)
		eventuallyTotal(t, a, "k1", 10, healDeadline)
		eventuallyTotal(t, a, "k2", 20, healDeadline)
		cut.cut.Store(false)

		if v := must[Value](t)(b.Inc(ctx, "k1", 1)); v != (Value{Total: 14, Mine: 4}) {
			t.Fatalf("B back, Inc(k1) = %+v, want {14 4}", v)
		}
		eventuallyTotal(t, a, "k2", 24, testHeartbeat+time.Second)
		if after := epochs(); after != before {
			t.Fatalf("epochs changed from %v to %v", before, after)
		}
	})
}

// 5. A Clear (or Del) followed by an old instance's recovery must not bring
// back pre-clear slices.
func TestPitfall05NoResurrectionAfterClear(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		bc, cut := ownClient(t, c)
		a, b := newStrict(t, c, p, "A"), newStrict(t, bc, p, "B")
		for i, k := range []string{"k1", "k2", "k3"} {
			must[Value](t)(b.Inc(ctx, k, int64(3+i)))
		}
		cut.cut.Store(true)
		// B misses the heartbeat that would have told it anything.
		if err := a.Clear(ctx); err != nil {
			t.Fatal(err)
		}
		must[Value](t)(a.Inc(ctx, "k3", 9))
		must[Value](t)(a.Del(ctx, "k3")) // Del, as well as Clear
		must[Value](t)(a.Inc(ctx, "k1", 2))
		cut.cut.Store(false)

		// B's next heartbeat learns of the resets and zeroes its slices.
		eventually(t, testHeartbeat+time.Second, "B zeroes its slices", func() (bool, string) {
			l := [3]int64{b.e.localOf("k1"), b.e.localOf("k2"), b.e.localOf("k3")}
			return l == [3]int64{}, fmt.Sprint(l)
		})
		for k, want := range map[string]int64{"k1": 2, "k2": 0, "k3": 0} {
			stableTotal(t, a, k, want, testHeartbeat+100*time.Millisecond)
		}
	})
}

// 6. A negative slice is restored like a positive one.
func TestPitfall06NegativeSliceRestored(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		bc, cut := ownClient(t, c)
		a, b := newStrict(t, c, p, "A"), newStrict(t, bc, p, "B")
		must[Value](t)(a.Inc(ctx, "k", 10))
		if v := must[Value](t)(b.Dec(ctx, "k", 5)); v != (Value{Total: 5, Mine: -5}) {
			t.Fatalf("B Dec = %+v", v)
		}
		cut.cut.Store(true)
		eventuallyTotal(t, a, "k", 10, healDeadline) // B reaped
		cut.cut.Store(false)
		eventuallyTotal(t, a, "k", 5, testHeartbeat+time.Second)
	})
}

// 7. 10,000 keys in a namespace plus dead instances -> scripts keep working;
// per-call reaping work is bounded.
func TestPitfall07ManyKeysAndDeadInstances(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		o := testOptions(p, "L")
		l, err := NewLax(c, LaxOptions{Options: o, FlushInterval: testFlush})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		o.InstanceID = "A"
		a, err := NewStrict(c, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close(context.Background()) })
		const nKeys = 10000
		for i := 0; i < nKeys; i++ {
			must[Value](t)(l.Inc(ctx, "room-"+strconv.Itoa(i), int64(i%7+1)))
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{0, 4999, 9999} {
			if got, want := total(t, a, "room-"+strconv.Itoa(i)), int64(i%7+1); got != want {
				t.Fatalf("room-%d = %d, want %d", i, got, want)
			}
		}

		// 200 instances write to "hot" once and are never seen again; no
		// index names them, so only their leases end their slices: a
		// script on "hot" that renews its TTL (due every lease; made due
		// here before each call) drops them, a bounded number per call.
		const dead = 200
		h := a.e.cfg.space.Key("hot")
		calls := make([]*lua.Call, dead)
		for i := range calls {
			calls[i] = &lua.Call{Script: lua.Assert, Keys: []string{h, h + seenSuffix}, Args: []any{
				"dead-" + strconv.Itoa(i), 1, 1, -1, "1", "0", a.e.cfg.leaseMs, a.e.cfg.counterTTLMs, 64, "", "0", "0"}}
		}
		if err := lua.RunBatch(ctx, c, calls); err != nil {
			t.Fatal(err)
		}
		card := func() int64 { return c.ZCard(ctx, h+seenSuffix).Val() }
		if n := card(); n != dead {
			t.Fatalf("%d instances on hot, want %d", n, dead)
		}
		// Their leases ran out a lease ago (by Redis' clock).
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		old := float64(now.Add(-2 * a.e.cfg.lease).UnixMilli())
		for i := range dead {
			if err := c.ZAddXX(ctx, h+seenSuffix, redis.Z{Score: old, Member: "dead-" + strconv.Itoa(i)}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		prev := card()
		for prev > 0 {
			if err := c.HSet(ctx, h, "x", 0).Err(); err != nil {
				t.Fatal(err)
			}
			must[Value](t)(a.Inc(ctx, "hot", 0))
			now := card() - 1 // a's own lease
			if reaped := prev - now; reaped < 1 || reaped > int64(a.e.cfg.reapPerCall) {
				t.Fatalf("one call reaped %d instances, want 1..%d", reaped, a.e.cfg.reapPerCall)
			}
			prev = now
		}
		if got := total(t, a, "hot"); got != 0 {
			t.Fatalf("hot after reaping = %d, want 0", got)
		}

		// Clear copes with the whole namespace.
		if err := a.Clear(ctx); err != nil {
			t.Fatal(err)
		}
		if got := total(t, a, "room-9999"); got != 0 {
			t.Fatalf("room-9999 after Clear = %d", got)
		}
	})
}

// 8. Values near 1e17 and 2^53+1 round-trip exactly.
func TestPitfall08BigValuesExact(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		a, b := newStrict(t, c, p, "A"), newStrict(t, c, p, "B")
		const e17 = int64(100_000_000_000_000_003)
		const p53 = int64(1)<<53 + 1
		if v := must[Value](t)(a.Inc(ctx, "k", e17)); v.Total != e17 || v.Mine != e17 {
			t.Fatalf("Inc(1e17+3) = %+v", v)
		}
		if v := must[Value](t)(b.Inc(ctx, "k", p53)); v.Total != e17+p53 || v.Mine != p53 {
			t.Fatalf("Inc(2^53+1) = %+v, want total %d", v, e17+p53)
		}
		if got := total(t, b, "k"); got != e17+p53 {
			t.Fatalf("Get = %d, want %d", got, e17+p53)
		}
		if v := must[Value](t)(a.Set(ctx, "s", p53)); v.Total != p53 {
			t.Fatalf("Set(2^53+1) = %+v", v)
		}
		if got := total(t, b, "s"); got != p53 {
			t.Fatalf("Get after Set = %d, want %d", got, p53)
		}
		// A comparison one off at that size is still exact.
		if _, held, err := a.IncIf(ctx, "s", 1, Cond{Op: Lt, Operand: p53}); err != nil || held {
			t.Fatalf("IncIf(< 2^53+1) on 2^53+1: held=%v err=%v", held, err)
		}
		if v, held, err := a.IncIf(ctx, "s", 1, Cond{Op: Le, Operand: p53}); err != nil || !held || v.Total != p53+1 {
			t.Fatalf("IncIf(<= 2^53+1): %+v held=%v err=%v", v, held, err)
		}
		if v := must[Value](t)(b.Inc(ctx, "max", math.MaxInt64-1)); v.Total != math.MaxInt64-1 {
			t.Fatalf("Inc(MaxInt64-1) = %+v", v)
		}
	})
}

// 9. Lax flushes keep running every FlushInterval under continuous load.
func TestPitfall09LaxFlushesUnderLoad(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		l, r := newLax(t, c, p, "L"), newStrict(t, c, p, "R")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					k := "k" + strconv.Itoa((g+i)%32)
					_, _ = l.Inc(ctx, k, 2)
					_, _ = l.Dec(ctx, k, 1)
				}
			}(g)
		}
		defer func() { close(stop); wg.Wait() }()
		// Every few flush intervals Redis must show a newer total.
		last := int64(-1)
		for i := 0; i < 25; i++ {
			eventually(t, 50*testFlush, "a newer total reaches Redis", func() (bool, string) {
				got := total(t, r, "k0")
				return got > last, fmt.Sprint(got)
			})
			last = total(t, r, "k0")
		}
	})
}

// 10. A flush whose reply was lost, then retried, does not double count.
func TestPitfall10LostReplyNotDoubleCounted(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		lc, f := ownClient(t, c)
		// Long intervals, so that only our own calls write.
		slow := Options{Prefix: p, DeadInstanceThreshold: time.Minute, HeartbeatInterval: 20 * time.Second}
		l, err := NewLax(lc, LaxOptions{Options: withID(slow, "L"), FlushInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		s, err := NewStrict(lc, withID(slow, "S"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		r := newStrict(t, c, p, "R")
		// Both write k once first: on a Cluster a first write sends its
		// index entry a round trip ahead, whose reply is not the one to
		// lose here.
		must[Value](t)(s.Inc(ctx, "k", 0))
		must[Value](t)(l.Inc(ctx, "k", 1))
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		must[Value](t)(l.Dec(ctx, "k", 1))
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}

		must[Value](t)(l.Inc(ctx, "k", 5))
		f.loseNext.Store(1)
		if err := l.Flush(ctx); !errors.Is(err, errCut) {
			t.Fatalf("Flush with a lost reply: %v", err)
		}
		if got := total(t, r, "k"); got != 5 {
			t.Fatalf("the lost flush did not run: total %d", got)
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := total(t, r, "k"); got != 5 {
			t.Fatalf("after retry total = %d, want 5", got)
		}

		f.loseNext.Store(1)
		if _, err := s.Inc(ctx, "k", 3); !errors.Is(err, errCut) {
			t.Fatalf("strict Inc with a lost reply: %v", err)
		}
		if v := must[Value](t)(s.Inc(ctx, "k", 1)); v != (Value{Total: 9, Mine: 4}) {
			t.Fatalf("strict Inc after a lost reply = %+v, want {9 4}", v)
		}
	})
}

func withID(o Options, id string) Options {
	o.InstanceID = id
	return o
}

// 11. A restarted process with the same configured InstanceID does not
// double count.
func TestPitfall11RestartSameInstanceID(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		r := newStrict(t, c, p, "R")
		old := newStrict(t, c, p, "pod-1")
		must[Value](t)(old.Inc(ctx, "k", 5))
		old.Kill()
		restarted := newStrict(t, c, p, "pod-1")
		if v := must[Value](t)(restarted.Inc(ctx, "k", 3)); v != (Value{Total: 3, Mine: 3}) {
			t.Fatalf("restarted Inc = %+v, want {3 3}", v)
		}
		if got := total(t, r, "k"); got != 3 {
			t.Fatalf("total = %d, want 3", got)
		}
		if restarted.e.session.Load() <= old.e.session.Load() {
			t.Fatalf("session did not grow across the restart: %d then %d", old.e.session.Load(), restarted.e.session.Load())
		}
	})
}

// 12. A negative threshold or heartbeat, or a heartbeat too long for the
// threshold, is refused at construction (a zero value means the default).
func TestPitfall12OptionsRefused(t *testing.T) {
	c := redistest.Standalone(t)
	p := redistest.Prefix(t)
	bad := []Options{
		{Prefix: p, DeadInstanceThreshold: -time.Second},
		{Prefix: p, HeartbeatInterval: -time.Second},
		{Prefix: p, DeadInstanceThreshold: 10 * time.Second, HeartbeatInterval: 6 * time.Second},
		{Prefix: p, HeartbeatInterval: 16 * time.Second}, // default threshold 30s
		{Prefix: ""},
		{Prefix: "has space"},
		{Prefix: "a{b}"},
		{Prefix: string(make([]byte, 65))},
		{Prefix: p, InstanceID: "bad\nid"},
	}
	for _, o := range bad {
		if s, err := NewStrict(c, o); !errors.Is(err, ErrInvalidOptions) {
			if s != nil {
				s.Kill()
			}
			t.Errorf("NewStrict(%+v): %v, want ErrInvalidOptions", o, err)
		}
	}
	if _, err := NewLax(c, LaxOptions{Options: Options{Prefix: p}, FlushInterval: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("NewLax with negative FlushInterval: %v", err)
	}
	if _, err := NewStrict(nil, Options{Prefix: p}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("NewStrict(nil client): %v", err)
	}
	s, err := NewStrict(c, Options{Prefix: p})
	if err != nil {
		t.Fatalf("zero values must mean the defaults: %v", err)
	}
	defer s.Kill()
	if s.e.cfg.threshold != DefaultDeadInstanceThreshold || s.e.cfg.heartbeat != DefaultDeadInstanceThreshold/3 {
		t.Fatalf("defaults: threshold %v heartbeat %v", s.e.cfg.threshold, s.e.cfg.heartbeat)
	}
	if s.InstanceID() == "" {
		t.Fatal("no default InstanceID")
	}
	l, err := NewLax(c, LaxOptions{Options: Options{Prefix: p, DeadInstanceThreshold: 10 * time.Second, HeartbeatInterval: 5 * time.Second}})
	if err != nil {
		t.Fatalf("heartbeat of exactly half the threshold: %v", err)
	}
	defer l.Kill()
	if l.e.cfg.flush != DefaultFlushInterval {
		t.Fatalf("default flush %v", l.e.cfg.flush)
	}
}
