package counter_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/counter"
	plain "github.com/headcount-go/headcount/internal/counter"
	"github.com/headcount-go/headcount/internal/redistest"
)

// Every operation of Shared and SharedLax, and the two modes counting
// together on one prefix.
func TestShared(t *testing.T) {
	modes(t, func(t *testing.T, c redis.UniversalClient, p string, lax bool) {
		ctx := ctxT(t)
		ctr := newShared(t, c, p, lax)
		other := newShared(t, c, p, !lax) // another process, in the other mode
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
		v, err = ctr.Get(ctx, "k")
		step("Get", v, err, 3)
		flush(t, ctr)
		// A lax Inc returns an estimate (what it last saw in Redis plus its
		// own changes since); Get is exact.
		if _, err := other.Inc(ctx, "k", 10); err != nil {
			t.Fatal(err)
		}
		flush(t, other)
		v, err = ctr.Get(ctx, "k")
		step("Get after the other mode's Inc", v, err, 13)
		if _, err := ctr.Dec(ctx, "k", 20); err != nil {
			t.Fatal(err)
		}
		flush(t, ctr)
		v, err = other.Get(ctx, "k")
		step("other mode's Get after Dec below zero", v, err, -7)

		v, err = ctr.Set(ctx, "k", 10)
		step("Set(10)", v, err, 10)
		v, err = ctr.Inc(ctx, "k", 1)
		step("Inc(1) after Set", v, err, 11)
		v, ok, err := ctr.IncIf(ctx, "k", 4, counter.Cond{Op: counter.Lt, Operand: 100})
		step("IncIf(4, lt 100)", v, err, 15)
		if !ok {
			t.Fatal("IncIf(4, lt 100) not applied")
		}
		v, ok, err = ctr.IncIf(ctx, "k", 4, counter.Cond{Op: counter.Gt, Operand: 100})
		step("IncIf(4, gt 100)", v, err, 15)
		if ok {
			t.Fatal("IncIf(4, gt 100) applied")
		}
		v, ok, err = ctr.IncIf(ctx, "k", -15, counter.Cond{Op: counter.Eq, Operand: 15})
		step("IncIf(-15, eq 15)", v, err, 0)
		if !ok {
			t.Fatal("IncIf(-15, eq 15) not applied")
		}

		_, _ = ctr.Inc(ctx, "k", 6)
		v, err = ctr.Del(ctx, "k")
		step("Del", v, err, 6)
		v, err = other.Get(ctx, "k")
		step("other mode's Get after Del", v, err, 0)
		v, err = ctr.Del(ctx, "k")
		step("Del(missing)", v, err, 0)

		// Clear takes every key of the prefix, buffered changes included,
		// and nothing of another prefix.
		outside := newShared(t, c, redistest.Prefix(t), false)
		step2 := func(what string, _ int64, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		v, err = outside.Inc(ctx, "a", 9)
		step2("outside Inc", v, err)
		for _, k := range []string{"a", "b", "{c}", "%d"} {
			v, err = ctr.Inc(ctx, k, 2)
			step2("Inc "+k, v, err)
		}
		flush(t, ctr)
		v, err = ctr.Inc(ctx, "a", 1) // still buffered when lax
		step2("Inc a", v, err)
		if err := ctr.Clear(ctx); err != nil {
			t.Fatalf("Clear: %v", err)
		}
		flush(t, ctr)
		for _, k := range []string{"a", "b", "{c}", "%d"} {
			v, err = other.Get(ctx, k)
			step("Get("+k+") after Clear", v, err, 0)
		}
		// Only the lax writers' batch numbers may stay (until they expire),
		// so that a flush resent after the Clear is not applied twice.
		for _, k := range redisKeys(t, c, p) {
			if !strings.Contains(k, "}:w:") {
				t.Fatalf("Redis key left by Clear: %q", k)
			}
		}
		v, err = outside.Get(ctx, "a")
		step("another prefix after Clear", v, err, 9)
	})
}

// Every operation of PerInstance and PerInstanceLax, next to a second,
// strict instance on the same prefix.
func TestPerInstance(t *testing.T) {
	modes(t, func(t *testing.T, c redis.UniversalClient, p string, lax bool) {
		ctx := ctxT(t)
		a := newPerInstance(t, c, p, "a", lax)
		b := newPerInstance(t, c, p, "b", false)
		if a.InstanceID() != "a" || b.InstanceID() != "b" {
			t.Fatalf("InstanceID() = %q, %q; want a, b", a.InstanceID(), b.InstanceID())
		}
		// want checks v; a Total of -1 is not checked (a lax instance's
		// Total is what it last read, by design).
		want := func(what string, v counter.Value, err error, total, mine int64) {
			t.Helper()
			if err != nil || v.Mine != mine || (total != -1 && v.Total != total) {
				t.Fatalf("%s = %+v, %v; want Total %d, Mine %d", what, v, err, total, mine)
			}
		}
		laxTotal := func(total int64) int64 {
			if lax {
				return -1
			}
			return total
		}

		v, err := a.Get(ctx, "k")
		want("Get(missing)", v, err, 0, 0)
		v, err = a.Inc(ctx, "k", 5)
		want("a.Inc(5)", v, err, laxTotal(5), 5)
		v, err = a.Dec(ctx, "k", 1)
		want("a.Dec(1)", v, err, laxTotal(4), 4)
		flush(t, a)
		v, err = b.Inc(ctx, "k", 3)
		want("b.Inc(3)", v, err, 7, 3)

		v, err = a.SetOnInstance(ctx, "k", 10)
		want("a.SetOnInstance(10)", v, err, laxTotal(13), 10)
		flush(t, a)
		v, err = b.Get(ctx, "k")
		want("b.Get after SetOnInstance", v, err, 13, 3)
		v, err = a.DelOnInstance(ctx, "k")
		want("a.DelOnInstance", v, err, 3, 0)
		v, err = b.Get(ctx, "k")
		want("b.Get after DelOnInstance", v, err, 3, 3)

		below5 := counter.Cond{Op: counter.Lt, Operand: 5}
		v, ok, err := a.IncIf(ctx, "k", 2, below5)
		want("a.IncIf(2, lt 5)", v, err, 5, 2)
		if !ok {
			t.Fatal("IncIf(2, lt 5) at 3 not applied")
		}
		v, ok, err = a.IncIf(ctx, "k", 1, below5)
		want("a.IncIf(1, lt 5)", v, err, 5, 2)
		if ok {
			t.Fatal("IncIf(1, lt 5) at 5 applied")
		}
		v, ok, err = a.IncIf(ctx, "k", -2, counter.Cond{Op: counter.Ge, Operand: 5})
		want("a.IncIf(-2, ge 5)", v, err, 3, 0)
		if !ok {
			t.Fatal("IncIf(-2, ge 5) at 5 not applied")
		}

		// Set resets the key cluster-wide: b's slice goes, and b counts
		// from zero in the new epoch.
		v, err = a.Set(ctx, "k", 100)
		want("a.Set(100)", v, err, 100, 0)
		v, err = b.Inc(ctx, "k", 1)
		want("b.Inc(1) after Set", v, err, 101, 1)
		v, err = a.Del(ctx, "k")
		if err != nil || v.Total != 101 {
			t.Fatalf("a.Del = %+v, %v; want Total 101 before", v, err)
		}
		v, err = b.Get(ctx, "k")
		want("b.Get after Del", v, err, 0, 0)

		// Clear resets every key of the prefix.
		if _, err := a.Inc(ctx, "x", 1); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Inc(ctx, "y", 2); err != nil {
			t.Fatal(err)
		}
		flush(t, a)
		if err := a.Clear(ctx); err != nil {
			t.Fatalf("Clear: %v", err)
		}
		for _, k := range []string{"x", "y"} {
			v, err = b.Get(ctx, k)
			want("b.Get("+k+") after Clear", v, err, 0, 0)
			v, err = a.Get(ctx, k)
			want("a.Get("+k+") after Clear", v, err, 0, 0)
		}
	})
}

// A killed instance's slice stays counted until DeadInstanceThreshold,
// then any other instance's next call on the key reaps it; the survivor's
// slice stays.
func TestCrashedInstanceIsReaped(t *testing.T) {
	modes(t, func(t *testing.T, c redis.UniversalClient, p string, lax bool) {
		t.Parallel() // each subtest mostly waits for the threshold
		ctx := ctxT(t)
		survivor := newPerInstance(t, c, p, "survivor", false)
		victim := newPerInstance(t, c, p, "victim", lax)
		if _, err := victim.Inc(ctx, "k", 5); err != nil {
			t.Fatal(err)
		}
		flush(t, victim)
		lastWrite := time.Now() // Redis saw the victim before this
		if v, err := survivor.Inc(ctx, "k", 2); err != nil || v.Total != 7 {
			t.Fatalf("survivor.Inc = %+v, %v; want Total 7", v, err)
		}

		counter.Kill(victim)
		killed := time.Now()
		v, err := survivor.Get(ctx, "k")
		// Checked only when the read surely came before the threshold: the
		// machine may be slow, and then it proves nothing.
		if time.Since(lastWrite) < testThreshold/2 && (err != nil || v.Total != 7) {
			t.Fatalf("Get right after the crash = %+v, %v; want Total 7 (a crash is not a Close)", v, err)
		}

		// The victim was last seen no later than killed (its last write, or
		// a heartbeat in flight at Kill, which the extra heartbeat covers),
		// and every script on the key reaps first, by Redis' clock. So the
		// first Get after killed + threshold (+ heartbeat) drops the slice;
		// the extra second is room for -race on a busy two-CPU machine.
		deadline := killed.Add(testThreshold + testHeartbeat + time.Second)
		for {
			v, err = survivor.Get(ctx, "k")
			if err == nil && v.Total == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Get %v after the crash = %+v, %v; want Total 2 (victim reaped)", time.Since(killed), v, err)
			}
			time.Sleep(10 * time.Millisecond) // poll interval, not a wait for an event
		}
		if v.Mine != 2 {
			t.Fatalf("survivor's slice = %d after the reap, want 2", v.Mine)
		}
		if _, err := victim.Get(ctx, "k"); !errors.Is(err, counter.ErrClosed) {
			t.Fatalf("killed instance's Get = %v, want ErrClosed", err)
		}
	})
}

