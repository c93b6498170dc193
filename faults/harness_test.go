package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// fleet is one test's nodes, all counting in one namespace, and the
// connections the test holds open to them. It is the truth the nodes'
// presence reports are checked against.
type fleet struct {
	t       *testing.T
	ns      string
	rooms   []string // every room connections use; all are read
	tenants []string // every tenant connections use (none: no tenant)
	ws      *http.Client
	api     *http.Client

	// cleanups run after the nodes stopped (proxies they talk through).
	cleanups []func()

	mu    sync.Mutex
	nodes []*node
}

// node is one server counting connections: a Tracker in this process, or a
// demo process.
type node struct {
	f    *fleet
	name string
	base string // http://127.0.0.1:port

	tr   *wsconn.Tracker // in-process nodes
	logs *syncBuffer     // in-process nodes: the Tracker's warnings
	proc *demoProc       // demo processes

	stopFn func() // stops the server and Tracker, or the process

	mu    sync.Mutex
	conns map[*conn]struct{}
	dead  bool // killed: its connections are gone
}

// conn is a client connection the test holds open.
type conn struct {
	n      *node
	ws     *websocket.Conn
	room   string
	tenant string
	done   chan struct{} // closed when its reader returns
}

// newFleet returns an empty fleet in a fresh namespace. Everything it
// starts is stopped when the test ends, connections first.
func newFleet(t *testing.T, rooms, tenants []string) *fleet {
	t.Helper()
	f := &fleet{
		t:       t,
		ns:      redistest.Prefix(t),
		rooms:   rooms,
		tenants: tenants,
		ws:      &http.Client{Transport: &http.Transport{}},
		api:     &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
	}
	t.Cleanup(f.stop)
	return f
}

func (f *fleet) stop() {
	f.mu.Lock()
	nodes := slices.Clone(f.nodes)
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		for _, c := range n.list() {
			wg.Go(func() { _ = c.ws.CloseNow(); <-c.done })
		}
	}
	wg.Wait()
	for _, n := range nodes {
		n.stop()
	}
	f.ws.CloseIdleConnections()
	f.api.CloseIdleConnections()
	for _, c := range f.cleanups {
		c()
	}
}

func (f *fleet) add(n *node) {
	f.mu.Lock()
	f.nodes = append(f.nodes, n)
	f.mu.Unlock()
}

// names builds n names: prefix0, prefix1...
func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// nodeOptions are the options of in-process nodes: the suite's timings,
// the tenant from ?tenant=, the room from the path (WithRooms).
func (f *fleet) nodeOptions(name string) wsconn.Options {
	return wsconn.Options{
		Namespace:             f.ns,
		InstanceID:            name,
		DeadInstanceThreshold: threshold,
		HeartbeatInterval:     heartbeat,
		FlushInterval:         flushIvl,
		RedisTimeout:          time.Second,
		Tenant:                func(r *http.Request) string { return r.URL.Query().Get("tenant") },
	}
}

// startNode starts an in-process node counting through rc, which it closes
// when the test ends. mod, if set, adjusts the options.
func (f *fleet) startNode(name string, rc redis.UniversalClient, mod func(*wsconn.Options)) *node {
	t := f.t
	t.Helper()
	o := f.nodeOptions(name)
	logs := &syncBuffer{}
	o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	if mod != nil {
		mod(&o)
	}
	tr, err := wsconn.New(rc, o)
	if err != nil {
		_ = rc.Close()
		t.Fatalf("wsconn.New(%s): %v", name, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{room}", func(w http.ResponseWriter, r *http.Request) {
		c, err := tr.Accept(w, wsconn.WithRooms(r, r.PathValue("room")), nil)
		if err != nil {
			return // answered: 400, 429, 503
		}
		_ = c.Serve(func() error {
			ctx := r.Context()
			// Accept has returned: the count is in (or failed open).
			if err := c.WS().Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
				return nil
			}
			for {
				if _, _, err := c.WS().Read(ctx); err != nil {
					return nil
				}
			}
		})
	})
	mux.Handle("GET /api/presence", tr.PresenceHandler())
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	n := &node{f: f, name: name, base: srv.URL, tr: tr, logs: logs, conns: map[*conn]struct{}{}}
	n.stopFn = func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tr.Close(ctx); err != nil {
			t.Errorf("%s: Close: %v", name, err)
		}
		_ = rc.Close()
		if t.Failed() {
			if s := logs.String(); s != "" {
				t.Logf("%s logged:\n%s", name, s)
			}
		}
	}
	f.add(n)
	return n
}

