// Package sim runs many headcount nodes in one process against a Redis
// Cluster and measures what they cost Redis: the engine of cmd/hcsim (see
// SCALING.md).
//
// Each node is a wsconn.Tracker with a go-redis ClusterClient of its own;
// connections are counted with Tracker.Admit and Lease.Release (no
// sockets), each in one room. The simulation keeps its own model of every
// count and checks, after crashing some nodes (their Redis clients are
// closed without Tracker.Close, so they stop heartbeating as a crashed
// process does), that every surviving node reads exactly the model. With
// users (Config.Users), presence is on and the crash's leave events are
// checked too (presence.go).
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// Config is one simulation.
type Config struct {
	Addrs     []string // seeds of an existing cluster; empty: start Masters
	Masters   int      // masters to start when Addrs is empty
	Nodes     int
	Rooms     int
	Conns     int
	Namespace string // default "hcsim"

	Threshold time.Duration // DeadInstanceThreshold
	Heartbeat time.Duration // HeartbeatInterval; 0: Threshold/3
	Flush     time.Duration // FlushInterval; 0: wsconn's default (20ms)

	LaxNodes float64 // fraction of nodes counting lax (Options.Lax and every room lax)
	// Users, if set, turns presence on (Options.Presence) and gives each
	// connection one of this many users, at random: the checks then cover
	// distinct users too, and a crash its leave events.
	Users   int
	Crash   int // nodes to crash
	Workers int // concurrent Admits while building up

	Rest       time.Duration // measuring window at rest
	ChurnRate  int           // connects per second (and as many disconnects) under churn
	ChurnFor   time.Duration // measuring window of each churn phase
	Steps      int           // build-up steps (a progress line each)
	ReadChecks int           // surviving nodes whose every room is read after the crash (0: all)
	// RenewFor, if set, adds a window at rest while the slices' leases are
	// renewed (from half a lease after the build-up, the lease being the
	// larger of 10 minutes and 10 thresholds): the cost at rest, renewals
	// included.
	RenewFor time.Duration
	// Log, if set, receives every node's log (wsconn.Options.Logger): a
	// sweep of a crashed node says when it ended and how long it took.
	Log *slog.Logger
}

// lease is the slice lease wsconn gives the engine (icounter's default).
func (c *Config) lease() time.Duration { return max(10*time.Minute, 10*c.Threshold) }

func (c *Config) defaults() {
	if c.Masters == 0 {
		c.Masters = 3
	}
	if c.Namespace == "" {
		c.Namespace = "hcsim"
	}
	if c.Threshold == 0 {
		c.Threshold = 30 * time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = c.Threshold / 3
	}
	if c.Workers == 0 {
		c.Workers = 256
	}
	if c.Steps == 0 {
		c.Steps = 10
	}
}

// MasterStats are one master's figures over a window.
type MasterStats struct {
	Addr        string
	CPUPerSec   float64 // Redis CPU seconds per second (used_cpu_sys + used_cpu_user)
	CmdsPerSec  float64 // total_commands_processed per second (what clients sent)
	CallsPerSec float64 // INFO commandstats calls per second (also the commands scripts run)
	EvalPerSec  float64 // EVALSHA + EVAL per second (script runs)
}

// Window is the cluster's figures over one measuring window.
type Window struct {
	Name     string
	Seconds  float64
	Connects int                // Admits done in the window
	Calls    map[string]float64 // calls per command over the window, all masters
	Masters  []MasterStats
}

// Report is what a simulation measured.
type Report struct {
	Config Config

	BuildSeconds float64
	Slices       int   // (room, node) pairs holding connections at the end of the build-up
	Slices1      int   // the same after the one-connection-per-room step
	MemBase      int64 // used_memory less client buffers, all masters, with the nodes started and no connection
	MemRooms     int64 // after one connection per room
	MemFull      int64 // after every connection
	MemPerConn   float64
	MemPerRoom   float64 // a room holding one slice: its keys and the slice
	MemPerSlice  float64
	MemPerNode   float64 // registry, canaries, index key: (MemBase - empty) / nodes
	MemMasters   []int64 // used_memory per master at the end of the build-up
	ClientsBase  int     // connected_clients, all masters, at MemBase
	ClientsFull  int     // the same at MemFull

	HeapPerNode       float64 // bytes: process HeapInuse after GC / nodes (includes the simulation's own model)
	GoroutinesPerNode float64 // process goroutines / nodes

	Windows []Window // at rest, strict churn, lax churn, read

	ReadKeys int // rooms read by the read window's one Counts call

	Crashed     []string
	CrashSlices int     // the crashed nodes' slices (non-zero) at the crash
	Deadline    float64 // threshold + heartbeat + 2 s
	GoneSeconds float64 // crash until one node reads every count exact
	// OwnSeconds: crash until every surviving node read its total and every
	// room it holds connections in exact: the counts in which its answers
	// differ from another node's (its own slice).
	OwnSeconds      float64
	AllNodesChecked int
	AllNodesSeconds float64 // crash until every checked surviving node read every count exact
	CrashWindow     Window  // crash until GoneSeconds
	// With Users: the leaves for reason crashed that the crash should
	// cause (users whose last connection in a room was on a crashed node),
	// in how many rooms, and when the last one reached a surviving node's
	// Watch (0 if none did).
	Leaves        int
	LeaveRooms    int
	LeavesSeconds float64
	// Exact: every count the surviving nodes read after the crash was
	// exact, whatever the deadlines (those are in Failures).
	Exact    bool
	Failures []string
}

