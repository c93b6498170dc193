package counter

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

func TestBasic(t *testing.T) {
	eachKind(t, func(t *testing.T, c redis.UniversalClient, p string, ctr api) {
		ctx := ctxT(t)
		step := func(what string, got int64, err error, want int64) {
			t.Helper()
			if err != nil || got != want {
				t.Fatalf("%s = %d, %v; want %d", what, got, err, want)
			}
		}
		v, err := ctr.Get(ctx, "k")
		step("Get(missing)", v, err, 0)
		v, err = ctr.Inc(ctx, "k", 5)
		step("Inc(5)", v, err, 5)
		v, err = ctr.Dec(ctx, "k", 2)
		step("Dec(2)", v, err, 3)
		v, err = ctr.Inc(ctx, "k", 0)
		step("Inc(0)", v, err, 3)
		v, err = ctr.Get(ctx, "k")
		step("Get", v, err, 3)
		flush(t, ctr)
		if got := raw(t, c, p, "k"); got != "3" {
			t.Fatalf("Redis holds %q, want 3", got)
		}
		v, err = ctr.Dec(ctx, "k", 10)
		step("Dec(10)", v, err, -7)
		v, err = ctr.Set(ctx, "k", 10)
		step("Set(10)", v, err, 10)
		v, err = ctr.Inc(ctx, "k", 1)
		step("Inc(1) after Set", v, err, 11)
		v, err = ctr.Get(ctx, "k")
		step("Get after Set", v, err, 11)

		v, ok, err := ctr.IncIf(ctx, "k", 4, Cond{Op: Lt, Operand: 100})
		step("IncIf(lt 100)", v, err, 15)
		if !ok {
			t.Fatal("IncIf(lt 100) not applied")
		}
		v, ok, err = ctr.IncIf(ctx, "k", 4, Cond{Op: Gt, Operand: 100})
		step("IncIf(gt 100)", v, err, 15)
		if ok {
			t.Fatal("IncIf(gt 100) applied")
		}
		v, ok, err = ctr.IncIf(ctx, "k", -15, Cond{Op: Ge, Operand: 15})
		step("IncIf(-15, ge 15)", v, err, 0)
		if !ok {
			t.Fatal("IncIf(-15, ge 15) not applied")
		}

		_, _ = ctr.Inc(ctx, "k", 6)
		v, err = ctr.Del(ctx, "k")
		step("Del", v, err, 6)
		if got := raw(t, c, p, "k"); got != "" {
			t.Fatalf("Redis holds %q after Del", got)
		}
		v, err = ctr.Get(ctx, "k")
		step("Get after Del", v, err, 0)
		v, err = ctr.Del(ctx, "k")
		step("Del(missing)", v, err, 0)

		if _, _, err := ctr.IncIf(ctx, "k", 1, Cond{}); !errors.Is(err, ErrInvalidCond) {
			t.Fatalf("IncIf(zero Cond) = %v, want ErrInvalidCond", err)
		}
	})
}

// Clear deletes every counter of its prefix, buffered changes included,
// and no other prefix's.
func TestClear(t *testing.T) {
	eachKind(t, func(t *testing.T, c redis.UniversalClient, p string, ctr api) {
		ctx := ctxT(t)
		other := newStrict(t, c, redistest.Prefix(t))
		if _, err := other.Set(ctx, "a", 7); err != nil {
			t.Fatal(err)
		}
		keys := []string{"a", "b{x}", "c%"}
		for i := 0; i < 600; i++ { // more than one DEL batch
			keys = append(keys, "k"+strconv.Itoa(i))
		}
		for _, k := range keys {
			if _, err := ctr.Inc(ctx, k, 3); err != nil {
				t.Fatal(err)
			}
		}
		flush(t, ctr)
		if _, err := ctr.Inc(ctx, "a", 1); err != nil { // buffered when lax
			t.Fatal(err)
		}
		if err := ctr.Clear(ctx); err != nil {
			t.Fatalf("Clear: %v", err)
		}
		flush(t, ctr)
		for _, k := range keys {
			if v, err := ctr.Get(ctx, k); v != 0 || err != nil {
				t.Fatalf("Get(%s) after Clear = %d, %v; want 0", k, v, err)
			}
			if r := raw(t, c, p, k); r != "" {
				t.Fatalf("Redis holds %q for %s after Clear", r, k)
			}
		}
		if v, err := ctr.Inc(ctx, "a", 2); v != 2 || err != nil {
			t.Fatalf("Inc after Clear = %d, %v; want 2", v, err)
		}
		if v, err := other.Get(ctx, "a"); v != 7 || err != nil {
			t.Fatalf("other prefix after Clear = %d, %v; want 7", v, err)
		}
		if err := ctr.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ctr.Clear(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Clear after Close = %v, want ErrClosed", err)
		}
	})
}

