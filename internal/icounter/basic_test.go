package icounter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

func TestBasicStrict(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		p := redistest.Prefix(t)
		a, b := newStrict(t, c, p, "a"), newStrict(t, c, p, "b")
		ok := must[Value](t)
		if v := ok(a.Inc(ctx, "k", 3)); v != (Value{Total: 3, Mine: 3}) {
			t.Fatalf("a.Inc = %+v", v)
		}
		if v := ok(b.Inc(ctx, "k", 4)); v != (Value{Total: 7, Mine: 4}) {
			t.Fatalf("b.Inc = %+v", v)
		}
		if v := ok(a.Dec(ctx, "k", 1)); v != (Value{Total: 6, Mine: 2}) {
			t.Fatalf("a.Dec = %+v", v)
		}
		if v := ok(b.Get(ctx, "k")); v != (Value{Total: 6, Mine: 4}) {
			t.Fatalf("b.Get = %+v", v)
		}
		if v := ok(a.SetOnInstance(ctx, "k", 10)); v != (Value{Total: 14, Mine: 10}) {
			t.Fatalf("a.SetOnInstance = %+v", v)
		}
		if v := ok(b.DelOnInstance(ctx, "k")); v != (Value{Total: 10, Mine: 0}) {
			t.Fatalf("b.DelOnInstance = %+v", v)
		}
		if v := ok(b.Set(ctx, "k", 50)); v != (Value{Total: 50, Mine: 0}) {
			t.Fatalf("b.Set = %+v", v)
		}
		if v := ok(a.Inc(ctx, "k", 1)); v != (Value{Total: 51, Mine: 1}) {
			t.Fatalf("a.Inc after Set = %+v", v)
		}
		if v := ok(a.Del(ctx, "k")); v != (Value{Total: 51, Mine: 1}) {
			t.Fatalf("a.Del = %+v (want the value before)", v)
		}
		if v := ok(b.Get(ctx, "k")); v != (Value{}) {
			t.Fatalf("b.Get after Del = %+v", v)
		}
		if v := ok(b.Get(ctx, "never-written")); v != (Value{}) {
			t.Fatalf("Get of a new key = %+v", v)
		}
	})
}

func TestBasicLax(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		p := redistest.Prefix(t)
		l, s := newLax(t, c, p, "lax"), newStrict(t, c, p, "strict")
		ok := must[Value](t)
		ok(s.Inc(ctx, "k", 100))
		ok(l.Get(ctx, "k")) // learn the remote total
		if v := ok(l.Inc(ctx, "k", 5)); v != (Value{Total: 105, Mine: 5}) {
			t.Fatalf("lax Inc = %+v", v)
		}
		if v := ok(l.Dec(ctx, "k", 2)); v != (Value{Total: 103, Mine: 3}) {
			t.Fatalf("lax Dec = %+v", v)
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := total(t, s, "k"); got != 103 {
			t.Fatalf("strict sees %d after Flush, want 103", got)
		}
		// Without Flush the flusher delivers within a few intervals.
		ok(l.Inc(ctx, "k", 7))
		eventuallyTotal(t, s, "k", 110, 20*testFlush+healDeadline)
		if v := ok(l.SetOnInstance(ctx, "k", 1)); v.Mine != 1 {
			t.Fatalf("lax SetOnInstance = %+v", v)
		}
		eventuallyTotal(t, s, "k", 101, 20*testFlush+healDeadline)
		if v := ok(l.Del(ctx, "k")); v != (Value{Total: 101, Mine: 1}) {
			t.Fatalf("lax Del = %+v", v)
		}
		if v, held, err := l.IncIf(ctx, "k", 2, Cond{Op: Lt, Operand: 1}); err != nil || !held || v != (Value{Total: 2, Mine: 2}) {
			t.Fatalf("lax IncIf = %+v %v %v", v, held, err)
		}
	})
}