type node struct {
	i      int
	name   string
	lax    bool
	rc     *redis.ClusterClient
	t      *wsconn.Tracker
	req    *http.Request
	nUsers int // Config.Users
	mu     sync.Mutex
	leases []held
	counts []int32         // per room: this node's model
	users  map[int64]int32 // with users: per userKey, this node's model
	total  int64
	dead   bool
	// changes is the sim's count of changes to the model (sim.changes).
	changes *atomic.Int64
}

type held struct {
	l    *wsconn.Lease
	room int32
	user int32 // -1 without users
}

type sim struct {
	cfg   Config
	out   io.Writer
	nodes []*node
	addrs []string // masters
	admin []*redis.Client
	rooms []string
	start time.Time
	// memField is the INFO memory field read: "keys" (used_memory less
	// the clients' buffers) for the per-connection figures.
	memField string
	// changes counts the changes to the model: connections counted or
	// released, nodes crashed. The sums the checks compare with are kept
	// for as long as it stays the same (see sums).
	changes atomic.Int64
	sumsMu  sync.Mutex
	sumsOf  *sums
}

func roomName(i int) string { return "r" + strconv.Itoa(i) }

// Run runs the simulation, writing progress lines to out. The error is
// non-nil if the simulation could not run or a count was not exact in time
// (the report then says which).
func Run(ctx context.Context, cfg Config, out io.Writer) (*Report, error) {
	cfg.defaults()
	if cfg.Nodes < 1 || cfg.Rooms < 1 || cfg.Conns < cfg.Rooms {
		return nil, fmt.Errorf("need nodes >= 1, rooms >= 1 and connections >= rooms (got %d, %d, %d)", cfg.Nodes, cfg.Rooms, cfg.Conns)
	}
	if cfg.Users < 0 {
		return nil, fmt.Errorf("users %d: want 0 (presence off) or more", cfg.Users)
	}
	if cfg.Crash >= cfg.Nodes {
		return nil, fmt.Errorf("crash %d of %d nodes: at least one must survive", cfg.Crash, cfg.Nodes)
	}
	s := &sim{cfg: cfg, out: out, start: time.Now(), memField: "keys"}
	rep := &Report{Config: cfg}
	if len(cfg.Addrs) == 0 {
		s.logf("starting %d Redis Cluster masters on loopback", cfg.Masters)
		addrs, stop, err := redistest.StartCluster(cfg.Masters)
		if err != nil {
			return nil, err
		}
		defer stop()
		cfg.Addrs = addrs
		s.cfg.Addrs = addrs
	}
	if err := s.discover(ctx); err != nil {
		return nil, err
	}
	defer func() {
		for _, a := range s.admin {
			a.Close()
		}
	}()
	s.logf("cluster: %d masters %s", len(s.addrs), strings.Join(s.addrs, " "))
	for i := range cfg.Rooms {
		s.rooms = append(s.rooms, roomName(i))
	}
	memEmpty := s.quietMemory(ctx)

	if err := s.startNodes(ctx); err != nil {
		return nil, err
	}
	defer s.closeNodes()
	// The nodes register at start; settle on a heartbeat's worth.
	rep.MemBase = s.quietMemory(ctx)
	rep.MemPerNode = float64(rep.MemBase-memEmpty) / float64(cfg.Nodes)
	rep.ClientsBase = s.redisClients(ctx)

	if err := s.build(ctx, rep); err != nil {
		return rep, err
	}

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	rep.HeapPerNode = float64(ms.HeapInuse) / float64(cfg.Nodes)
	rep.GoroutinesPerNode = float64(runtime.NumGoroutine()) / float64(cfg.Nodes)
	s.logf("go process: heap in use %s (%s per node), %d goroutines (%.1f per node)",
		bytesH(float64(ms.HeapInuse)), bytesH(rep.HeapPerNode), runtime.NumGoroutine(), rep.GoroutinesPerNode)

	if cfg.Rest > 0 {
		s.logf("at rest for %v (heartbeats and lease renewals only)", cfg.Rest)
		w, err := s.window(ctx, "rest", cfg.Rest, nil)
		if err != nil {
			return rep, err
		}
		rep.Windows = append(rep.Windows, w)
	}
	built := time.Now()
	if cfg.ChurnRate > 0 && cfg.ChurnFor > 0 {
		for _, lax := range []bool{false, true} {
			name := map[bool]string{false: "churn-strict", true: "churn-lax"}[lax]
			var pool []*node
			for _, n := range s.nodes {
				if n.lax == lax {
					pool = append(pool, n)
				}
			}
			if len(pool) == 0 {
				s.logf("%s: no %s node, skipped", name, name[6:])
				continue
			}
			s.logf("%s for %v: %d connects/s and as many disconnects on the %d %s nodes", name, cfg.ChurnFor, cfg.ChurnRate, len(pool), name[6:])
			w, err := s.window(ctx, name, cfg.ChurnFor, pool)
			if err != nil {
				return rep, err
			}
			rep.Windows = append(rep.Windows, w)
		}
	}
	if err := s.settle(ctx, s.nodes[len(s.nodes)-1], 30*time.Second); err != nil {
		return rep, fmt.Errorf("counts did not settle after churn: %w", err)
	}
	if cfg.RenewFor > 0 {
		// Renewals start a quarter lease after the build-up, paced at
		// about the steady rate (icounter's renewPace); from half a lease
		// on, the slices due come first.
		from := built.Add(cfg.lease()/2 + cfg.Heartbeat)
		s.logf("waiting %v for the paced lease renewals (from a quarter lease after the build-up; measured from half a lease, %v)", time.Until(from).Round(time.Second), cfg.lease()/2)
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(time.Until(from)): // the leases' own clock
		}
		w, err := s.window(ctx, "renewals", cfg.RenewFor, nil)
		if err != nil {
			return rep, err
		}
		rep.Windows = append(rep.Windows, w)
	}
	// One read of every room from one node, measured on its own.
	{
		before := s.snapshot(ctx)
		t0 := time.Now()
		n := s.nodes[len(s.nodes)-1]
		if bad, err := s.checkNode(ctx, n, 3, false); err != nil || len(bad) > 0 {
			return rep, fmt.Errorf("counts before the crash: %v %v", err, bad)
		}
		w := s.diff("read", before, s.snapshot(ctx), time.Since(t0))
		rep.ReadKeys = cfg.Rooms + 1
		rep.Windows = append(rep.Windows, w)
		s.logf("read: one node read all %d rooms and the total in %.2fs, every count exact", cfg.Rooms, time.Since(t0).Seconds())
	}
	if cfg.Crash > 0 {
		if err := s.crash(ctx, rep); err != nil {
			return rep, err
		}
	} else {
		rep.Exact = true
	}
	if len(rep.Failures) > 0 {
		return rep, fmt.Errorf("%d failures, first: %s", len(rep.Failures), rep.Failures[0])
	}
	return rep, nil
}

