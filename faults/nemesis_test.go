package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/faultproxy"
	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// The nemesis test's settings, from the environment.
const (
	// nemesisEnv is how long the schedule runs per topology (e.g. 15m);
	// default nemesisDefault.
	nemesisEnv = "HEADCOUNT_NEMESIS"
	// nemesisSeedEnv replays a schedule: the seed a failed run printed.
	nemesisSeedEnv = "HEADCOUNT_NEMESIS_SEED"
	// nemesisRaceEnv=1 builds the node processes with -race (slower; for
	// long runs on a machine with CPUs to spare).
	nemesisRaceEnv = "HEADCOUNT_NEMESIS_RACE"

	nemesisDefault = 50 * time.Second // plus about 10s of setup and teardown
)

// Timings of the nemesis test, on top of the suite's (main_test.go).
const (
	// nemRedisTimeout is the nodes' RedisTimeout. As in nodeOptions: a
	// loopback Redis that answers takes milliseconds, so a healthy Redis
	// never hits it, even on a loaded machine under -race.
	nemRedisTimeout = time.Second
	// nemBoundSlack is what a handshake, a Join or a read may take beyond
	// RedisTimeout, however Redis fails: handshakeSlack (the HTTP and
	// WebSocket work on a busy machine).
	nemBoundSlack = handshakeSlack
	// removeDeadline bounds how long a close or a leave may still be
	// counted by other nodes while Redis answers: strict ones are sent at
	// once, lax ones with the next flush, and one that fails is retried
	// with the next flush or heartbeat; heartbeat + 1s of slack, like
	// healDeadline.
	removeDeadline = heartbeat + time.Second
	// lostRegistryDeadline is the promise for a node that died just before
	// (or as) Redis lost its data, and its registry entry with it, from the
	// data's loss healing: a reconcile removes it within a threshold, two
	// heartbeats and a second (README).
	lostRegistryDeadline = threshold + 2*heartbeat + time.Second
	// laxDeadline bounds how late another node sees a lax change:
	// FlushInterval plus one Redis round trip (documented), with 1s of
	// slack for a busy machine.
	laxDeadline = flushIvl + time.Second
	// quietPoll paces the reads of a quiet period.
	quietPoll = 25 * time.Millisecond
)

// nemConfig is one node slot's configuration: every process started in the
// slot (the first and each restart) has it.
type nemConfig struct {
	name       string
	perRoom    int64
	perTenant  int64
	failClosed bool
	lax        bool // global and tenant counters lax (Options.Lax)
}

// The node slots: limits fail-closed (whose admissions prove the limits),
// limits fail-open, no limits and lax counters, limits fail-closed. Rooms
// whose name starts with "lax-" are lax on every node (LaxRooms); on nodes
// with PerRoom their joins are still checked in Redis.
var nemSlots = []nemConfig{
	{name: "n0", perRoom: 4, perTenant: 8, failClosed: true},
	{name: "n1", perRoom: 4, perTenant: 8},
	{name: "n2", lax: true},
	{name: "n3", perRoom: 4, perTenant: 8, failClosed: true},
}

const (
	nemWorkers     = 3 // client goroutines, each owning its connections
	nemConnsPerWkr = 8 // at most, per worker
	nemLaxPrefix   = "lax-"
)

// TestNemesis runs a seeded random schedule of client operations and
// faults against four node processes (faults/nemesisnode) counting in one
// namespace, on a private standalone Redis and on a private 3-master
// cluster, and checks every read against a model of the truth. See
// doc.go for what is checked; a failure prints the seed and the command
// that replays it.
func TestNemesis(t *testing.T) {
	d := nemesisDefault
	if v := os.Getenv(nemesisEnv); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration such as 15m", nemesisEnv, v)
		}
	}
	seed := rand.Uint64() >> 1
	if v := os.Getenv(nemesisSeedEnv); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 63); err != nil {
			t.Fatalf("%s=%q: want the seed a run printed", nemesisSeedEnv, v)
		}
	}
	race := os.Getenv(nemesisRaceEnv) == "1"
	if dl, ok := t.Deadline(); ok {
		// Leave the other tests, and the teardown, two minutes of go
		// test's -timeout.
		if room := time.Until(dl) - 2*time.Minute; d > room {
			d = max(room.Truncate(time.Second), 10*time.Second)
			t.Logf("%s shortened to %v to end before go test's -timeout", nemesisEnv, d)
		}
	}
	// Not parallel with the other tests (its subtests run in parallel
	// with each other): its deadlines are the documented ones, and the
	// crash tests' 6,000 connections must not starve it.
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		srv := redistest.NewServer(t)
		nemesis(t, topology{name: "standalone", masters: []*redistest.Server{srv}}, d, seed, race)
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		cc, masters := redistest.NewCluster(t)
		nemesis(t, topology{name: "cluster", masters: masters, cc: cc}, d, seed, race)
	})
}

// topology is the Redis under test: one standalone server, or the masters
// of a cluster (cc set).
type topology struct {
	name    string
	masters []*redistest.Server
	cc      *redis.ClusterClient
}

func (tp topology) seeds() string {
	a := make([]string, len(tp.masters))
	for i, m := range tp.masters {
		a[i] = m.Addr()
	}
	return strings.Join(a, ",")
}

// replayCommand is the command that replays this run's schedule.
func replayCommand(topo string, seed uint64, d time.Duration, race bool) string {
	env := fmt.Sprintf("%s=%d", nemesisSeedEnv, seed)
	if d != nemesisDefault {
		env += fmt.Sprintf(" %s=%v", nemesisEnv, d)
	}
	if race {
		env += " " + nemesisRaceEnv + "=1"
	}
	timeout := ""
	if d > 5*time.Minute {
		timeout = fmt.Sprintf(" -timeout %v", 2*d+5*time.Minute)
	}
	return fmt.Sprintf("%s go test -race -count=1%s -run 'TestNemesis/%s$' ./faults/", env, timeout, topo)
}

// ---------------------------------------------------------------------
// The model of the truth.

// window is a fault that makes Redis (all of it: slot < 0) or one node's
// Redis traffic (slot >= 0) unavailable or wrong for a while: from start
// until healAt (zero while it lasts), and then for healDeadline more,
// the documented time counts take to heal once Redis answers again.
type window struct {
	what   string
	slot   int
	start  time.Time
	healAt time.Time
	// stall: traffic held during the fault may be delivered when it heals
	// (a proxy stall, a stopped redis-server), so writes of a node killed
	// meanwhile may land then.
	stall bool
	// loss: Redis lost its data (the registry with it, maybe).
	loss bool
}

var forever = time.Unix(1<<40, 0)

func (w *window) end() time.Time {
	if w.healAt.IsZero() {
		return forever
	}
	return w.healAt.Add(healDeadline)
}

// slot is a place for one node process at a time, with its proxies to
// Redis (one per master) that every process in the slot talks through.
type slot struct {
	i       int
	cfg     nemConfig
	proxies []*faultproxy.Proxy
	via     string // the -via flag: master=proxy,...
	gen     int
	cur     *incarnation // under model.mu
	parted  *window      // the active partition, if any (nemesis goroutine only)
}

// incarnation is one node process.
type incarnation struct {
	s    *slot
	id   string // InstanceID
	name string // for messages: id, and #gen after a restart
	n    *node
	// killStart is set before SIGKILL, killEnd once the process is gone
	// (under model.mu).
	killStart, killEnd time.Time
}

// member is one connection's membership of one counter ("total",
// "t:<tenant>" or "r:<room>"), from the operation that added it to the one
// that removed it. Times are taken before an operation is sent (start,
// rmStart) and after its answer (ack, rmEnd), so the truth lies between.
type member struct {
	c        *nconn
	key      string
	limit    int64         // the key's limit on the connection's node, 0 for none
	visDelay time.Duration // how late other nodes may see it: 0 (strict) or laxDeadline
	start    time.Time
	ack      time.Time // the operation returned success
	failed   bool      // the operation failed (refused, unavailable, node killed): rmEnd is when
	rmStart  time.Time
	rmEnd    time.Time
	// checked: admitted by a fail-closed node under a limit while no fault
	// was active or healing, so Redis held every such member (limits).
	checked bool
	// uncertain: the node said yes but the connection is not in the room;
	// the test closes the connection.
	uncertain bool
}