// Two live processes with one InstanceID: the older one's writes are
// refused with ErrDuplicateInstance.
func TestDuplicateInstance(t *testing.T) {
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	older := newPerInstance(t, c, p, "twin", false)
	newer := newPerInstance(t, c, p, "twin", false)
	if _, err := newer.Inc(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := older.Inc(ctx, "k", 5); !errors.Is(err, counter.ErrDuplicateInstance) {
		t.Fatalf("older twin's Inc = %v, want ErrDuplicateInstance", err)
	}
	if v, err := newer.Get(ctx, "k"); err != nil || v.Total != 1 {
		t.Fatalf("Get = %+v, %v; want Total 1", v, err)
	}
}

// Bad keys, deltas and conditions are refused by every kind, before any
// Redis write.
func TestBadInput(t *testing.T) {
	badKeys := []string{"", strings.Repeat("k", counter.MaxKeyLen+1), "a\nb", "tab\t", "del\x7f"}
	type call struct {
		name string
		fn   func(ctx context.Context, key string) error
	}
	sharedCalls := func(ctr shared) []call {
		return []call{
			{"Inc", func(ctx context.Context, k string) error { _, err := ctr.Inc(ctx, k, 1); return err }},
			{"Dec", func(ctx context.Context, k string) error { _, err := ctr.Dec(ctx, k, 1); return err }},
			{"Get", func(ctx context.Context, k string) error { _, err := ctr.Get(ctx, k); return err }},
			{"Set", func(ctx context.Context, k string) error { _, err := ctr.Set(ctx, k, 1); return err }},
			{"Del", func(ctx context.Context, k string) error { _, err := ctr.Del(ctx, k); return err }},
			{"IncIf", func(ctx context.Context, k string) error {
				_, _, err := ctr.IncIf(ctx, k, 1, counter.Cond{Op: counter.Ge, Operand: 0})
				return err
			}},
		}
	}
	instanceCalls := func(ctr perInstance) []call {
		return []call{
			{"Inc", func(ctx context.Context, k string) error { _, err := ctr.Inc(ctx, k, 1); return err }},
			{"Dec", func(ctx context.Context, k string) error { _, err := ctr.Dec(ctx, k, 1); return err }},
			{"Get", func(ctx context.Context, k string) error { _, err := ctr.Get(ctx, k); return err }},
			{"Set", func(ctx context.Context, k string) error { _, err := ctr.Set(ctx, k, 1); return err }},
			{"Del", func(ctx context.Context, k string) error { _, err := ctr.Del(ctx, k); return err }},
			{"SetOnInstance", func(ctx context.Context, k string) error { _, err := ctr.SetOnInstance(ctx, k, 1); return err }},
			{"DelOnInstance", func(ctx context.Context, k string) error { _, err := ctr.DelOnInstance(ctx, k); return err }},
			{"IncIf", func(ctx context.Context, k string) error {
				_, _, err := ctr.IncIf(ctx, k, 1, counter.Cond{Op: counter.Ge, Operand: 0})
				return err
			}},
		}
	}
	// Argument errors that need a valid key: negative deltas, bad Conds.
	type argCall struct {
		name string
		want error
		fn   func(ctx context.Context) error
	}
	argCalls := func(inc, dec func(ctx context.Context, delta int64) error, incIf func(ctx context.Context, c counter.Cond) error) []argCall {
		return []argCall{
			{"Inc(-1)", counter.ErrInvalidDelta, func(ctx context.Context) error { return inc(ctx, -1) }},
			{"Dec(-1)", counter.ErrInvalidDelta, func(ctx context.Context) error { return dec(ctx, -1) }},
			{"IncIf(zero Cond)", counter.ErrInvalidCond, func(ctx context.Context) error { return incIf(ctx, counter.Cond{}) }},
			{"IncIf(Op 99)", counter.ErrInvalidCond, func(ctx context.Context) error { return incIf(ctx, counter.Cond{Op: 99}) }},
		}
	}
	sharedArgs := func(ctr shared) []argCall {
		return argCalls(
			func(ctx context.Context, d int64) error { _, err := ctr.Inc(ctx, "k", d); return err },
			func(ctx context.Context, d int64) error { _, err := ctr.Dec(ctx, "k", d); return err },
			func(ctx context.Context, c counter.Cond) error { _, _, err := ctr.IncIf(ctx, "k", 1, c); return err })
	}
	instanceArgs := func(ctr perInstance) []argCall {
		return argCalls(
			func(ctx context.Context, d int64) error { _, err := ctr.Inc(ctx, "k", d); return err },
			func(ctx context.Context, d int64) error { _, err := ctr.Dec(ctx, "k", d); return err },
			func(ctx context.Context, c counter.Cond) error { _, _, err := ctr.IncIf(ctx, "k", 1, c); return err })
	}

	check := func(t *testing.T, c redis.UniversalClient, p string, ctr any, calls []call, args []argCall) {
		ctx := ctxT(t)
		for _, cl := range calls {
			for _, k := range badKeys {
				if err := cl.fn(ctx, k); !errors.Is(err, counter.ErrInvalidKey) {
					t.Errorf("%s(%q) = %v, want ErrInvalidKey", cl.name, k, err)
				}
			}
		}
		for _, a := range args {
			if err := a.fn(ctx); !errors.Is(err, a.want) {
				t.Errorf("%s = %v, want %v", a.name, err, a.want)
			}
		}
		flush(t, ctr)
		if keys := redisKeys(t, c, p); len(keys) != 0 {
			t.Fatalf("refused calls wrote to Redis: %q", keys)
		}
		// The longest key and the characters that are escaped are fine.
		for _, k := range []string{strings.Repeat("k", counter.MaxKeyLen), "{tag}:%25 é"} {
			for _, cl := range calls {
				if err := cl.fn(ctx, k); err != nil {
					t.Errorf("%s(%q) = %v, want success", cl.name, k, err)
				}
			}
		}
	}
	modes(t, func(t *testing.T, c redis.UniversalClient, p string, lax bool) {
		t.Run("shared", func(t *testing.T) {
			ctr := newShared(t, c, p, lax)
			check(t, c, p, ctr, sharedCalls(ctr), sharedArgs(ctr))
		})
		t.Run("per-instance", func(t *testing.T) {
			p := redistest.Prefix(t)
			ctr := newPerInstance(t, c, p, "i", lax)
			check(t, c, p, ctr, instanceCalls(ctr), instanceArgs(ctr))
		})
	})
}

// Constructors refuse bad options with ErrInvalidOptions, and take zero
// values as the defaults.
func TestOptions(t *testing.T) {
	c := redistest.Standalone(t)
	p := redistest.Prefix(t)
	pi := func(mod func(o *counter.PerInstanceOptions)) counter.PerInstanceOptions {
		o := counter.PerInstanceOptions{Prefix: p}
		mod(&o)
		return o
	}
	sh := func(prefix string) counter.SharedOptions { return counter.SharedOptions{Prefix: prefix} }
	shLax := func(o counter.SharedOptions, flush time.Duration) counter.SharedLaxOptions {
		return counter.SharedLaxOptions{SharedOptions: o, FlushInterval: flush}
	}
	piLax := func(o counter.PerInstanceOptions, flush time.Duration) counter.PerInstanceLaxOptions {
		return counter.PerInstanceLaxOptions{PerInstanceOptions: o, FlushInterval: flush}
	}
	same := func(*counter.PerInstanceOptions) {}
	// Only the error is kept: a counter returned along with it would be
	// caught by the goroutine leak check of TestMain.
	errOf := func(_ any, err error) error { return err }
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": redisAddr}})
	defer ring.Close()
	var typedNil *redis.Client
	bad := []struct {
		name string
		err  error
	}{
		{"Shared nil client", errOf(counter.NewShared(nil, sh(p)))},
		{"Shared nil *redis.Client", errOf(counter.NewShared(typedNil, sh(p)))},
		{"Shared Ring", errOf(counter.NewShared(ring, sh(p)))},
		{"SharedLax nil *redis.Client", errOf(counter.NewSharedLax(typedNil, shLax(sh(p), 0)))},
		{"SharedLax FlushInterval below 1ms", errOf(counter.NewSharedLax(c, shLax(sh(p), time.Microsecond)))},
		{"PerInstance nil *redis.Client", errOf(counter.NewPerInstance(typedNil, pi(same)))},
		{"PerInstance Ring", errOf(counter.NewPerInstance(ring, pi(same)))},
		{"PerInstance heartbeat below 1ms", errOf(counter.NewPerInstance(c, pi(func(o *counter.PerInstanceOptions) {
			o.HeartbeatInterval = time.Microsecond
		})))},
		{"PerInstanceLax FlushInterval below 1ms", errOf(counter.NewPerInstanceLax(c, piLax(pi(same), time.Microsecond)))},
		{"Shared no prefix", errOf(counter.NewShared(c, sh("")))},
		{"Shared prefix with ':'", errOf(counter.NewShared(c, sh("a:b")))},
		{"Shared prefix with braces", errOf(counter.NewShared(c, sh("a{b}")))},
		{"Shared prefix too long", errOf(counter.NewShared(c, sh(strings.Repeat("p", counter.MaxPrefixLen+1))))},
		{"SharedLax nil client", errOf(counter.NewSharedLax(nil, shLax(sh(p), 0)))},
		{"SharedLax no prefix", errOf(counter.NewSharedLax(c, shLax(sh(""), 0)))},
		{"SharedLax negative FlushInterval", errOf(counter.NewSharedLax(c, shLax(sh(p), -time.Millisecond)))},
		{"PerInstance nil client", errOf(counter.NewPerInstance(nil, pi(same)))},
		{"PerInstance no prefix", errOf(counter.NewPerInstance(c, counter.PerInstanceOptions{}))},
		{"PerInstance negative threshold", errOf(counter.NewPerInstance(c, pi(func(o *counter.PerInstanceOptions) {
			o.DeadInstanceThreshold = -time.Second
		})))},
		{"PerInstance threshold below 10ms", errOf(counter.NewPerInstance(c, pi(func(o *counter.PerInstanceOptions) {
			o.DeadInstanceThreshold = 5 * time.Millisecond
		})))},
		{"PerInstance negative heartbeat", errOf(counter.NewPerInstance(c, pi(func(o *counter.PerInstanceOptions) {
			o.HeartbeatInterval = -time.Second
		})))},
		{"PerInstance heartbeat over half the threshold", errOf(counter.NewPerInstance(c, pi(func(o *counter.PerInstanceOptions) {
			o.DeadInstanceThreshold, o.HeartbeatInterval = time.Second, 600*time.Millisecond
		})))},
		{"PerInstance negative TombstoneTTL", errOf(counter.NewPerInstance(c, pi(func(o *counter.PerInstanceOptions) {
			o.TombstoneTTL = -time.Hour
		})))},
		{"PerInstance InstanceID with a newline", errOf(counter.NewPerInstance(c, pi(func(o *counter.PerInstanceOptions) {
			o.InstanceID = "pod\n1"
		})))},
		{"PerInstanceLax nil client", errOf(counter.NewPerInstanceLax(nil, piLax(pi(same), 0)))},
		{"PerInstanceLax prefix with a space", errOf(counter.NewPerInstanceLax(c, piLax(counter.PerInstanceOptions{Prefix: "a b"}, 0)))},
		{"PerInstanceLax negative FlushInterval", errOf(counter.NewPerInstanceLax(c, piLax(pi(same), -1)))},
		{"PerInstanceLax negative threshold", errOf(counter.NewPerInstanceLax(c, piLax(pi(func(o *counter.PerInstanceOptions) {
			o.DeadInstanceThreshold = -1
		}), 0)))},
	}
	for _, b := range bad {
		if !errors.Is(b.err, counter.ErrInvalidOptions) {
			t.Errorf("%s: err = %v, want ErrInvalidOptions", b.name, b.err)
		}
	}

	// Zero values mean the defaults.
	if counter.DefaultFlushInterval != plain.DefaultFlushInterval {
		t.Errorf("DefaultFlushInterval %v, but the shared lax counter's is %v", counter.DefaultFlushInterval, plain.DefaultFlushInterval)
	}
	type closer interface{ Close(context.Context) error }
	ok := func(ctr closer, err error) closer {
		t.Helper()
		if err != nil {
			t.Fatalf("zero options but a Prefix: %v", err)
		}
		return ctr
	}
	pc := ok(counter.NewPerInstance(c, counter.PerInstanceOptions{Prefix: p})).(*counter.PerInstance)
	if id := pc.InstanceID(); len(id) != 36 {
		t.Errorf("default InstanceID = %q, want a UUID", id)
	}
	ctx := ctxT(t)
	for _, ctr := range []closer{
		ok(counter.NewShared(c, counter.SharedOptions{Prefix: p})),
		ok(counter.NewSharedLax(c, counter.SharedLaxOptions{SharedOptions: counter.SharedOptions{Prefix: p}})),
		pc,
		ok(counter.NewPerInstanceLax(c, counter.PerInstanceLaxOptions{PerInstanceOptions: counter.PerInstanceOptions{Prefix: p}})),
	} {
		if err := ctr.Close(ctx); err != nil {
			t.Errorf("%T: Close: %v", ctr, err)
		}
	}
}

// A call whose ctx has ended already returns its error and changes
// nothing, whatever the kind (but lax Inc and Dec, which never wait and
// ignore ctx).
func TestEndedContext(t *testing.T) {
	modes(t, func(t *testing.T, c redis.UniversalClient, p string, lax bool) {
		ctx := ctxT(t)
		ended, cancel := context.WithCancel(ctx)
		cancel()
		sh := newShared(t, c, p+"s", lax)
		pi := newPerInstance(t, c, p+"p", "a", lax)
		lt := counter.Cond{Op: counter.Lt, Operand: 100}
		calls := map[string]func() error{
			"Shared Set":                func() error { _, err := sh.Set(ended, "k", 5); return err },
			"Shared IncIf":              func() error { _, _, err := sh.IncIf(ended, "k", 1, lt); return err },
			"PerInstance SetOnInstance": func() error { _, err := pi.SetOnInstance(ended, "k", 5); return err },
			"PerInstance Set":           func() error { _, err := pi.Set(ended, "k", 5); return err },
			"PerInstance IncIf":         func() error { _, _, err := pi.IncIf(ended, "k", 1, lt); return err },
		}
		if !lax {
			calls["Shared Inc"] = func() error { _, err := sh.Inc(ended, "k", 1); return err }
			calls["Shared Dec"] = func() error { _, err := sh.Dec(ended, "k", 1); return err }
			calls["PerInstance Inc"] = func() error { _, err := pi.Inc(ended, "k", 1); return err }
			calls["PerInstance Dec"] = func() error { _, err := pi.Dec(ended, "k", 1); return err }
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with an ended ctx: %v, want context.Canceled", name, err)
			}
		}
		flush(t, sh)
		flush(t, pi)
		if v, err := sh.Get(ctx, "k"); err != nil || v != 0 {
			t.Errorf("Shared after calls with an ended ctx: %d, %v; want 0", v, err)
		}
		if v, err := pi.Get(ctx, "k"); err != nil || v != (counter.Value{}) {
			t.Errorf("PerInstance after calls with an ended ctx: %+v, %v; want 0", v, err)
		}
	})
}