func (s *sim) logf(format string, args ...any) {
	fmt.Fprintf(s.out, "[%6.1fs] %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

// discover finds the masters from the seeds.
func (s *sim) discover(ctx context.Context) error {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: s.cfg.Addrs})
	defer cc.Close()
	var mu sync.Mutex
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		mu.Lock()
		s.addrs = append(s.addrs, m.Options().Addr)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("cluster %v: %w", s.cfg.Addrs, err)
	}
	slices.Sort(s.addrs)
	for _, a := range s.addrs {
		s.admin = append(s.admin, redis.NewClient(&redis.Options{Addr: a}))
	}
	return nil
}

func (s *sim) startNodes(ctx context.Context) error {
	cfg := s.cfg
	laxN := int(math.Round(cfg.LaxNodes * float64(cfg.Nodes)))
	s.nodes = make([]*node, cfg.Nodes)
	errs := make([]error, cfg.Nodes)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range cfg.Nodes {
		// Lax nodes are spread evenly, so crashed nodes include both kinds.
		lax := laxN > 0 && (i*laxN)/cfg.Nodes != ((i+1)*laxN)/cfg.Nodes
		n := &node{i: i, name: fmt.Sprintf("n%03d", i), lax: lax, counts: make([]int32, cfg.Rooms), nUsers: cfg.Users, users: map[int64]int32{}, changes: &s.changes}
		n.req, _ = http.NewRequestWithContext(context.Background(), http.MethodGet, "http://sim/ws", nil)
		s.nodes[i] = n
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			// Every connection of the pool is opened at start, and
			// pipelines use that pool too (go-redis' own pipeline pool
			// dials on demand), so that the memory deltas of the
			// build-up measure data: a Redis client costs the server
			// about 460 B beyond the buffers mem_clients_normal counts,
			// and the build-up's concurrency would otherwise open a few
			// hundred per master.
			n.rc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cfg.Addrs, PoolSize: 8, MinIdleConns: 8, PipelinePoolSize: -1})
			opts := wsconn.Options{
				Namespace:             cfg.Namespace,
				InstanceID:            n.name,
				DeadInstanceThreshold: cfg.Threshold,
				HeartbeatInterval:     cfg.Heartbeat,
				FlushInterval:         cfg.Flush,
				RedisTimeout:          30 * time.Second,
				MaxRoomsPerConn:       1,
			}
			if cfg.Log != nil {
				opts.Logger = cfg.Log.With("node", n.name)
			}
			if lax {
				opts.Lax = true
				opts.LaxRooms = func(string) bool { return true }
			}
			if cfg.Users > 0 {
				opts.User = func(r *http.Request) string { return r.Header.Get(userHeader) }
				opts.Presence = &wsconn.PresenceOptions{}
			}
			n.t, errs[i] = wsconn.New(n.rc, opts)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.logf("started %d nodes (%d lax, %d strict), threshold %v, heartbeat %v", cfg.Nodes, laxN, cfg.Nodes-laxN, cfg.Threshold, cfg.Heartbeat)
	return nil
}

