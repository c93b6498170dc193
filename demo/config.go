package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/headcount-go/headcount/wsconn"
)

// defaultNamespace keeps the demo's keys and chat channels apart from those
// of a real application sharing the Redis.
const defaultNamespace = "headcount-demo"

// maxNodes bounds -nodes: each node is a process and a column on the page.
const maxNodes = 16

// config is the command line, parsed and checked.
type config struct {
	addr      string        // -addr: listen address
	redis     string        // -redis: "" for the embedded Redis
	threshold time.Duration // -threshold: dead-instance threshold
	heartbeat time.Duration // -heartbeat: 0 means threshold/3
	instance  string        // -instance: ID, or prefix of the node IDs with -nodes
	lax       []string      // -lax: glob patterns of lax rooms
	flush     time.Duration // -flush: lax flush interval
	tenantCap int64         // -tenant-cap: connections per tenant, 0 = no cap
	nodes     int           // -nodes: node processes to start
	namespace string        // -namespace: Redis key and channel prefix
}

// parseConfig parses the demo's arguments (without the program name). Usage
// and errors go to out; -h gives flag.ErrHelp.
func parseConfig(args []string, out io.Writer) (config, error) {
	var c config
	var lax string
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprint(out, `usage: go run ./demo [flags]

A chat whose page shows each room's members and live connection counts,
kept by headcount in Redis.
With no flags: an embedded Redis and one node on :8080.

A node serves:
`)
		printEndpoints(out, nodeEndpoints)
		fmt.Fprint(out, `
With -nodes N, a supervisor serves the page on -addr, starts N nodes (this
program again, node i on -addr's port + i) and serves:
`)
		printEndpoints(out, supervisorEndpoints)
		fmt.Fprint(out, "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.addr, "addr", ":8080", "listen `address`; with -nodes, the page's, and node i listens on its port + i")
	fs.StringVar(&c.redis, "redis", "", "Redis `address` host:port or redis:// URL; several, comma-separated, mean a Redis Cluster; empty: an embedded Redis")
	fs.DurationVar(&c.threshold, "threshold", 30*time.Second, "dead-instance threshold (at least 10ms): a node unseen this long loses its counts")
	fs.DurationVar(&c.heartbeat, "heartbeat", 0, "heartbeat interval, at least 1ms (default threshold/3)")
	fs.StringVar(&c.instance, "instance", "", "instance `ID` (default: this host's name and the port, e.g. myhost:8080); with -nodes above 1, the prefix of node IDs (default \"node\")")
	fs.StringVar(&lax, "lax", "", "comma-separated glob `patterns` of rooms counted in lax mode, e.g. 'big-*,lobby'")
	fs.DurationVar(&c.flush, "flush", 20*time.Millisecond, "lax flush interval, at least 1ms")
	fs.Int64Var(&c.tenantCap, "tenant-cap", 0, "connections allowed per tenant (0: no cap)")
	fs.IntVar(&c.nodes, "nodes", 1, "node processes to start, sharing one Redis, behind one page")
	fs.StringVar(&c.namespace, "namespace", defaultNamespace, "prefix of the Redis keys and chat channels")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	for p := range strings.SplitSeq(lax, ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.lax = append(c.lax, p)
		}
	}
	if err := c.check(); err != nil {
		return config{}, usageError(fs, "%v", err)
	}
	return c, nil
}

// usageError prints the error and a hint on fs's output, as flag does for
// its own errors, and returns it.
func usageError(fs *flag.FlagSet, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	fmt.Fprintf(fs.Output(), "%v\nrun with -h for the flags\n", err)
	return err
}

func (c *config) check() error {
	switch {
	case c.threshold <= 0:
		return fmt.Errorf("-threshold %v: must be positive", c.threshold)
	case c.threshold < 10*time.Millisecond:
		return fmt.Errorf("-threshold %v: at least 10ms", c.threshold)
	case c.heartbeat < 0:
		return fmt.Errorf("-heartbeat %v: negative", c.heartbeat)
	case c.heartbeat > 0 && c.heartbeat < time.Millisecond:
		return fmt.Errorf("-heartbeat %v: at least 1ms (0: threshold/3)", c.heartbeat)
	case c.heartbeat > c.threshold/2:
		return fmt.Errorf("-heartbeat %v: at most half of -threshold %v, so that one missed beat is tolerated", c.heartbeat, c.threshold)
	case c.flush <= 0:
		return fmt.Errorf("-flush %v: must be positive", c.flush)
	case c.flush < time.Millisecond:
		return fmt.Errorf("-flush %v: at least 1ms", c.flush)
	case c.tenantCap < 0:
		return fmt.Errorf("-tenant-cap %d: negative", c.tenantCap)
	case c.nodes < 1 || c.nodes > maxNodes:
		return fmt.Errorf("-nodes %d: must be 1 to %d", c.nodes, maxNodes)
	}
	for _, p := range c.lax {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("-lax %q: %v", p, err)
		}
	}
	if _, _, err := c.nodeAddr(c.nodes); err != nil {
		return err
	}
	if _, err := redisOptions(c.redis); err != nil {
		return fmt.Errorf("-redis: %w", err)
	}
	return checkNamespace(c.namespace)
}