// After Close every call returns ErrClosed, Close included. A lax shared
// counter sends its buffered changes first; a per-instance counter takes
// its slices out of the Total at once.
func TestClose(t *testing.T) {
	modes(t, func(t *testing.T, c redis.UniversalClient, p string, lax bool) {
		ctx := ctxT(t)
		t.Run("shared", func(t *testing.T) {
			ctr := newShared(t, c, p, lax)
			reader := newShared(t, c, p, false)
			if _, err := ctr.Inc(ctx, "k", 7); err != nil {
				t.Fatal(err)
			}
			if err := ctr.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if v, err := reader.Get(ctx, "k"); err != nil || v != 7 {
				t.Fatalf("Get after Close = %d, %v; want 7 (buffered changes sent)", v, err)
			}
			for _, cl := range sharedOps(ctr) {
				if err := cl.fn(ctx); !errors.Is(err, counter.ErrClosed) {
					t.Errorf("%s after Close = %v, want ErrClosed", cl.name, err)
				}
			}
		})
		t.Run("per-instance", func(t *testing.T) {
			p := redistest.Prefix(t)
			ctr := newPerInstance(t, c, p, "closing", lax)
			reader := newPerInstance(t, c, p, "reader", false)
			if _, err := ctr.Inc(ctx, "k", 7); err != nil {
				t.Fatal(err)
			}
			flush(t, ctr)
			if v, err := reader.Get(ctx, "k"); err != nil || v.Total != 7 {
				t.Fatalf("Get before Close = %+v, %v; want Total 7", v, err)
			}
			if err := ctr.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if v, err := reader.Get(ctx, "k"); err != nil || v.Total != 0 {
				t.Fatalf("Get right after Close = %+v, %v; want Total 0 (slices removed, no reap needed)", v, err)
			}
			for _, cl := range instanceOps(ctr) {
				if err := cl.fn(ctx); !errors.Is(err, counter.ErrClosed) {
					t.Errorf("%s after Close = %v, want ErrClosed", cl.name, err)
				}
			}
		})
	})
}