type model struct {
	t      *testing.T
	origin time.Time
	rooms  []string
	tenant []string
	slots  []*slot

	mu      sync.Mutex
	members map[string][]*member
	windows []*window
	// gone holds the members prune forgot, and allWindows every window
	// ever opened: the presence events they caused are checked later
	// (nemesis_presence_test.go).
	gone       map[string][]*member
	allWindows []*window
	failures   []string
	nfail      int
	log        []string // recent events, for failure reports
	dumped     bool
	stats      nemStats
}

type nemStats struct {
	ops         map[string]int // "dial ok", "join refused"...
	faults      map[string]int
	reads       int // presence reads checked against the bounds
	bounds      int // counts checked (every key of every read)
	limitChecks int // limit invariant evaluations
	refusals    int // refusals checked against the upper bound
	quiet       int // quiet periods found exact
	quietReads  int
	userReads   int            // quiet reads whose users and members were checked
	memberPages int            // member list pages read
	events      map[string]int // joins and leaves checked against the model, by kind and reason
}

func (m *model) rel(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if t.Equal(forever) {
		return "never"
	}
	return fmt.Sprintf("+%.3fs", t.Sub(m.origin).Seconds())
}

// note records an event for failure reports. Call with mu held.
func (m *model) note(format string, args ...any) {
	line := m.rel(time.Now()) + " " + fmt.Sprintf(format, args...)
	m.log = append(m.log, line)
	if len(m.log) > 400 {
		m.log = slices.Clone(m.log[len(m.log)-300:])
	}
}

func (m *model) notef(format string, args ...any) {
	m.mu.Lock()
	m.note(format, args...)
	m.mu.Unlock()
}

// fail records a failure. Call with mu held.
func (m *model) fail(format string, args ...any) {
	msg := m.rel(time.Now()) + " " + fmt.Sprintf(format, args...)
	m.nfail++
	m.note("FAILURE: %s", msg)
	if len(m.failures) < 20 {
		m.failures = append(m.failures, msg)
	}
	if !m.dumped {
		m.dumped = true
		n := min(len(m.log), 80)
		m.failures = append(m.failures, "recent events:\n\t"+strings.Join(m.log[len(m.log)-n:], "\n\t"))
	}
}

func (m *model) failf(format string, args ...any) {
	m.mu.Lock()
	m.fail(format, args...)
	m.mu.Unlock()
}

func (m *model) count(op string) {
	m.mu.Lock()
	m.stats.ops[op]++
	m.mu.Unlock()
}

// overlaps reports whether a fault of all of Redis, or of the slot's
// traffic (slot >= 0), was active or healing at some time in [a, b].
// Call with mu held.
func (m *model) overlaps(slot int, a, b time.Time) bool {
	for _, w := range m.windows {
		if (w.slot < 0 || w.slot == slot) && !w.start.After(b) && !w.end().Before(a) {
			return true
		}
	}
	return false
}

// anyFault reports whether any fault was active or healing in [a, b].
func (m *model) anyFault(a, b time.Time) bool {
	for _, w := range m.windows {
		if !w.start.After(b) && !w.end().Before(a) {
			return true
		}
	}
	return false
}

func (m *model) openWindow(what string, slot int, stall, loss bool) *window {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := &window{what: what, slot: slot, start: time.Now(), stall: stall, loss: loss}
	m.windows = append(m.windows, w)
	m.allWindows = append(m.allWindows, w)
	m.note("fault %s begins", what)
	return w
}

// machineStalled opens a window over a stall of the whole machine (see
// stall_test.go): the model takes it for a fault of all of Redis, as a
// SIGSTOP of Redis.
func (m *model) machineStalled(s stretch) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := &window{what: "machine stall", slot: -1, start: s.from, healAt: s.to}
	m.windows = append(m.windows, w)
	m.allWindows = append(m.allWindows, w)
	m.stats.faults[w.what]++
	m.note("machine stall: this process did not run from %s for %v", m.rel(s.from), s.to.Sub(s.from).Round(time.Millisecond))
}

func (m *model) heal(w *window) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.healAt = time.Now()
	m.note("fault %s healed (lasted %v)", w.what, w.healAt.Sub(w.start).Round(time.Millisecond))
}

// rmStartOf is when m's removal began: its own, or its node's kill.
func rmStartOf(mb *member) time.Time {
	t, k := mb.rmStart, mb.c.inc.killStart
	if !k.IsZero() && (t.IsZero() || k.Before(t)) {
		return k
	}
	return t
}

// rmEndOf is when m's removal (or failed addition) ended, zero if it has
// not: its own end, or its node's death.
func rmEndOf(mb *member) time.Time {
	t, k := mb.rmEnd, mb.c.inc.killEnd
	if !k.IsZero() && (t.IsZero() || k.Before(t)) {
		return k
	}
	return t
}

// crashEnd is the latest a killed node's slices may still be counted: the
// reap deadline from its death, or from the end of a stall that held its
// writes when it died, or from the end of a pause of every node's
// heartbeats before the reap (a fault of all of Redis, or of the machine):
// after one, the nodes doubt for a threshold that an instance seen shortly
// before it is dead (see internal/icounter's doc), so the reap comes a
// reap deadline after it ends. Call with mu held.
func (m *model) crashEnd(inc *incarnation) time.Time {
	base := inc.killEnd
	if base.IsZero() {
		return forever
	}
	for _, w := range m.windows {
		if w.stall && (w.slot < 0 || w.slot == inc.s.i) && !w.start.After(inc.killEnd) &&
			(w.healAt.IsZero() || !w.healAt.Before(inc.killStart)) {
			if w.healAt.IsZero() {
				return forever
			}
			if w.healAt.After(base) {
				base = w.healAt
			}
		}
	}
	end := base.Add(reapDeadline)
	for changed := true; changed; {
		changed = false
		for _, w := range m.windows {
			if w.slot >= 0 || !w.start.Before(end) || !w.healAt.IsZero() && w.healAt.Before(inc.killStart) {
				continue
			}
			if w.healAt.IsZero() {
				return forever
			}
			if e := w.healAt.Add(reapDeadline); e.After(end) {
				end, changed = e, true
			}
		}
	}
	for _, w := range m.windows {
		// Died before it could register again after a loss of data, or
		// before a sweeper found it in a registry then lost: a reconcile
		// removes it, later than a sweep would.
		if w.loss && w.start.Before(end) && (w.healAt.IsZero() || !w.healAt.Before(inc.killStart.Add(-heartbeat-time.Second))) {
			if w.healAt.IsZero() {
				return forever
			}
			if e := w.healAt.Add(lostRegistryDeadline); e.After(end) {
				end = e
			}
		}
	}
	return end
}

// visEnd is the latest a removed (or failed) membership may still be
// counted, by its own node (remote false) or by others: removeDeadline
// after the removal, the reap deadline if the node died before the removal
// surely reached Redis, and in any case until a fault of Redis or of the
// node's traffic that began meanwhile has healed. Call with mu held.
func (m *model) visEnd(mb *member, remote bool) time.Time {
	end := rmEndOf(mb)
	if end.IsZero() {
		return forever
	}
	e := end.Add(removeDeadline)
	if !remote {
		return e
	}
	inc := mb.c.inc
	if !inc.killStart.IsZero() && inc.killStart.Before(e) {
		if c := m.crashEnd(inc); c.After(e) {
			e = c
		}
	}
	for changed := true; changed; {
		changed = false
		for _, w := range m.windows {
			if (w.slot < 0 || w.slot == inc.s.i) && !w.start.After(e) && w.end().After(e) {
				e, changed = w.end(), true
			}
		}
	}
	return e
}

// mustCount: every read by obs in [t0, t1] counts mb. Its own node counts
// it from memory once the operation returned; other nodes once it is in
// Redis: at once if strict, within laxDeadline if lax, unless a fault of
// Redis or of the member's node's traffic is active or healing.
func (m *model) mustCount(mb *member, obs *incarnation, t0, t1 time.Time) bool {
	if mb.ack.IsZero() || mb.uncertain || mb.ack.After(t0) {
		return false
	}
	if rs := rmStartOf(mb); !rs.IsZero() && rs.Before(t1) {
		return false
	}
	if mb.c.inc == obs {
		return true
	}
	return !mb.ack.Add(mb.visDelay).After(t0) && !m.overlaps(mb.c.inc.s.i, t0, t1)
}

