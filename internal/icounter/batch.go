package icounter

import (
	"context"
	"sync"
	"time"
)

// batchTimeout bounds one batch of the committer or the reader. Callers
// stop waiting when their own contexts end; this only keeps a batch that
// Redis never answers from holding a loop for good. A batch whose callers
// all gave their deadlines (see putAllBy) ends with the latest of them.
const batchTimeout = 10 * time.Second

// batcher gathers what concurrent callers hand it and runs it in batches:
// whatever arrives while a batch is in flight goes out with the next one,
// so that one round trip serves many callers (group commit). Entries are
// keyed, so callers asking for the same thing share one entry.
type batcher[K comparable, V any] struct {
	mu   sync.Mutex
	next map[K]V
	// until is the latest deadline of the callers of the next batch, when
	// every one of them gave one (bounded); a batch nobody waits for any
	// longer should not hold a loop while go-redis retries it.
	until   time.Time
	bounded bool
	kick    chan struct{}
}

func newBatcher[K comparable, V any]() *batcher[K, V] {
	return &batcher[K, V]{next: make(map[K]V), kick: make(chan struct{}, 1)}
}

// add returns k's entry in the next batch, made by mk when there is none,
// and wakes a loop.
func (b *batcher[K, V]) add(k K, mk func() V) V {
	v := b.put(k, mk)
	b.wake()
	return v
}

// put is add without waking a loop: a caller handing over several entries
// wakes it once they are all in, so that they go in one batch.
func (b *batcher[K, V]) put(k K, mk func() V) V {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unbound()
	return b.entry(k, mk)
}

// addBy is add for a caller that waits for the entry until ctx ends.
func (b *batcher[K, V]) addBy(ctx context.Context, k K, mk func() V) V {
	b.mu.Lock()
	b.waitsUntil(ctx)
	v := b.entry(k, mk)
	b.mu.Unlock()
	b.wake()
	return v
}

// putAllBy is put for several keys at once, under one lock, for a caller
// that waits for them until ctx ends.
func (b *batcher[K, V]) putAllBy(ctx context.Context, ks []K, mk func() V) []V {
	vs := make([]V, len(ks))
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waitsUntil(ctx)
	for i, k := range ks {
		vs[i] = b.entry(k, mk)
	}
	return vs
}

// waitsUntil notes that a caller waits for the next batch until ctx ends.
// Call with mu held, before the caller's entries go in.
func (b *batcher[K, V]) waitsUntil(ctx context.Context) {
	if dl, ok := ctx.Deadline(); !ok {
		b.unbound()
	} else if len(b.next) == 0 || b.bounded && dl.After(b.until) {
		b.until, b.bounded = dl, true
	}
}

// unbound marks the next batch as awaited by a caller without a deadline.
// Call with mu held.
func (b *batcher[K, V]) unbound() {
	b.bounded = false
	b.until = time.Time{}
}

// entry returns k's entry in the next batch, made by mk when there is
// none. Call with mu held.
func (b *batcher[K, V]) entry(k K, mk func() V) V {
	v, ok := b.next[k]
	if !ok {
		v = mk()
		b.next[k] = v
	}
	return v
}

func (b *batcher[K, V]) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// loop runs the batches with run until ctx ends. Two loops share a
// batcher, so that one batch is prepared and sent while the other's is in
// flight.
func (b *batcher[K, V]) loop(ctx context.Context, run func(ctx context.Context, batch map[K]V)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		}
		b.mu.Lock()
		batch := b.next
		b.next = make(map[K]V)
		timeout := batchTimeout
		if b.bounded {
			timeout = min(timeout, time.Until(b.until))
		}
		b.unbound()
		b.mu.Unlock()
		if len(batch) > 0 {
			bctx, cancel := context.WithTimeout(ctx, timeout)
			run(bctx, batch)
			cancel()
		}
	}
}
