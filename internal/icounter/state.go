package icounter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// state is one instance's knowledge of one counter. One state serves the
// strict and the lax path alike: both change local and send the same
// assertions, only at different times.
type state struct {
	key  string
	h, z string // the counter's Redis hash and lease set

	// local is this instance's slice as it should be: the truth that every
	// assertion carries to Redis. The lax warm path only adds to it.
	local atomic.Int64
	// others is the last known total without this instance's slice; the lax
	// path answers Total = others + local without asking Redis.
	others atomic.Int64

	mu sync.Mutex // guards the fields below
	// epoch is the counter's epoch as last seen; -1 when unknown, in which
	// case the next assertion adopts whatever Redis holds.
	epoch int64
	// stored is this instance's slice as Redis last acknowledged it; known
	// is false when the outcome of the last exchange is unknown.
	stored int64
	known  bool
	// pending sums strict changes not yet acknowledged. If an assertion
	// finds the epoch moved on, Redis takes pending as the new slice: those
	// changes are being made now, while older ones died with the reset.
	pending int64
	// ver counts strict changes; a round covers the changes up to its ver.
	ver   int64
	round *round // the exchange in flight, if any
	// next is the round the committer sends next, which callers waiting
	// for a commit share; nil when nobody waits.
	next *round
	// force has the next round sent even when Redis holds the slice: a
	// strict Inc or Dec always asserts (Inc of 0 renews the lease).
	force bool
	// indexedIn is the session whose index holds this counter (0: none).
	indexedIn int64
	// assertedAt is when Redis last acknowledged an assertion of this
	// counter: its lease is renewed a quarter to three quarters of a lease
	// later (see renewPace).
	assertedAt time.Time
	readAt     time.Time
	users      int // callers holding the state; the sweeper leaves it alone
	// queued is true while st waits in the engine's changes for the next
	// flush.
	queued atomic.Bool
	// meta is a member's metadata (see Lax.AddMember) as the scripts take
	// it: "=" and the metadata, or "" when none was set. It goes with every
	// assertion of the member, so that Redis has it whenever the member is
	// there.
	meta string
}

// dirty reports whether Redis may not hold local as this instance's slice.
// Call with mu held.
func (st *state) dirty() bool {
	return !st.known || st.local.Load() != st.stored
}

// holds reports whether this instance has, or may have, a slice here.
// Call with mu held.
func (st *state) holds() bool {
	return st.local.Load() != 0 || st.stored != 0 || !st.known
}

// idle reports whether the state carries nothing. Call with mu held.
func (st *state) idle() bool {
	return st.known && st.stored == 0 && st.local.Load() == 0 && st.pending == 0 &&
		st.round == nil && st.next == nil && st.users == 0
}

// round is one exchange with Redis about one counter. Callers whose strict
// change it covers wait on done and share its outcome.
type round struct {
	done chan struct{}
	ver  int64 // set when the round begins; read after done
	val  Value
	held bool // IncIf: the condition held
	// session is the one the round's assertion carried.
	session int64
	err     error
}

func newRound() *round { return &round{done: make(chan struct{})} }

// lockIdle locks mu once st has no round in flight, for an operation that
// must run alone on the key. If ctx ends first it returns ctx.Err() with mu
// unlocked.
func (st *state) lockIdle(ctx context.Context) error {
	st.mu.Lock()
	for st.round != nil {
		r := st.round
		st.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		st.mu.Lock()
	}
	return nil
}
