package wsconn

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/headcount-go/headcount/internal/redistest"
)

// readsOf returns how many read batches tr has sent to Redis.
func readsOf(t *testing.T, tr *Tracker) uint64 {
	t.Helper()
	var m dto.Metric
	if err := tr.met.scripts.WithLabelValues("read").(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestIdleWatchReadsNothing: a watch whose subscription lost nothing does
// not read its rooms' sequences every second: 50 quiet rooms watched for
// longer than two polls cost Redis no read.
func TestIdleWatchReadsNothing(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	tr := newTracker(t, c, presenceOptions(redistest.Prefix(t), "w", false))
	rooms := make([]string, 50)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("quiet%d", i)
	}
	rec := watch(t, tr, rooms...)
	eventually(t, settleDeadline, "the snapshots", func() (bool, string) {
		return len(rec.all()) == len(rooms), fmt.Sprint(len(rec.all()), " events")
	})
	before := readsOf(t, tr)
	// A window, not a wait for something: each room's poll comes twice in
	// it, and each would read its sequence if watches read every second.
	time.Sleep(2*watchPoll + watchPoll/2)
	if after := readsOf(t, tr); after != before {
		t.Fatalf("the idle watch made %d read batches in %v", after-before, 2*watchPoll+watchPoll/2)
	}
	if len(rec.all()) != len(rooms) {
		t.Fatalf("events in quiet rooms: %v", rec.all()[len(rooms):])
	}
}

// TestWatchCatchesUpAfterDrops: a watch whose fn is slow for so long that
// more than maxQueued messages pile up (the rest are dropped) delivers,
// once fn is quick again, every event up to the room's last, in order,
// well before the recheck of idle watches (watchRecheck) would.
func TestWatchCatchesUpAfterDrops(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	// The writer's History keeps every event: what was dropped comes from
	// it, not from a new snapshot.
	opts := func(id string) Options {
		o := presenceOptions(ns, id, false)
		o.Presence.History = 4 * maxQueued
		return o
	}
	tr, prod := newTracker(t, c, opts("w")), newTracker(t, c, opts("p"))
	const room = "busy"
	var mu sync.Mutex
	var seqs []int64
	release := make(chan struct{})
	var once sync.Once
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tr.Watch(ctx, []string{room}, nil, func(e PresenceEvent) error {
			if e.Kind != EventSnapshot {
				<-release // slow: the first event holds up the rest
			}
			mu.Lock()
			seqs = append(seqs, e.Seq)
			mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		once.Do(func() { close(release) })
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	eventually(t, settleDeadline, "the snapshot", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(seqs) == 1, fmt.Sprint(seqs)
	})
	churn(t, prod, room, maxQueued/2+50) // occupied, joins, leaves, vacated: past maxQueued
	m, err := prod.Members(ctxT(t), room, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	once.Do(func() { close(release) })
	eventually(t, watchRecheck/3, "every event up to the room's last", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return seqs[len(seqs)-1] == m.Seq, fmt.Sprintf("last %d, want %d", seqs[len(seqs)-1], m.Seq)
	})
	mu.Lock()
	defer mu.Unlock()
	if n := len(seqs) - 1; n != 2*(maxQueued/2+50)+2 {
		t.Errorf("%d events after the snapshot, want %d", n, 2*(maxQueued/2+50)+2)
	}
	for i := 2; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("seq %d after %d", seqs[i], seqs[i-1])
		}
	}
}

// TestWatchAfterDataLoss: Redis loses its data (FLUSHALL) and the room's
// last user leaves meanwhile, which makes no event (Redis no longer held
// the user). The watch, whose subscription lost nothing, still delivers
// the empty room once its node's heartbeat notices the loss: the feed
// counts it as a gap.
func TestWatchAfterDataLoss(t *testing.T) {
	t.Parallel()
	c := redistest.NewServer(t).Client(t)
	ns := redistest.Prefix(t)
	w := newTracker(t, c, presenceOptions(ns, "w", false))
	p := newTracker(t, c, presenceOptions(ns, "p", false))
	rec := watch(t, w, "r")
	ann := admitUser(t, p, "ann", "r")
	eventually(t, settleDeadline, "ann's join", func() (bool, string) {
		return len(changes(rec.all(), 0)) == 2, fmt.Sprint(changes(rec.all(), 0))
	})
	if err := c.FlushAll(ctxT(t)).Err(); err != nil {
		t.Fatal(err)
	}
	ann.Release()
	// A heartbeat notices the loss, the next poll reads the room's
	// sequence: well within settleDeadline, far from watchRecheck.
	eventually(t, settleDeadline, "an empty room after the loss", func() (bool, string) {
		evs := rec.all()
		e := evs[len(evs)-1]
		return e.Kind == EventSnapshot && e.Members != nil && e.Members.Users == 0, fmt.Sprintf("%+v", e)
	})
}
