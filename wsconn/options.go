package wsconn

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/internal/icounter"
	"github.com/headcount-go/headcount/internal/keyspace"
)

// Defaults for zero option values.
const (
	DefaultNamespace       = "headcount"
	DefaultMaxRoomsPerConn = 64
	DefaultRedisTimeout    = 500 * time.Millisecond
	DefaultRetryAfter      = time.Second
	DefaultDrainStatus     = websocket.StatusGoingAway
	DefaultMetricsTopN     = 10
)

// ErrInvalidOptions is wrapped by every error New returns for bad Options.
var ErrInvalidOptions = errors.New("wsconn: invalid options")

// Options configure a Tracker. The zero value is usable: one namespace,
// strict counting of every connection, no rooms, tenants or limits.
type Options struct {
	// Namespace prefixes every Redis key: letters, digits, '_', '.', '-',
	// at most 64 bytes. Trackers count together when they share it.
	// Default "headcount".
	Namespace string
	// InstanceID names this process (e.g. the pod name). Default: a new
	// UUID. A stable ID lets a restarted process sweep its predecessor's
	// counts at once, from every counter, instead of counting both until
	// DeadInstanceThreshold has passed.
	InstanceID string
	// DeadInstanceThreshold is how long a node may miss its heartbeat before
	// other nodes remove its counts (and its share of every limit). Default
	// 30s; at least 10ms. Every node of a Namespace must use the same.
	DeadInstanceThreshold time.Duration
	// HeartbeatInterval is how often this node stamps itself alive (one
	// short script, whatever its rooms) and checks that Redis kept its
	// counts.
	// Default DeadInstanceThreshold/3; at least 1ms, at most
	// DeadInstanceThreshold/2.
	HeartbeatInterval time.Duration
	// FlushInterval is how often lax changes (and strict ones Redis did not
	// acknowledge) are sent. Default 20ms; at least 1ms.
	FlushInterval time.Duration

	// Rooms returns the rooms a connection joins at the handshake (from the
	// path, a query parameter...). Default: none. "" is not a room name
	// (the handshake gets 400): return nil for none. See also WithRooms,
	// which skips "".
	Rooms func(*http.Request) []string
	// Tenant returns the connection's tenant; "" means none.
	Tenant func(*http.Request) string
	// User returns the connection's user; "" means anonymous.
	User func(*http.Request) string
	// CountUsers keeps a counter per user, for UserCount. Each costs a Redis
	// key per user per heartbeat. Implied by a per-user limit
	// (Limits.PerUser or Limits.UserCap).
	CountUsers bool
	// Limits cap connections per tenant, user and room.
	Limits Limits
	// Presence, if set, turns on user presence: distinct users per room,
	// per tenant and overall, member lists and join/leave events (see the
	// Presence section of the package doc). It needs User. Off by default:
	// it costs a Redis key per user per room, and counts alone cost nothing
	// more when it is off.
	Presence *PresenceOptions

	// Lax counts the global, tenant and user counters in lax mode: in
	// memory, sent every FlushInterval. Default: strict (Accept, Admit and
	// Join return once Redis holds the count).
	Lax bool
	// LaxRooms reports the rooms counted in lax mode. It is called on every
	// join and leave: it must be fast and must not call the Tracker.
	LaxRooms func(room string) bool
	// AutoLaxRate turns a room lax on this node once its joins plus leaves
	// here exceed this many per second, and strict again once a whole
	// second passes below half that rate. 0 disables; at most
	// 2,147,483,647.
	AutoLaxRate float64
	// MaxRoomsPerConn caps the rooms of one connection. Default 64.
	MaxRoomsPerConn int

	// RedisTimeout is the most a handshake (or Join, Leave or read) waits
	// on Redis. Default 500ms.
	RedisTimeout time.Duration
	// FailClosed refuses connections that are subject to a limit with 503
	// when Redis cannot check the limit in time. Counting itself always
	// fails open: open connections are never dropped, and a connection
	// without a limit is always accepted.
	FailClosed bool
	// RejectWithClose rejects limited connections by accepting them and
	// closing at once with 1013 (try again later) and a reason, which
	// browsers can see, instead of HTTP 429. Accept and Handler accept
	// with their AcceptOptions; Middleware, which does not know its
	// handler's, with the default origin check and the client's first
	// subprotocol.
	RejectWithClose bool
	// RetryAfter is sent as Retry-After (in whole seconds, rounded up) with
	// 429 and 503. Default 1s.
	RetryAfter time.Duration
	// DrainStatus is the close code Drain sends: StatusGoingAway (1001,
	// default) or StatusServiceRestart (1012), or any other valid code.
	DrainStatus websocket.StatusCode

	// MetricsRooms exports gauges labelled with room names (room=...):
	// connections on this node and cluster-wide of the MetricsTopN rooms
	// with the most connections on this node. Off by default: room names
	// come from clients, and every name is a time series of its own.
	MetricsRooms bool
	// MetricsTenants exports gauges labelled with tenant names (tenant=...)
	// for the MetricsTopN tenants with the most connections on this node:
	// their connections here and cluster-wide, and their cap. Off by
	// default, like MetricsRooms.
	MetricsTenants bool
	// MetricsTopN is how many rooms, and how many tenants, get gauges of
	// their own with MetricsRooms and MetricsTenants. Default 10; negative
	// for none.
	MetricsTopN int
	// Logger receives warnings. Default: silent.
	Logger *slog.Logger
}