// mayCount: some read by obs in [t0, t1] may count mb.
func (m *model) mayCount(mb *member, obs *incarnation, t0, t1 time.Time) bool {
	return !mb.start.After(t1) && !m.visEnd(mb, mb.c.inc != obs).Before(t0)
}

// live: mb counts, now that every operation has returned.
func live(mb *member) bool {
	return !mb.ack.IsZero() && !mb.uncertain && rmStartOf(mb).IsZero()
}

type bound struct{ lo, hi int64 }

// bounds of what obs may report for key in a read sent at t0 and answered
// at t1: total and local.
func (m *model) bounds(obs *incarnation, key string, t0, t1 time.Time) (total, local bound, lo, hi []*member) {
	for _, mb := range m.members[key] {
		own := mb.c.inc == obs
		if m.mustCount(mb, obs, t0, t1) {
			lo = append(lo, mb)
			total.lo++
			if own {
				local.lo++
			}
		}
		if m.mayCount(mb, obs, t0, t1) {
			hi = append(hi, mb)
			total.hi++
			if own {
				local.hi++
			}
		}
	}
	return total, local, lo, hi
}

func (m *model) describe(ms []*member) string {
	var b []string
	for i, mb := range ms {
		if i == 10 {
			b = append(b, fmt.Sprintf("(%d more)", len(ms)-i))
			break
		}
		s := fmt.Sprintf("c%d@%s start %s ack %s", mb.c.id, mb.c.inc.name, m.rel(mb.start), m.rel(mb.ack))
		if mb.failed {
			s += " failed " + m.rel(mb.rmEnd)
		} else if rs := rmStartOf(mb); !rs.IsZero() {
			s += " removed " + m.rel(rs) + ".." + m.rel(rmEndOf(mb))
		}
		if !mb.c.inc.killStart.IsZero() {
			s += " node killed " + m.rel(mb.c.inc.killStart)
		}
		b = append(b, s)
	}
	return "[" + strings.Join(b, "; ") + "]"
}

// keys lists every counter the test reads.
func (m *model) keys() []string {
	k := []string{"total"}
	for _, r := range m.rooms {
		k = append(k, "r:"+r)
	}
	for _, tn := range m.tenant {
		k = append(k, "t:"+tn)
	}
	return k
}

// countOf returns key's count in a presence answer.
func countOf(p *presence, key string) (c wsconn.Count, ok bool) {
	switch {
	case key == "total":
		return p.Total, true
	case strings.HasPrefix(key, "r:"):
		c, ok = p.Rooms[key[2:]]
	case strings.HasPrefix(key, "t:"):
		c, ok = p.Tenants[key[2:]]
	}
	return c, ok
}

// checkRead checks a presence read by obs, sent at t0 and answered at t1:
// no count negative, every count within its bounds. what says which
// operation read.
func (m *model) checkRead(obs *incarnation, t0, t1 time.Time, p *presence, what string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.reads++
	for _, key := range m.keys() {
		m.stats.bounds++
		got, ok := countOf(p, key)
		if !ok {
			m.fail("%s: read on %s: %s missing from the answer", what, obs.name, key)
			continue
		}
		if got.Total < 0 || got.Local < 0 {
			m.fail("%s: read on %s [%s, %s]: %s is negative: total %d, local %d", what, obs.name, m.rel(t0), m.rel(t1), key, got.Total, got.Local)
			continue
		}
		total, local, lo, hi := m.bounds(obs, key, t0, t1)
		switch {
		case got.Total < total.lo:
			m.fail("%s: read on %s [%s, %s]: %s total %d, below %d: these must be counted (strict at once, lax within %v, unless a fault of Redis or of their node is active or healing): %s",
				what, obs.name, m.rel(t0), m.rel(t1), key, got.Total, total.lo, laxDeadline, m.describe(lo))
		case got.Total > total.hi:
			m.fail("%s: read on %s [%s, %s]: %s total %d, above %d: only these may still be counted (a removal within %v, a crashed node's within the reap deadline %v, both later if a fault meanwhile): %s",
				what, obs.name, m.rel(t0), m.rel(t1), key, got.Total, total.hi, removeDeadline, reapDeadline, m.describe(hi))
		case got.Local < local.lo || got.Local > local.hi:
			m.fail("%s: read on %s [%s, %s]: %s local %d, want within [%d, %d]; may count: %s",
				what, obs.name, m.rel(t0), m.rel(t1), key, got.Local, local.lo, local.hi, m.describe(hi))
		}
	}
}

// exactDiff compares a quiet read with the truth; "" if exact.
func (m *model) exactDiff(obs *incarnation, p *presence) string {
	var d []string
	for _, key := range m.keys() {
		var want wsconn.Count
		for _, mb := range m.members[key] {
			if live(mb) {
				want.Total++
				if mb.c.inc == obs {
					want.Local++
				}
			}
		}
		got, ok := countOf(p, key)
		if !ok || got != want {
			d = append(d, fmt.Sprintf("%s %d/%d, want %d/%d (total/local)", key, got.Total, got.Local, want.Total, want.Local))
		}
	}
	return strings.Join(d, ", ")
}

// settleBy is when every count must be exact again, now that every
// operation has returned and every fault has healed: the latest of the
// documented deadlines still running. Call with mu held.
func (m *model) settleBy() time.Time {
	by := time.Now()
	later := func(t time.Time) {
		if t.After(by) {
			by = t
		}
	}
	for _, ms := range m.members {
		for _, mb := range ms {
			if live(mb) {
				later(mb.ack.Add(mb.visDelay))
			} else {
				later(m.visEnd(mb, true))
			}
		}
	}
	for _, w := range m.windows {
		later(w.end())
	}
	return by
}

// prune forgets what can no longer matter once every count was exact.
func (m *model) prune(now time.Time) {
	for k, ms := range m.members {
		m.members[k] = slices.DeleteFunc(ms, func(mb *member) bool {
			if !live(mb) && m.visEnd(mb, true).Before(now) {
				m.gone[k] = append(m.gone[k], mb)
				return true
			}
			return false
		})
	}
	m.windows = slices.DeleteFunc(m.windows, func(w *window) bool { return w.end().Before(now) })
}

// limitInvariant: the members of key admitted under a limit by fail-closed
// nodes while no fault was active or healing, and still open, never exceed
// the limit. (Such an admission saw Redis hold every earlier one and fewer
// than the limit in all; members admitted otherwise only make Redis refuse
// more.) Call with mu held.
func (m *model) limitInvariant(key string, limit int64, what string) {
	m.stats.limitChecks++
	var in []*member
	for _, mb := range m.members[key] {
		if mb.checked && live(mb) {
			in = append(in, mb)
		}
	}
	if int64(len(in)) > limit {
		m.fail("%s: limit of %s exceeded: %d connections admitted under the limit of %d while Redis answered: %s",
			what, key, len(in), limit, m.describe(in))
	}
}

// checkRefusal: the refusal of self's membership by its key's limit, for
// an operation in [s, e], needs at least limit other memberships that may
// have been counted meanwhile (the connection's own earlier ones too).
func (m *model) checkRefusal(self *member, s, e time.Time, what string) {
	m.stats.refusals++
	var may []*member
	for _, mb := range m.members[self.key] {
		if mb != self && !mb.start.After(e) && !m.visEnd(mb, true).Before(s) {
			may = append(may, mb)
		}
	}
	if int64(len(may)) < self.limit {
		m.fail("%s: refused by the %s limit of %d on %s [%s, %s], yet at most %d places were taken: %s",
			what, self.key, self.limit, self.c.inc.name, m.rel(s), m.rel(e), len(may), m.describe(may))
	}
}

// unavailableOK: the operation on inc in [s, e] may fail for want of
// Redis: a fault of Redis or of inc's traffic was active or healing, or
// the node was killed.
func (m *model) unavailableOK(inc *incarnation, s, e time.Time) bool {
	return m.overlaps(inc.s.i, s, e) || !inc.killStart.IsZero() && !inc.killStart.After(e)
}

func (m *model) killed(inc *incarnation) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !inc.killStart.IsZero()
}

// ---------------------------------------------------------------------
// Clients.

type nemCommand struct {
	ID   int64  `json:"id"`
	Op   string `json:"op"`
	Room string `json:"room"`
}

