package icounter

import (
	"context"
	"time"
)

// Lease renewals are paced, so that a node renews about as many slices at
// every heartbeat, whenever it took them: credit for renewals accrues at
// renewPace times the steady rate (every slice once per half lease), and is
// spent on the slices due (half a lease since their last assertion) first,
// then on those a quarter lease old. A node that took thousands of slices
// at once (a build-up, a restart) thus renews them at that rate, starting a
// quarter lease later, instead of all of them half a lease later; each
// slice is renewed about every lease/(2 x renewPace). A slice three
// quarters of a lease old is renewed whatever the credit: a live slice's
// lease never runs out for want of it.
const renewPace = 1.1

// leasePacer is renewLeases' credit; only the renewTick goroutine uses it.
type leasePacer struct {
	credit float64
	last   time.Time
}

// budget adds the credit earned since the last call by a node holding
// held slices, and returns how many renewals it pays for. Credit does not
// pile up beyond one heartbeat's worth while nothing is due.
func (p *leasePacer) budget(now time.Time, held int, heartbeat, lease time.Duration) int {
	elapsed := heartbeat
	if !p.last.IsZero() {
		elapsed = min(now.Sub(p.last), 2*heartbeat)
	}
	p.last = now
	perHeartbeat := renewPace * float64(held) * float64(heartbeat) / float64(lease/2)
	p.credit = min(p.credit+perHeartbeat*float64(elapsed)/float64(heartbeat), perHeartbeat+1)
	return int(p.credit)
}

// spend takes n renewals off the credit.
func (p *leasePacer) spend(n int) { p.credit -= float64(n) }

// renewLeases asserts, in one pipeline, the counters whose slice Redis may
// not hold, and the leases the pacer pays for (see renewPace). Idle states
// in this session's index leave it in the same pipeline.
func (e *engine) renewLeases(ctx context.Context) error {
	session := e.session.Load()
	now := time.Now()
	lease := e.cfg.lease
	// A held slice's lease is urgent three quarters of a lease after its
	// last assertion, due after half a lease, early after a quarter.
	const none, early, due, urgent = 0, 1, 2, 3
	tier := func(st *state) int {
		switch age := now.Sub(st.assertedAt); {
		case age >= lease*3/4:
			return urgent
		case age >= lease/2:
			return due
		case age >= lease/4:
			return early
		}
		return none
	}
	held, dues := 0, 0
	e.each(func(st *state) {
		if st.holds() {
			held++
			if tier(st) == due {
				dues++
			}
		}
	})
	budget := e.lease.budget(now, held, e.cfg.heartbeat, lease)
	dueTake := min(budget, dues)
	earlyTake := budget - dueTake
	var as []*assertion
	var unindex []*state
	e.each(func(st *state) {
		if st.round != nil {
			return
		}
		if st.dirty() {
			as = append(as, e.begin(st, nil, 0))
			return
		}
		if !st.holds() {
			if st.idle() && st.indexedIn == session {
				r := newRound()
				r.ver = st.ver
				st.round = r
				unindex = append(unindex, st)
			}
			return
		}
		switch tier(st) {
		case urgent:
		case due:
			if dueTake == 0 {
				return
			}
			dueTake--
		case early:
			if earlyTake == 0 {
				return
			}
			earlyTake--
		default:
			return
		}
		as = append(as, e.begin(st, nil, 0))
	})
	e.lease.spend(budget - dueTake - earlyTake)
	if len(as) == 0 && len(unindex) == 0 {
		return nil
	}
	start := time.Now()
	err := e.send(ctx, as, unindex)
	if len(as) > 0 {
		e.observeFlush(true, len(as), start, err)
	}
	return err
}
