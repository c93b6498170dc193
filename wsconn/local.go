package wsconn

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// autoLaxWindow is the window over which a room's churn is measured.
const autoLaxWindow = time.Second

// localStats is what this node knows without Redis: its connections per
// room and tenant (for LocalRooms and the metrics), and each room's churn,
// which drives the automatic lax switch.
type localStats struct {
	autoRate float64 // joins+leaves per second that turn a room lax; 0 off
	budget   int64   // events per window above which a room turns lax

	mu      sync.Mutex
	total   int64
	rooms   map[string]*roomStat
	tenants map[string]int64
	laxAuto int // rooms turned lax automatically
}

type roomStat struct {
	n      int64 // connections here
	events int64 // joins and leaves in the current window
	lax    bool  // turned lax by the churn switch
}

func newLocalStats(autoRate float64) *localStats {
	return &localStats{
		autoRate: autoRate,
		budget:   int64(autoRate * autoLaxWindow.Seconds()),
		rooms:    make(map[string]*roomStat),
		tenants:  make(map[string]int64),
	}
}

// roomChange records a join (+1) or leave (-1) of room and reports whether
// the room is lax by the churn switch. A room turns lax the moment its
// events in the current window pass the budget, so a burst is absorbed at
// once rather than a window later.
func (s *localStats) roomChange(room string, d int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[room]
	if r == nil {
		r = &roomStat{}
		s.rooms[room] = r
	}
	r.n += d
	if s.autoRate > 0 {
		r.events++
		if !r.lax && r.events > s.budget {
			r.lax = true
			s.laxAuto++
		}
	}
	lax := r.lax
	if r.n == 0 && s.autoRate == 0 {
		delete(s.rooms, room)
	}
	return lax
}

// autoLax reports whether room is lax by the churn switch.
func (s *localStats) autoLax(room string) bool {
	if s.autoRate == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[room]
	return r != nil && r.lax
}

// closeWindow ends the current window: a lax room whose rate fell below
// half the threshold turns strict again (the gap avoids flapping), and
// rooms with nothing left are forgotten.
func (s *localStats) closeWindow(time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, r := range s.rooms {
		if r.lax && float64(r.events) < s.autoRate*autoLaxWindow.Seconds()/2 {
			r.lax = false
			s.laxAuto--
		}
		r.events = 0
		if r.n == 0 && !r.lax {
			delete(s.rooms, name)
		}
	}
}

func (s *localStats) connChange(tenant string, d int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total += d
	if tenant == "" {
		return
	}
	n := s.tenants[tenant] + d
	if n == 0 {
		delete(s.tenants, tenant)
	} else {
		s.tenants[tenant] = n
	}
}

// roomNames returns the rooms with connections here, sorted.
func (s *localStats) roomNames() []string {
	s.mu.Lock()
	out := make([]string, 0, len(s.rooms))
	for name, r := range s.rooms {
		if r.n > 0 {
			out = append(out, name)
		}
	}
	s.mu.Unlock()
	slices.Sort(out)
	return out
}

// named is a name with its local count.
type named struct {
	name string
	n    int64
}

// top returns the n rooms and n tenants with the most connections here.
func (s *localStats) top(n int) (rooms, tenants []named, total int64, laxAuto int) {
	s.mu.Lock()
	for name, r := range s.rooms {
		if r.n > 0 {
			rooms = append(rooms, named{name, r.n})
		}
	}
	for name, c := range s.tenants {
		tenants = append(tenants, named{name, c})
	}
	total, laxAuto = s.total, s.laxAuto
	s.mu.Unlock()
	byCount := func(a, b named) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.name, b.name)) }
	slices.SortFunc(rooms, byCount)
	slices.SortFunc(tenants, byCount)
	return rooms[:min(n, len(rooms))], tenants[:min(n, len(tenants))], total, laxAuto
}
