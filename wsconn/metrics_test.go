package wsconn

import (
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// families gathers tr's collector into a map by family name.
func families(t testing.TB, tr *Tracker) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(tr.Collector())
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	return got
}

// labelsOf renders a metric's labels as name=value pairs, sorted.
func labelsOf(m *dto.Metric) string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName()+"="+l.GetValue())
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// valueOf is a metric's value: a gauge's or counter's, a histogram's count.
func valueOf(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return math.NaN()
}

// series maps each series of family name to its value, by labelsOf.
func series(fams map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range fams[name].GetMetric() {
		out[labelsOf(m)] = valueOf(m)
	}
	return out
}

// The families a Tracker exports, by scope.
var (
	localFamilies = []string{
		"headcount_connections", "headcount_room_connections", "headcount_tenant_connections",
		"headcount_tenant_connection_limit", "headcount_connections_opened_total",
		"headcount_connections_closed_total", "headcount_rejections_total", "headcount_redis_timeouts_total",
		"headcount_reaped_slices_total", "headcount_redis_errors_total", "headcount_redis_script_duration_seconds",
		"headcount_flush_duration_seconds", "headcount_lax_buffered_keys", "headcount_auto_lax_rooms",
	}
	clusterFamilies = []string{
		"headcount_cluster_connections", "headcount_cluster_room_connections",
		"headcount_cluster_tenant_connections", "headcount_cluster_connections_accepted_total",
	}
)

