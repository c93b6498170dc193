package sim

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/headcount-go/headcount/wsconn"
)

// With Config.Users, every connection belongs to a user and every node has
// presence on: the model then also knows each room's users, and a crash is
// checked for its leave events too.

// userHeader carries a simulated connection's user to Options.User.
const userHeader = "X-Sim-User"

func userName(u int) string { return "u" + strconv.Itoa(u) }

// userKey is the model's key of user u in room: room*users + u.
func userKey(users, room, u int) int64 { return int64(room)*int64(users) + int64(u) }

// leaveWatch follows, from one surviving node, the rooms where crashed
// nodes held users, and collects their leaves for reason crashed.
type leaveWatch struct {
	n       *node          // the watching node
	want    map[int64]bool // the (room, user)s whose last connections were on crashed nodes
	rooms   []string
	mu      sync.Mutex
	got     map[int64]int    // crashed leaves received, by (room, user)
	seen    map[string]int64 // the last sequence received, by room
	odd     []string         // events that make the count unverifiable (snapshots)
	last    time.Time        // when the last wanted leave arrived
	missing int              // wanted leaves not received yet
	done    chan struct{}    // closed once missing reaches 0
	stop    context.CancelFunc
	ended   chan error // each Watch's return
	watches int
}

// watchLeaves starts watching, on n, every room where a victim holds a
// user, from each room's current sequence (read with Members), so that
// no event after it is missed, whenever the subscription itself is made:
// a Watch per wsconn.MaxWatchRooms rooms.
func (s *sim) watchLeaves(ctx context.Context, victims []*node, n *node) (*leaveWatch, error) {
	users := s.cfg.Users
	now := s.sums().present
	onVictims := map[int64]int64{}
	for _, v := range victims {
		v.mu.Lock()
		for k, c := range v.users {
			if c != 0 {
				onVictims[k] += int64(c)
			}
		}
		v.mu.Unlock()
	}
	w := &leaveWatch{n: n, want: map[int64]bool{}, got: map[int64]int{}, done: make(chan struct{})}
	roomSet := map[int]bool{}
	for k, c := range onVictims {
		roomSet[int(k/int64(users))] = true
		if now[k] == c { // no connection of the user in the room elsewhere
			w.want[k] = true
		}
	}
	w.missing = len(w.want)
	if w.missing == 0 {
		close(w.done)
	}
	for _, i := range slices.Sorted(maps.Keys(roomSet)) {
		w.rooms = append(w.rooms, s.rooms[i])
	}
	from, err := s.sequences(ctx, n, w.rooms)
	if err != nil {
		return nil, err
	}
	w.seen = maps.Clone(from)
	wctx, stop := context.WithCancel(ctx)
	w.stop = stop
	chunks := slices.Collect(slices.Chunk(w.rooms, wsconn.MaxWatchRooms))
	w.watches = len(chunks)
	w.ended = make(chan error, len(chunks))
	for _, rooms := range chunks {
		go func() {
			w.ended <- n.t.Watch(wctx, rooms, from, func(e wsconn.PresenceEvent) error {
				w.note(s, e)
				return nil
			})
		}()
	}
	return w, nil
}