// Limits cap live connections cluster-wide, per tenant, per user and per
// room; 0 means no limit. A cap is either fixed (PerTenant, PerUser,
// PerRoom) or asked of a function for each name (TenantCap, UserCap,
// RoomCap), e.g. from a tenant's plan: the function is called on every
// handshake and Join that the cap applies to, so a new answer takes effect
// on the next one, without a restart. Connections already open stay open
// when a cap is lowered below them; new ones are refused until the count
// falls below the cap. A place a close frees is free at once on its node,
// and on the others within 10 ms and a round trip (strict closes are sent
// in the background).
//
// A cap function must be fast (it runs on the handshake path, before any
// Redis call), safe for concurrent use, and must not call the Tracker. It
// returns the cap of its name: 0 (or a negative value) means no limit for
// that name. Setting both the fixed cap and the function of one kind is an
// error (ErrInvalidOptions), and so is a tenant cap without Options.Tenant
// or a user cap without Options.User: with nothing to name them, no
// connection would be capped.
type Limits struct {
	PerTenant int64
	PerUser   int64
	PerRoom   int64

	TenantCap func(tenant string) int64
	UserCap   func(user string) int64
	RoomCap   func(room string) int64
}

// MaxMetadataLen is the most bytes PresenceOptions.Metadata may return.
const MaxMetadataLen = 1024

// PresenceOptions configure user presence.
type PresenceOptions struct {
	// Metadata returns what the member lists and join events show of a
	// connection's user (e.g. a display name): valid UTF-8, at most
	// MaxMetadataLen bytes, else the handshake is refused with 400 before
	// any Redis write. A user's metadata is the one its latest connection
	// set, an empty one included. With the user's connections in a room on
	// several nodes, a node that later opens or closes one of them sets its
	// own latest again. Default: none.
	Metadata func(*http.Request) string
	// MaxMembers is how many users a room's member list keeps. Users
	// beyond it are counted (RoomUsers) and their events sent, but they are
	// not listed, also once listed users leave. Default 10000.
	MaxMembers int
	// History is about how many of a room's last events Redis keeps, so that
	// a subscriber that was cut off resumes without a gap (see Watch).
	// Default 1000.
	History int
	// Grace holds a user's leave of a room back for this long: a join of
	// the same user within it (a tab reload), on any node, means neither
	// the leave nor the join is announced, and the member list never drops
	// the user. During the grace the user's connections in the room count
	// one more. Leaves of a crashed node have no grace (the dead-instance
	// threshold is one); Drain and Close send the held ones at once, as
	// closed. Default 0: none; a strict close is still held 10 ms before it
	// reaches Redis, so a reload on the same node within that is not
	// announced either (see "Strict and lax" in the package doc).
	Grace time.Duration
	// WatchAll publishes every room's events on one channel of the
	// namespace too, for Tracker.WatchAll and EventsHandler's all=1. It
	// costs a PUBLISH per event, which a Redis Cluster sends to every
	// node. Set it alike on every node: each publishes its own changes.
	WatchAll bool
	// Visible decides what a request to PresenceHandler or EventsHandler
	// may read: called for every room, tenant and user the request names
	// (kind "room", "tenant" or "user"; kind "all" with name "" for a
	// stream of every room), before any Redis call; one false answers 403. Member lists and events say who is online, so without
	// Visible those handlers refuse them (403) and serve counts only, as
	// they do without Presence. Put the handlers behind the application's
	// authentication, and decide here from what it put in the request's
	// context.
	Visible func(r *http.Request, kind, name string) bool
}