func (s *sim) closeNodes() {
	for _, n := range s.nodes {
		if n != nil && n.rc != nil {
			_ = n.rc.Close() // Trackers are abandoned with the cluster
		}
	}
}

// admit counts one connection of n in room, of user (-1: none), and adds
// it to the model once Admit returned (for a strict node, once Redis holds
// it).
func (n *node) admit(ctx context.Context, room, user int) error {
	r := n.req
	if user >= 0 {
		r = r.Clone(r.Context())
		r.Header.Set(userHeader, userName(user))
	}
	l, err := n.t.Admit(ctx, wsconn.WithRooms(r, roomName(room)))
	if err != nil {
		return fmt.Errorf("node %s: Admit in room %d: %w", n.name, room, err)
	}
	n.mu.Lock()
	n.leases = append(n.leases, held{l, int32(room), int32(user)})
	n.counts[room]++
	if user >= 0 {
		n.users[userKey(n.nUsers, room, user)]++
	}
	n.total++
	n.changes.Add(1)
	n.mu.Unlock()
	return nil
}

// pickUser returns a random user, or -1 without users.
func (s *sim) pickUser(r *rand.Rand) int {
	if s.cfg.Users == 0 {
		return -1
	}
	return r.IntN(s.cfg.Users)
}

// releaseRandom releases one of n's connections, chosen at random.
func (n *node) releaseRandom(r *rand.Rand) bool {
	n.mu.Lock()
	if len(n.leases) == 0 {
		n.mu.Unlock()
		return false
	}
	k := r.IntN(len(n.leases))
	h := n.leases[k]
	n.leases[k] = n.leases[len(n.leases)-1]
	n.leases = n.leases[:len(n.leases)-1]
	n.counts[h.room]--
	if h.user >= 0 {
		k := userKey(n.nUsers, int(h.room), int(h.user))
		if n.users[k]--; n.users[k] == 0 {
			delete(n.users, k)
		}
	}
	n.total--
	n.changes.Add(1)
	n.mu.Unlock()
	h.l.Release()
	return true
}

