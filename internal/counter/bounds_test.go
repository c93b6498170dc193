package counter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/redistest"
)

// TestBoundsWhileRedisHangs: while Redis hangs (a proxy that stalls; the
// client keeps go-redis' default timeouts and retries, about 10 s per
// command), the constructors return within their one second and every call
// within its context; a lax counter's changes still land once Redis answers.
// Before the fix each of these waited for the client's own timeouts.
// Standalone only: a cluster client dials the nodes' own addresses, past any
// proxy.
func TestBoundsWhileRedisHangs(t *testing.T) {
	t.Parallel()
	c, p := faultproxy.Redis(t)
	ctx, prefix := ctxT(t), redistest.Prefix(t)
	l := newLax(t, c, prefix, time.Hour) // flushed by hand only
	if _, err := l.Inc(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}

	p.Stall(true)
	var s *Strict
	redistest.Within(t, "NewStrict", loadTimeout, func() { s = newStrict(t, c, prefix) })
	redistest.Within(t, "NewLax", loadTimeout, func() { newLax(t, c, prefix, time.Hour) })
	const bound = 300 * time.Millisecond
	calls := map[string]func(context.Context) error{
		"Strict.Inc":   func(ctx context.Context) error { _, err := s.Inc(ctx, "k", 1); return err },
		"Strict.Get":   func(ctx context.Context) error { _, err := s.Get(ctx, "k"); return err },
		"Strict.Clear": s.Clear,
		"Lax.Flush":    l.Flush,
		"Lax.Get":      func(ctx context.Context) error { _, err := l.Get(ctx, "k"); return err },
		"Lax.Set":      func(ctx context.Context) error { _, err := l.Set(ctx, "other", 2); return err },
		"Lax.Close":    l.Close,
	}
	for _, name := range []string{"Strict.Inc", "Strict.Get", "Strict.Clear", "Lax.Flush", "Lax.Get", "Lax.Set", "Lax.Close"} {
		redistest.Within(t, name, bound, func() {
			cctx, cancel := context.WithTimeout(ctx, bound)
			defer cancel()
			if err := calls[name](cctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s: %v, want DeadlineExceeded", name, err)
			}
		})
	}
	p.Stall(false)
	// The lax counter's change, flushed by the Close its caller gave up on,
	// lands once Redis answers: nothing buffered is lost.
	r := newStrict(t, redistest.Standalone(t), prefix)
	deadline := time.Now().Add(15 * time.Second) // the client's own timeouts and retries, and slack
	for {
		v, err := r.Get(ctx, "k")
		if err == nil && v >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("k = %d (%v) after the stall, want the lax change counted", v, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