type op struct {
	name string
	fn   func(ctx context.Context) error
}

func sharedOps(ctr shared) []op {
	ops := []op{
		{"Inc", func(ctx context.Context) error { _, err := ctr.Inc(ctx, "k", 1); return err }},
		{"Dec", func(ctx context.Context) error { _, err := ctr.Dec(ctx, "k", 1); return err }},
		{"Get", func(ctx context.Context) error { _, err := ctr.Get(ctx, "k"); return err }},
		{"Set", func(ctx context.Context) error { _, err := ctr.Set(ctx, "k", 1); return err }},
		{"Del", func(ctx context.Context) error { _, err := ctr.Del(ctx, "k"); return err }},
		{"IncIf", func(ctx context.Context) error {
			_, _, err := ctr.IncIf(ctx, "k", 1, counter.Cond{Op: counter.Ge, Operand: 0})
			return err
		}},
		{"Clear", ctr.Clear},
		{"Close", ctr.Close},
	}
	if f, ok := ctr.(interface{ Flush(context.Context) error }); ok {
		ops = append(ops, op{"Flush", f.Flush})
	}
	return ops
}

func instanceOps(ctr perInstance) []op {
	ops := []op{
		{"Inc", func(ctx context.Context) error { _, err := ctr.Inc(ctx, "k", 1); return err }},
		{"Dec", func(ctx context.Context) error { _, err := ctr.Dec(ctx, "k", 1); return err }},
		{"Get", func(ctx context.Context) error { _, err := ctr.Get(ctx, "k"); return err }},
		{"Set", func(ctx context.Context) error { _, err := ctr.Set(ctx, "k", 1); return err }},
		{"Del", func(ctx context.Context) error { _, err := ctr.Del(ctx, "k"); return err }},
		{"SetOnInstance", func(ctx context.Context) error { _, err := ctr.SetOnInstance(ctx, "k", 1); return err }},
		{"DelOnInstance", func(ctx context.Context) error { _, err := ctr.DelOnInstance(ctx, "k"); return err }},
		{"IncIf", func(ctx context.Context) error {
			_, _, err := ctr.IncIf(ctx, "k", 1, counter.Cond{Op: counter.Ge, Operand: 0})
			return err
		}},
		{"Clear", ctr.Clear},
		{"Close", ctr.Close},
	}
	if f, ok := ctr.(interface{ Flush(context.Context) error }); ok {
		ops = append(ops, op{"Flush", f.Flush})
	}
	return ops
}