// build admits the connections in cfg.Steps steps: the first puts one
// connection in every room (room i on node i mod nodes), the others spread
// the rest over the nodes evenly, each in a random room.
func (s *sim) build(ctx context.Context, rep *Report) error {
	cfg := s.cfg
	type job struct{ node, room, user int32 }
	r := rand.New(rand.NewPCG(1, 2))
	var steps [][]job
	first := make([]job, cfg.Rooms)
	for i := range cfg.Rooms {
		first[i] = job{int32(i % cfg.Nodes), int32(i), int32(s.pickUser(r))}
	}
	steps = append(steps, first)
	rest := cfg.Conns - cfg.Rooms
	nSteps := max(1, cfg.Steps-1)
	made := 0
	for k := range nSteps {
		end := rest * (k + 1) / nSteps
		var js []job
		for ; made < end; made++ {
			js = append(js, job{int32((cfg.Rooms + made) % cfg.Nodes), int32(r.IntN(cfg.Rooms)), int32(s.pickUser(r))})
		}
		if len(js) > 0 {
			steps = append(steps, js)
		}
	}
	t0 := time.Now()
	var admitting time.Duration
	done := 0
	for k, js := range steps {
		ts := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, cfg.Workers)
		for range min(cfg.Workers, len(js)) {
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(len(js)) || ctx.Err() != nil {
						return
					}
					if err := s.nodes[js[i].node].admit(ctx, int(js[i].room), int(js[i].user)); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		done += len(js)
		took := time.Since(ts)
		admitting += took
		// Lax nodes flush every FlushInterval: wait until Redis has it all.
		if err := s.settle(ctx, s.nodes[0], 60*time.Second); err != nil {
			return fmt.Errorf("build-up step %d: %w", k+1, err)
		}
		mem := s.usedMemory(ctx)
		if k == 0 || k == len(steps)-1 {
			mem = s.quietMemory(ctx)
		}
		sl := s.slices()
		s.logf("build %2d/%d: %9d connections, %8d slices, Redis memory %s, step %d admits in %.1fs (%.0f/s)",
			k+1, len(steps), done, sl, bytesH(float64(mem)), len(js), took.Seconds(), float64(len(js))/took.Seconds())
		if k == 0 {
			rep.MemRooms, rep.Slices1 = mem, sl
		}
		rep.MemFull, rep.Slices = mem, sl
	}
	rep.ClientsFull = s.redisClients(ctx)
	rep.BuildSeconds = admitting.Seconds()
	s.logf("build-up took %.1fs, of which %.1fs admitting", time.Since(t0).Seconds(), admitting.Seconds())
	s.memField = "used_memory"
	rep.MemMasters = s.usedMemoryEach(ctx)
	s.memField = "keys"
	rep.MemPerConn = float64(rep.MemFull-rep.MemBase) / float64(cfg.Conns)
	if rep.Slices > rep.Slices1 {
		rep.MemPerSlice = float64(rep.MemFull-rep.MemRooms) / float64(rep.Slices-rep.Slices1)
	}
	rep.MemPerRoom = float64(rep.MemRooms-rep.MemBase) / float64(cfg.Rooms)
	s.logf("built %d connections in %d rooms on %d nodes in %.1fs: Redis memory %s per connection, %s per room with one slice, %s per further slice",
		cfg.Conns, cfg.Rooms, cfg.Nodes, rep.BuildSeconds, bytesH(rep.MemPerConn), bytesH(rep.MemPerRoom), bytesH(rep.MemPerSlice))
	return nil
}

// slices counts the (room, node) pairs with connections in the model.
func (s *sim) slices() int {
	n := 0
	for _, nd := range s.nodes {
		if nd.dead {
			continue
		}
		nd.mu.Lock()
		for _, c := range nd.counts {
			if c != 0 {
				n++
			}
		}
		nd.mu.Unlock()
	}
	return n
}

// sums is what the live nodes' models add up to, at one value of
// sim.changes.
type sums struct {
	at    int64
	rooms []int64 // connections per room, cluster-wide
	total int64
	// With users: the connections of every (room, user) that has some, by
	// userKey; the distinct users of every room, and overall.
	present map[int64]int64
	users   []int64
	online  int64
}

// sums returns the model's sums, added up again only when the model
// changed since they last were: after the crash nothing changes, and the
// checks that poll until the counts are exact would otherwise add up a
// million users' entries at every poll, on the cores the sweeps need.
// The caller must not modify them.
func (s *sim) sums() *sums {
	s.sumsMu.Lock()
	defer s.sumsMu.Unlock()
	at := s.changes.Load()
	if s.sumsOf != nil && s.sumsOf.at == at {
		return s.sumsOf
	}
	m := &sums{at: at, rooms: make([]int64, s.cfg.Rooms)}
	if s.cfg.Users > 0 {
		m.present = map[int64]int64{}
	}
	for _, n := range s.nodes {
		n.mu.Lock()
		if !n.dead {
			for i, c := range n.counts {
				m.rooms[i] += int64(c)
			}
			m.total += n.total
			for k, c := range n.users {
				if c != 0 {
					m.present[k] += int64(c)
				}
			}
		}
		n.mu.Unlock()
	}
	if s.cfg.Users > 0 {
		m.users = make([]int64, s.cfg.Rooms)
		online := map[int64]bool{}
		for k := range m.present {
			m.users[k/int64(s.cfg.Users)]++
			online[k%int64(s.cfg.Users)] = true
		}
		m.online = int64(len(online))
	}
	s.sumsOf = m
	return m
}

const readChunk = 20000

