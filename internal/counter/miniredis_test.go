package counter

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// A fast check of both counters against miniredis, for quick edit-test
// loops; the suites above are the proof against a real Redis.
func TestMiniredis(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	hook := &loseHook{}
	c.AddHook(hook)
	ctx := ctxT(t)
	s, l := newStrict(t, c, "mini"), newLax(t, c, "mini", manual)
	if v, err := s.Inc(ctx, "k", 1<<53+1); v != 1<<53+1 || err != nil {
		t.Fatalf("strict Inc = %d, %v", v, err)
	}
	if v, ok, err := s.IncIf(ctx, "k", -1, Cond{Op: Gt, Operand: 1 << 53}); v != 1<<53 || !ok || err != nil {
		t.Fatalf("strict IncIf = %d, %v, %v", v, ok, err)
	}
	_, _ = l.Inc(ctx, "k", 5)
	hook.after.Store(1)
	if err := l.Flush(ctx); err == nil {
		t.Fatal("Flush with lost reply succeeded")
	}
	_, _ = l.Dec(ctx, "k", 2)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "k"); v != 1<<53+3 || err != nil {
		t.Fatalf("Get = %d, %v; want 2^53+3", v, err)
	}
	if v, err := l.Del(ctx, "k"); v != 1<<53+3 || err != nil {
		t.Fatalf("Del = %d, %v", v, err)
	}
}