// TestCollector: with room and tenant metrics on, the collector reports this
// node's and the cluster's connections in separate families, per room and
// tenant for the top rooms and tenants only, the tenants' caps, rejections,
// and script latency.
func TestCollector(t *testing.T) {
	t.Parallel()
	o := testOptions(redistest.Prefix(t), "a")
	o.MetricsTopN = 1
	o.MetricsRooms, o.MetricsTenants = true, true
	o.Limits.PerTenant = 1
	tr := newTracker(t, redistest.Standalone(t), o)
	_, url := serve(t, echo(tr, nil))
	mustDial(t, url+"?room=big&room=small&tenant=t")
	mustDial(t, url+"?room=big")
	if _, resp, err := dial(ctxT(t), url+"?tenant=t"); err == nil {
		t.Fatalf("over the tenant limit: %v", resp)
	}
	totalIs(t, tr, Count{Total: 2, Local: 2})

	got := families(t, tr)
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"headcount_connections", "", 2},
		{"headcount_cluster_connections", "", 2},
		{"headcount_room_connections", "room=big", 2},
		{"headcount_cluster_room_connections", "room=big", 2},
		{"headcount_tenant_connections", "tenant=t", 1},
		{"headcount_cluster_tenant_connections", "tenant=t", 1},
		{"headcount_tenant_connection_limit", "tenant=t", 1},
		{"headcount_connections_opened_total", "", 2},
		{"headcount_cluster_connections_accepted_total", "", 2},
		{"headcount_rejections_total", "reason=limit_tenant", 1},
		{"headcount_rejections_total", "reason=limit_room", 0},
	} {
		v, ok := series(got, c.name)[c.labels]
		if !ok || v != c.want {
			t.Errorf("%s{%s} = %v (present: %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if series(got, "headcount_redis_script_duration_seconds")["script=assert"] == 0 {
		t.Error("no script latency observed")
	}
	for _, name := range []string{"headcount_room_connections", "headcount_cluster_room_connections"} {
		if s := series(got, name); len(s) != 1 {
			t.Errorf("%s: %v; want room big alone (MetricsTopN=1)", name, s)
		}
	}
	for _, name := range []string{"headcount_lax_buffered_keys", "headcount_auto_lax_rooms"} {
		if got[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}

// TestMetricsScopes scrapes two running nodes of one namespace: every
// family is either this node's (its values differ between the nodes and
// match the node's own connections) or cluster-wide (named
// headcount_cluster_*, the same series and values on both nodes, its help
// saying to aggregate with max). No family has a label that tells the two
// apart, and no family is left unclassified.
func TestMetricsScopes(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	var trs []*Tracker
	var urls []string
	for _, id := range []string{"a", "b"} {
		o := testOptions(ns, id)
		o.MetricsRooms, o.MetricsTenants = true, true
		o.Limits.TenantCap = func(string) int64 { return 10 }
		tr := newTracker(t, c, o)
		_, url := serve(t, echo(tr, nil))
		trs, urls = append(trs, tr), append(urls, url)
	}
	for range 2 {
		mustDial(t, urls[0]+"?room=r&tenant=t")
	}
	mustDial(t, urls[1]+"?room=r&tenant=t")
	for _, tr := range trs {
		totalIs(t, tr, Count{Total: 3, Local: counterValue(tr.met.opened)})
	}

	known := map[string]bool{}
	for _, n := range localFamilies {
		known[n] = false
	}
	for _, n := range clusterFamilies {
		known[n] = true
	}
	var fams [2]map[string]*dto.MetricFamily
	// The accepted counter is lax: poll until both nodes read every
	// connection (a flush interval and a round trip), not merely the same
	// count: both may agree on 2 before the third one's flush.
	eventually(t, settleDeadline, "both nodes scrape the same cluster-wide values", func() (bool, string) {
		for i, tr := range trs {
			fams[i] = families(t, tr)
			if n := series(fams[i], "headcount_cluster_connections_accepted_total")[""]; n != 3 {
				return false, fmt.Sprintf("node %d: %v connections accepted, want 3", i, n)
			}
		}
		for _, name := range clusterFamilies {
			a, b := series(fams[0], name), series(fams[1], name)
			if len(a) == 0 || fmt.Sprint(a) != fmt.Sprint(b) {
				return false, fmt.Sprintf("%s: node a %v, node b %v", name, a, b)
			}
		}
		return true, ""
	})
	for _, f := range fams {
		for name, mf := range f {
			cluster, ok := known[name]
			switch {
			case !ok:
				t.Errorf("family %s is neither in localFamilies nor in clusterFamilies", name)
			case cluster != strings.HasPrefix(name, "headcount_cluster_"):
				t.Errorf("family %s: cluster-wide families, and they alone, are named headcount_cluster_*", name)
			case cluster != strings.Contains(mf.GetHelp(), "aggregate with max"):
				t.Errorf("family %s: help %q; a cluster-wide family, and it alone, says to aggregate with max", name, mf.GetHelp())
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "scope" {
						t.Errorf("family %s has a scope label", name)
					}
				}
			}
		}
	}
	for _, c := range []struct {
		name, labels string
		a, b         float64
	}{
		{"headcount_connections", "", 2, 1},
		{"headcount_room_connections", "room=r", 2, 1},
		{"headcount_tenant_connections", "tenant=t", 2, 1},
		{"headcount_connections_opened_total", "", 2, 1},
		{"headcount_cluster_connections", "", 3, 3},
		{"headcount_cluster_room_connections", "room=r", 3, 3},
		{"headcount_cluster_tenant_connections", "tenant=t", 3, 3},
		{"headcount_cluster_connections_accepted_total", "", 3, 3},
		{"headcount_tenant_connection_limit", "tenant=t", 10, 10},
	} {
		a, b := series(fams[0], c.name)[c.labels], series(fams[1], c.name)[c.labels]
		if a != c.a || b != c.b {
			t.Errorf("%s{%s}: node a %v, node b %v; want %v and %v", c.name, c.labels, a, b, c.a, c.b)
		}
	}
}

// TestMetricsAtZero: a Tracker that has seen no traffic exports every
// labelled counter with every label value it can take, at zero, and its
// labelled histograms empty.
func TestMetricsAtZero(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, redistest.Standalone(t), testOptions(redistest.Prefix(t), "a"))
	got := families(t, tr)
	for _, c := range []struct {
		name, label string
		values      []string
	}{
		{"headcount_rejections_total", "reason", rejectionReasons},
		{"headcount_redis_errors_total", "op", redisOps},
		{"headcount_redis_script_duration_seconds", "script", redisOps},
		{"headcount_flush_duration_seconds", "kind", flushKinds},
	} {
		s := series(got, c.name)
		for _, v := range c.values {
			val, ok := s[c.label+"="+v]
			switch {
			case !ok:
				t.Errorf("%s{%s=%q} missing before its first event", c.name, c.label, v)
			case got[c.name].GetType() == dto.MetricType_COUNTER && val != 0:
				t.Errorf("%s{%s=%q} = %v, want 0", c.name, c.label, v, val)
			}
		}
		if len(s) != len(c.values) {
			t.Errorf("%s: series %v, want one per %s in %v", c.name, s, c.label, c.values)
		}
	}
	for _, name := range []string{"headcount_connections_opened_total", "headcount_connections_closed_total",
		"headcount_redis_timeouts_total", "headcount_reaped_slices_total", "headcount_connections"} {
		if v, ok := series(got, name)[""]; !ok || v != 0 {
			t.Errorf("%s = %v (present: %v), want 0", name, v, ok)
		}
	}
	// Every reason reason() can give is a pre-initialised label value.
	for _, err := range []error{&LimitError{Kind: LimitTenant}, &LimitError{Kind: LimitUser}, &LimitError{Kind: LimitRoom},
		ErrInvalidName, ErrTooManyRooms, ErrUnavailable, ErrClosed, errors.New("x")} {
		if r := reason(fmt.Errorf("wrapped: %w", err)); !slices.Contains(rejectionReasons, r) {
			t.Errorf("reason(%v) = %q, not in %v", err, r, rejectionReasons)
		}
	}
}

// TestMetricsNamesOptIn: series labelled with room or tenant names appear
// only with Options.MetricsRooms and Options.MetricsTenants, each on its
// own.
func TestMetricsNamesOptIn(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	ns := redistest.Prefix(t)
	for _, tc := range []struct {
		id             string
		rooms, tenants bool
	}{{"none", false, false}, {"rooms", true, false}, {"tenants", false, true}, {"both", true, true}} {
		o := testOptions(ns, tc.id)
		o.MetricsRooms, o.MetricsTenants = tc.rooms, tc.tenants
		o.Limits.PerTenant = 100
		tr := newTracker(t, c, o)
		_, url := serve(t, echo(tr, nil))
		mustDial(t, url+"?room=r&tenant=t")
		got := families(t, tr)
		labelled := map[string]bool{}
		for name, mf := range got {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "room" || l.GetName() == "tenant" {
						labelled[l.GetName()] = true
						if want := map[string]bool{"room": tc.rooms, "tenant": tc.tenants}[l.GetName()]; !want {
							t.Errorf("%s: %s{%s} exported with MetricsRooms=%v MetricsTenants=%v", tc.id, name, labelsOf(m), tc.rooms, tc.tenants)
						}
					}
				}
			}
		}
		if labelled["room"] != tc.rooms || labelled["tenant"] != tc.tenants {
			t.Errorf("%s: labels seen %v; want room %v, tenant %v", tc.id, labelled, tc.rooms, tc.tenants)
		}
		if tc.tenants {
			for _, name := range []string{"headcount_tenant_connections", "headcount_cluster_tenant_connections", "headcount_tenant_connection_limit"} {
				if _, ok := series(got, name)["tenant=t"]; !ok {
					t.Errorf("%s: no %s{tenant=t}", tc.id, name)
				}
			}
		}
	}
}