// checkNode reads every room and the total from n and compares them with
// the model; it returns up to max mismatches. With own, it reads only the
// rooms n holds connections in; otherwise, with users, also every room's
// distinct users and the users online.
func (s *sim) checkNode(ctx context.Context, n *node, maxBad int, own bool) ([]string, error) {
	m := s.sums()
	want, wantTotal, wantUsers := m.rooms, m.total, m.users
	users := s.cfg.Users > 0 && !own
	if users {
		got, err := n.t.OnlineUsers(ctx)
		if err != nil {
			return nil, err
		}
		if got != m.online {
			return []string{fmt.Sprintf("node %s: OnlineUsers %d, want %d", n.name, got, m.online)}, nil
		}
	}
	n.mu.Lock()
	mine := slices.Clone(n.counts)
	myTotal := n.total
	n.mu.Unlock()
	idx := make([]int, 0, len(s.rooms))
	for i := range s.rooms {
		if !own || mine[i] != 0 {
			idx = append(idx, i)
		}
	}
	var bad []string
	tot, err := n.t.Total(ctx)
	if err != nil {
		return nil, err
	}
	if tot.Total != wantTotal || tot.Local != myTotal {
		bad = append(bad, fmt.Sprintf("node %s: Total %+v, want {Total:%d Local:%d}", n.name, tot, wantTotal, myTotal))
	}
	for lo := 0; lo < len(idx) && len(bad) < maxBad; lo += readChunk {
		chunk := idx[lo:min(lo+readChunk, len(idx))]
		rooms := make([]string, len(chunk))
		for j, i := range chunk {
			rooms[j] = s.rooms[i]
		}
		got, err := n.t.Counts(ctx, rooms...)
		if err != nil {
			return nil, err
		}
		var gotUsers map[string]int64
		if users {
			if gotUsers, err = n.t.RoomUsers(ctx, rooms...); err != nil {
				return nil, err
			}
		}
		for _, i := range chunk {
			if len(bad) >= maxBad {
				break
			}
			c := got[s.rooms[i]]
			if c.Total != want[i] || c.Local != int64(mine[i]) {
				bad = append(bad, fmt.Sprintf("node %s: room %s %+v, want {Total:%d Local:%d}", n.name, s.rooms[i], c, want[i], mine[i]))
			}
			if users && gotUsers[s.rooms[i]] != wantUsers[i] {
				bad = append(bad, fmt.Sprintf("node %s: room %s has %d users, want %d", n.name, s.rooms[i], gotUsers[s.rooms[i]], wantUsers[i]))
			}
		}
	}
	return bad, nil
}

// settle polls n's reads until every count matches the model.
func (s *sim) settle(ctx context.Context, n *node, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		bad, err := s.checkNode(ctx, n, 1, false)
		if err == nil && len(bad) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not exact after %v: %v %v", limit, err, bad)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // poll interval
		}
	}
}

// window measures the masters over d; with pool it churns on pool's nodes
// at cfg.ChurnRate meanwhile.
func (s *sim) window(ctx context.Context, name string, d time.Duration, pool []*node) (Window, error) {
	before := s.snapshot(ctx)
	t0 := time.Now()
	var connects atomic.Int64
	var firstErr atomic.Value
	if pool == nil {
		select {
		case <-ctx.Done():
			return Window{}, ctx.Err()
		case <-time.After(d): // the measuring window itself
		}
	} else {
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
		const tick = 10 * time.Millisecond
		tk := time.NewTicker(tick)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 512)
		owed := 0.0
		for time.Since(t0) < d && ctx.Err() == nil {
			<-tk.C
			owed += float64(s.cfg.ChurnRate) * tick.Seconds()
			for ; owed >= 1; owed-- {
				n := pool[r.IntN(len(pool))]
				n.releaseRandom(r)
				room, user := r.IntN(s.cfg.Rooms), s.pickUser(r)
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					if err := n.admit(ctx, room, user); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					connects.Add(1)
				})
			}
		}
		tk.Stop()
		wg.Wait()
	}
	el := time.Since(t0)
	w := s.diff(name, before, s.snapshot(ctx), el)
	w.Connects = int(connects.Load())
	if err, _ := firstErr.Load().(error); err != nil {
		return w, err
	}
	s.logf("%s: %s", name, w.summary())
	return w, nil
}

