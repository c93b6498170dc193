package icounter

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// renewalCounter records the size of every heartbeat batch (lease renewals
// and re-assertions).
type renewalCounter struct {
	mu      sync.Mutex
	batches []int
}

func (r *renewalCounter) ScriptDone(string, time.Duration, error) {}
func (r *renewalCounter) Reaped(int)                              {}
func (r *renewalCounter) Flushed(heartbeat bool, keys int, _ time.Duration, _ error) {
	if heartbeat {
		r.mu.Lock()
		r.batches = append(r.batches, keys)
		r.mu.Unlock()
	}
}

// tally returns the largest batch, the renewals in all and those in
// batches of at most limit.
func (r *renewalCounter) tally(limit int) (most, total, within int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.batches {
		most = max(most, n)
		total += n
		if n <= limit {
			within += n
		}
	}
	return most, total, within
}

// TestLeaseRenewalsPaced: a node that takes 400 slices at once renews them
// at about the steady rate, a share at every heartbeat, not all in the
// heartbeats half a lease later; and no lease of its runs out meanwhile.
func TestLeaseRenewalsPaced(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ctx, p := ctxT(t), redistest.Prefix(t)
	const n = 400
	obs := &renewalCounter{}
	o := testOptions(p, "L")
	o.SliceLease = 4 * time.Second
	o.Observer = obs
	l, err := NewLax(c, LaxOptions{Options: o, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	keys := holdRooms(t, l, n, 1)
	// Over a lease and a half every slice falls due once, and the first
	// renewed fall due again; every lease stamp must stay younger than the
	// lease all along.
	end := time.Now().Add(o.SliceLease * 3 / 2)
	for time.Now().Before(end) {
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		pipe := c.Pipeline()
		scores := make([]interface{ Val() float64 }, n)
		for i, k := range keys {
			scores[i] = pipe.ZScore(ctx, l.e.cfg.space.Key(k)+seenSuffix, "L")
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		for i, s := range scores {
			if age := time.Duration(now.UnixMilli()-int64(s.Val())) * time.Millisecond; age >= o.SliceLease {
				t.Fatalf("%s: lease stamped %v ago, lease %v: it ran out", keys[i], age, o.SliceLease)
			}
		}
		time.Sleep(100 * time.Millisecond) // poll interval of a condition that must hold throughout
	}
	steady := renewPace * n * float64(testHeartbeat) / float64(o.SliceLease/2)
	limit := int(math.Ceil(steady)) + 1
	most, total, paced := obs.tally(limit)
	// The pace leaves a tenth of slack: renewal ticks that come late (a
	// loaded machine) leave slices three quarters of a lease old, which
	// are renewed whatever the credit, in a larger batch. So most
	// renewals, not all, come at the paced rate; and none of the batches
	// holds half the slices, as renewing each half a lease after it was
	// taken would.
	if paced < total*3/4 {
		t.Errorf("%d of %d renewals came in heartbeats renewing at most %d slices (%.1f a beat at the paced rate), want three quarters at least", paced, total, limit, steady)
	}
	if most > n/2 {
		t.Errorf("a heartbeat renewed %d slices, want at most half of the %d", most, n)
	}
	if total < n {
		t.Errorf("%d renewals over a lease and a half, want every one of the %d slices renewed", total, n)
	}
	t.Logf("largest heartbeat batch %d, renewals %d, %d of them in batches of at most %d", most, total, paced, limit)
}

// TestRenewalsReapExpiredLease: a counter that only lease renewals touch
// still loses a dead instance's slice that no index names once its lease
// has run out: the renewal that renews the counter's TTL reaps it.
func TestRenewalsReapExpiredLease(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		o := testOptions(p, "D")
		o.SliceLease = 2 * time.Second
		d := unindexedSlice(t, c, o)
		o.InstanceID = "A"
		a, err := NewStrict(c, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close(context.Background()) })
		must[Value](t)(a.Inc(ctx, "k", 1))
		d.Kill()
		died := time.Now()
		r := newStrict(t, c, p, "R") // reads only: reads never reap
		// D's lease runs out a lease after its last assertion; the TTL
		// renewal that looks for expired leases comes at most a lease
		// later, with the first renewal after it (at most three quarters
		// of a lease apart, sent at a heartbeat).
		deadline := 3*o.SliceLease + testHeartbeat + time.Second
		eventually(t, deadline-time.Since(died), "D's slice dropped through A's renewals", func() (bool, string) {
			v, err := r.Get(ctx, "k")
			return err == nil && v.Total == 1, fmt.Sprintf("%+v, %v", v, err)
		})
	})
}

// TestLeaseDropsUnindexedSlice: a dead instance's slice that no index names
// (its index lost) is dropped by the lease backstop: once its lease has run
// out, the next script on the counter that renews its TTL (once per lease)
// removes it.
func TestLeaseDropsUnindexedSlice(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		o := testOptions(p, "D")
		o.SliceLease = time.Second
		d := unindexedSlice(t, c, o)
		d.Kill()
		died := time.Now()
		o.InstanceID = "A"
		a, err := NewStrict(c, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close(context.Background()) })
		// The sweep finds no index; the lease runs out a lease after D's
		// last assertion, and A's writes renew the TTL at most a lease
		// apart: within two leases plus a heartbeat and a second.
		deadline := 2*o.SliceLease + testHeartbeat + time.Second
		eventually(t, deadline-time.Since(died), "D's slice dropped by its lease", func() (bool, string) {
			v, err := a.Inc(ctx, "k", 0)
			return err == nil && v.Total == 0, fmt.Sprintf("%+v, %v", v, err)
		})
	})
}

// unindexedSlice starts instance o.InstanceID, has it hold 2 in counter k,
// and deletes its index: a slice only the lease can remove should the
// instance die.
func unindexedSlice(t *testing.T, c redis.UniversalClient, o Options) *Strict {
	t.Helper()
	ctx := ctxT(t)
	d, err := NewStrict(c, o)
	if err != nil {
		t.Fatal(err)
	}
	must[Value](t)(d.Inc(ctx, "k", 2))
	if err := c.Del(ctx, d.e.cfg.space.Index(o.InstanceID, d.e.session.Load())).Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCounterExpiresAfterLastWrite: a counter no live instance writes to
// leaves Redis by itself, hash and lease set, within two slice leases of
// its last write: the TTL its assertions set, renewed with the lease.
func TestCounterExpiresAfterLastWrite(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		o := testOptions(p, "w")
		o.SliceLease = testThreshold // the shortest lease these timings allow
		w := newStrictWith(t, c, o)
		must[Value](t)(w.Inc(ctx, "k", 1))
		last := time.Now()
		h := w.e.cfg.space.Key("k")
		if ttl := c.PTTL(ctx, h).Val(); ttl <= 0 || ttl > 2*o.SliceLease {
			t.Fatalf("counter TTL %v after a write, want within (0, %v]", ttl, 2*o.SliceLease)
		}
		w.Kill() // nothing renews it from now on
		// EXISTS expires a key that is due at once, so the deadline needs
		// no slack for Redis' expiry cycle: only for this poll's rounds.
		eventually(t, 2*o.SliceLease+100*time.Millisecond-time.Since(last), "the counter's keys expired", func() (bool, string) {
			n, err := c.Exists(ctx, h, h+seenSuffix).Result()
			return err == nil && n == 0, fmt.Sprint(n, err)
		})
	})
}