// config is Options checked and completed.
type config struct {
	Options
	countUsers  bool
	maxRooms    int
	timeout     time.Duration
	retryAfter  time.Duration
	drainStatus websocket.StatusCode
	topN        int
	log         *slog.Logger
	icounter    icounter.LaxOptions
}

func (o Options) config() (config, error) {
	c := config{Options: o}
	bad := func(format string, args ...any) (config, error) {
		return config{}, fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	c.Namespace = cmp.Or(o.Namespace, DefaultNamespace)
	if err := keyspace.CheckPrefix(c.Namespace); err != nil {
		return bad("Namespace: %v", err)
	}
	switch {
	case o.Limits.PerTenant < 0 || o.Limits.PerUser < 0 || o.Limits.PerRoom < 0:
		return bad("Limits {PerTenant:%d PerUser:%d PerRoom:%d}: negative",
			o.Limits.PerTenant, o.Limits.PerUser, o.Limits.PerRoom)
	case o.Limits.PerTenant > 0 && o.Limits.TenantCap != nil:
		return bad("Limits: both PerTenant and TenantCap set; use one")
	case o.Limits.PerUser > 0 && o.Limits.UserCap != nil:
		return bad("Limits: both PerUser and UserCap set; use one")
	case o.Limits.PerRoom > 0 && o.Limits.RoomCap != nil:
		return bad("Limits: both PerRoom and RoomCap set; use one")
	case (o.Limits.PerTenant > 0 || o.Limits.TenantCap != nil) && o.Tenant == nil:
		return bad("Limits: a tenant cap without Options.Tenant, which names a connection's tenant")
	case (o.Limits.PerUser > 0 || o.Limits.UserCap != nil) && o.User == nil:
		return bad("Limits: a user cap without Options.User, which names a connection's user")
	case o.AutoLaxRate < 0 || math.IsNaN(o.AutoLaxRate) || math.IsInf(o.AutoLaxRate, 0):
		return bad("AutoLaxRate %v: must be a finite rate >= 0", o.AutoLaxRate)
	case o.AutoLaxRate > math.MaxInt32:
		return bad("AutoLaxRate %v: above %d changes a second", o.AutoLaxRate, math.MaxInt32)
	case o.MaxRoomsPerConn < 0:
		return bad("MaxRoomsPerConn %d: negative", o.MaxRoomsPerConn)
	case o.RedisTimeout < 0:
		return bad("RedisTimeout %v: negative", o.RedisTimeout)
	case o.RetryAfter < 0:
		return bad("RetryAfter %v: negative", o.RetryAfter)
	case o.Presence != nil && o.User == nil:
		return bad("Presence needs User: presence is about users")
	case o.Presence != nil && (o.Presence.MaxMembers < 0 || o.Presence.History < 0 || o.Presence.Grace < 0):
		return bad("Presence {MaxMembers:%d History:%d Grace:%v}: negative", o.Presence.MaxMembers, o.Presence.History, o.Presence.Grace)
	case o.DrainStatus != 0 && !validCloseCode(o.DrainStatus):
		return bad("DrainStatus %d: not a close code a server may send", o.DrainStatus)
	}
	c.countUsers = o.CountUsers || o.Limits.PerUser > 0 || o.Limits.UserCap != nil
	c.maxRooms = cmp.Or(o.MaxRoomsPerConn, DefaultMaxRoomsPerConn)
	c.timeout = cmp.Or(o.RedisTimeout, DefaultRedisTimeout)
	c.retryAfter = cmp.Or(o.RetryAfter, DefaultRetryAfter)
	c.drainStatus = cmp.Or(o.DrainStatus, DefaultDrainStatus)
	c.topN = cmp.Or(o.MetricsTopN, DefaultMetricsTopN)
	if c.topN < 0 {
		c.topN = 0
	}
	c.log = o.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.icounter = icounter.LaxOptions{
		Options: icounter.Options{
			Prefix:                c.Namespace,
			DeadInstanceThreshold: o.DeadInstanceThreshold,
			HeartbeatInterval:     o.HeartbeatInterval,
			InstanceID:            o.InstanceID,
			Logger:                c.log,
		},
		FlushInterval: o.FlushInterval,
	}
	if p := o.Presence; p != nil {
		c.icounter.Presence = &icounter.PresenceOptions{MemberCap: p.MaxMembers, EventHistory: p.History, AllGroups: p.WatchAll}
	}
	return c, nil
}

// validCloseCode reports whether a server may send code in a close frame
// (RFC 6455 section 7.4: 1004-1006 and 1015 are reserved, 1016-2999 are
// unassigned).
func validCloseCode(code websocket.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
