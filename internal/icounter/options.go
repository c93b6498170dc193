package icounter

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/headcount-go/headcount/internal/keyspace"
)

// Defaults for zero option values.
const (
	DefaultDeadInstanceThreshold = 30 * time.Second
	DefaultFlushInterval         = 20 * time.Millisecond
	DefaultTombstoneTTL          = 24 * time.Hour
	DefaultSliceLease            = 10 * time.Minute
)

// ErrInvalidOptions is wrapped by every error about bad Options.
var ErrInvalidOptions = errors.New("headcount: invalid options")

// Options configure both counters.
type Options struct {
	// Prefix names the namespace: letters, digits, '_', '.', '-', 1-64
	// bytes. Every Redis key of the counter contains it verbatim.
	Prefix string
	// DeadInstanceThreshold is how long an instance may miss its heartbeat
	// before another instance declares it dead and sweeps its slices from
	// every counter. Default 30s.
	DeadInstanceThreshold time.Duration
	// HeartbeatInterval is how often this instance stamps itself alive in the
	// registry (one short script, whatever the number of its counters),
	// checks that Redis kept its data and learns of dead instances to sweep.
	// Default DeadInstanceThreshold/3; at most DeadInstanceThreshold/2, so
	// that one missed beat never gets a live instance swept.
	HeartbeatInterval time.Duration
	// SliceLease is how long a slice stays in a counter without an
	// assertion of its instance there; after that, the next assertion on
	// the counter that renews its TTL (one per lease) or a reset drops it.
	// Live instances renew each lease about every SliceLease/2, a paced
	// share at every heartbeat, so that slices taken at once are not renewed
	// at once (see renewPace). It is the backstop of the sweeper, for slices no index
	// names. Default 10 minutes or ten DeadInstanceThresholds, whichever is
	// longer; at least 4 heartbeats and one DeadInstanceThreshold.
	SliceLease time.Duration
	// InstanceID names this process. Default: a new UUID. A stable ID (a pod
	// name) lets a restarted process sweep its predecessor's slices at once
	// instead of counting them until they are reaped. Two live processes
	// must never share one; if they do, the newer one's start sweeps the
	// older one's slices, and the older one's writes are refused with
	// ErrDuplicateInstance, and logged, from its first write to a counter
	// the sweep reached or the newer one wrote, or its next heartbeat,
	// whichever comes first (TestDuplicateInstanceRefusedEverywhere).
	InstanceID string
	// Logger receives warnings and errors. Default: silent.
	Logger *slog.Logger
	// TombstoneTTL is how long a counter reset by Set, Del or Clear remembers
	// its new epoch (at least as long as a counter lives: two leases), so
	// that an instance cut off during the reset zeroes its
	// slice when it returns instead of bringing it back. Default 24h.
	TombstoneTTL time.Duration
	// Observer, if set, is told about script runs, reaps and flushes.
	Observer Observer
	// Presence, if set, lets keys name members of groups (see Member): a
	// group's members are listed, counted and announced by events. Without
	// it a member key is refused like any key with a control character.
	Presence *PresenceOptions
}

// Defaults for zero PresenceOptions values.
const (
	DefaultMemberCap    = 10000
	DefaultEventHistory = 1000
)

