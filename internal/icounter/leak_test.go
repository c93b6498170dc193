package icounter

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/headcount-go/headcount/internal/redistest"
)

// Close and Kill leave no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ignore := goleak.IgnoreCurrent()
	for i := 0; i < 3; i++ {
		s, err := NewStrict(c, testOptions(p, "S"))
		if err != nil {
			t.Fatal(err)
		}
		l, err := NewLax(c, LaxOptions{Options: testOptions(p, "L"), FlushInterval: testFlush})
		if err != nil {
			t.Fatal(err)
		}
		must[Value](t)(s.Inc(ctx, "k", 1))
		must[Value](t)(l.Inc(ctx, "k", 1))
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		} else {
			s.Kill()
			l.Kill()
		}
	}
	goleak.VerifyNone(t, ignore)
}