// sequences reads the last event sequence of every room from n.
func (s *sim) sequences(ctx context.Context, n *node, rooms []string) (map[string]int64, error) {
	out := make(map[string]int64, len(rooms))
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(64)
	for _, room := range rooms {
		g.Go(func() error {
			m, err := n.t.Members(ctx, room, "", 1)
			if err != nil {
				return fmt.Errorf("node %s: Members of %s: %w", n.name, room, err)
			}
			mu.Lock()
			out[room] = m.Seq
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

// note takes one event of the watch.
func (w *leaveWatch) note(s *sim, e wsconn.PresenceEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen[e.Room] = max(w.seen[e.Room], e.Seq)
	switch {
	case e.Kind == wsconn.EventSnapshot:
		w.odd = append(w.odd, fmt.Sprintf("room %s: a snapshot at %d instead of its events (history lost)", e.Room, e.Seq))
	case e.Kind == wsconn.EventLeave && e.Reason == wsconn.ReasonCrashed:
		room, err1 := strconv.Atoi(e.Room[1:])
		u, err2 := strconv.Atoi(e.User[1:])
		if err1 != nil || err2 != nil {
			w.odd = append(w.odd, fmt.Sprintf("leave of unknown room or user: %+v", e))
			return
		}
		k := userKey(s.cfg.Users, room, u)
		w.got[k]++
		if w.want[k] && w.got[k] == 1 {
			w.last = time.Now()
			if w.missing--; w.missing == 0 {
				close(w.done)
			}
		}
	}
}

// check waits until every wanted leave arrived, or limit passed; then,
// the counts being exact (the sweeps done), until the watch has received
// every event Redis holds for its rooms, so that a stray or a duplicate
// leave would be seen. It returns what was wrong: a wanted leave missing,
// a crashed leave of a user still connected in the room elsewhere, a
// leave announced twice.
func (s *sim) checkLeaves(ctx context.Context, w *leaveWatch, limit time.Duration) []string {
	select {
	case <-w.done:
	case <-time.After(limit):
	case <-ctx.Done():
	}
	var bad []string
	upTo, err := s.sequences(ctx, w.n, w.rooms)
	if err != nil {
		bad = append(bad, err.Error())
	}
	// Published with the change, received a round trip later: a few
	// seconds is ample.
	for end := time.Now().Add(5 * time.Second); err == nil; {
		w.mu.Lock()
		behind := ""
		for room, q := range upTo {
			if w.seen[room] < q {
				behind = fmt.Sprintf("room %s: events up to %d received, Redis has %d", room, w.seen[room], q)
				break
			}
		}
		w.mu.Unlock()
		if behind == "" {
			break
		}
		if time.Now().After(end) {
			bad = append(bad, behind)
			break
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	w.stop()
	for range w.watches {
		if err := <-w.ended; err != nil {
			bad = append(bad, fmt.Sprintf("Watch: %v", err))
		}
	}
	users := int64(s.cfg.Users)
	w.mu.Lock()
	defer w.mu.Unlock()
	bad = append(bad, w.odd...)
	name := func(k int64) string {
		return fmt.Sprintf("user %s in room %s", userName(int(k%users)), roomName(int(k/users)))
	}
	for k := range w.want {
		if w.got[k] == 0 {
			bad = append(bad, "no crashed leave of "+name(k))
		}
	}
	for k, c := range w.got {
		if !w.want[k] {
			bad = append(bad, fmt.Sprintf("crashed leave of %s, still connected there elsewhere", name(k)))
		} else if c > 1 {
			bad = append(bad, fmt.Sprintf("%d crashed leaves of %s", c, name(k)))
		}
	}
	slices.Sort(bad)
	return bad
}

// checkMembers reads the member list of every room of rooms from n and
// compares each user's connections with the model.
func (s *sim) checkMembers(ctx context.Context, n *node, rooms []string) ([]string, error) {
	users := int64(s.cfg.Users)
	want := map[string]map[string]int64{}
	for _, room := range rooms {
		want[room] = map[string]int64{}
	}
	for k, c := range s.sums().present {
		if m, ok := want[roomName(int(k/users))]; ok {
			m[userName(int(k%users))] = c
		}
	}
	var mu sync.Mutex
	var bad []string
	var g errgroup.Group
	g.SetLimit(64)
	for _, room := range rooms {
		g.Go(func() error {
			got := map[string]int64{}
			for cursor := ""; ; {
				p, err := n.t.Members(ctx, room, cursor, wsconn.MaxMembersPage)
				if err != nil {
					return fmt.Errorf("node %s: Members of %s: %w", n.name, room, err)
				}
				for _, m := range p.Members {
					got[m.User] = m.Connections
				}
				if cursor = p.Next; cursor == "" {
					break
				}
			}
			if !maps.Equal(got, want[room]) {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("node %s: room %s lists %v, want %v", n.name, room, got, want[room]))
				mu.Unlock()
			}
			return nil
		})
	}
	err := g.Wait()
	slices.Sort(bad)
	return bad, err
}

// crashLeaves checks the leaves of the crash at t0 (see checkLeaves), then
// the member lists of the rooms watched, and adds to rep.
func (s *sim) crashLeaves(ctx context.Context, rep *Report, w *leaveWatch, t0 time.Time, limit, deadline time.Duration) {
	bad := s.checkLeaves(ctx, w, limit)
	if !w.last.IsZero() {
		rep.LeavesSeconds = w.last.Sub(t0).Seconds()
	}
	rep.Failures = append(rep.Failures, bad...)
	s.logf("%d of %d leaves (reason crashed) received by node %s's Watch, the last %.2fs after the crash (deadline %v); %d wrong",
		len(w.want)-w.missing, len(w.want), w.n.name, rep.LeavesSeconds, deadline, len(bad))
	if w.missing == 0 && len(w.want) > 0 && w.last.Sub(t0) > deadline {
		rep.Failures = append(rep.Failures, fmt.Sprintf("crashed leaves received only %.2fs after the crash, deadline %v", rep.LeavesSeconds, deadline))
	}
	members, err := s.checkMembers(ctx, w.n, w.rooms)
	if err != nil {
		members = append(members, err.Error())
	}
	rep.Failures = append(rep.Failures, members...)
	s.logf("member lists of the %d rooms watched read from node %s: %s", len(w.rooms), w.n.name,
		map[bool]string{true: "exact", false: "MISMATCH"}[len(members) == 0])
}