// Strict and Lax counters of one prefix share their values, like the
// processes of a cluster.
func TestStrictAndLaxShare(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		p := redistest.Prefix(t)
		// No background flush: the test flushes where it means to, and
		// its read "before flush" must not race one (it did on a loaded
		// machine, with the 20 ms default).
		s, l := newStrict(t, c, p), newLax(t, c, p, time.Hour)
		if _, err := s.Inc(ctx, "k", 100); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Inc(ctx, "k", 1); err != nil {
			t.Fatal(err)
		}
		if v, err := l.Get(ctx, "k"); v != 101 || err != nil {
			t.Fatalf("lax Get = %d, %v; want 101", v, err)
		}
		if v, err := s.Get(ctx, "k"); v != 100 || err != nil {
			t.Fatalf("strict Get before flush = %d, %v; want 100", v, err)
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if v, err := s.Get(ctx, "k"); v != 101 || err != nil {
			t.Fatalf("strict Get after flush = %d, %v; want 101", v, err)
		}
		// After a flush, Lax's estimate includes other writers' changes.
		if v, err := l.Inc(ctx, "k", 1); v != 102 || err != nil {
			t.Fatalf("lax Inc after flush = %d, %v; want 102", v, err)
		}
		// Lax Set, Del and IncIf see the buffered +1 first.
		if v, ok, err := l.IncIf(ctx, "k", 1, Cond{Op: Eq, Operand: 102}); v != 103 || !ok || err != nil {
			t.Fatalf("lax IncIf(eq 102) = %d, %v, %v; want 103, true", v, ok, err)
		}
		if _, err := l.Inc(ctx, "k", 7); err != nil {
			t.Fatal(err)
		}
		if v, err := l.Del(ctx, "k"); v != 110 || err != nil {
			t.Fatalf("lax Del = %d, %v; want 110", v, err)
		}
		if _, err := l.Inc(ctx, "k", 2); err != nil {
			t.Fatal(err)
		}
		if v, err := l.Set(ctx, "k", 50); v != 50 || err != nil {
			t.Fatalf("lax Set = %d, %v", v, err)
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if v, err := s.Get(ctx, "k"); v != 50 || err != nil {
			t.Fatalf("strict Get after lax Set = %d, %v; want 50 (the +2 before Set must not land after it)", v, err)
		}
	})
}

// IncIf with every operator around the boundary, for values whose sign,
// length or float64 rounding could fool a comparison.
func TestIncIfOps(t *testing.T) {
	values := []int64{-10, -1, 0, 9, 10, 1 << 53, 1<<53 + 1, math.MaxInt64 - 1, math.MinInt64 + 1}
	ops := []CmpOp{Eq, Ne, Lt, Le, Gt, Ge}
	eachKind(t, func(t *testing.T, c redis.UniversalClient, p string, ctr api) {
		ctx := ctxT(t)
		for _, v := range values {
			operands := []int64{v - 1, v, v + 1, -v}
			for _, op := range ops {
				for _, x := range operands {
					cd := Cond{Op: op, Operand: x}
					if _, err := ctr.Set(ctx, "k", v); err != nil {
						t.Fatal(err)
					}
					want, wantOK := v, cd.Holds(v)
					if wantOK {
						want = v + 1
					}
					got, ok, err := ctr.IncIf(ctx, "k", 1, cd)
					if err != nil || got != want || ok != wantOK {
						t.Fatalf("value %d: IncIf(1, %v %d) = %d, %v, %v; want %d, %v", v, op, x, got, ok, err, want, wantOK)
					}
					if r := raw(t, c, p, "k"); r != strconv.FormatInt(want, 10) {
						t.Fatalf("value %d: after IncIf(1, %v %d) Redis holds %s, want %d", v, op, x, r, want)
					}
				}
			}
		}
	})
}