// TestFailedReadCountedOnce: a presence read that Redis fails (here: nothing
// listens on its address, so the call fails at once, well before
// RedisTimeout) adds exactly 1 to headcount_redis_errors_total{op="read"},
// and nothing to any other op. It added 2 (the engine's script observer and
// the read itself both counted it).
func TestFailedReadCountedOnce(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // connections to addr are now refused
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rc.Close() })
	// No heartbeat during the test: each one fails too, under its own op.
	o := testOptions(redistest.Prefix(t), "a")
	o.HeartbeatInterval, o.DeadInstanceThreshold = time.Hour, 3*time.Hour
	tr := newTracker(t, rc, o)
	errorsBy := func() map[string]int64 {
		out := map[string]int64{}
		for _, op := range redisOps {
			out[op] = counterValue(tr.met.redisErrors.WithLabelValues(op))
		}
		return out
	}
	before := errorsBy()
	if _, err := tr.Total(ctxT(t)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Total with Redis unreachable: %v, want ErrUnavailable", err)
	}
	after := errorsBy()
	for _, op := range redisOps {
		want := before[op]
		if op == "read" {
			want++
		}
		if after[op] != want {
			t.Errorf("redis_errors_total{op=%q}: %d -> %d, want %d", op, before[op], after[op], want)
		}
	}
	if got := counterValue(tr.met.timeouts); got != 0 {
		t.Errorf("redis_timeouts_total = %d: a refused connection is an error, not a timeout", got)
	}
}