// stop stops the node's server and Tracker, or its process.
func (n *node) stop() {
	if n.stopFn != nil {
		n.stopFn()
	}
}

// list returns the node's open connections.
func (n *node) list() []*conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*conn, 0, len(n.conns))
	for c := range n.conns {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].room+"\x00"+out[i].tenant < out[j].room+"\x00"+out[j].tenant })
	return out
}

// userSeq names the users of connections (the demo wants one).
var userSeq atomic.Uint64

// dial opens one connection to room, as tenant ("" for none). For an
// in-process node it waits for the server's hello: Accept has returned, so
// the connection is counted (strictly, or in memory if Redis failed).
func (n *node) dial(ctx context.Context, room, tenant string) (*conn, *http.Response, error) {
	q := url.Values{"user": {"u" + strconv.FormatUint(userSeq.Add(1), 10)}}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	u := "ws" + strings.TrimPrefix(n.base, "http") + "/ws/" + url.PathEscape(room) + "?" + q.Encode()
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: n.f.ws})
	if err != nil {
		return nil, resp, err
	}
	ws.SetReadLimit(1 << 20)
	if n.tr != nil {
		if _, b, err := ws.Read(ctx); err != nil || string(b) != "hello" {
			_ = ws.CloseNow()
			return nil, resp, fmt.Errorf("waiting for the hello: %q, %v", b, err)
		}
	}
	c := &conn{n: n, ws: ws, room: room, tenant: tenant, done: make(chan struct{})}
	n.mu.Lock()
	if n.dead {
		n.mu.Unlock()
		_ = ws.CloseNow()
		return nil, resp, errors.New(n.name + " is dead")
	}
	n.conns[c] = struct{}{}
	n.mu.Unlock()
	// Reading answers pings and the peer's close; messages are dropped.
	go func() {
		defer close(c.done)
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	return c, resp, nil
}

// mustDial opens one connection or fails the test.
func (n *node) mustDial(room, tenant string) *conn {
	n.f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := n.dial(ctx, room, tenant)
	if err != nil {
		n.f.t.Fatalf("%s: dial room %s tenant %q: %v (%s)", n.name, room, tenant, err, status(resp))
	}
	return c
}

func status(resp *http.Response) string {
	if resp == nil {
		return "no HTTP response"
	}
	return "HTTP " + resp.Status
}

// open opens count connections to n, at most par at a time: connection i
// goes to room (first+i) mod rooms, tenant (first+i) mod tenants.
func (n *node) open(count, first, par int) {
	n.f.t.Helper()
	n.f.openOn([]*node{n}, count, first, par)
}

