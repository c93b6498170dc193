package wsconn

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/counter"
	"github.com/headcount-go/headcount/internal/icounter"
	"github.com/headcount-go/headcount/internal/keyspace"
)

// Tracker counts the WebSocket connections of one server process (one
// instance) in Redis, together with every other Tracker of the same
// Namespace. Create it with New; it is safe for concurrent use.
type Tracker struct {
	cfg    config
	lax    *icounter.Lax
	strict *icounter.Strict // strict view of lax: same slices
	// accepted counts connections ever counted, cluster-wide: a plain
	// shared counter, lax (exactly once per flush, also under retries).
	accepted *counter.Lax
	met      *metrics
	local    *localStats
	graces   graces     // presence leaves held back (PresenceOptions.Grace)
	online   []string   // the groups of the users overall (see onlineGroup)
	subs     sharedSubs // Redis subscriptions shared by the watches

	streamsMu  sync.Mutex
	streamsEnd chan struct{} // closed by EndStreams

	// life is cancelled by Close; background work derives from it.
	life context.Context
	end  context.CancelFunc

	mu      sync.Mutex
	members map[*member]struct{} // admitted and not yet released
	closing bool                 // under mu: no new tracked goroutines
	bg      sync.WaitGroup

	draining atomic.Bool
	closed   atomic.Bool
	// watchWarned is when a watch last logged a failed read (Unix ns).
	watchWarned atomic.Int64
}

// New returns a Tracker counting through client (a single node, Sentinel or
// Cluster client). It checks opts and refuses invalid ones with an error
// wrapping ErrInvalidOptions. A Redis that is down, or hangs, does not stop
// New and holds it up for at most a second: counts catch up once it
// answers.
func New(client redis.UniversalClient, opts Options) (*Tracker, error) {
	if err := keyspace.CheckClient(client); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	met := newMetrics()
	cfg.icounter.Observer = met
	// Each constructor waits on Redis for at most a second; side by side,
	// New does too, also while Redis hangs.
	type made struct {
		c   *counter.Lax
		err error
	}
	acc := make(chan made, 1)
	go func() {
		c, err := counter.NewLax(client, counter.LaxOptions{
			Options:       counter.Options{Prefix: cfg.Namespace, Logger: cfg.log},
			FlushInterval: cfg.icounter.FlushInterval,
		})
		acc <- made{c, err}
	}()
	lax, err := icounter.NewLax(client, cfg.icounter)
	a := <-acc
	switch {
	case err != nil:
		if a.c != nil {
			_ = a.c.Close(context.Background()) // nothing buffered: no Redis call
		}
		if errors.Is(err, icounter.ErrInvalidOptions) {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		return nil, err
	case a.err != nil:
		lax.Kill()
		return nil, a.err
	}
	accepted := a.c
	t := &Tracker{
		accepted: accepted,
		cfg:      cfg,
		lax:      lax,
		strict:   lax.Strict(),
		met:      met,
		local:    newLocalStats(cfg.AutoLaxRate),
		members:  make(map[*member]struct{}),
	}
	t.life, t.end = context.WithCancel(context.Background())
	met.t = t
	if cfg.Presence != nil {
		t.online = t.strict.SpreadGroups(onlineKeyPrefix, onlineGroups)
		f := t.strict.NewFeed(cfg.timeout)
		t.subs.feed = f
		t.goBg(func() {
			for m := range f.Messages() {
				t.subs.deliver(m.Group, m.Payload)
			}
		})
		t.goBg(func() {
			<-t.life.Done()
			_ = f.Close()
		})
	}
	if cfg.AutoLaxRate > 0 {
		t.goBg(t.autoLaxLoop)
	}
	return t, nil
}

// InstanceID returns the ID this node counts under.
func (t *Tracker) InstanceID() string { return t.lax.InstanceID() }

// goBg runs f in a goroutine that Close waits for. Once Close has begun, f
// still runs, untracked, so that closing a connection is never skipped.
func (t *Tracker) goBg(f func()) {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		go f()
		return
	}
	t.bg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.bg.Done()
		f()
	}()
}

// runBg runs f on the calling goroutine, counted like goBg's.
func (t *Tracker) runBg(f func()) {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		f()
		return
	}
	t.bg.Add(1)
	t.mu.Unlock()
	defer t.bg.Done()
	f()
}

// deadline is when a Redis wait started now must give up: RedisTimeout from
// now, or ctx's deadline if sooner.
func (t *Tracker) deadline(ctx context.Context) time.Time {
	return deadlineWithin(ctx, t.cfg.timeout)
}

// deadlineWithin is budget from now, or ctx's deadline if sooner.
func deadlineWithin(ctx context.Context, budget time.Duration) time.Time {
	d := time.Now().Add(budget)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		return cd
	}
	return d
}

// track adds m to the connections Drain and Close act on, unless the
// Tracker is shutting down. The check is made under t.mu, which Drain's
// look at the tracked connections takes after draining is set: a handshake
// is either refused or seen by Drain.
func (t *Tracker) track(m *member) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.draining.Load() || t.closed.Load() {
		return errShuttingDown
	}
	t.members[m] = struct{}{}
	return nil
}

func (t *Tracker) untrack(m *member) {
	t.mu.Lock()
	delete(t.members, m)
	t.mu.Unlock()
}

func (t *Tracker) snapshot() []*member {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*member, 0, len(t.members))
	for m := range t.members {
		out = append(out, m)
	}
	return out
}

// autoLaxLoop closes the rate windows of the automatic lax switch.
func (t *Tracker) autoLaxLoop() {
	tick := time.NewTicker(autoLaxWindow)
	defer tick.Stop()
	for {
		select {
		case <-t.life.Done():
			return
		case now := <-tick.C:
			t.local.closeWindow(now)
		}
	}
}
