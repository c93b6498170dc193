package icounter

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrHandleClosed is returned by the methods of a Handle after its Close.
var ErrHandleClosed = errors.New("headcount: counter handle closed")

// Handle is one counter of a Lax, looked up once, for a caller that
// changes it often (a connection's room, say): its Inc and Dec are the lax
// warm path without the key's validation and map look-up, an atomic add.
// The counter is kept in memory while a handle holds it; Close lets it go
// (the counter and its slice live on). A Handle is safe for concurrent use.
type Handle struct {
	e      *engine
	st     *state
	once   sync.Once
	closed atomic.Bool
}

// Handle returns a handle on key, which must be a valid counter name.
func (l *Lax) Handle(key string) (*Handle, error) {
	if err := l.e.checkKey(key); err != nil {
		return nil, err
	}
	if l.e.closed.Load() {
		return nil, ErrClosed
	}
	return &Handle{e: l.e, st: l.e.acquire(key)}, nil
}

// Key returns the counter's name.
func (h *Handle) Key() string { return h.st.key }

// Inc adds delta (>= 0) to this instance's slice, in memory, like Lax.Inc.
func (h *Handle) Inc(delta int64) (Value, error) { return h.add(delta, 1) }

// Dec subtracts delta (>= 0) from this instance's slice, in memory.
func (h *Handle) Dec(delta int64) (Value, error) { return h.add(delta, -1) }

func (h *Handle) add(delta, sign int64) (Value, error) {
	if delta < 0 {
		return Value{}, checkDelta(delta)
	}
	if h.closed.Load() {
		return Value{}, ErrHandleClosed
	}
	if h.e.closed.Load() {
		return Value{}, ErrClosed
	}
	return h.e.bump(h.st, sign*delta), nil
}

// Close releases the handle; later changes through it fail with
// ErrHandleClosed (a change racing Close may be lost). Closing twice is
// harmless.
func (h *Handle) Close() {
	h.once.Do(func() {
		h.closed.Store(true)
		h.e.release(h.st)
	})
}