func TestIncIf(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		p := redistest.Prefix(t)
		a, b := newStrict(t, c, p, "a"), newStrict(t, c, p, "b")
		must[Value](t)(b.Inc(ctx, "k", 5))
		cases := []struct {
			op      CmpOp
			operand int64
			held    bool
		}{
			{Eq, 5, true}, {Eq, 4, false}, {Ne, 5, false}, {Ne, 6, true},
			{Lt, 5, false}, {Lt, 6, true}, {Le, 4, false}, {Le, 5, true},
			{Gt, 5, false}, {Gt, 4, true}, {Ge, 6, false}, {Ge, 5, true},
		}
		for _, tc := range cases {
			v, held, err := a.IncIf(ctx, "k", 1, Cond{Op: tc.op, Operand: tc.operand})
			if err != nil {
				t.Fatal(err)
			}
			want := Value{Total: 5, Mine: 0}
			if tc.held {
				want = Value{Total: 6, Mine: 1}
			}
			if held != tc.held || v != want {
				t.Fatalf("IncIf(%v %d) = %+v, %v; want %+v, %v", tc.op, tc.operand, v, held, want, tc.held)
			}
			if tc.held {
				must[Value](t)(a.Dec(ctx, "k", 1))
			}
		}
		if _, _, err := a.IncIf(ctx, "k", 1, Cond{}); !errors.Is(err, ErrInvalidCond) {
			t.Fatalf("IncIf with zero Cond: %v, want ErrInvalidCond", err)
		}
	})
}

func TestInvalidInput(t *testing.T) {
	c := redistest.Standalone(t)
	ctx := ctxT(t)
	p := redistest.Prefix(t)
	s, l := newStrict(t, c, p, "s"), newLax(t, c, p, "l")
	bad := []string{"", strings.Repeat("x", 256), "a\nb", "tab\t", "nul\x00", "del\x7f"}
	for _, cnt := range []counter{s, l} {
		for _, k := range bad {
			if _, err := cnt.Inc(ctx, k, 1); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("%T.Inc(%q): %v, want ErrInvalidKey", cnt, k, err)
			}
			if _, err := cnt.Get(ctx, k); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("%T.Get(%q): %v, want ErrInvalidKey", cnt, k, err)
			}
			if _, err := cnt.Set(ctx, k, 1); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("%T.Set(%q): %v, want ErrInvalidKey", cnt, k, err)
			}
		}
		if _, err := cnt.Inc(ctx, "k", -1); !errors.Is(err, ErrInvalidDelta) {
			t.Errorf("%T.Inc(-1): %v, want ErrInvalidDelta", cnt, err)
		}
		if _, err := cnt.Dec(ctx, "k", -1); !errors.Is(err, ErrInvalidDelta) {
			t.Errorf("%T.Dec(-1): %v, want ErrInvalidDelta", cnt, err)
		}
	}
	// Awkward but valid names stay apart and inside the prefix.
	odd := []string{strings.Repeat("y", 255), "{x}", "}", "{", "%7B", "%", "a:b", "ünï", "*", "[a]"}
	for i, k := range odd {
		must[Value](t)(s.Inc(ctx, k, int64(i+1)))
	}
	for i, k := range odd {
		if got := total(t, s, k); got != int64(i+1) {
			t.Errorf("total(%q) = %d, want %d", k, got, i+1)
		}
	}
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range keys {
		if strings.HasPrefix(k, "hc:v1:i:{"+p+":") {
			n++
		}
	}
	if n != 2*len(odd) { // a hash and a lease set per counter
		t.Errorf("found %d counter keys under the prefix, want %d", n, 2*len(odd))
	}
}

func TestClosedCounterRefusesCalls(t *testing.T) {
	c := redistest.Standalone(t)
	ctx := ctxT(t)
	p := redistest.Prefix(t)
	for _, cnt := range []counter{newStrict(t, c, p, "s"), newLax(t, c, p, "l")} {
		must[Value](t)(cnt.Inc(ctx, "k", 1))
		if err := cnt.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := cnt.Inc(ctx, "k", 1); !errors.Is(err, ErrClosed) {
			t.Errorf("%T.Inc after Close: %v", cnt, err)
		}
		if _, err := cnt.Get(ctx, "k"); !errors.Is(err, ErrClosed) {
			t.Errorf("%T.Get after Close: %v", cnt, err)
		}
		if err := cnt.Clear(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("%T.Clear after Close: %v", cnt, err)
		}
		if err := cnt.Close(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("%T.Close twice: %v", cnt, err)
		}
	}
	// Close removed both slices at once: no ghost until the reap.
	r := newStrict(t, c, p, "reader")
	if got := total(t, r, "k"); got != 0 {
		t.Fatalf("total after both closed = %d, want 0", got)
	}
}