// checkNamespace applies wsconn's rule for namespaces (1 to 64 letters,
// digits, '_', '.' or '-'), which also keeps glob characters out of the
// chat's PSUBSCRIBE pattern.
func checkNamespace(ns string) error {
	if ns == "" || len(ns) > 64 {
		return fmt.Errorf("-namespace %q: must be 1 to 64 bytes", ns)
	}
	for _, r := range ns {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return fmt.Errorf("-namespace %q: only letters, digits, '_', '.' and '-'", ns)
		}
	}
	return nil
}

// nodeAddr is the listen address of node i (1-based) with -nodes: the port
// of -addr plus i, or 0 (any free port) when -addr's port is 0. Node 0 is
// -addr itself.
func (c *config) nodeAddr(i int) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(c.addr)
	if err != nil {
		return "", 0, fmt.Errorf("-addr %q: %v", c.addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("-addr %q: bad port", c.addr)
	}
	if port == 0 {
		return host, 0, nil
	}
	if port+i > 65535 {
		return "", 0, fmt.Errorf("-addr %q with -nodes %d: ports past 65535", c.addr, c.nodes)
	}
	return host, port + i, nil
}

// instanceID is the ID of node i (1-based) with -nodes: the -instance
// prefix (default "node") followed by i.
func (c *config) instanceID(i int) string {
	prefix := c.instance
	if prefix == "" {
		prefix = "node"
	}
	return prefix + strconv.Itoa(i)
}

// heartbeatEvery is the effective heartbeat interval.
func (c *config) heartbeatEvery() time.Duration {
	if c.heartbeat > 0 {
		return c.heartbeat
	}
	return c.threshold / 3
}

// isLax reports whether room is counted in lax mode.
func (c *config) isLax(room string) bool {
	for _, p := range c.lax {
		if ok, _ := path.Match(p, room); ok {
			return true
		}
	}
	return false
}

// trackerOptions are the wsconn options of a node of this configuration.
func (c *config) trackerOptions() wsconn.Options {
	o := wsconn.Options{
		Namespace:             c.namespace,
		InstanceID:            c.instance,
		DeadInstanceThreshold: c.threshold,
		HeartbeatInterval:     c.heartbeat,
		FlushInterval:         c.flush,
		Tenant:                func(r *http.Request) string { return r.URL.Query().Get("tenant") },
		User:                  func(r *http.Request) string { return r.URL.Query().Get("user") },
		Limits:                wsconn.Limits{PerTenant: c.tenantCap},
		// User presence: each room's members and their joins and leaves,
		// which the page shows (GET /api/events). A user is the page's
		// display name (?user=), which the member lists show as metadata.
		Presence: &wsconn.PresenceOptions{
			Metadata: func(r *http.Request) string { return r.URL.Query().Get("user") },
			// The demo has no authentication, so anyone may read any
			// room's members and events. A real application serves
			// PresenceHandler and EventsHandler behind its authentication
			// middleware and decides here from what that put in
			// r.Context(), e.g. whether the caller belongs to the room or
			// tenant asked about.
			Visible: func(*http.Request, string, string) bool { return true },
		},
		// A demo shows its rooms and tenants in /metrics; a real server
		// weighs the time series that clients' names create.
		MetricsRooms:   true,
		MetricsTenants: true,
	}
	if len(c.lax) > 0 {
		o.LaxRooms = c.isLax
	}
	return o
}

// nodeArgs are the arguments of node i (1-based) started by the supervisor:
// this configuration for a single node, with its own address and ID, on
// the Redis at redisAddr.
func (c *config) nodeArgs(i int, addr, redisAddr string) []string {
	return []string{
		"-addr", addr,
		"-redis", redisAddr,
		"-threshold", c.threshold.String(),
		"-heartbeat", c.heartbeat.String(),
		"-instance", c.instanceID(i),
		"-lax", strings.Join(c.lax, ","),
		"-flush", c.flush.String(),
		"-tenant-cap", strconv.FormatInt(c.tenantCap, 10),
		"-namespace", c.namespace,
	}
}