// crash abandons cfg.Crash nodes (their Redis clients closed, no
// Tracker.Close), then polls until one surviving node reads every count
// exact, and then checks every surviving node.
func (s *sim) crash(ctx context.Context, rep *Report) error {
	cfg := s.cfg
	var victims []*node
	for j := range cfg.Crash {
		victims = append(victims, s.nodes[j*cfg.Nodes/cfg.Crash])
	}
	var survivors []*node
	for _, n := range s.nodes {
		if !slices.Contains(victims, n) {
			survivors = append(survivors, n)
		}
	}
	for _, v := range victims {
		for _, c := range v.counts {
			if c != 0 {
				rep.CrashSlices++
			}
		}
		rep.Crashed = append(rep.Crashed, v.name)
	}
	deadline := cfg.Threshold + cfg.Heartbeat + 2*time.Second
	rep.Deadline = deadline.Seconds()
	var leaves *leaveWatch
	if cfg.Users > 0 {
		var err error
		if leaves, err = s.watchLeaves(ctx, victims, survivors[0]); err != nil {
			return err
		}
		rep.Leaves, rep.LeaveRooms = len(leaves.want), len(leaves.rooms)
		s.logf("watching %d rooms from node %s for %d leaves, reason crashed", len(leaves.rooms), survivors[0].name, len(leaves.want))
	}
	before := s.snapshot(ctx)
	t0 := time.Now()
	for _, v := range victims {
		v.mu.Lock()
		v.dead = true
		v.changes.Add(1)
		v.mu.Unlock()
		_ = v.rc.Close() // the node stops talking to Redis, as a crashed process does
	}
	s.logf("crashed %d nodes (%s) holding %d slices; deadline threshold+heartbeat+2s = %v",
		len(victims), strings.Join(rep.Crashed, " "), rep.CrashSlices, deadline)
	probe := survivors[0]
	limit := 2*deadline + 30*time.Second
	for i := 0; ; i++ {
		bad, err := s.checkNode(ctx, probe, 1, false)
		if err == nil && len(bad) == 0 {
			break
		}
		if time.Since(t0) > limit {
			rep.Failures = append(rep.Failures, fmt.Sprintf("counts not exact %v after the crash: %v %v", limit, err, bad))
			return nil
		}
		if i%20 == 0 {
			s.logf("  %.1fs after the crash: %v %v", time.Since(t0).Seconds(), err, bad)
		}
		probe = survivors[(i+1)%len(survivors)]
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // poll interval
		}
	}
	gone := time.Since(t0)
	rep.GoneSeconds = gone.Seconds()
	rep.CrashWindow = s.diff("crash", before, s.snapshot(ctx), gone)
	s.logf("every count exact on node %s %.2fs after the crash (deadline %v): the crashed nodes' slices are gone", probe.name, gone.Seconds(), deadline)
	if gone > deadline {
		rep.Failures = append(rep.Failures, fmt.Sprintf("counts exact only %.2fs after the crash, deadline %v", gone.Seconds(), deadline))
	}
	// Every surviving node's own counts next: reading all of them from
	// every node takes longer than the deadline at a million connections
	// (see SCALING.md), and a node's answers differ from the probe's only in
	// the rooms it holds connections in (its slice) and its total. Before
	// the leaves' check, whose wait and member list reads would otherwise
	// count in this one's time; the leaves are received meanwhile, and
	// their time is when the last came.
	ownExact := s.checkAll(ctx, rep, survivors, true)
	rep.OwnSeconds = time.Since(t0).Seconds()
	s.logf("%d surviving nodes read their total and every room they hold connections in: %s, %.2fs after the crash",
		len(survivors), exactOr(ownExact), rep.OwnSeconds)
	if time.Duration(rep.OwnSeconds*float64(time.Second)) > deadline {
		rep.Failures = append(rep.Failures, fmt.Sprintf("surviving nodes' own counts read exact only %.2fs after the crash, deadline %v", rep.OwnSeconds, deadline))
	}
	if leaves != nil {
		s.crashLeaves(ctx, rep, leaves, t0, limit-time.Since(t0), deadline)
	}
	check := survivors
	if cfg.ReadChecks > 0 && cfg.ReadChecks < len(check) {
		check = check[:cfg.ReadChecks]
	}
	allExact := s.checkAll(ctx, rep, check, false)
	rep.AllNodesChecked = len(check)
	rep.AllNodesSeconds = time.Since(t0).Seconds()
	rep.Exact = ownExact && allExact
	s.logf("%d of %d surviving nodes read all %d rooms and the total: %s, %.2fs after the crash",
		len(check), len(survivors), cfg.Rooms, exactOr(allExact), rep.AllNodesSeconds)
	return nil
}

func exactOr(exact bool) string {
	if exact {
		return "every count exact"
	}
	return "MISMATCH"
}

// checkAll runs checkNode on every node of ns, two at a time, adds what it
// finds to rep's failures, and reports whether every count read was exact.
func (s *sim) checkAll(ctx context.Context, rep *Report, ns []*node, own bool) bool {
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(2)
	exact := true
	for _, n := range ns {
		g.Go(func() error {
			bad, err := s.checkNode(ctx, n, 3, own)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Failures = append(rep.Failures, fmt.Sprintf("node %s: %v", n.name, err))
			}
			rep.Failures = append(rep.Failures, bad...)
			exact = exact && err == nil && len(bad) == 0
			return nil // a node's failure is reported, and the others checked
		})
	}
	_ = g.Wait()
	return exact
}

