package wsconn

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric families follow Prometheus' conventions: a family holds either
// values of this node or cluster-wide values, never both. Cluster-wide
// families are named headcount_cluster_*; every node exports the same
// value, so they are aggregated with max (sum would count each node's
// copy). Labelled counters and histograms exist at zero from the start.
// Series labelled with room and tenant names are opt-in
// (Options.MetricsRooms, Options.MetricsTenants): names come from clients.

// redisOps are the values of the op label of headcount_redis_errors_total:
// the Redis calls the engine makes (icounter.Observer): scripts, plain
// reads, heartbeats and sweeps.
var redisOps = []string{"assert", "read", "reset", "heartbeat", "sweep"}

// flushKinds are the values of the kind label of
// headcount_flush_duration_seconds.
var flushKinds = []string{"flush", "heartbeat"}

const clusterHelp = " The same on every node: aggregate with max, not sum."

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

	// This node's.
	conns       *prometheus.Desc
	roomConns   *prometheus.Desc
	tenantConns *prometheus.Desc
	tenantCap   *prometheus.Desc
	laxKeys     *prometheus.Desc
	laxRooms    *prometheus.Desc
	// Cluster-wide.
	clusterConns       *prometheus.Desc
	clusterRoomConns   *prometheus.Desc
	clusterTenantConns *prometheus.Desc
	clusterAccepted    *prometheus.Desc
}

func newMetrics() *metrics {
	const ns = "headcount"
	buckets := prometheus.ExponentialBuckets(0.0001, 2.5, 12)
	m := &metrics{
		opened: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "connections_opened_total",
			Help: "Connections counted by this node since it started: each connection accepted by Accept or Middleware, and each Admit, once."}),
		closed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "connections_closed_total",
			Help: "Connections uncounted by this node since it started (closed, peer gone, handler returned, lease released, drained), each once."}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rejections_total",
			Help: "Handshakes (Accept, Middleware, Admit) and Joins this node refused, by reason: " +
				"limit_tenant, limit_user, limit_room (a cap reached: 429), invalid_name, invalid_metadata, too_many_rooms (400), " +
				"unavailable (a limit not checked under FailClosed: 503), closed (shutting down: 503), other."},
			[]string{"reason"}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "redis_timeouts_total",
			Help: "Waits on Redis this node gave up at RedisTimeout or the caller's deadline: limit checks and strict counts of handshakes and Joins, reads, scrapes."}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "reaped_slices_total",
			Help: "Counter slices of other nodes, unseen for DeadInstanceThreshold, that this node's scripts removed."}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "redis_errors_total",
			Help: "Redis calls of this node that failed, each once (a pipeline is one call), by script: " +
				"assert (strict counts, limit checks, lax flushes, re-assertions), read, reset, " +
				"heartbeat (registrations and heartbeats), sweep (a dead session's removal). " +
				"A wait given up before the call ended is counted in headcount_redis_timeouts_total."},
			[]string{"op"}),
		scripts: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "redis_script_duration_seconds",
			Help:    "Duration of this node's Redis script calls, failed ones included, by script; a pipeline of scripts is one observation.",
			Buckets: buckets}, []string{"script"}),
		flushes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "flush_duration_seconds",
			Help: "Duration of this node's background batches, by kind: flush (lax changes, and strict ones Redis has not acknowledged) " +
				"and heartbeat (counts Redis may not hold, and lease renewals).",
			Buckets: buckets}, []string{"kind"}),

		conns: prometheus.NewDesc(ns+"_connections",
			"Connections open and counted on this node.", nil, nil),
		roomConns: prometheus.NewDesc(ns+"_room_connections",
			"Connections on this node in each of the Options.MetricsTopN rooms with the most connections on this node (with Options.MetricsRooms).",
			[]string{"room"}, nil),
		tenantConns: prometheus.NewDesc(ns+"_tenant_connections",
			"Connections on this node of each of the Options.MetricsTopN tenants with the most connections on this node (with Options.MetricsTenants).",
			[]string{"tenant"}, nil),
		tenantCap: prometheus.NewDesc(ns+"_tenant_connection_limit",
			"The cap of cluster-wide connections (Limits.PerTenant or TenantCap) this node applies to each tenant of headcount_tenant_connections that has one; "+
				"compare with headcount_cluster_tenant_connections.",
			[]string{"tenant"}, nil),
		laxKeys: prometheus.NewDesc(ns+"_lax_buffered_keys",
			"Counters with changes made on this node that Redis has not acknowledged yet.", nil, nil),
		laxRooms: prometheus.NewDesc(ns+"_auto_lax_rooms",
			"Rooms counted lax on this node because their joins and leaves here passed Options.AutoLaxRate.", nil, nil),

		clusterConns: prometheus.NewDesc(ns+"_cluster_connections",
			"Connections counted by every live node of the namespace, read from Redis at scrape time."+clusterHelp, nil, nil),
		clusterRoomConns: prometheus.NewDesc(ns+"_cluster_room_connections",
			"Connections counted by every live node in each room of headcount_room_connections, read from Redis at scrape time."+clusterHelp,
			[]string{"room"}, nil),
		clusterTenantConns: prometheus.NewDesc(ns+"_cluster_tenant_connections",
			"Connections counted by every live node for each tenant of headcount_tenant_connections, read from Redis at scrape time."+clusterHelp,
			[]string{"tenant"}, nil),
		clusterAccepted: prometheus.NewDesc(ns+"_cluster_connections_accepted_total",
			"Connections counted by any node of the namespace since its counters began in Redis (sent in lax batches: up to a flush interval behind)."+clusterHelp,
			nil, nil),
	}
	for _, r := range rejectionReasons {
		m.rejections.WithLabelValues(r)
	}
	for _, op := range redisOps {
		m.redisErrors.WithLabelValues(op)
		m.scripts.WithLabelValues(op)
	}
	for _, k := range flushKinds {
		m.flushes.WithLabelValues(k)
	}
	return m
}

