package wsconn

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/headcount-go/headcount/internal/icounter"
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

// TestWatchCheckLeavesEventsInFlight: a check that finds a room ahead of
// what its watch delivered (as the check of every room after a reconnect
// often does: the events are published and not received, or not taken
// from the queue, yet) leaves them to the subscription, which delivers
// them, and reads no history, also at a poll while they wait in the
// queue; events the subscription did lose are fetched from the history at
// the next poll, in order.
func TestWatchCheckLeavesEventsInFlight(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	tr, prod := newTracker(t, c, presenceOptions(ns, "w", false)), newTracker(t, c, presenceOptions(ns, "p", false))
	const room = "r"
	ctx := ctxT(t)
	w, err := tr.subscribeRoom(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	var got []PresenceEvent
	deliver := func(e PresenceEvent) error {
		got = append(got, e)
		return nil
	}
	if err := w.snapshot(ctx, deliver); err != nil {
		t.Fatal(err)
	}
	// seqAt waits until Redis holds the joins of users users, and returns
	// the room's last sequence.
	seqAt := func(users int64) int64 {
		t.Helper()
		var m Members
		eventually(t, settleDeadline, "the room's users in Redis", func() (bool, string) {
			var err error
			m, err = prod.Members(ctx, room, "", 1)
			return err == nil && m.Users == users, fmt.Sprint(m.Users, err)
		})
		return m.Seq
	}
	// next takes the subscription's next message.
	next := func() icounter.Event {
		t.Helper()
		select {
		case p := <-w.sub.msgs:
			e, err := icounter.ParseEvent(p)
			if err != nil {
				t.Fatal(err)
			}
			return e
		case <-time.After(settleDeadline):
			t.Fatal("no message from the subscription")
		}
		panic("unreachable")
	}

	admitUser(t, prod, "ann", room) // occupied, then ann's join
	admitUser(t, prod, "bob", room)
	seq := seqAt(2)
	if err := w.check(ctx, deliver); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || w.ahead != seq {
		t.Fatalf("after the check: delivered %v, ahead %d; want the snapshot alone, ahead %d", got, w.ahead, seq)
	}
	// A poll while the messages wait to be taken leaves them to come.
	eventually(t, settleDeadline, "the messages queued", func() (bool, string) {
		return w.sub.pending(), "none"
	})
	if err := w.poll(ctx, time.Now(), deliver); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		e := next()
		if mine, err := w.receive(ctx, e, deliver); err != nil || !mine {
			t.Fatalf("event %d delivered from the history (%v), not from the subscription", e.Seq, err)
		}
	}
	if err := w.poll(ctx, time.Now(), deliver); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("the poll after the subscription caught up delivered %v", got[4:])
	}

	// Lost: cid's and dan's joins reach Redis, their messages are dropped.
	admitUser(t, prod, "cid", room)
	admitUser(t, prod, "dan", room)
	seqAt(4)
	next()
	next()
	if err := w.check(ctx, deliver); err != nil {
		t.Fatal(err)
	}
	if err := w.poll(ctx, time.Now(), deliver); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for i, e := range got[1:] {
		if e.Seq != got[1].Seq+int64(i) {
			t.Fatalf("events %v: seq %d at %d", got, e.Seq, i)
		}
		kinds = append(kinds, e.Kind+" "+e.User)
	}
	if want := []string{"occupied ", "join ann", "join bob", "join cid", "join dan"}; !slices.Equal(kinds, want) {
		t.Fatalf("delivered %q, want %q", kinds, want)
	}
}