// --- INFO snapshots ---

type snap struct {
	cmd   map[string]float64 // INFO commandstats calls per command
	cpu   float64
	cmds  float64
	calls float64
	evals float64
}

func (s *sim) snapshot(ctx context.Context) []snap {
	out := make([]snap, len(s.admin))
	for i, a := range s.admin {
		out[i].cmd = map[string]float64{}
		info, err := a.Info(ctx, "cpu", "stats", "commandstats").Result()
		if err != nil {
			continue
		}
		f := infoFields(info)
		out[i].cpu = num(f["used_cpu_sys"]) + num(f["used_cpu_user"])
		out[i].cmds = num(f["total_commands_processed"])
		for k, v := range f {
			if name, ok := strings.CutPrefix(k, "cmdstat_"); ok {
				calls := 0.0
				for kv := range strings.SplitSeq(v, ",") {
					if c, ok := strings.CutPrefix(kv, "calls="); ok {
						calls = num(c)
					}
				}
				out[i].calls += calls
				out[i].cmd[name] = calls
				if name == "evalsha" || name == "eval" {
					out[i].evals += calls
				}
			}
		}
	}
	return out
}

func (s *sim) diff(name string, a, b []snap, d time.Duration) Window {
	w := Window{Name: name, Seconds: d.Seconds(), Calls: map[string]float64{}}
	for i := range a {
		for k, v := range b[i].cmd {
			w.Calls[k] += v - a[i].cmd[k]
		}
		sec := d.Seconds()
		w.Masters = append(w.Masters, MasterStats{
			Addr:        s.addrs[i],
			CPUPerSec:   (b[i].cpu - a[i].cpu) / sec,
			CmdsPerSec:  (b[i].cmds - a[i].cmds) / sec,
			CallsPerSec: (b[i].calls - a[i].calls) / sec,
			EvalPerSec:  (b[i].evals - a[i].evals) / sec,
		})
	}
	return w
}

func (w Window) summary() string {
	var b strings.Builder
	if w.Connects > 0 {
		fmt.Fprintf(&b, "%d connects in %.1fs (%.0f/s); ", w.Connects, w.Seconds, float64(w.Connects)/w.Seconds)
	}
	for i, m := range w.Masters {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "master %d: CPU %.2f%%, %.0f cmds/s, %.0f calls/s, %.0f scripts/s", i+1, 100*m.CPUPerSec, m.CmdsPerSec, m.CallsPerSec, m.EvalPerSec)
	}
	return b.String()
}

func (s *sim) usedMemoryEach(ctx context.Context) []int64 {
	out := make([]int64, len(s.admin))
	for i, a := range s.admin {
		info, err := a.Info(ctx, "memory").Result()
		if err == nil {
			f := infoFields(info)
			if s.memField == "keys" {
				// used_memory without the clients' buffers, which come
				// and go with the load: the keys, their dictionary, the
				// scripts and Redis' fixed overhead.
				out[i] = int64(num(f["used_memory"]) - num(f["mem_clients_normal"]) - num(f["mem_clients_slaves"]) -
					num(f["mem_aof_buffer"]) - num(f["mem_replication_backlog"]))
			} else {
				out[i] = int64(num(f[s.memField]))
			}
		}
	}
	return out
}

// quietMemory waits until the masters' memory is steady (busy clients'
// query buffers, which Redis counts outside mem_clients_normal, are freed
// once the clients idle) and returns it: readings 500 ms apart until three
// in a row are within 0.5%, for at most 20 s.
func (s *sim) quietMemory(ctx context.Context) int64 {
	last, steady := s.usedMemory(ctx), 0
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end) && steady < 3; {
		select {
		case <-ctx.Done():
			return last
		case <-time.After(500 * time.Millisecond): // sampling interval
		}
		m := s.usedMemory(ctx)
		if math.Abs(float64(m-last)) <= 0.005*float64(last) {
			steady++
		} else {
			steady = 0
		}
		last = m
	}
	return last
}

func (s *sim) usedMemory(ctx context.Context) int64 {
	var t int64
	for _, m := range s.usedMemoryEach(ctx) {
		t += m
	}
	return t
}

// redisClients is connected_clients summed over the masters.
func (s *sim) redisClients(ctx context.Context) int {
	n := 0
	for _, a := range s.admin {
		if info, err := a.Info(ctx, "clients").Result(); err == nil {
			n += int(num(infoFields(info)["connected_clients"]))
		}
	}
	return n
}

func infoFields(info string) map[string]string {
	f := map[string]string{}
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = v
		}
	}
	return f
}

func num(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

func bytesH(b float64) string {
	switch {
	case math.Abs(b) >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case math.Abs(b) >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case math.Abs(b) >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}