func (m *metrics) rejected(reason string) { m.rejections.WithLabelValues(reason).Inc() }

// The icounter.Observer methods. A failed Redis call is counted here, once,
// and nowhere else.

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
// named headcount_*; see the package doc). Register it once, e.g.
// prometheus.MustRegister(t.Collector()); to tell several Trackers of one
// process apart, wrap it with prometheus.WrapRegistererWith. Cluster-wide
// families (headcount_cluster_*) are read from Redis at scrape time (two
// calls, the accepted count and the counts, within one RedisTimeout); if
// Redis does not answer, they are left out of that scrape.
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
	for _, d := range []*prometheus.Desc{m.conns, m.roomConns, m.tenantConns, m.tenantCap, m.laxKeys, m.laxRooms,
		m.clusterConns, m.clusterRoomConns, m.clusterTenantConns, m.clusterAccepted} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*metrics)(c)
	for _, col := range m.owned() {
		col.Collect(ch)
	}
	t := m.t
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	rooms, tenants, total, laxAuto := t.local.top(t.cfg.topN)
	if !t.cfg.MetricsRooms {
		rooms = nil
	}
	if !t.cfg.MetricsTenants {
		tenants = nil
	}
	gauge(m.conns, total)
	gauge(m.laxKeys, int64(t.lax.Buffered()))
	gauge(m.laxRooms, int64(laxAuto))
	for _, r := range rooms {
		gauge(m.roomConns, r.n, r.name)
	}
	for _, tn := range tenants {
		gauge(m.tenantConns, tn.n, tn.name)
		if limit := t.tenantCap(tn.name); limit > 0 {
			gauge(m.tenantCap, limit, tn.name)
		}
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
		ch <- prometheus.MustNewConstMetric(m.clusterAccepted, prometheus.CounterValue, float64(n))
	}
	vals, err := t.read(ctx, keys)
	if err != nil {
		return
	}
	gauge(m.clusterConns, vals[0].Total)
	for i, r := range rooms {
		gauge(m.clusterRoomConns, vals[1+i].Total, r.name)
	}
	for i, tn := range tenants {
		gauge(m.clusterTenantConns, vals[1+len(rooms)+i].Total, tn.name)
	}
}