// Values beyond float64's 2^53 survive every path digit for digit.
func TestBigValues(t *testing.T) {
	const e17 = int64(100_000_000_000_000_000)
	eachKind(t, func(t *testing.T, c redis.UniversalClient, p string, ctr api) {
		ctx := ctxT(t)
		check := func(key string, want int64) {
			t.Helper()
			flush(t, ctr)
			if v, err := ctr.Get(ctx, key); v != want || err != nil {
				t.Fatalf("Get(%s) = %d, %v; want %d", key, v, err, want)
			}
			if r := raw(t, c, p, key); r != strconv.FormatInt(want, 10) {
				t.Fatalf("Redis holds %s for %s, want %d", r, key, want)
			}
		}
		if _, err := ctr.Set(ctx, "a", e17); err != nil {
			t.Fatal(err)
		}
		if _, err := ctr.Inc(ctx, "a", 1); err != nil {
			t.Fatal(err)
		}
		check("a", e17+1)
		if _, err := ctr.Inc(ctx, "b", 1<<53+1); err != nil {
			t.Fatal(err)
		}
		check("b", 1<<53+1)
		if _, err := ctr.Dec(ctx, "b", 2); err != nil {
			t.Fatal(err)
		}
		check("b", 1<<53-1)
		if _, err := ctr.Dec(ctx, "c", e17+3); err != nil {
			t.Fatal(err)
		}
		check("c", -e17-3)
		if _, err := ctr.Set(ctx, "d", math.MaxInt64); err != nil {
			t.Fatal(err)
		}
		check("d", math.MaxInt64)
		if v, err := ctr.Del(ctx, "d"); v != math.MaxInt64 || err != nil {
			t.Fatalf("Del = %d, %v; want MaxInt64", v, err)
		}
		if _, err := ctr.Set(ctx, "e", math.MinInt64); err != nil {
			t.Fatal(err)
		}
		check("e", math.MinInt64)
	})
}

func TestStrictOverflowIsAnError(t *testing.T) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := ctxT(t)
		s := newStrict(t, c, redistest.Prefix(t))
		if _, err := s.Set(ctx, "k", math.MaxInt64); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Inc(ctx, "k", 1); err == nil {
			t.Fatal("Inc past MaxInt64 succeeded")
		}
		if v, err := s.Get(ctx, "k"); v != math.MaxInt64 || err != nil {
			t.Fatalf("Get = %d, %v; want MaxInt64 unchanged", v, err)
		}
	})
}

// TestEndedContextSendsNothing: a Strict's call whose ctx has ended
// already returns ctx's error and sends nothing to Redis, so it changes
// nothing (the calls a Strict starts are waited for before counting).
func TestEndedContextSendsNothing(t *testing.T) {
	c := redistest.Standalone(t) // a client of its own
	s := newStrict(t, c, redistest.Prefix(t))
	hook := &countHook{}
	c.AddHook(hook)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	calls := map[string]error{}
	_, calls["Inc"] = s.Inc(ended, "k", 1)
	_, calls["Dec"] = s.Dec(ended, "k", 1)
	_, calls["Get"] = s.Get(ended, "k")
	_, calls["Set"] = s.Set(ended, "k", 1)
	_, calls["Del"] = s.Del(ended, "k")
	_, _, calls["IncIf"] = s.IncIf(ended, "k", 1, Cond{Op: Eq, Operand: 0})
	calls["Clear"] = s.Clear(ended)
	for name, err := range calls {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with an ended ctx: %v, want context.Canceled", name, err)
		}
	}
	s.core.calls.Wait()
	if n := hook.n.Load(); n != 0 {
		t.Errorf("calls with an ended ctx sent %d commands, want none", n)
	}
}

