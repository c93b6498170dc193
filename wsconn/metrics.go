package wsconn

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are kept whether or not Collector is registered: they are cheap,
// and a collector registered late still sees totals since start.
type metrics struct {
	t *Tracker

	opened      prometheus.Counter
	closed      prometheus.Counter
	rejections  *prometheus.CounterVec
	timeouts    prometheus.Counter
	reaped      prometheus.Counter
	redisErrors *prometheus.CounterVec
	scripts     *prometheus.HistogramVec
	flushes     *prometheus.HistogramVec

	conns       *prometheus.Desc
	roomConns   *prometheus.Desc
	tenantConns *prometheus.Desc
	laxKeys     *prometheus.Desc
	laxRooms    *prometheus.Desc
	accepted    *prometheus.Desc
}

func newMetrics() *metrics {
	const ns = "headcount"
	return &metrics{
		opened: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "connections_opened_total",
			Help: "Connections counted on this node since start."}),
		closed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "connections_closed_total",
			Help: "Connections uncounted on this node since start."}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rejections_total",
			Help: "Handshakes and joins refused, by reason."}, []string{"reason"}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "redis_timeouts_total",
			Help: "Waits on Redis given up after RedisTimeout (handshakes, joins, reads)."}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "reaped_slices_total",
			Help: "Counter slices of dead nodes removed by this node."}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "redis_errors_total",
			Help: "Failed Redis calls, by operation."}, []string{"op"}),
		scripts: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "redis_script_duration_seconds",
			Help:    "Latency of Redis script calls (a pipeline counts once), by script.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}, []string{"script"}),
		flushes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "flush_duration_seconds",
			Help:    "Latency of background batches: lax flushes and heartbeats.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}, []string{"kind"}),
		conns: prometheus.NewDesc(ns+"_connections", "Live connections: on this node (scope=local) and cluster-wide (scope=cluster).",
			[]string{"scope"}, nil),
		roomConns: prometheus.NewDesc(ns+"_room_connections", "Live connections of the rooms with the most connections on this node (Options.MetricsTopN).",
			[]string{"room", "scope"}, nil),
		tenantConns: prometheus.NewDesc(ns+"_tenant_connections", "Live connections of the tenants with the most connections on this node (Options.MetricsTopN).",
			[]string{"tenant", "scope"}, nil),
		laxKeys:  prometheus.NewDesc(ns+"_lax_buffered_keys", "Counters with changes not yet acknowledged by Redis.", nil, nil),
		laxRooms: prometheus.NewDesc(ns+"_auto_lax_rooms", "Rooms turned lax on this node by their churn (Options.AutoLaxRate).", nil, nil),
		accepted: prometheus.NewDesc(ns+"_connections_accepted_cluster_total", "Connections counted since the namespace began, by every node.", nil, nil),
	}
}

func (m *metrics) rejected(reason string) { m.rejections.WithLabelValues(reason).Inc() }

// The icounter.Observer methods.

func (m *metrics) ScriptDone(script string, d time.Duration, err error) {
	m.scripts.WithLabelValues(script).Observe(d.Seconds())
	if err != nil {
		m.redisErrors.WithLabelValues(script).Inc()
	}
}

func (m *metrics) Reaped(n int) { m.reaped.Add(float64(n)) }

func (m *metrics) Flushed(heartbeat bool, keys int, d time.Duration, err error) {
	kind := "flush"
	if heartbeat {
		kind = "heartbeat"
	}
	m.flushes.WithLabelValues(kind).Observe(d.Seconds())
}

// Collector returns a Prometheus collector of the Tracker's metrics (all
// named headcount_*). Register it once, e.g.
// prometheus.MustRegister(t.Collector()); to tell several Trackers of one
// process apart, wrap it with prometheus.WrapRegistererWith. Cluster-wide
// gauges are read from Redis at scrape time (one round trip, at most
// RedisTimeout); if Redis does not answer, only local values are exported.
func (t *Tracker) Collector() prometheus.Collector { return (*collector)(t.met) }

type collector metrics

func (m *metrics) owned() []prometheus.Collector {
	return []prometheus.Collector{m.opened, m.closed, m.rejections, m.timeouts, m.reaped, m.redisErrors, m.scripts, m.flushes}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	m := (*metrics)(c)
	for _, col := range m.owned() {
		col.Describe(ch)
	}
	for _, d := range []*prometheus.Desc{m.conns, m.roomConns, m.tenantConns, m.laxKeys, m.laxRooms, m.accepted} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*metrics)(c)
	for _, col := range m.owned() {
		col.Collect(ch)
	}
	t := m.t
	rooms, tenants, total, laxAuto := t.local.top(t.cfg.topN)
	ch <- prometheus.MustNewConstMetric(m.conns, prometheus.GaugeValue, float64(total), "local")
	ch <- prometheus.MustNewConstMetric(m.laxKeys, prometheus.GaugeValue, float64(t.lax.Buffered()))
	ch <- prometheus.MustNewConstMetric(m.laxRooms, prometheus.GaugeValue, float64(laxAuto))
	for _, r := range rooms {
		ch <- prometheus.MustNewConstMetric(m.roomConns, prometheus.GaugeValue, float64(r.n), r.name, "local")
	}
	for _, tn := range tenants {
		ch <- prometheus.MustNewConstMetric(m.tenantConns, prometheus.GaugeValue, float64(tn.n), tn.name, "local")
	}
	if t.closed.Load() {
		return
	}
	keys := []string{globalKey}
	for _, r := range rooms {
		keys = append(keys, roomKey(r.name))
	}
	for _, tn := range tenants {
		keys = append(keys, tenantKey(tn.name))
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.timeout)
	defer cancel()
	if n, err := t.accepted.Get(ctx, acceptedKey); err == nil {
		ch <- prometheus.MustNewConstMetric(m.accepted, prometheus.CounterValue, float64(n))
	}
	vals, err := t.read(ctx, keys)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(m.conns, prometheus.GaugeValue, float64(vals[0].Total), "cluster")
	for i, r := range rooms {
		ch <- prometheus.MustNewConstMetric(m.roomConns, prometheus.GaugeValue, float64(vals[1+i].Total), r.name, "cluster")
	}
	for i, tn := range tenants {
		ch <- prometheus.MustNewConstMetric(m.tenantConns, prometheus.GaugeValue, float64(vals[1+len(rooms)+i].Total), tn.name, "cluster")
	}
}
