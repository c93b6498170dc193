package dashboards

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

func load(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("headcount.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("headcount.json: %v", err)
	}
	return d
}

// PromQL, reduced to what names metrics: strings, label matchers, ranges,
// grouping clauses and dashboard variables are cut out; what remains of an
// identifier is a metric name unless it is a keyword or calls a function.
var (
	stringLit = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	matchers  = regexp.MustCompile(`\{[^{}]*\}`)
	ranges    = regexp.MustCompile(`\[[^\[\]]*\]`)
	grouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	variables = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	ident     = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:.])([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	keywords  = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true,
		"inf": true, "nan": true, "atan2": true}
	labelValues = regexp.MustCompile(`^\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
)

// metricNames returns the metric names expr queries.
func metricNames(expr string) []string {
	s := stringLit.ReplaceAllString(expr, `""`)
	s = variables.ReplaceAllString(s, "")
	s = matchers.ReplaceAllString(s, " ")
	s = ranges.ReplaceAllString(s, " ")
	s = grouping.ReplaceAllString(s, " ")
	var out []string
	for _, m := range ident.FindAllStringSubmatchIndex(s, -1) {
		name := s[m[2]:m[3]]
		rest := strings.TrimLeft(s[m[3]:], " \t\n")
		if keywords[strings.ToLower(name)] || strings.HasPrefix(rest, "(") {
			continue
		}
		out = append(out, name)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`max(headcount_cluster_connections{job="$job"})`:                                                      "headcount_cluster_connections",
		`sum by (le, script) (rate(x_bucket{a=~"b|c", d!="sum(y)"}[$__rate_interval]))`:                       "x_bucket",
		`topk(10, max by (room) (a{job="$job"})) / on (room) group_left b offset 5m`:                          "a b",
		`histogram_quantile(0.99, sum without (instance) (rate(h_bucket[5m]))) > bool 0.5 and up unless down`: "h_bucket up down",
		`a_total + ignoring(x) b:rule:rate5m`:                                                                 "a_total b:rule:rate5m",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("metricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

// exported gathers a Tracker with every metrics option on and a connection
// in a room of a tenant with a cap, and returns the names a query may use:
// every family's, and a histogram's _bucket, _sum and _count series.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr, err := wsconn.New(redistest.Standalone(t), wsconn.Options{
		Namespace:      redistest.Prefix(t),
		Rooms:          func(r *http.Request) []string { return r.URL.Query()["room"] },
		Tenant:         func(r *http.Request) string { return r.URL.Query().Get("tenant") },
		User:           func(r *http.Request) string { return r.URL.Query().Get("user") },
		Limits:         wsconn.Limits{TenantCap: func(string) int64 { return 10 }, UserCap: func(string) int64 { return 10 }},
		AutoLaxRate:    100,
		MetricsRooms:   true,
		MetricsTenants: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close(ctx)
	lease, err := tr.Admit(ctx, httptest.NewRequest(http.MethodGet, "/?room=r&tenant=t&user=u", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	reg := prometheus.NewRegistry()
	reg.MustRegister(tr.Collector())
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+suffix] = true
			}
		}
	}
	return names
}

// TestDashboardQueriesExportedMetrics: every metric the dashboard's panels
// and variables query is one a Tracker exports, every panel reads the
// dashboard's data source variable, and the dashboard covers what it is
// for: connections on each node and cluster-wide, top rooms and tenants,
// caps, refusals, reaps, Redis errors, timeouts and latency, the lax
// buffer.
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	d := load(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q: want both", d.Title, d.UID)
	}
	have := exported(t)
	queried := map[string][]string{} // metric -> where
	var panels []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			panels = append(panels, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, p := range panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: data source %+v, want the ${datasource} variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricNames(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: no metric in %q", p.Title, tg.Expr)
			}
			for _, n := range names {
				queried[n] = append(queried[n], "panel "+p.Title)
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
			continue
		}
		queried[m[1]] = append(queried[m[1]], "variable "+v.Name)
	}
	var names []string
	for n := range queried {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !have[n] {
			t.Errorf("%s (in %s) is not a metric the library exports", n, strings.Join(slices.Compact(queried[n]), ", "))
		}
	}
	for _, want := range []string{
		"headcount_connections", "headcount_cluster_connections",
		"headcount_cluster_room_connections", "headcount_cluster_tenant_connections",
		"headcount_tenant_connection_limit", "headcount_rejections_total", "headcount_reaped_slices_total",
		"headcount_redis_errors_total", "headcount_redis_timeouts_total",
		"headcount_redis_script_duration_seconds_bucket", "headcount_lax_buffered_keys",
	} {
		if queried[want] == nil {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	t.Logf("%d panels query %d metrics: %s", len(panels), len(names), strings.Join(names, " "))
}