// Sync commits the changes of several keys in one round trip per node and
// leaves the other keys buffered (keys written before: on a Cluster a
// key's first write sends its index entry a round trip ahead).
func TestLaxSync(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		own, f := ownClient(t, c)
		l, err := NewLax(own, LaxOptions{Options: Options{Prefix: p, InstanceID: "L"}, FlushInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		r := newStrict(t, c, p, "R")
		for _, k := range []string{"a", "b", "c"} {
			must[Value](t)(l.Inc(ctx, k, 1))
		}
		if err := l.Sync(ctx, "a", "b", "c"); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b", "c"} {
			must[Value](t)(l.Inc(ctx, k, 1))
		}
		must[Value](t)(l.Inc(ctx, "other", 2))
		trips := f.roundTrip.Load()
		if err := l.Sync(ctx, "a", "b", "c"); err != nil {
			t.Fatal(err)
		}
		if n := f.roundTrip.Load() - trips; n != 1 {
			t.Fatalf("Sync of 3 keys took %d pipelines, want 1", n)
		}
		for k, want := range map[string]int64{"a": 2, "b": 2, "c": 2, "other": 0} {
			if got := total(t, r, k); got != want {
				t.Fatalf("%s = %d, want %d", k, got, want)
			}
		}
		if err := l.Sync(ctx, "a", "bad\n"); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("Sync with a bad key: %v", err)
		}
	})
}

// A flush asserts many counters in one script run (on one server); each
// counter's hash must get its own fields only. A presence-off run once took
// the next counter's arguments for a member's metadata and stored them in a
// stray field of every counter but the last.
func TestFlushWritesOnlyCounterFields(t *testing.T) {
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	l, err := NewLax(c, LaxOptions{Options: Options{Prefix: p, InstanceID: "L"}, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	keys := []string{"a", "b", "c", "d"}
	for _, k := range keys {
		must[Value](t)(l.Inc(ctx, k, 1))
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"e": true, "t": true, "x": true, "s:L": true, "c:L": true, "v:L": true, "l:L": true}
	for _, k := range keys {
		fields, err := c.HGetAll(ctx, l.e.cfg.space.Key(k)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if fields["t"] != "1" {
			t.Fatalf("%s: t = %q, want 1 (fields %v)", k, fields["t"], fields)
		}
		for f := range fields {
			if !allowed[f] {
				t.Errorf("%s: stray field %q in %v", k, f, fields)
			}
		}
	}
}

// TestReadsAfterStalledBatches: while Redis is slow to answer (go-redis
// retrying through a Cluster that is down), reads with short deadlines give
// up. Their batches must end with them: once Redis answers again, the next
// read is served at once, not after the stalled batches have held both of
// the reader's loops for as long as Redis was slow.
func TestReadsAfterStalledBatches(t *testing.T) {
	t.Parallel()
	c, f := ownClient(t, redistest.Standalone(t))
	ctx, p := ctxT(t), redistest.Prefix(t)
	r := newStrict(t, c, p, "R")
	must[Value](t)(r.Inc(ctx, "c", 1))
	f.stall.Store(int64(5 * time.Second))
	for _, k := range []string{"a", "b"} { // one batch, and one loop, each
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		if _, err := r.Get(rctx, k); err == nil {
			t.Fatalf("read of %s while Redis stalls: no error", k)
		}
		cancel()
	}
	f.stall.Store(0)
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	start := time.Now()
	v, err := r.Get(rctx, "c")
	if err != nil || v.Total != 1 {
		t.Fatalf("read once Redis answers again: %+v, %v after %v; want 1", v, err, time.Since(start).Round(time.Millisecond))
	}
}