// openOn opens count connections to each of nodes at once, at most par at
// a time in all: connection i of the k-th node goes to room
// (first+k+i) mod rooms, tenant (first+k+i) mod tenants.
func (f *fleet) openOn(nodes []*node, count, first, par int) {
	f.t.Helper()
	sem := make(chan struct{}, par)
	errs := make(chan error, count*len(nodes))
	var wg sync.WaitGroup
	for i := range count {
		for k, n := range nodes {
			room := f.rooms[(first+k+i)%len(f.rooms)]
			tenant := ""
			if len(f.tenants) > 0 {
				tenant = f.tenants[(first+k+i)%len(f.tenants)]
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if _, resp, err := n.dial(ctx, room, tenant); err != nil {
					errs <- fmt.Errorf("%s: dial room %s: %v (%s)", n.name, room, err, status(resp))
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		f.t.Fatalf("%v (and %d more failures)", err, len(errs))
	}
}

// close closes c with the close handshake and forgets it.
func (c *conn) close() {
	c.n.mu.Lock()
	delete(c.n.conns, c)
	c.n.mu.Unlock()
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	<-c.done
}

// alive checks that c still works: a ping answered by the server.
func (c *conn) alive() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.ws.Ping(ctx)
}

// presence is what GET /api/presence answers.
type presence struct {
	Instance string                  `json:"instance"`
	Total    wsconn.Count            `json:"total"`
	Rooms    map[string]wsconn.Count `json:"rooms"`
	Tenants  map[string]wsconn.Count `json:"tenants"`
}

// errStatus is a presence answer other than 200.
type errStatus struct {
	code int
	body string
}

func (e *errStatus) Error() string { return fmt.Sprintf("presence: HTTP %d: %s", e.code, e.body) }

// presence reads n's presence for the fleet's rooms and tenants.
func (f *fleet) presence(ctx context.Context, n *node) (*presence, error) {
	q := url.Values{"room": f.rooms}
	if len(f.tenants) > 0 {
		q["tenant"] = f.tenants
	}
	return getPresence[presence](ctx, f.api, n.base, q)
}

// getPresence reads GET base/api/presence?q as a T; an answer other than
// 200 is an *errStatus.
func getPresence[T any](ctx context.Context, c *http.Client, base string, q url.Values) (*T, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/presence?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &errStatus{resp.StatusCode, strings.TrimSpace(string(body))}
	}
	var p T
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("presence: %v: %s", err, body)
	}
	return &p, nil
}

// view is what an observer should report.
type view struct {
	total   wsconn.Count
	rooms   map[string]wsconn.Count
	tenants map[string]wsconn.Count
}

// expect is the view of obs when the connections of counted are counted
// (and no other): cluster-wide totals over counted, obs's own as local.
func (f *fleet) expect(obs *node, counted ...*node) view {
	v := view{rooms: map[string]wsconn.Count{}, tenants: map[string]wsconn.Count{}}
	for _, r := range f.rooms {
		v.rooms[r] = wsconn.Count{}
	}
	for _, tn := range f.tenants {
		v.tenants[tn] = wsconn.Count{}
	}
	add := func(n *node, total, local bool) {
		for _, c := range n.list() {
			inc := func(m map[string]wsconn.Count, k string) {
				x := m[k]
				if total {
					x.Total++
				}
				if local {
					x.Local++
				}
				m[k] = x
			}
			if total {
				v.total.Total++
			}
			if local {
				v.total.Local++
			}
			inc(v.rooms, c.room)
			if c.tenant != "" {
				inc(v.tenants, c.tenant)
			}
		}
	}
	for _, n := range counted {
		add(n, true, n == obs)
	}
	if !slices.Contains(counted, obs) {
		add(obs, false, true)
	}
	return v
}

// diff lists how p differs from v (at most a few lines).
func (v view) diff(p *presence) []string {
	var d []string
	if p.Total != v.total {
		d = append(d, fmt.Sprintf("total %+v, want %+v", p.Total, v.total))
	}
	for _, g := range []struct {
		kind      string
		got, want map[string]wsconn.Count
	}{{"room", p.Rooms, v.rooms}, {"tenant", p.Tenants, v.tenants}} {
		keys := make([]string, 0, len(g.want))
		for k := range g.want {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			got, ok := g.got[k]
			if !ok || got != g.want[k] {
				d = append(d, fmt.Sprintf("%s %s %+v, want %+v", g.kind, k, got, g.want[k]))
			}
		}
	}
	return d
}

// check reads every observer's presence and compares it with the counts of
// counted. It returns what differs ("" when every answer was exact) and,
// apart, the reads that failed: a read may fail while Redis is slow on a
// loaded machine (a 503 after RedisTimeout), which says nothing about the
// counts, so callers tell "unavailable" (bounded, see outage) from "wrong"
// (never allowed).
func (f *fleet) check(observers, counted []*node) (wrong, failed string) {
	var d, e []string
	for _, obs := range observers {
		diffs, err := f.checkOne(obs, counted)
		if err != nil {
			e = append(e, err.Error())
		}
		d = append(d, diffs...)
	}
	return joinDiffs(d), strings.Join(e, "; ")
}

