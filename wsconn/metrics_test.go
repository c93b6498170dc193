package wsconn

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/headcount-go/headcount/internal/redistest"
)

// TestCollector: the collector registers, and reports local and cluster
// gauges, per-room and per-tenant gauges for the top rooms, rejections,
// script latency and flushes.
func TestCollector(t *testing.T) {
	t.Parallel()
	o := testOptions(redistest.Prefix(t), "a")
	o.MetricsTopN = 1
	o.Limits.PerTenant = 1
	tr := newTracker(t, redistest.Standalone(t), o)
	reg := prometheus.NewRegistry()
	reg.MustRegister(tr.Collector())
	_, url := serve(t, echo(tr, nil))
	mustDial(t, url+"?room=big&room=small&tenant=t")
	mustDial(t, url+"?room=big")
	if _, resp, err := dial(ctxT(t), url+"?tenant=t"); err == nil {
		t.Fatalf("over the tenant limit: %v", resp)
	}
	totalIs(t, tr, Count{Total: 2, Local: 2})

	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		f := got[name]
		if f == nil {
			t.Fatalf("no %s", name)
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"headcount_connections", []string{"scope", "local"}, 2},
		{"headcount_connections", []string{"scope", "cluster"}, 2},
		{"headcount_room_connections", []string{"room", "big", "scope", "cluster"}, 2},
		{"headcount_tenant_connections", []string{"tenant", "t", "scope", "local"}, 1},
		{"headcount_connections_opened_total", nil, 2},
		{"headcount_connections_accepted_cluster_total", nil, 2},
		{"headcount_rejections_total", []string{"reason", "limit_tenant"}, 1},
	} {
		if v := value(c.name, c.labels...); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	if value("headcount_redis_script_duration_seconds", "script", "assert") == 0 {
		t.Error("no script latency observed")
	}
	for _, f := range got["headcount_room_connections"].GetMetric() {
		for _, l := range f.GetLabel() {
			if l.GetName() == "room" && l.GetValue() == "small" {
				t.Error("room 'small' exported beyond MetricsTopN=1")
			}
		}
	}
	for _, name := range []string{"headcount_lax_buffered_keys", "headcount_auto_lax_rooms"} {
		if got[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}
