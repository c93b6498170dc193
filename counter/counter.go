package counter

import (
	"github.com/headcount-go/headcount/internal/cond"
	"github.com/headcount-go/headcount/internal/icounter"
	"github.com/headcount-go/headcount/internal/keyspace"
)

// The errors of this package. Errors about a call's arguments are returned
// before any Redis call; test for them with errors.Is.
var (
	// ErrInvalidKey is returned for a key that is empty, longer than
	// MaxKeyLen bytes or holds a control character.
	ErrInvalidKey = keyspace.ErrInvalidKey
	// ErrInvalidDelta is returned for a negative delta to Inc or Dec (use
	// Dec to subtract, or IncIf, which takes either sign).
	ErrInvalidDelta = keyspace.ErrInvalidDelta
	// ErrInvalidCond is returned by IncIf for a Cond whose Op is not one of
	// Eq, Ne, Lt, Le, Gt and Ge (the zero Cond, for one).
	ErrInvalidCond = cond.ErrInvalidCond
	// ErrInvalidOptions is wrapped by every error a constructor returns for
	// bad options or a nil client.
	ErrInvalidOptions = icounter.ErrInvalidOptions
	// ErrClosed is returned by every call after Close, Close included.
	ErrClosed = icounter.ErrClosed
	// ErrHandleClosed is returned by a Handle's Inc and Dec after its
	// Close.
	ErrHandleClosed = icounter.ErrHandleClosed
	// ErrDuplicateInstance is returned by a per-instance counter when
	// another live process uses its InstanceID with a newer session: two
	// processes share one ID, a configuration error. From its first write
	// to a key the newer one swept or wrote, or its next heartbeat, every
	// write of the older one is refused.
	ErrDuplicateInstance = icounter.ErrDuplicateInstance
)

// Limits on names.
const (
	// MaxKeyLen is the longest key, in bytes.
	MaxKeyLen = keyspace.MaxKeyLen
	// MaxPrefixLen is the longest Prefix, in bytes.
	MaxPrefixLen = keyspace.MaxPrefixLen
)

// Defaults for zero option values.
const (
	// DefaultFlushInterval is the FlushInterval of both lax kinds.
	DefaultFlushInterval = icounter.DefaultFlushInterval
	// DefaultDeadInstanceThreshold is the DeadInstanceThreshold of both
	// per-instance kinds.
	DefaultDeadInstanceThreshold = icounter.DefaultDeadInstanceThreshold
	// DefaultTombstoneTTL is the TombstoneTTL of both per-instance kinds.
	DefaultTombstoneTTL = icounter.DefaultTombstoneTTL
)

// CmpOp compares a counter's value with a Cond's Operand.
type CmpOp = cond.Op

// The comparisons of a Cond.
const (
	Eq = cond.Eq // value == Operand
	Ne = cond.Ne // value != Operand
	Lt = cond.Lt // value < Operand
	Le = cond.Le // value <= Operand
	Gt = cond.Gt // value > Operand
	Ge = cond.Ge // value >= Operand
)

// Cond is the condition of IncIf: "value Op Operand", where value is the
// counter before the change (the Total, for per-instance counters).
type Cond struct {
	Op      CmpOp
	Operand int64
}

// Value is a per-instance counter as one instance sees it.
type Value struct {
	// Total is the count cluster-wide: the base written by Set plus the
	// slice of every live instance.
	Total int64
	// Mine is this instance's own slice.
	Mine int64
}