// checkOne is check for one observer: what its answer gets wrong, or why
// the read failed.
func (f *fleet) checkOne(obs *node, counted []*node) (wrong []string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	p, err := f.presence(ctx, obs)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", obs.name, err)
	}
	for _, s := range f.expect(obs, counted...).diff(p) {
		wrong = append(wrong, obs.name+": "+s)
	}
	return wrong, nil
}

// joinDiffs puts differences on one line, the first six of them.
func joinDiffs(d []string) string {
	if len(d) > 6 {
		d = append(d[:6], fmt.Sprintf("(%d more)", len(d)-6))
	}
	return strings.Join(d, "; ")
}

// maxOutage is the longest stretch of failed reads a test accepts where no
// fault is under way: several RedisTimeouts of a busy -race build, far
// below anything a real outage would show.
const maxOutage = 3 * time.Second

// outage tracks stretches of failed reads (see check).
type outage struct {
	since  time.Time // start of the current stretch; zero when reads work
	failed int       // failed reads in all
}

// note records one round of reads and fails the test when reads have been
// failing for longer than maxOutage.
func (o *outage) note(t testing.TB, what, failed string) {
	t.Helper()
	if failed == "" {
		o.since = time.Time{}
		return
	}
	o.failed++
	if o.since.IsZero() {
		o.since = time.Now()
	} else if d := ran(o.since); d > maxOutage {
		t.Fatalf("%s: reads failing for %v (more than %v): %s", what, d.Round(time.Millisecond), maxOutage, failed)
	}
}

// waitExact polls the observers until every one reports the counts of
// counted exactly, and fails the test if one reports other counts later
// than deadline from since, the machine's stalls left out (stall_test.go),
// or if reads fail for longer than maxOutage after it. It returns the time
// from since.
func (f *fleet) waitExact(since time.Time, deadline time.Duration, what string, observers, counted []*node) time.Duration {
	f.t.Helper()
	return f.waitExactBy(since, func() time.Duration { return deadline }, what, observers, counted)
}

// doubtLog is what a node logs when its heartbeats paused for over half a
// threshold (the machine or Redis stalled): for a threshold from then it
// judges dead no instance seen shortly before the pause, so a reap may
// take up to a threshold longer (see internal/icounter's doc).
const doubtLog = "heartbeats paused for over half a threshold"

// doubts counts the pauses the nodes have logged.
func doubts(nodes []*node) int {
	n := 0
	for _, nd := range nodes {
		switch {
		case nd.proc != nil:
			n += strings.Count(nd.proc.out.String(), doubtLog)
		case nd.logs != nil:
			n += strings.Count(nd.logs.String(), doubtLog)
		}
	}
	return n
}

// waitReaped is waitExact for a dead node's counts: reapDeadline from since,
// when it died, and a threshold more if an observer's heartbeats paused
// meanwhile, which is what the product promises then.
func (f *fleet) waitReaped(since time.Time, what string, observers []*node) {
	f.t.Helper()
	before := doubts(observers)
	f.waitExactBy(since, func() time.Duration {
		if doubts(observers) > before {
			return reapDeadline + threshold
		}
		return reapDeadline
	}, what, observers, observers)
}