// PresenceOptions configure the presence of groups' members.
type PresenceOptions struct {
	// MemberCap is how many members a group lists at most. Members beyond
	// it are counted and announced, but not listed. Default 10000.
	MemberCap int
	// EventHistory is about how many of a group's last events Redis keeps
	// for subscribers that resume (at least this many; trimming is
	// approximate). Default 1000.
	EventHistory int
	// AllGroups also publishes every event on one channel of the prefix
	// (SubscribeAll), for subscribers of every group. It costs a PUBLISH
	// per event, which a Cluster sends to every node. Every instance of a
	// prefix should set it alike: each publishes its own changes.
	AllGroups bool
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
	lease        time.Duration
	log          *slog.Logger
	observer     Observer
	reapPerCall  int
	lax          bool
	thresholdMs  int64
	leaseMs      int64
	counterTTLMs int64
	tombstoneMs  int64
	// fullFlushEvery: every this many flush ticks, the flusher looks at
	// every state (about once a heartbeat), not only the changed ones.
	fullFlushEvery int64
	presence       bool
	memberCap      int
	history        int
	allChannel     string // "" unless PresenceOptions.AllGroups
	// The presence spec of the scripts (see engine.spec) after its reason,
	// and whole for the reasons of every assertion.
	specTail, specClosed, specDrained string
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
	case o.SliceLease < 0:
		return c, fmt.Errorf("%w: SliceLease %v is negative", ErrInvalidOptions, o.SliceLease)
	case o.TombstoneTTL < 0:
		return c, fmt.Errorf("%w: TombstoneTTL %v is negative", ErrInvalidOptions, o.TombstoneTTL)
	}
	c.threshold = cmp.Or(o.DeadInstanceThreshold, DefaultDeadInstanceThreshold)
	if c.threshold < 10*time.Millisecond {
		return c, fmt.Errorf("%w: DeadInstanceThreshold %v is below 10ms", ErrInvalidOptions, c.threshold)
	}
	c.heartbeat = cmp.Or(o.HeartbeatInterval, c.threshold/3)
	if c.heartbeat < time.Millisecond {
		return c, fmt.Errorf("%w: HeartbeatInterval %v is below 1ms", ErrInvalidOptions, c.heartbeat)
	}
	if c.heartbeat > c.threshold/2 {
		return c, fmt.Errorf("%w: HeartbeatInterval %v is longer than half of DeadInstanceThreshold %v: one missed beat would get a live instance reaped",
			ErrInvalidOptions, c.heartbeat, c.threshold)
	}
	c.lease = cmp.Or(o.SliceLease, max(DefaultSliceLease, 10*c.threshold))
	if c.lease < 4*c.heartbeat || c.lease < c.threshold {
		return c, fmt.Errorf("%w: SliceLease %v is shorter than 4 heartbeats (%v) or DeadInstanceThreshold (%v)",
			ErrInvalidOptions, c.lease, 4*c.heartbeat, c.threshold)
	}
	c.tombstone = cmp.Or(o.TombstoneTTL, DefaultTombstoneTTL)
	// A counter nobody writes to disappears after two leases; live writers
	// renew their leases, and with them its TTL, at most three quarters of
	// a lease apart (see renewPace).
	c.counterTTL = 2 * c.lease
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
	if p := o.Presence; p != nil {
		if p.MemberCap < 0 || p.EventHistory < 0 {
			return c, fmt.Errorf("%w: Presence {MemberCap:%d EventHistory:%d}: negative", ErrInvalidOptions, p.MemberCap, p.EventHistory)
		}
		c.presence = true
		c.memberCap = cmp.Or(p.MemberCap, DefaultMemberCap)
		c.history = cmp.Or(p.EventHistory, DefaultEventHistory)
		if p.AllGroups {
			c.allChannel = c.space.Registry("events")
		}
		c.specTail = "\t" + strconv.Itoa(c.memberCap) + "\t" + strconv.Itoa(c.history) + "\t" + c.allChannel
		c.specClosed, c.specDrained = reasonClosed+c.specTail, reasonDrained+c.specTail
	}
	c.reapPerCall = 64
	c.thresholdMs = c.threshold.Milliseconds()
	c.counterTTLMs = c.counterTTL.Milliseconds()
	c.leaseMs = c.lease.Milliseconds()
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
	if c.flush < time.Millisecond {
		return c, fmt.Errorf("%w: FlushInterval %v is below 1ms", ErrInvalidOptions, c.flush)
	}
	c.fullFlushEvery = max(1, int64(c.heartbeat/c.flush))
	c.lax = true
	return c, nil
}