type nemReply struct {
	ID    int64    `json:"id"`
	Rooms []string `json:"rooms"`
	Err   string   `json:"err"`
	Kind  string   `json:"kind"`
	Name  string   `json:"name"`
	Msg   string   `json:"msg"`
}

// nconn is a client connection.
type nconn struct {
	id     int
	inc    *incarnation
	room   string // of the handshake
	tenant string
	user   string // "" for anonymous
	ws     *websocket.Conn
	done   chan struct{} // closed when the reader returns
	err    error         // why the reader returned (set before done closes)

	closing atomic.Bool
	mu      sync.Mutex
	next    int64
	pending map[int64]chan nemReply

	// under model.mu
	base  []*member          // total, tenant
	rooms map[string]*member // current rooms
}

func (c *nconn) read() {
	defer close(c.done)
	for {
		_, b, err := c.ws.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		var rep nemReply
		if err := json.Unmarshal(b, &rep); err != nil {
			c.err = fmt.Errorf("bad reply %q: %v", b, err)
			_ = c.ws.CloseNow()
			return
		}
		c.mu.Lock()
		ch := c.pending[rep.ID]
		delete(c.pending, rep.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
}

// call sends a command and waits for its reply.
func (c *nconn) call(op, room string) (nemReply, error) {
	c.mu.Lock()
	c.next++
	id := c.next
	ch := make(chan nemReply, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	b, _ := json.Marshal(nemCommand{ID: id, Op: op, Room: room})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		return nemReply{}, err
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-c.done:
		select {
		case rep := <-ch:
			return rep, nil
		default:
		}
		return nemReply{}, fmt.Errorf("connection ended: %v", c.err)
	case <-ctx.Done():
		return nemReply{}, fmt.Errorf("no reply: %w", ctx.Err())
	}
}

// ---------------------------------------------------------------------
// The run.

type nemRun struct {
	t     *testing.T
	f     *fleet
	m     *model
	tp    topology
	bin   string
	ctl   *control
	r     *rand.Rand // the nemesis's (test goroutine only)
	seq   atomic.Int64
	admin []*redis.Client // one per master, for FLUSHALL and the like
	// globalStall: every proxy is stalled (nemesis goroutine only)
	globalStall bool
	// sub records the presence events (nemesis_presence_test.go).
	sub *subscriber
	// pids of stopped (SIGSTOP) redis-servers, to resume at cleanup
	stoppedMu sync.Mutex
	stopped   map[int]bool
}

func nemesis(t *testing.T, tp topology, d time.Duration, seed uint64, race bool) {
	h := fnv.New64a()
	h.Write([]byte(tp.name))
	stream := h.Sum64()
	replay := replayCommand(tp.name, seed, d, race)
	t.Logf("seed %d; replay with: %s", seed, replay)

	f := newFleet(t, nil, []string{"ta", "tb", "tc"})
	if tp.cc != nil {
		f.rooms = roomPerMaster(t, tp.cc, f.ns, tp.masters, "r")
		f.rooms = append(f.rooms, roomPerMaster(t, tp.cc, f.ns, tp.masters, nemLaxPrefix)...)
	} else {
		f.rooms = []string{"r0", "r1", "r2", "r3", nemLaxPrefix + "0", nemLaxPrefix + "1"}
	}
	m := &model{t: t, origin: time.Now(), rooms: f.rooms, tenant: f.tenants, members: map[string][]*member{}, gone: map[string][]*member{},
		stats: nemStats{ops: map[string]int{}, faults: map[string]int{}, events: map[string]int{}}}
	run := &nemRun{t: t, f: f, m: m, tp: tp, bin: goBinary(t, "./faults/nemesisnode", race),
		ctl: newControl(), r: rand.New(rand.NewPCG(seed, stream)), stopped: map[int]bool{}}
	t.Cleanup(run.resumeRedis)
	defer stalls.onStall(m.machineStalled)()
	for _, ms := range tp.masters {
		run.admin = append(run.admin, ms.Client(t))
	}

	for i, cfg := range nemSlots {
		s := &slot{i: i, cfg: cfg}
		var via []string
		for _, ms := range tp.masters {
			p := newProxy(t, f, ms.Addr())
			s.proxies = append(s.proxies, p)
			via = append(via, ms.Addr()+"="+p.Addr())
		}
		s.via = strings.Join(via, ",")
		m.slots = append(m.slots, s)
		run.start(s, cfg.name)
	}
	// A node serves presence once it printed its address; wait until every
	// one also reads Redis (15s: settleDeadline, for a cold start).
	run.waitExact("start", time.Now().Add(settleDeadline))
	// One presence event subscriber, from the start: see subscribe.
	run.subscribe(seed, stream)

	// Workers; stopped before the fleet's cleanup (cleanups run last in,
	// first out) closes the nodes.
	var wg sync.WaitGroup
	workers := make([]*worker, nemWorkers)
	for i := range workers {
		workers[i] = &worker{run: run, i: i, r: rand.New(rand.NewPCG(seed, stream+uint64(i)+1))}
		wg.Go(workers[i].loop)
	}
	stopWorkers := sync.OnceFunc(func() {
		run.ctl.stop()
		wg.Wait()
		for _, w := range workers {
			for _, c := range w.conns {
				_ = c.ws.CloseNow()
				<-c.done
			}
		}
	})
	t.Cleanup(stopWorkers)

	start := time.Now()
	round := 0
	for time.Since(start) < d {
		round++
		run.round(round)
		m.mu.Lock()
		failed := m.nfail > 0
		m.mu.Unlock()
		if failed {
			t.Logf("round %d: stopping at the first failing round", round)
			break
		}
	}
	run.sub.stop()
	stopWorkers()
	if race {
		for _, n := range f.nodes {
			if strings.Contains(n.proc.out.String(), "WARNING: DATA RACE") {
				m.failf("node process %s: data race:\n%s", n.name, tail(n.proc.out.String(), 8<<10))
			}
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats
	var ops []string
	nops := 0
	for _, k := range slices.Sorted(maps.Keys(st.ops)) {
		ops = append(ops, fmt.Sprintf("%s %d", k, st.ops[k]))
		nops += st.ops[k]
	}
	var faults []string
	nfaults := 0
	for _, k := range slices.Sorted(maps.Keys(st.faults)) {
		faults = append(faults, fmt.Sprintf("%s %d", k, st.faults[k]))
		nfaults += st.faults[k]
	}
	t.Logf("%s: presence: %s", tp.name, run.presenceStats())
	t.Logf("%s: %v, %d rounds; %d operations (%s); %d faults (%s); checks: %d reads (%d counts) against the model, %d limit invariants, %d refusals, %d quiet periods exact (%d reads); %d failures",
		tp.name, time.Since(start).Round(time.Second), round, nops, strings.Join(ops, ", "), nfaults, strings.Join(faults, ", "),
		st.reads, st.bounds, st.limitChecks, st.refusals, st.quiet, st.quietReads, m.nfail)
	if m.nfail > 0 {
		for _, s := range m.failures {
			t.Error(s)
		}
		t.Errorf("%d failures with seed %d; replay with:\n\t%s", m.nfail, seed, replay)
	}
}

// roomPerMaster returns one room name per master, in master order, whose
// counter's key lives on that master: prefix followed by a number.
func roomPerMaster(t *testing.T, cc *redis.ClusterClient, ns string, masters []*redistest.Server, prefix string) []string {
	t.Helper()
	found := make([]string, len(masters))
	missing := len(masters)
	for i := 0; missing > 0; i++ {
		if i > 1000 {
			t.Fatalf("no %s room found on every master: %v", prefix, found)
		}
		room := prefix + strconv.Itoa(i)
		if mi := masterOf(t, cc, masters, roomKey(t, ns, room))[0]; found[mi] == "" {
			found[mi] = room
			missing--
		}
	}
	return found
}

// start runs a node process in s under InstanceID id and makes it the
// slot's current one.
func (run *nemRun) start(s *slot, id string) *incarnation {
	s.gen++
	name := id
	if s.gen > 1 {
		name = fmt.Sprintf("%s#%d", id, s.gen)
	}
	args := []string{
		"-addr", "127.0.0.1:0",
		"-redis", run.tp.seeds(),
		"-via", s.via,
		"-namespace", run.f.ns,
		"-instance", id,
		"-threshold", threshold.String(),
		"-heartbeat", heartbeat.String(),
		"-flush", flushIvl.String(),
		"-redis-timeout", nemRedisTimeout.String(),
		"-per-room", strconv.FormatInt(s.cfg.perRoom, 10),
		"-per-tenant", strconv.FormatInt(s.cfg.perTenant, 10),
		"-lax-rooms", nemLaxPrefix,
	}
	if run.tp.cc != nil {
		args = append(args, "-cluster")
	}
	if s.cfg.failClosed {
		args = append(args, "-fail-closed")
	}
	if s.cfg.lax {
		args = append(args, "-lax")
	}
	n := run.f.startProcess(name, run.bin, args...)
	inc := &incarnation{s: s, id: id, name: name, n: n}
	run.m.mu.Lock()
	s.cur = inc
	run.m.note("node %s started at %s", name, n.base)
	run.m.mu.Unlock()
	return inc
}

// alive returns the slots' current processes that are not killed.
func (run *nemRun) alive() []*incarnation {
	run.m.mu.Lock()
	defer run.m.mu.Unlock()
	var out []*incarnation
	for _, s := range run.m.slots {
		if s.cur != nil && s.cur.killStart.IsZero() {
			out = append(out, s.cur)
		}
	}
	return out
}

// waitExact polls every live node until all report every count exactly,
// and distinct users and member lists too (usersExact), and until the
// presence events recorded since the start replay into the model's member
// sets (the subscriber, once it runs); it records a failure if a read sent
// after by is not exact, or if the events still differ eventsDeadline
// later. Then it checks the joins and leaves recorded since the last time
// against the model (checkEvents).
func (run *nemRun) waitExact(what string, by time.Time) {
	m := run.m
	start := time.Now()
	evBy := by.Add(eventsDeadline)
	for {
		sent := time.Now()
		var diffs []string
		seqs := map[string][]int64{}
		for _, inc := range run.alive() {
			if d := run.usersExact(inc, seqs); d != "" {
				diffs = append(diffs, inc.name+": "+d)
			}
		}
		evDiff := ""
		if run.sub != nil && len(diffs) == 0 {
			evDiff = run.sub.diff(seqs)
		}
		if len(diffs) == 0 && evDiff == "" {
			m.mu.Lock()
			m.stats.quiet++
			m.note("%s: every count, user and member exact after %v (deadline %v)", what, time.Since(start).Round(time.Millisecond), by.Sub(start).Round(time.Millisecond))
			run.checkEvents()
			m.prune(sent)
			m.mu.Unlock()
			return
		}
		switch {
		case len(diffs) > 0 && sent.After(by):
			m.mu.Lock()
			m.fail("%s: counts, users or members not exact by the deadline %s (%v after the quiet period began): %s", what, m.rel(by), by.Sub(start).Round(time.Millisecond), strings.Join(diffs, "; "))
			run.checkEvents()
			m.mu.Unlock()
			run.diagnose()
			return
		case evDiff != "" && sent.After(evBy):
			m.mu.Lock()
			m.fail("%s: presence events (via %s) do not replay into the model's members by %s (%v after the counts' deadline): %s", what, run.sub.node(), m.rel(evBy), eventsDeadline, evDiff)
			run.checkEvents()
			m.mu.Unlock()
			return
		}
		time.Sleep(quietPoll)
	}
}

// ---------------------------------------------------------------------
// Faults.

// event is one step of a round's fault plan.
type event struct {
	at time.Duration
	do func()
}

// diagnose, after counts were found wrong, logs what Redis holds for each
// counter (every instance's slice, session and sequence fields), and
// whether the counts become exact later, so that a reader can tell a
// slice nothing removes from one removed late.
func (run *nemRun) diagnose() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c redis.UniversalClient = run.admin[0]
	if run.tp.cc != nil {
		c = run.tp.cc
	}
	sp, err := keyspace.NewSpace("i", run.f.ns)
	if err != nil {
		run.t.Logf("diagnose: %v", err)
		return
	}
	names, err := sp.Scan(ctx, c)
	if err != nil {
		run.t.Logf("diagnose: SCAN: %v", err)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		h, err := c.HGetAll(ctx, sp.Key(n)).Result()
		fmt.Fprintf(&b, "\n\t%s: %v %v", n, h, err)
	}
	run.t.Logf("diagnose: what Redis holds after the failure:%s", b.String())
	start := time.Now()
	for time.Since(start) < 2*threshold+5*time.Second {
		exact := true
		for _, inc := range run.alive() {
			if run.usersExact(inc, map[string][]int64{}) != "" {
				exact = false
				break
			}
		}
		if exact {
			run.t.Logf("diagnose: every count exact %v after the failure", time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(quietPoll)
	}
	run.t.Logf("diagnose: counts still not exact %v after the failure", time.Since(start).Round(time.Millisecond))
}

// maxHold is the longest a partition lasts: it holds a node's Redis
// traffic, and delivers it when it heals (unless it drops it).
const maxHold = 4 * time.Second

// round runs the workers and a random fault plan for a few seconds, heals
// every fault, restarts killed nodes, stops the workers and waits for
// every count on every node to be exact by the documented deadline.
func (run *nemRun) round(n int) {
	r, m := run.r, run.m
	d := time.Duration(2500+r.IntN(2500)) * time.Millisecond
	var plan []event
	globalFree := time.Duration(0) // global faults do not overlap
	nf := []int{0, 1, 1, 2, 2, 2, 3}[r.IntN(7)]
	for range nf {
		at := time.Duration(r.Int64N(int64(d) * 8 / 10))
		dur := time.Duration(200+r.IntN(2800)) * time.Millisecond
		global := func() time.Duration {
			at = max(at, globalFree)
			globalFree = at + dur + 50*time.Millisecond
			return at
		}
		switch k := r.IntN(100); {
		case k < 20:
			s := m.slots[r.IntN(len(m.slots))]
			same := r.IntN(2) == 0
			back := at + time.Duration(100+r.IntN(3900))*time.Millisecond
			plan = append(plan, event{at, func() { run.kill(s) }}, event{back, func() { run.restart(s, same) }})
		case k < 40:
			s := m.slots[r.IntN(len(m.slots))]
			drop := r.IntN(2) == 0
			dur = time.Duration(300+r.IntN(int((maxHold-300*time.Millisecond)/time.Millisecond))) * time.Millisecond
			var w *window
			plan = append(plan, event{at, func() { w = run.partition(s) }}, event{at + dur, func() { run.healPartition(s, w, drop) }})
		case k < 52:
			drop := r.IntN(2) == 0
			var w *window
			global()
			plan = append(plan, event{at, func() { w = run.stallAll() }}, event{at + dur, func() { run.unstallAll(w, drop) }})
		case k < 64:
			mi := r.IntN(len(run.tp.masters))
			var pid int
			var w *window
			global()
			if run.tp.cc != nil {
				// Shorter than cluster-node-timeout (2s): a longer stop
				// would fail the cluster over nothing we test here. One
				// event stops and resumes, so that a slow event between
				// the two (a node's restart under load) cannot stretch it.
				dur = min(dur, 1500*time.Millisecond)
				plan = append(plan, event{at, func() {
					pid, w = run.sigstop(mi)
					time.Sleep(dur) // the length of the fault
					run.sigcont(pid, w)
				}})
				break
			}
			plan = append(plan, event{at, func() { pid, w = run.sigstop(mi) }}, event{at + dur, func() { run.sigcont(pid, w) }})
		case k < 76:
			mi := r.IntN(len(run.tp.masters))
			dur = time.Duration(r.IntN(1500)) * time.Millisecond
			var w *window
			global()
			plan = append(plan, event{at, func() { w = run.redisDown(mi) }}, event{at + dur, func() { run.redisUp(mi, w) }})
		case k < 88:
			dur = 0
			global()
			plan = append(plan, event{at, run.flushAll})
		default:
			dur = 0
			global()
			plan = append(plan, event{at, run.scriptFlush})
		}
	}
	slices.SortStableFunc(plan, func(a, b event) int { return int(a.at - b.at) })
	m.notef("round %d: %v, %d faults", n, d, nf)

	run.ctl.resume()
	start := time.Now()
	for _, e := range plan {
		if wait := time.Until(start.Add(min(e.at, d))); wait > 0 {
			time.Sleep(wait) // pacing the schedule
		}
		e.do()
	}
	if wait := time.Until(start.Add(d)); wait > 0 {
		time.Sleep(wait) // pacing the schedule
	}
	// Heal: plans heal what they start; restart whatever is still dead.
	for _, s := range m.slots {
		if s.parted != nil {
			run.healPartition(s, s.parted, false)
		}
		if run.m.killed(s.cur) {
			run.restart(s, r.IntN(2) == 0)
		}
	}
	run.ctl.pause()
	run.checkProcesses()
	m.mu.Lock()
	by := m.settleBy()
	m.mu.Unlock()
	run.waitExact(fmt.Sprintf("round %d quiet period", n), by)
}

// checkProcesses records a failure for a node process that exited on its
// own.
func (run *nemRun) checkProcesses() {
	for _, inc := range run.alive() {
		select {
		case <-inc.n.proc.done:
			run.m.failf("node %s exited on its own (%v):\n%s", inc.name, inc.n.proc.cmd.ProcessState, tail(inc.n.proc.out.String(), 4<<10))
			run.m.mu.Lock()
			inc.killStart, inc.killEnd = time.Now(), time.Now()
			run.m.mu.Unlock()
		default:
		}
	}
}

// impaired counts slots that are killed or partitioned; faults on nodes
// keep at least two healthy.
func (run *nemRun) impaired() int {
	n := 0
	for _, s := range run.m.slots {
		if s.parted != nil || run.m.killed(s.cur) {
			n++
		}
	}
	return n
}

func (run *nemRun) fault(kind string) {
	run.m.mu.Lock()
	run.m.stats.faults[kind]++
	run.m.mu.Unlock()
}

func (run *nemRun) kill(s *slot) {
	m := run.m
	inc := s.cur
	if m.killed(inc) || run.impaired() >= len(m.slots)-2 {
		return
	}
	run.fault("kill")
	m.mu.Lock()
	inc.killStart = time.Now()
	m.note("fault SIGKILL %s", inc.name)
	m.mu.Unlock()
	inc.n.kill()
	m.mu.Lock()
	inc.killEnd = time.Now()
	m.note("%s is gone", inc.name)
	m.mu.Unlock()
}

func (run *nemRun) restart(s *slot, same bool) {
	if !run.m.killed(s.cur) {
		return
	}
	id := s.cfg.name
	kind := "restart same InstanceID"
	if !same {
		id = fmt.Sprintf("%s-g%d", s.cfg.name, s.gen+1)
		kind = "restart new InstanceID"
	}
	run.fault(kind)
	run.start(s, id)
}

func (run *nemRun) partition(s *slot) *window {
	if s.parted != nil || run.m.killed(s.cur) || run.impaired() >= len(run.m.slots)-2 {
		return nil
	}
	run.fault("partition")
	w := run.m.openWindow("partition of "+s.cur.name, s.i, true, false)
	for _, p := range s.proxies {
		p.Stall(true)
	}
	s.parted = w
	return w
}

func (run *nemRun) healPartition(s *slot, w *window, drop bool) {
	if w == nil || s.parted != w {
		return
	}
	if drop {
		for _, p := range s.proxies {
			p.CutAll() // while stalled: the held traffic is lost
		}
	}
	if !run.globalStall { // else unstallAll resumes the slot's traffic
		for _, p := range s.proxies {
			p.Stall(false)
		}
	}
	s.parted = nil
	run.m.heal(w)
}

func (run *nemRun) stallAll() *window {
	run.fault("stall Redis (proxies)")
	w := run.m.openWindow("stall of every node's Redis traffic", -1, true, false)
	run.globalStall = true
	for _, s := range run.m.slots {
		for _, p := range s.proxies {
			p.Stall(true)
		}
	}
	return w
}

func (run *nemRun) unstallAll(w *window, drop bool) {
	for _, s := range run.m.slots {
		for _, p := range s.proxies {
			if drop {
				p.CutAll()
			}
			if s.parted == nil {
				p.Stall(false)
			}
		}
	}
	run.globalStall = false
	run.m.heal(w)
}

var processIDRE = regexp.MustCompile(`(?m)^process_id:(\d+)`)

// sigstop stops redis-server mi (SIGSTOP): connections stay open, nothing
// is answered, TIME goes on.
func (run *nemRun) sigstop(mi int) (int, *window) {
	ms := run.tp.masters[mi]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := run.admin[mi].Info(ctx, "server").Result()
	sm := processIDRE.FindStringSubmatch(info)
	if err != nil || sm == nil {
		run.t.Fatalf("INFO server on %s: %v", ms.Addr(), err)
	}
	pid, _ := strconv.Atoi(sm[1])
	run.fault("SIGSTOP redis-server")
	w := run.m.openWindow(fmt.Sprintf("SIGSTOP of redis-server %s", ms.Addr()), -1, true, false)
	run.stoppedMu.Lock()
	run.stopped[pid] = true
	run.stoppedMu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		run.t.Fatalf("SIGSTOP %d: %v", pid, err)
	}
	return pid, w
}

func (run *nemRun) sigcont(pid int, w *window) {
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		run.t.Fatalf("SIGCONT %d: %v", pid, err)
	}
	run.stoppedMu.Lock()
	delete(run.stopped, pid)
	run.stoppedMu.Unlock()
	run.m.heal(w)
}

// resumeRedis sends SIGCONT to servers a failed test left stopped.
func (run *nemRun) resumeRedis() {
	run.stoppedMu.Lock()
	defer run.stoppedMu.Unlock()
	for pid := range run.stopped {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
}

func (run *nemRun) redisDown(mi int) *window {
	run.dataLoss()
	what := "restart of redis-server (empty)"
	if run.tp.cc != nil {
		what = "restart of a cluster master (empty)"
	}
	run.fault(what)
	w := run.m.openWindow(fmt.Sprintf("%s %s", what, run.tp.masters[mi].Addr()), -1, false, true)
	run.tp.masters[mi].Kill()
	return w
}

func (run *nemRun) redisUp(mi int, w *window) {
	run.tp.masters[mi].Restart(run.t) // a cluster master: and the cluster is ok again
	run.m.heal(w)
}

func (run *nemRun) flushAll() {
	run.dataLoss()
	run.fault("FLUSHALL")
	w := run.m.openWindow("FLUSHALL", -1, false, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, ms := range run.tp.masters {
		if err := run.admin[i].FlushAll(ctx).Err(); err != nil {
			run.t.Fatalf("FLUSHALL on %s: %v", ms.Addr(), err)
		}
	}
	run.m.heal(w)
}

// scriptFlush empties the script caches. Nothing is lost and Redis keeps
// answering, so it opens no window: every check stays as strict.
func (run *nemRun) scriptFlush() {
	run.fault("SCRIPT FLUSH")
	run.m.notef("fault SCRIPT FLUSH")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, ms := range run.tp.masters {
		if err := run.admin[i].ScriptFlush(ctx).Err(); err != nil {
			run.t.Fatalf("SCRIPT FLUSH on %s: %v", ms.Addr(), err)
		}
	}
}

// ---------------------------------------------------------------------
// Workers.

// control pauses and stops the workers.
type control struct {
	mu      sync.Mutex
	cond    *sync.Cond
	paused  bool
	stopped bool
	busy    int
	stopc   chan struct{}
}

func newControl() *control {
	c := &control{paused: true, stopc: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// enter waits until the workers may run; false once stopped.
func (c *control) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.paused && !c.stopped {
		c.cond.Wait()
	}
	if c.stopped {
		return false
	}
	c.busy++
	return true
}

func (c *control) leave() {
	c.mu.Lock()
	c.busy--
	c.mu.Unlock()
	c.cond.Broadcast()
}

// pause returns once no worker is in an operation.
func (c *control) pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = true
	for c.busy > 0 {
		c.cond.Wait()
	}
}

func (c *control) resume() {
	c.mu.Lock()
	c.paused = false
	c.mu.Unlock()
	c.cond.Broadcast()
}

func (c *control) stop() {
	c.mu.Lock()
	if !c.stopped {
		c.stopped = true
		close(c.stopc)
	}
	c.mu.Unlock()
	c.cond.Broadcast()
}

type worker struct {
	run   *nemRun
	i     int
	r     *rand.Rand
	conns []*nconn
}

func (w *worker) loop() {
	for w.run.ctl.enter() {
		w.step()
		w.run.ctl.leave()
		select {
		case <-w.run.ctl.stopc:
			return
		case <-time.After(time.Duration(10+w.r.IntN(70)) * time.Millisecond): // pacing
		}
	}
}

// live returns the worker's open connections, forgetting those of killed
// nodes.
// A connection that ended while its node lives was dropped: a failure
// (open connections are never closed because Redis fails).
func (w *worker) live() []*nconn {
	w.conns = slices.DeleteFunc(w.conns, func(c *nconn) bool {
		if w.run.m.killed(c.inc) {
			_ = c.ws.CloseNow()
			<-c.done
			return true
		}
		select {
		case <-c.done:
			w.closeConn(c, "close (after the drop)")
			return true
		default:
			return false
		}
	})
	return w.conns
}

func (w *worker) pickNode(not *incarnation) *incarnation {
	var alive []*incarnation
	for _, inc := range w.run.alive() {
		if inc != not {
			alive = append(alive, inc)
		}
	}
	if len(alive) == 0 {
		return nil
	}
	return alive[w.r.IntN(len(alive))]
}

func (w *worker) step() {
	r := w.r
	conns := w.live()
	x := r.IntN(100)
	if len(conns) == 0 || x < 25 && len(conns) < nemConnsPerWkr {
		if inc := w.pickNode(nil); inc != nil {
			tenant := ""
			if k := r.IntN(len(w.run.f.tenants) + 1); k < len(w.run.f.tenants) {
				tenant = w.run.f.tenants[k]
			}
			user := nemUsers[r.IntN(len(nemUsers))]
			if c := w.dial(inc, w.run.f.rooms[r.IntN(len(w.run.f.rooms))], tenant, user, "dial"); c != nil && r.IntN(2) == 0 {
				w.read(w.pickNode(inc), fmt.Sprintf("read after dialling c%d", c.id))
			}
		}
		return
	}
	c := conns[r.IntN(len(conns))]
	switch {
	case x < 40:
		w.close(c, "close")
	case x < 62: // a join, or from 58 on two of the same room at once
		var out []string
		w.run.m.mu.Lock()
		for _, room := range w.run.f.rooms {
			if c.rooms[room] == nil {
				out = append(out, room)
			}
		}
		w.run.m.mu.Unlock()
		if len(out) == 0 {
			w.read(w.pickNode(nil), "read")
			return
		}
		w.join(c, out[r.IntN(len(out))], x >= 58)
	case x < 74:
		w.run.m.mu.Lock()
		in := slices.Sorted(maps.Keys(c.rooms))
		w.run.m.mu.Unlock()
		if len(in) == 0 {
			w.read(w.pickNode(nil), "read")
			return
		}
		w.leave(c, in[r.IntN(len(in))])
	case x < 82:
		w.close(c, "redial: close")
		if !w.run.m.killed(c.inc) {
			if nc := w.dial(c.inc, c.room, c.tenant, c.user, "redial"); nc != nil {
				w.read(w.pickNode(c.inc), fmt.Sprintf("read after redialling c%d as c%d", c.id, nc.id))
			}
		}
	default:
		w.read(w.pickNode(nil), "read")
	}
}

// timed checks an operation's duration, less the machine's stalls,
// against RedisTimeout plus slack.
func (w *worker) timed(what string, inc *incarnation, s, e time.Time) {
	if ran := stalls.ran(s, e); ran > nemRedisTimeout+nemBoundSlack {
		took := e.Sub(s)
		m := w.run.m
		m.mu.Lock()
		defer m.mu.Unlock()
		if inc.killStart.IsZero() || inc.killStart.After(e) {
			m.fail("%s on %s took %v [%s, %s], %v of it with the machine running: RedisTimeout is %v (+%v of slack)",
				what, inc.name, took.Round(time.Millisecond), m.rel(s), m.rel(e), ran.Round(time.Millisecond), nemRedisTimeout, nemBoundSlack)
		}
	}
}

// limitRE finds the limit in a LimitError's text.
var limitRE = regexp.MustCompile(`(\w+) limit of (\d+) reached for "([^"]*)"`)

// refusedBy returns the counter and the limit a 429's body names: a JSON
// error with cap, name and limit, or a LimitError's text.
func refusedBy(body string) (key string, limit int64, ok bool) {
	var j struct {
		Error, Cap, Name string
		Limit            int64
	}
	kind, name := "", ""
	if json.Unmarshal([]byte(body), &j) == nil && j.Error == "limit" {
		kind, name, limit = j.Cap, j.Name, j.Limit
	} else if sm := limitRE.FindStringSubmatch(body); sm != nil {
		kind, name = sm[1], sm[3]
		limit, _ = strconv.ParseInt(sm[2], 10, 64)
	}
	prefix, ok := map[string]string{"tenant": "t:", "room": "r:"}[kind]
	return prefix + name, limit, ok
}

// dial opens a connection to inc: the handshake room and tenant.
func (w *worker) dial(inc *incarnation, room, tenant, user, what string) *nconn {
	run, m := w.run, w.run.m
	c := &nconn{id: int(run.seq.Add(1)), inc: inc, room: room, tenant: tenant, user: user, done: make(chan struct{}),
		pending: map[int64]chan nemReply{}, rooms: map[string]*member{}}
	what = fmt.Sprintf("%s c%d (room %s, tenant %q, user %q)", what, c.id, room, tenant, user)
	cfg := inc.s.cfg
	m.mu.Lock()
	s := time.Now()
	add := func(key string, limit int64, vis time.Duration) *member {
		mb := &member{c: c, key: key, limit: limit, visDelay: vis, start: s}
		m.members[key] = append(m.members[key], mb)
		return mb
	}
	laxIf := func(lax bool) time.Duration {
		if lax {
			return laxDeadline
		}
		return 0
	}
	c.base = append(c.base, add("total", 0, laxIf(cfg.lax)))
	if tenant != "" {
		c.base = append(c.base, add("t:"+tenant, cfg.perTenant, laxIf(cfg.perTenant == 0 && cfg.lax)))
	}
	rm := add("r:"+room, cfg.perRoom, laxIf(cfg.perRoom == 0 && strings.HasPrefix(room, nemLaxPrefix)))
	all := append(slices.Clone(c.base), rm)
	m.note("%s on %s", what, inc.name)
	m.mu.Unlock()

	q := url.Values{}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	if user != "" {
		q.Set("user", user)
	}
	u := "ws" + strings.TrimPrefix(inc.n.base, "http") + "/ws/" + url.PathEscape(room) + "?" + q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: run.f.ws})
	if err == nil {
		c.ws = ws
		var b []byte
		if _, b, err = ws.Read(ctx); err == nil && string(b) != "hello" {
			err = fmt.Errorf("first message %q, want hello", b)
		}
		if err != nil {
			_ = ws.CloseNow()
		}
	}
	e := time.Now()
	w.timed(what, inc, s, e)

	m.mu.Lock()
	defer m.mu.Unlock()
	failAll := func() {
		for _, mb := range all {
			mb.failed, mb.rmEnd = true, e
		}
	}
	if err == nil {
		healthy := !m.anyFault(s, e)
		for _, mb := range all {
			mb.ack = e
			mb.checked = mb.limit > 0 && cfg.failClosed && healthy
		}
		c.rooms[room] = rm
		m.stats.ops["dial ok"]++
		m.note("%s: ok", what)
		for _, mb := range all {
			if mb.checked {
				m.limitInvariant(mb.key, mb.limit, what)
			}
		}
		go c.read()
		w.conns = append(w.conns, c)
		return c
	}
	failAll()
	code := 0
	body := ""
	if resp != nil {
		code = resp.StatusCode
		if resp.Body != nil { // the first 1KiB, kept by websocket.Dial
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
	}
	switch {
	case code == http.StatusTooManyRequests:
		m.stats.ops["dial refused"]++
		m.note("%s: 429 %s", what, strings.TrimSpace(body))
		key, limit, ok := refusedBy(body)
		if !ok {
			m.fail("%s on %s: 429 without a limit named: %q", what, inc.name, body)
			return nil
		}
		i := slices.IndexFunc(all, func(mb *member) bool { return mb.key == key })
		if i < 0 || all[i].limit != limit {
			m.fail("%s on %s: refused by a limit it does not have: %q", what, inc.name, body)
			return nil
		}
		m.checkRefusal(all[i], s, e, what)
	case code == http.StatusServiceUnavailable:
		m.stats.ops["dial unavailable"]++
		m.note("%s: 503 %s", what, strings.TrimSpace(body))
		if !m.unavailableOK(inc, s, e) {
			m.fail("%s on %s [%s, %s]: 503 (%s) while no fault of Redis or of the node was active or healing", what, inc.name, m.rel(s), m.rel(e), strings.TrimSpace(body))
		}
	default:
		m.stats.ops["dial failed"]++
		m.note("%s: %v (%s)", what, err, status(resp))
		if inc.killStart.IsZero() || inc.killStart.After(e) {
			m.fail("%s on %s [%s, %s]: %v (%s) while the node lives", what, inc.name, m.rel(s), m.rel(e), err, status(resp))
		}
	}
	return nil
}

// close closes c with the close handshake and forgets it.
func (w *worker) close(c *nconn, what string) {
	w.closeConn(c, what)
	w.conns = slices.DeleteFunc(w.conns, func(x *nconn) bool { return x == c })
}

// closeConn closes c with the close handshake. A connection that had ended
// already while its node lives was dropped: a failure (open connections
// are never closed because Redis fails).
func (w *worker) closeConn(c *nconn, what string) {
	m := w.run.m
	what = fmt.Sprintf("%s c%d", what, c.id)
	m.mu.Lock()
	s := time.Now()
	var ms []*member
	ms = append(ms, c.base...)
	for _, mb := range c.rooms {
		ms = append(ms, mb)
	}
	for _, mb := range ms {
		mb.rmStart = s
	}
	m.note("%s on %s", what, c.inc.name)
	m.mu.Unlock()
	c.closing.Store(true)
	select {
	case <-c.done: // it ended before: the node died, or it dropped the connection
		m.mu.Lock()
		if c.inc.killStart.IsZero() {
			m.fail("%s: the connection had ended while its node %s lives: %v", what, c.inc.name, c.err)
		}
		m.mu.Unlock()
	default:
	}
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	<-c.done
	e := time.Now()
	m.mu.Lock()
	for _, mb := range ms {
		mb.rmEnd = e
	}
	c.rooms = map[string]*member{}
	m.stats.ops["close"]++
	m.mu.Unlock()
}

// join joins c to room; twice at once if double.
func (w *worker) join(c *nconn, room string, double bool) {
	m := w.run.m
	cfg := c.inc.s.cfg
	what := fmt.Sprintf("join c%d %s", c.id, room)
	if double {
		what = "double " + what
	}
	vis := time.Duration(0)
	if cfg.perRoom == 0 && strings.HasPrefix(room, nemLaxPrefix) {
		vis = laxDeadline
	}
	m.mu.Lock()
	s := time.Now()
	mb := &member{c: c, key: "r:" + room, limit: cfg.perRoom, visDelay: vis, start: s}
	m.members[mb.key] = append(m.members[mb.key], mb)
	m.note("%s on %s", what, c.inc.name)
	m.mu.Unlock()

	n := 1
	if double {
		n = 2
	}
	reps := make([]nemReply, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { reps[i], errs[i] = c.call("join", room) })
	}
	wg.Wait()
	e := time.Now()
	w.timed(what, c.inc, s, e)

	m.mu.Lock()
	ok, missing := false, false
	for i := range n {
		rep, err := reps[i], errs[i]
		switch {
		case err != nil:
			m.stats.ops["join failed"]++
			m.note("%s: %v", what, err)
			if c.inc.killStart.IsZero() || c.inc.killStart.After(e) {
				m.fail("%s on %s [%s, %s]: %v while the node lives", what, c.inc.name, m.rel(s), m.rel(e), err)
			}
		case rep.Err == "":
			m.stats.ops["join ok"]++
			m.note("%s: ok, rooms %v", what, rep.Rooms)
			if !slices.Contains(rep.Rooms, room) {
				missing = true
				m.fail("%s on %s [%s, %s]: Join returned nil, yet the connection's rooms are %v", what, c.inc.name, m.rel(s), m.rel(e), rep.Rooms)
			}
			ok = true
		case rep.Err == "limit":
			m.stats.ops["join refused"]++
			m.note("%s: %s", what, rep.Msg)
			if rep.Kind != "room" || rep.Name != room || cfg.perRoom == 0 {
				m.fail("%s on %s: refused by a limit it does not have: %s", what, c.inc.name, rep.Msg)
			} else if !double {
				m.checkRefusal(mb, s, e, what)
			}
		case rep.Err == "unavailable":
			m.stats.ops["join unavailable"]++
			m.note("%s: %s", what, rep.Msg)
			if !m.unavailableOK(c.inc, s, e) {
				m.fail("%s on %s [%s, %s]: %s while no fault of Redis or of the node was active or healing", what, c.inc.name, m.rel(s), m.rel(e), rep.Msg)
			}
		default:
			m.stats.ops["join failed"]++
			m.note("%s: %s %s", what, rep.Err, rep.Msg)
			if c.inc.killStart.IsZero() || c.inc.killStart.After(e) {
				m.fail("%s on %s [%s, %s]: %s while the node lives", what, c.inc.name, m.rel(s), m.rel(e), rep.Msg)
			}
		}
	}
	switch {
	case ok && !missing:
		mb.ack = e
		mb.checked = mb.limit > 0 && cfg.failClosed && !m.anyFault(s, e)
		c.rooms[room] = mb
		if mb.checked {
			m.limitInvariant(mb.key, mb.limit, what)
		}
	case ok:
		// The node said yes, yet the connection is not in the room: the
		// truth is unknown, so the connection goes.
		mb.ack, mb.uncertain = e, true
		c.rooms[room] = mb
	default:
		mb.failed, mb.rmEnd = true, e
	}
	m.mu.Unlock()
	if missing {
		w.close(c, "close (after the inconsistent join)")
	}
}

// leave takes c out of room.
func (w *worker) leave(c *nconn, room string) {
	m := w.run.m
	what := fmt.Sprintf("leave c%d %s", c.id, room)
	m.mu.Lock()
	s := time.Now()
	mb := c.rooms[room]
	mb.rmStart = s
	delete(c.rooms, room)
	m.note("%s on %s", what, c.inc.name)
	m.mu.Unlock()
	rep, err := c.call("leave", room)
	e := time.Now()
	w.timed(what, c.inc, s, e)
	m.mu.Lock()
	defer m.mu.Unlock()
	mb.rmEnd = e
	switch {
	case err != nil || rep.Err != "":
		m.stats.ops["leave failed"]++
		m.note("%s: %v %s", what, err, rep.Msg)
		if c.inc.killStart.IsZero() || c.inc.killStart.After(e) {
			m.fail("%s on %s [%s, %s]: %v %s while the node lives", what, c.inc.name, m.rel(s), m.rel(e), err, rep.Msg)
		}
	default:
		m.stats.ops["leave ok"]++
		if slices.Contains(rep.Rooms, room) {
			m.fail("%s on %s: Leave returned nil, yet the connection's rooms are %v", what, c.inc.name, rep.Rooms)
		}
	}
}

// read reads inc's presence and checks it.
func (w *worker) read(inc *incarnation, what string) {
	if inc == nil {
		return
	}
	run, m := w.run, w.run.m
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := time.Now()
	p, err := run.f.presence(ctx, inc.n)
	e := time.Now()
	w.timed(what, inc, s, e)
	if err == nil {
		m.count("read ok")
		m.checkRead(inc, s, e, p, what)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var es *errStatus
	if errors.As(err, &es) && es.code == http.StatusServiceUnavailable {
		m.stats.ops["read unavailable"]++
		if !m.unavailableOK(inc, s, e) {
			m.fail("%s on %s [%s, %s]: %v while no fault of Redis or of the node was active or healing", what, inc.name, m.rel(s), m.rel(e), err)
		}
		return
	}
	m.stats.ops["read failed"]++
	if inc.killStart.IsZero() || inc.killStart.After(e) {
		m.fail("%s on %s [%s, %s]: %v while the node lives", what, inc.name, m.rel(s), m.rel(e), err)
	}
}