// waitExactBy is waitExact with a deadline that may move while it waits.
// A read that began past the deadline must be exact; one that began before
// it may still show the counts from before (on a loaded machine a read can
// take a second). Reads that fail (a 503 after RedisTimeout: Redis slow on
// a loaded machine, which says nothing about the counts, see check) are
// allowed for maxOutage past the deadline, and the wait goes on until a
// whole round of reads is exact.
func (f *fleet) waitExactBy(since time.Time, deadlineNow func() time.Duration, what string, observers, counted []*node) time.Duration {
	f.t.Helper()
	var late outage
	for {
		var wrong, failed []string
		for _, obs := range observers {
			began := ran(since)
			d, err := f.checkOne(obs, counted)
			if err != nil {
				failed = append(failed, err.Error())
			}
			if deadline := deadlineNow(); d != nil && began > deadline {
				f.t.Fatalf("%s: not exact within %v%s: %s", what, deadline, stalledFor(time.Since(since)-ran(since)), joinDiffs(d))
			}
			wrong = append(wrong, d...)
		}
		took, running := time.Since(since), ran(since)
		deadline := deadlineNow()
		if len(wrong) == 0 && len(failed) == 0 {
			var failing string
			if late.failed > 0 {
				failing = fmt.Sprintf("; %d rounds past it with a failed read (Redis slow, not wrong)", late.failed)
			}
			f.t.Logf("%s: exact after %v (deadline %v%s)%s", what, took.Round(time.Millisecond), deadline, failing, stalledFor(took-running))
			return took
		}
		if running > deadline {
			late.note(f.t, what+", past the deadline of "+deadline.String(), strings.Join(failed, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stayExact polls the observers for window and fails the test if any read
// differs from the counts of counted (nothing is counted twice later, or
// lost later), or if reads fail for longer than maxOutage.
func (f *fleet) stayExact(window time.Duration, what string, observers, counted []*node) {
	f.t.Helper()
	end := time.Now().Add(window)
	reads := 0
	var o outage
	for time.Now().Before(end) {
		d, failed := f.check(observers, counted)
		if d != "" {
			f.t.Fatalf("%s: after %d exact reads: %s", what, reads, d)
		}
		o.note(f.t, what, failed)
		reads++
		time.Sleep(20 * time.Millisecond)
	}
	if o.failed > 0 {
		f.t.Logf("%s: %d exact reads, %d rounds with a failed read (Redis slow, not wrong)", what, reads, o.failed)
	}
}

// watcher reads one node's presence all along and records every read that
// breaks a rule (a ceiling: nothing counted twice; a floor: nothing reaped
// that lives).
type watcher struct {
	stopc  chan struct{}
	wg     sync.WaitGroup
	stopFn func()

	mu     sync.Mutex
	reads  int
	fails  int
	broken []string
}

// watch starts reading obs every few milliseconds; rule returns "" for a
// good read. Reads that fail (Redis down) are only counted. The watcher
// stops, and reports broken rules as test errors, when stop is called or
// the test ends.
func (f *fleet) watch(obs *node, rule func(*presence) string) *watcher {
	w := &watcher{stopc: make(chan struct{})}
	w.wg.Go(func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			p, err := f.presence(ctx, obs)
			cancel()
			w.mu.Lock()
			if err != nil {
				w.fails++
			} else {
				w.reads++
				if s := rule(p); s != "" && len(w.broken) < 5 {
					w.broken = append(w.broken, fmt.Sprintf("read %d: %s", w.reads, s))
				}
			}
			w.mu.Unlock()
			select {
			case <-w.stopc:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(w.stopc)
			w.wg.Wait()
			f.t.Logf("watcher on %s: %d reads, %d failed reads", obs.name, w.reads, w.fails)
			for _, b := range w.broken {
				f.t.Errorf("watcher on %s: %s", obs.name, b)
			}
		})
	}
	w.stopFn = stop
	f.t.Cleanup(stop)
	return w
}

func (w *watcher) stop() { w.stopFn() }

// bounds is a rule for watch: every count (total, rooms, tenants) within
// [lo, hi] of two views.
func bounds(lo, hi view) func(*presence) string {
	return func(p *presence) string {
		var d []string
		in := func(what string, got wsconn.Count, lo, hi wsconn.Count) {
			if got.Total < lo.Total || got.Total > hi.Total {
				d = append(d, fmt.Sprintf("%s total %d outside [%d, %d]", what, got.Total, lo.Total, hi.Total))
			}
		}
		in("global", p.Total, lo.total, hi.total)
		for r := range hi.rooms {
			in("room "+r, p.Rooms[r], lo.rooms[r], hi.rooms[r])
		}
		for tn := range hi.tenants {
			in("tenant "+tn, p.Tenants[tn], lo.tenants[tn], hi.tenants[tn])
		}
		return strings.Join(d, "; ")
	}
}

// metric sums the values of the Tracker's metric name (a counter) whose
// labels include those given.
func metric(t testing.TB, tr *wsconn.Tracker, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(tr.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
