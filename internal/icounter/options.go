package icounter

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/headcount-go/headcount/internal/keyspace"
)

// Defaults for zero option values.
const (
	DefaultDeadInstanceThreshold = 30 * time.Second
	DefaultFlushInterval         = 20 * time.Millisecond
	DefaultTombstoneTTL          = 24 * time.Hour
)

// ErrInvalidOptions is wrapped by every error about bad Options.
var ErrInvalidOptions = errors.New("headcount: invalid options")

// Options configure both counters.
type Options struct {
	// Prefix names the namespace: letters, digits, '_', '.', '-', 1-64
	// bytes. Every Redis key of the counter contains it verbatim.
	Prefix string
	// DeadInstanceThreshold is how long an instance may go unseen on a
	// counter before any other instance reaps its slice. Default 30s. An
	// instance is seen on a counter when its assertion there runs, so it
	// must be able to send one for every counter it holds (one batch) well
	// within the threshold; a batch taking more than half of it is logged.
	DeadInstanceThreshold time.Duration
	// HeartbeatInterval is how often this instance re-asserts its non-zero
	// slices, which keeps it alive and heals lost data. Default
	// DeadInstanceThreshold/3; at most DeadInstanceThreshold/2, so that one
	// missed beat never gets a live instance reaped.
	HeartbeatInterval time.Duration
	// InstanceID names this process. Default: a new UUID. A stable ID (a pod
	// name) lets a restarted process take over its predecessor's slices at
	// once instead of counting them until they are reaped. Two live
	// processes must never share one; if they do, the older one's writes are
	// refused with ErrDuplicateInstance and logged.
	InstanceID string
	// Logger receives warnings and errors. Default: silent.
	Logger *slog.Logger
	// TombstoneTTL is how long a counter reset by Set, Del or Clear remembers
	// its new epoch, so that an instance cut off during the reset zeroes its
	// slice when it returns instead of bringing it back. Default 24h.
	TombstoneTTL time.Duration
	// Observer, if set, is told about script runs, reaps and flushes.
	Observer Observer
}

// LaxOptions configure a Lax counter.
type LaxOptions struct {
	Options
	// FlushInterval is how often buffered changes are sent, in one pipelined
	// batch. Default 20ms.
	FlushInterval time.Duration
}

// config is Options checked and completed with defaults.
type config struct {
	space        keyspace.Space
	id           string
	threshold    time.Duration
	heartbeat    time.Duration
	flush        time.Duration
	tombstone    time.Duration
	counterTTL   time.Duration
	log          *slog.Logger
	observer     Observer
	reapPerCall  int
	lax          bool
	thresholdMs  int64
	counterTTLMs int64
	tombstoneMs  int64
}

func (o Options) config() (config, error) {
	var c config
	sp, err := keyspace.NewSpace("i", o.Prefix)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	c.space = sp
	switch {
	case o.DeadInstanceThreshold < 0:
		return c, fmt.Errorf("%w: DeadInstanceThreshold %v is negative", ErrInvalidOptions, o.DeadInstanceThreshold)
	case o.HeartbeatInterval < 0:
		return c, fmt.Errorf("%w: HeartbeatInterval %v is negative", ErrInvalidOptions, o.HeartbeatInterval)
	case o.TombstoneTTL < 0:
		return c, fmt.Errorf("%w: TombstoneTTL %v is negative", ErrInvalidOptions, o.TombstoneTTL)
	}
	c.threshold = cmp.Or(o.DeadInstanceThreshold, DefaultDeadInstanceThreshold)
	if c.threshold < 10*time.Millisecond {
		return c, fmt.Errorf("%w: DeadInstanceThreshold %v is below 10ms", ErrInvalidOptions, c.threshold)
	}
	c.heartbeat = cmp.Or(o.HeartbeatInterval, c.threshold/3)
	if c.heartbeat > c.threshold/2 {
		return c, fmt.Errorf("%w: HeartbeatInterval %v is longer than half of DeadInstanceThreshold %v: one missed beat would get a live instance reaped",
			ErrInvalidOptions, c.heartbeat, c.threshold)
	}
	c.tombstone = cmp.Or(o.TombstoneTTL, DefaultTombstoneTTL)
	// A counter nobody writes to disappears after ten thresholds; live
	// writers refresh it with every heartbeat.
	c.counterTTL = 10 * c.threshold
	if c.tombstone < c.counterTTL {
		c.tombstone = c.counterTTL
	}
	c.id = o.InstanceID
	if c.id == "" {
		c.id = uuid.NewString()
	} else if err := keyspace.CheckKey(c.id); err != nil {
		return c, fmt.Errorf("%w: InstanceID: %w", ErrInvalidOptions, err)
	}
	c.log = o.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.observer = o.Observer
	c.reapPerCall = 64
	c.thresholdMs = c.threshold.Milliseconds()
	c.counterTTLMs = c.counterTTL.Milliseconds()
	c.tombstoneMs = c.tombstone.Milliseconds()
	return c, nil
}

func (o LaxOptions) config() (config, error) {
	c, err := o.Options.config()
	if err != nil {
		return c, err
	}
	if o.FlushInterval < 0 {
		return c, fmt.Errorf("%w: FlushInterval %v is negative", ErrInvalidOptions, o.FlushInterval)
	}
	c.flush = cmp.Or(o.FlushInterval, DefaultFlushInterval)
	c.lax = true
	return c, nil
}
