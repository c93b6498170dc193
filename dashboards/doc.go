// Package dashboards holds headcount.json, a Grafana dashboard of the
// metrics of wsconn's Tracker.Collector: connections on each node and
// cluster-wide, the top rooms and tenants and the tenants' use of their
// caps, refusals by reason, reaps, Redis errors, timeouts and latency, and
// the lax buffer. Import it in Grafana (Dashboards, New, Import) and pick
// the Prometheus data source that scrapes your nodes.
//
// The room and tenant panels need Options.MetricsRooms and
// Options.MetricsTenants. The package's test checks that every metric the
// dashboard queries is one the library exports.
package dashboards
