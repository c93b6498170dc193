// Package wsconn counts a WebSocket server's open connections in Redis,
// cluster-wide, per room, per tenant and per user, and keeps the counts
// exact when a node crashes: every node (instance) owns a slice of each
// counter, and the slices of a node whose heartbeat stopped for
// DeadInstanceThreshold are swept by the others.
//
// # Forms
//
// Accept is the upgrade hook for github.com/coder/websocket: it checks
// names and limits, counts, upgrades and returns a *Conn:
//
//	http.HandleFunc("/ws/{room}", func(w http.ResponseWriter, r *http.Request) {
//		c, err := tracker.Accept(w, wsconn.WithRooms(r, r.PathValue("room")), nil)
//		if err != nil {
//			return // answered already: 400, 429, 503...
//		}
//		defer c.Close(websocket.StatusNormalClosure, "")
//		// read and write c.WS()
//	})
//
// A Conn is uncounted exactly once, by whichever comes first: Close or
// CloseNow (on the Conn or on c.WS()), the peer's close frame, a failed
// read or write on the connection, the handler returning or panicking, or
// Drain. The handler's return is seen as the end of the request's context,
// which net/http cancels then: a context that ends sooner (an
// http.Server.BaseContext cancelled at SIGTERM, a timeout middleware)
// closes the connection then, with StatusInternalError. End a server's
// connections with Drain or Shutdown, which send Options.DrainStatus.
//
// How a dropped peer is seen: after the hijack, net/http no longer cancels
// the request context when the TCP connection dies, and coder/websocket does
// not close its connection when a read hits EOF. So Accept hands
// coder/websocket a wrapped net.Conn: its Close, and any failed Read or
// Write (other than a timeout), uncount the connection. A peer that vanishes
// without a FIN or RST is seen only when a write fails, or when a read does
// if pings are sent; a connection nobody reads cannot see its peer's close
// frame. Keep reading (or call c.WS().CloseRead) and ping.
//
// How the handler's end is seen: net/http cancels the request context when
// the handler returns, also after a hijack and after a panic. Accept closes
// a connection still open at that point with StatusInternalError (1011).
//
// # Hub handlers
//
// Handlers that return right after the upgrade and hand the connection to a
// hub goroutine need the count to last until the connection closes, not
// until the handler returns:
//
//   - with coder/websocket, use Accept and call Conn.Detach before
//     returning; the connection is then uncounted by Close, the peer's close,
//     or a failed read or write (the hub must keep reading);
//   - with another library (gorilla/websocket...), call Admit before the
//     upgrade and Lease.Release when the connection ends.
//
// Middleware does not fit them: it counts a handler that upgrades by itself
// (any library; seen by a 101 or a successful Hijack through a writer that
// forwards Hijack, Flush and Unwrap) for as long as the handler runs, and
// would undercount a hub handler at once.
//
// # Names
//
// Room, tenant and user names come from clients. They must be 1 to
// MaxNameLen bytes of valid UTF-8 without control characters; anything
// else is refused with ErrInvalidName (HTTP 400) before any Redis write.
// Any other byte is allowed: names are encoded so that no two names share a
// key, no name leaves its Redis Cluster hash tag, and no name reaches
// another namespace or another kind of counter.
//
// # Strict and lax
//
// A strict counter (the default) is in Redis before Accept returns, so
// before the handler exchanges a first message with the client: once a
// client has an answer to its first message, every node counts it. (The
// count follows the upgrade: the client does not wait for Redis, and a
// handshake coder/websocket refuses is never counted. Limits are taken
// before the upgrade.) Strict counts from concurrent handshakes and closes
// are group-committed: one Redis round trip carries all of them. A lax counter
// (Options.Lax for the global, tenant and user counters; Options.LaxRooms
// and Options.AutoLaxRate for rooms) is counted in memory and sent with the
// next flush: Accept does not wait for Redis. The staleness bound: a lax
// change made on one node is seen by every other node's reads within
// FlushInterval plus one Redis round trip while Redis is reachable; the
// node's own contribution (Count.Local, and its share of Count.Total) is
// always exact on that node. Closing never waits for Redis: strict counts
// are sent in the background within 10 ms (half the default FlushInterval)
// and a round trip, lax ones with the next flush. A connection counted on
// the node meanwhile in the same room (a reload, a reconnect, churn in a
// busy room) cancels the release out: Redis holds the count in memory
// already, so the handshake returns without a round trip, and neither
// costs Redis anything. Leave is a strict change like Join: from a strict
// room (or any room when room limits are set) it waits on Redis, at most
// Options.RedisTimeout, so that when it returns the room's count is down
// on every node; from a lax room it goes with the next flush.
//
// Options.AutoLaxRate turns a room lax on a node as soon as its joins plus
// leaves on that node within a one-second window exceed the rate, and
// strict again after a window below half the rate. A key can be lax on one
// node and strict on another: both send the same per-node assertions, only
// at different times.
//
// # Limits
//
// Limits cap live connections cluster-wide, per tenant, user and room:
// one cap for every name (PerTenant, PerUser, PerRoom), or a function that
// gives each name its own (TenantCap, UserCap, RoomCap; e.g. from the
// tenant's plan), asked on every handshake and Join, so that a change takes
// effect on the next one without a restart.
// Before the upgrade each applicable limit is taken by an atomic
// check-and-count in Redis on its own key (the keys live in different
// cluster slots), in a fixed order (tenant, user, rooms sorted), and those
// already taken are given back when a later one refuses. Concurrent
// handshakes on several nodes can therefore never overshoot a limit while
// Redis answers. A refusal is a *LimitError that says which cap refused,
// its value and the usage Redis saw in the same check; HTTP 429 with
// Retry-After and that in a JSON body (see WriteError), or with
// Options.RejectWithClose an accepted connection closed at once with 1013
// (try again later) and the reason, which browsers can read. A crashed
// node's connections are swept with its slices, so its share of every
// limit is freed after DeadInstanceThreshold (plus a heartbeat).
//
// Limits apply to Conn.Join as well; joins of a limited room are always
// checked in Redis, even when the room is lax.
//
// # Presence
//
// With Options.Presence (and Options.User), a connection's user is counted
// as a member of each of its rooms, of its tenant and of the namespace,
// beside the connection counts. A user with three tabs on two nodes is one
// user; when one node dies the user stays, when both die the user leaves.
//
//   - RoomUsers, TenantUsers and OnlineUsers count distinct users.
//   - Members lists a room's users, each with its connections in the room
//     and the metadata PresenceOptions.Metadata read from its latest
//     handshake (at most MaxMetadataLen bytes: a larger one is a 400 before
//     any Redis write), paged with a cursor. A room lists at most
//     PresenceOptions.MaxMembers users; the users beyond are counted and
//     announced, but not listed.
//   - Events: a user joins a room (its first connection in, cluster-wide),
//     leaves it (its last one out), a room is occupied (first user in) or
//     vacated (last user out). Each event happens once cluster-wide: the
//     Redis script that makes the change emits it, whether a node counting
//     a connection (reason closed, or drained while the node drains) or a
//     sweeper removing a dead node's connections (reason crashed, within
//     DeadInstanceThreshold, a heartbeat and a second of the crash). Each room's
//     events carry a sequence, are kept in Redis (PresenceOptions.History)
//     and published on the room's channel, with SPUBLISH in the room's slot
//     where Redis has it (7 and newer), PUBLISH on 6.2.
//   - Watch gives a snapshot of rooms and then every event after it, in
//     order; given the last sequences a subscriber saw, it resumes with no
//     gap and no duplicate. WatchAll does the same for every room, with
//     PresenceOptions.WatchAll (every event also published on one
//     namespace-wide channel). EventsHandler serves either as Server-Sent
//     Events (Last-Event-ID resumes) and PresenceHandler adds distinct
//     users and, with members=1, member lists.
//
// Lax rooms batch member changes like counts: their events go out with the
// flush. A user's leave and join of one room on one node that ride in the
// same commit (or flush) cancel out: neither is announced.
// PresenceOptions.Grace holds leaves back so that a reload (a leave, then a
// join within the grace, on any node) announces nothing.
//
// Member lists and events say who is online, so the handlers serve them
// only to requests PresenceOptions.Visible allows (403 otherwise, before
// any Redis call); without it they serve counts only. Mount the handlers
// behind the application's authentication and decide in Visible from what
// it put in the request:
//
//	Presence: &wsconn.PresenceOptions{
//		Metadata: func(r *http.Request) string { return auth.From(r).DisplayName },
//		Visible: func(r *http.Request, kind, name string) bool {
//			return kind == "room" && auth.From(r).InRoom(name)
//		},
//	}
//	mux.Handle("/presence/events", authMiddleware(tracker.EventsHandler()))
//
// Presence costs Redis work per user per room (see BENCHMARKS.md); while
// it is off no member key is written. On a Redis Cluster the users
// overall (OnlineUsers) are split by user name into 16 groups whose hash
// slots are spread over the slot space, so each master takes its share of
// the users' first connects and last disconnects; OnlineUsers reads the
// 16 in one round trip per master. A tenant's users are one group, in its
// tenant's slot: a tenant's connects and disconnects all change keys on
// that slot's master (see SCALING.md).
//
// # When Redis fails
//
// Open connections are never closed because Redis is unreachable. Counting
// always fails open: the change is made in this node's slice in memory and
// reaches Redis with the next flush or heartbeat, so counts converge within
// one heartbeat interval once Redis is back (also after it lost its data).
// A handshake (its limit checks and its count together, with Accept,
// Admit or Middleware), a Join, a Leave or a read never waits on Redis
// longer than Options.RedisTimeout, whatever the go-redis client's own
// timeouts. When a
// limit cannot be checked in time, the connection is admitted (fail-open,
// the default; it may then overshoot the limit) or, with
// Options.FailClosed, refused with 503 and ErrUnavailable. A limit check
// that answers after its handshake gave up is undone.
//
// # Shutdown
//
// Call Shutdown right after http.Server.Shutdown, which neither closes
// hijacked connections nor waits for them: it drains (closes connections
// with 1001, or Options.DrainStatus) and then removes this node's counts
// from Redis at once, so a rolling deploy leaves no ghost connections.
//
// # Metrics
//
// Collector returns a Prometheus collector. Its families hold either this
// node's values or cluster-wide ones, never both: a cluster-wide family is
// named headcount_cluster_*, is read from Redis at scrape time, and has the
// same value on every node, so aggregate it with max (sum would count it
// once per node); sum this node's families over nodes.
//
// This node's:
//
//   - headcount_connections: connections open and counted here;
//   - headcount_connections_opened_total, headcount_connections_closed_total;
//   - headcount_rejections_total{reason}: refused handshakes and Joins, by
//     reason (limit_tenant, limit_user, limit_room, invalid_name,
//     invalid_metadata, too_many_rooms, unavailable, closed, other);
//   - headcount_redis_errors_total{op}: failed Redis calls, each once, by
//     script (assert, read, reset, heartbeat, sweep);
//   - headcount_redis_timeouts_total: waits on Redis given up;
//   - headcount_reaped_slices_total: other nodes' slices this node reaped;
//   - headcount_redis_script_duration_seconds{script} and
//     headcount_flush_duration_seconds{kind} (flush, heartbeat): histograms;
//   - headcount_lax_buffered_keys, headcount_auto_lax_rooms.
//
// Cluster-wide: headcount_cluster_connections and
// headcount_cluster_connections_accepted_total (every node's connections
// since the namespace's counters began).
//
// Every labelled counter and histogram exists at zero from the start, with
// every label value it can take. Series labelled with room or tenant names
// are opt-in, as the names come from clients: with Options.MetricsRooms,
// headcount_room_connections{room} and
// headcount_cluster_room_connections{room} for the Options.MetricsTopN
// rooms with the most connections on this node; with
// Options.MetricsTenants, headcount_tenant_connections{tenant},
// headcount_cluster_tenant_connections{tenant} and
// headcount_tenant_connection_limit{tenant} (the cap in force, for tenants
// that have one) for the top tenants.
//
// The repository's dashboards/headcount.json is a Grafana dashboard of
// these metrics.
package wsconn
