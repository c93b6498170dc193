package icounter

import (
	"context"
	"errors"
	"testing"

	"github.com/headcount-go/headcount/internal/redistest"
)

// TestHandle: a handle changes the same slice as the key's Inc and Dec,
// keeps its counter in memory while it is open (the states of idle
// counters are forgotten otherwise, and a change through a handle on a
// forgotten state would be lost to the key's next change), and refuses
// changes once it, or its counter, is closed.
func TestHandle(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	l := newLax(t, c, p, "L")
	reader := newStrict(t, c, p, "R")
	if _, err := l.Handle("bad key\n"); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("Handle of an invalid key: %v, want ErrInvalidKey", err)
	}
	h, err := l.Handle("room")
	if err != nil {
		t.Fatal(err)
	}
	if h.Key() != "room" {
		t.Fatalf("Key() = %q", h.Key())
	}
	must[Value](t)(h.Inc(3))
	if v := must[Value](t)(h.Dec(1)); v.Mine != 2 {
		t.Fatalf("after Inc 3, Dec 1 through the handle: %+v, want Mine 2", v)
	}
	if v := must[Value](t)(l.Inc(ctx, "room", 1)); v.Mine != 3 {
		t.Fatalf("Inc by key after the handle's changes: %+v, want Mine 3", v)
	}
	if _, err := h.Dec(-1); err == nil {
		t.Fatal("Dec(-1) through a handle: no error")
	}

	// Back to zero and flushed: an idle counter, which forget drops unless
	// a handle holds it.
	must[Value](t)(h.Dec(3))
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	l.e.forget()
	must[Value](t)(h.Inc(1))
	if v := must[Value](t)(l.Inc(ctx, "room", 1)); v.Mine != 2 {
		t.Fatalf("Inc by key after forget and a handle's Inc: %+v, want Mine 2 (one slice)", v)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := total(t, reader, "room"); got != 2 {
		t.Fatalf("total read by another instance: %d, want 2", got)
	}

	h.Close()
	h.Close()
	if _, err := h.Inc(1); !errors.Is(err, ErrHandleClosed) {
		t.Fatalf("Inc after Close: %v, want ErrHandleClosed", err)
	}
	h2, err := l.Handle("room")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Inc(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Inc after the counter's Close: %v, want ErrClosed", err)
	}
	if _, err := l.Handle("room"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Handle after Close: %v, want ErrClosed", err)
	}
}