func TestInvalidInput(t *testing.T) {
	bad := []string{"", strings.Repeat("a", 256), "a\nb", "a\x00", "a\x7fb"}
	eachKind(t, func(t *testing.T, c redis.UniversalClient, p string, ctr api) {
		ctx := ctxT(t)
		hook := &countHook{}
		c.AddHook(hook)
		for _, k := range bad {
			calls := map[string]error{}
			_, calls["Inc"] = ctr.Inc(ctx, k, 1)
			_, calls["Dec"] = ctr.Dec(ctx, k, 1)
			_, calls["Get"] = ctr.Get(ctx, k)
			_, calls["Set"] = ctr.Set(ctx, k, 1)
			_, calls["Del"] = ctr.Del(ctx, k)
			_, _, calls["IncIf"] = ctr.IncIf(ctx, k, 1, Cond{Op: Eq, Operand: 0})
			for name, err := range calls {
				if !errors.Is(err, ErrInvalidKey) {
					t.Errorf("%s(%q) = %v, want ErrInvalidKey", name, k, err)
				}
			}
		}
		if _, err := ctr.Inc(ctx, "k", -1); !errors.Is(err, ErrInvalidDelta) {
			t.Errorf("Inc(-1) = %v, want ErrInvalidDelta", err)
		}
		if _, err := ctr.Dec(ctx, "k", -1); !errors.Is(err, ErrInvalidDelta) {
			t.Errorf("Dec(-1) = %v, want ErrInvalidDelta", err)
		}
		if n := hook.n.Load(); n != 0 {
			t.Errorf("%d Redis commands sent for invalid input", n)
		}
		// The longest valid key, and bytes that must not escape the hash tag.
		for _, k := range []string{strings.Repeat("z", 255), "{x}%7B:}", "é ü"} {
			if _, err := ctr.Inc(ctx, k, 2); err != nil {
				t.Fatalf("Inc(%q): %v", k, err)
			}
			flush(t, ctr)
			if v, err := ctr.Get(ctx, k); v != 2 || err != nil {
				t.Fatalf("Get(%q) = %d, %v; want 2", k, v, err)
			}
		}
	})
}

func TestInvalidOptions(t *testing.T) {
	c := redistest.Standalone(t)
	for _, p := range []string{"", "a:b", "a{b", strings.Repeat("p", 65)} {
		if _, err := NewStrict(c, Options{Prefix: p}); !errors.Is(err, ErrInvalidPrefix) || !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("NewStrict(prefix %q) = %v, want ErrInvalidPrefix and ErrInvalidOptions", p, err)
		}
		if _, err := NewLax(c, LaxOptions{Options: Options{Prefix: p}}); !errors.Is(err, ErrInvalidPrefix) {
			t.Errorf("NewLax(prefix %q) = %v, want ErrInvalidPrefix", p, err)
		}
	}
	if _, err := NewLax(c, LaxOptions{Options: Options{Prefix: "p"}, FlushInterval: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("NewLax(FlushInterval -1) = %v, want ErrInvalidOptions", err)
	}
	if _, err := NewStrict(nil, Options{Prefix: "p"}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("NewStrict(nil client) = %v, want ErrInvalidOptions", err)
	}
}

func TestClosed(t *testing.T) {
	eachKind(t, func(t *testing.T, c redis.UniversalClient, p string, ctr api) {
		ctx := ctxT(t)
		if err := ctr.Close(ctx); err != nil {
			t.Fatal(err)
		}
		calls := map[string]error{}
		_, calls["Inc"] = ctr.Inc(ctx, "k", 1)
		_, calls["Dec"] = ctr.Dec(ctx, "k", 1)
		_, calls["Get"] = ctr.Get(ctx, "k")
		_, calls["Set"] = ctr.Set(ctx, "k", 1)
		_, calls["Del"] = ctr.Del(ctx, "k")
		_, _, calls["IncIf"] = ctr.IncIf(ctx, "k", 1, Cond{Op: Eq, Operand: 0})
		calls["Close"] = ctr.Close(ctx)
		if l, ok := ctr.(*Lax); ok {
			calls["Flush"] = l.Flush(ctx)
		}
		for name, err := range calls {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close = %v, want ErrClosed", name, err)
			}
		}
	})
}
