package wsconn

import (
	"context"
	"errors"
	"time"

	"github.com/headcount-go/headcount/internal/counter"
	"github.com/headcount-go/headcount/internal/icounter"
)

// drainPoll is how often Drain looks for connections still open.
const drainPoll = 20 * time.Millisecond

// Drain refuses new connections (503) and closes every tracked one: those
// from Accept are uncounted and sent a close frame of Options.DrainStatus
// (1001 by default; the close handshake goes on in the background, and
// Close waits for it), and the Context of every Lease (Admit, Middleware)
// is cancelled so that its owner closes it. Drain returns once all are
// uncounted, or when ctx ends; then it closes the rest it can at once
// (Accept's without a close frame; a Middleware handler's hijacked
// connection is closed under it) and returns ctx's error. A Lease from
// Admit stays counted until its owner calls Release or Close is called:
// Drain does not hold the connection it counts.
func (t *Tracker) Drain(ctx context.Context) error {
	t.beginDrain(ctx)
	t.EndStreams()
	asked := make(map[*member]bool)
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		// Handshakes under way when Drain began show up later: look again.
		ms := t.snapshot()
		if len(ms) == 0 {
			return nil
		}
		for _, m := range ms {
			if !asked[m] {
				if drain, _ := m.closers(); drain != nil {
					asked[m] = true
					drain()
				}
			}
		}
		if len(t.snapshot()) == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			for _, m := range t.snapshot() {
				if _, force := m.closers(); force != nil {
					force()
				}
			}
			return ctx.Err()
		}
	}
}

// Close removes this node's counts from Redis at once (so a rolling deploy
// leaves no ghost connections for DeadInstanceThreshold), stops the
// background work and waits for it, until ctx ends. Open connections stay
// open, uncounted. Later handshakes get 503 and reads ErrClosed. Close
// returns when ctx ends even if Redis hangs: what is under way then ends by
// the Redis client's own timeouts in the background, and the counts it
// could not remove are reaped by the other nodes after
// DeadInstanceThreshold.
func (t *Tracker) Close(ctx context.Context) error {
	if !t.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	t.beginDrain(ctx)
	t.end()
	for _, m := range t.snapshot() {
		m.cancel() // a Lease's owner learns that it is counted no more
	}
	err := t.lax.Close(ctx)
	if errors.Is(err, icounter.ErrClosed) {
		err = nil
	}
	if aerr := t.accepted.Close(ctx); aerr != nil && !errors.Is(aerr, counter.ErrClosed) {
		err = errors.Join(err, aerr)
	}
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	done := make(chan struct{})
	go func() {
		t.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.Join(err, ctx.Err())
	}
	return err
}

// Shutdown drains, then closes: call it right after http.Server.Shutdown,
// which neither closes hijacked connections nor waits for them. If ctx ends
// during Drain, Close still gets RedisTimeout to remove this node's counts,
// so Shutdown returns at most RedisTimeout after ctx ends, whatever Redis
// does.
func (t *Tracker) Shutdown(ctx context.Context) error {
	derr := t.Drain(ctx)
	cctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), t.cfg.timeout)
		defer cancel()
	}
	return errors.Join(derr, t.Close(cctx))
}

// kill abandons this node's counts as a crash would (tests).
func (t *Tracker) kill() {
	t.closed.Store(true)
	t.draining.Store(true)
	t.end()
	t.lax.Kill()
}

// beginDrain stops holding leaves back (PresenceOptions.Grace) and sends
// the held ones, with every other change made so far, before the leaves
// the shutdown causes: those go as drained, the earlier ones as what they
// were (closed). It waits for Redis at most RedisTimeout; what Redis does
// not take by then goes later, as drained.
func (t *Tracker) beginDrain(ctx context.Context) {
	t.draining.Store(true)
	t.graces.flush()
	fctx, cancel := context.WithDeadline(ctx, t.deadline(ctx))
	_ = t.lax.Flush(fctx)
	cancel()
	t.lax.Draining()
}
