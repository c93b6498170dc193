package icounter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// batchTimeout bounds one batch of the committer or the reader. Callers
// stop waiting when their own contexts end; this only keeps a batch that
// Redis never answers from holding a loop for good.
const batchTimeout = 10 * time.Second

// batcher gathers what concurrent callers hand it and runs it in batches:
// whatever arrives while a batch is in flight goes out with the next one,
// so that one round trip serves many callers (group commit). Entries are
// keyed, so callers asking for the same thing share one entry.
type batcher[K comparable, V any] struct {
	mu    sync.Mutex
	next  map[K]V
	kick  chan struct{}
	armed atomic.Bool // a wakeSoon timer is pending
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
	return b.entry(k, mk)
}

// putAll is put for several keys at once, under one lock.
func (b *batcher[K, V]) putAll(ks []K, mk func() V) []V {
	vs := make([]V, len(ks))
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, k := range ks {
		vs[i] = b.entry(k, mk)
	}
	return vs
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

// wakeSoon wakes a loop after d unless something else does first: what is
// put meanwhile rides with the next batch instead of taking one of its own.
func (b *batcher[K, V]) wakeSoon(d time.Duration) {
	if b.armed.CompareAndSwap(false, true) {
		time.AfterFunc(d, func() {
			b.armed.Store(false)
			b.wake()
		})
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
		b.mu.Unlock()
		if len(batch) > 0 {
			bctx, cancel := context.WithTimeout(ctx, batchTimeout)
			run(bctx, batch)
			cancel()
		}
	}
}
