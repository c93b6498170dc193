// Package bounded keeps callers of Redis within their contexts. go-redis
// honours a context's deadline on its sockets only when the client sets
// ContextTimeoutEnabled, which is the application's choice, not ours: while
// Redis hangs (a stopped server, a stalled link) a command otherwise waits
// for the client's read timeout, retries included. So calls run on a
// goroutine of their own and the caller stops waiting when its context ends;
// the call itself finishes in the background, bounded by the client's own
// timeouts, and is tracked so that a Close can wait for it.
package bounded

import (
	"context"
	"sync"

	"golang.org/x/sync/semaphore"
)

// Calls tracks the calls that run on after their callers stopped waiting.
// The zero value is ready to use.
type Calls struct{ wg sync.WaitGroup }

// Run runs fn and returns when fn is done (nil) or when ctx ends (ctx.Err()),
// whichever comes first. fn gets a context with ctx's values but not its
// end, so that what it started (a round other callers share) is settled.
// A ctx that can never end runs fn on the calling goroutine.
func (c *Calls) Run(ctx context.Context, fn func(ctx context.Context)) error {
	if ctx.Done() == nil {
		fn(ctx)
		return nil
	}
	done := make(chan struct{})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(done)
		fn(context.WithoutCancel(ctx))
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait waits for every call started by Run to finish.
func (c *Calls) Wait() { c.wg.Wait() }

// Gate is a readers-writer lock whose waits end with a context: shared for
// ordinary operations, exclusive for those that must run alone (Clear,
// Close). Waiting writers go first, so a stream of readers cannot starve
// them. The zero value is not usable; call NewGate.
type Gate struct{ sem *semaphore.Weighted }

// exclusive is the weight of a writer: more than all readers together.
const exclusive = 1 << 40

// NewGate returns an open gate.
func NewGate() *Gate { return &Gate{sem: semaphore.NewWeighted(exclusive)} }

// Enter takes the gate shared; call Leave when done.
func (g *Gate) Enter(ctx context.Context) error { return g.sem.Acquire(ctx, 1) }

// Leave releases a shared hold.
func (g *Gate) Leave() { g.sem.Release(1) }

// Lock takes the gate alone, once every shared hold is released; call
// Unlock when done.
func (g *Gate) Lock(ctx context.Context) error { return g.sem.Acquire(ctx, exclusive) }

// Unlock releases the exclusive hold.
func (g *Gate) Unlock() { g.sem.Release(exclusive) }

// Shared runs fn holding g shared, on calls (see Calls.Run): the caller
// stops waiting when ctx ends, and g stays held until fn is done.
func (g *Gate) Shared(ctx context.Context, calls *Calls, fn func(ctx context.Context)) error {
	if err := g.Enter(ctx); err != nil {
		return err
	}
	return calls.Run(ctx, func(ctx context.Context) {
		defer g.Leave()
		fn(ctx)
	})
}

// Alone runs fn holding g exclusively, on calls (see Calls.Run): the caller
// stops waiting when ctx ends, and g stays held until fn is done.
func (g *Gate) Alone(ctx context.Context, calls *Calls, fn func(ctx context.Context)) error {
	if err := g.Lock(ctx); err != nil {
		return err
	}
	return calls.Run(ctx, func(ctx context.Context) {
		defer g.Unlock()
		fn(ctx)
	})
}
