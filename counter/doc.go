// Package counter counts anything across the processes of a cluster, in
// Redis: page views, jobs per worker, streams per tenant. It offers four
// kinds of counter: shared or per-instance, each strict or lax.
//
// A shared counter is one int64 per key that every process adds to. What a
// process added stays when it exits or crashes: use it for cumulative
// figures (page views, jobs done, bytes sent) and for quotas.
//
// A per-instance counter gives every process (an instance) its own slice
// of each key. Get returns a [Value]: Total, the sum of the live instances'
// slices plus a base written by Set, and Mine, this instance's slice. A
// process that crashes stops its heartbeat, and another instance sweeps its
// slices from every key once it goes unseen for DeadInstanceThreshold, so
// the counts it held leave the Total by themselves. Use it for what a process holds
// while it runs: jobs in progress per worker, open streams per tenant,
// connections (package wsconn counts WebSocket connections with it).
//
// A strict counter's change is in Redis when the call returns. A lax
// counter buffers Inc and Dec in memory (an atomic add, no round trip) and
// sends the changes of all keys every FlushInterval (20ms by default) in
// one pipelined batch, for keys changed thousands of times a second.
//
// # Consistency
//
//   - [Shared]: every change is one atomic Redis operation, seen by every
//     process once the call returns; a call that fails on the network may
//     or may not have been applied.
//   - [SharedLax]: other processes see a change within FlushInterval plus a
//     round trip, applied exactly once even when a flush is retried; Get
//     adds this process's unsent changes; changes not flushed before a crash
//     are lost.
//   - [PerInstance]: every change is in Redis when the call returns; Total
//     counts live instances only, a crashed one's slice is swept after
//     DeadInstanceThreshold.
//   - [PerInstanceLax]: other instances see a change within FlushInterval
//     plus a round trip; exact within the instance; crash-safe like
//     PerInstance.
//
// Strict and lax counters of one kind and Prefix count together, so a key
// can be lax in a busy process and strict in another. Shared and
// per-instance counters never share values, whatever their prefixes.
//
// # Which one
//
// Ask what should happen to a process's counts when it dies. If they must
// stay (the page was viewed, the job was done), take a shared counter; if
// they must go (the job no longer runs, the stream is gone), take a
// per-instance one. Then take strict unless a key changes so often that a
// round trip per change costs too much, or an answer a few milliseconds
// old is good enough. Limits that must hold cluster-wide ("at most 10
// streams per tenant") use IncIf, which is atomic in every kind:
//
//	v, ok, err := streams.IncIf(ctx, tenant, 1, counter.Cond{Op: counter.Lt, Operand: 10})
//	if err == nil && !ok {
//		// refused: v.Total streams are open already
//	}
//
// # Operations
//
// Every kind has Inc and Dec (delta >= 0), Get, Set, Del, IncIf (a
// conditional add of either sign), Clear (every key under the Prefix) and
// Close; the lax kinds add Flush. On the per-instance kinds Inc, Dec and
// IncIf change this instance's slice; SetOnInstance and DelOnInstance set
// or remove it; Set, Del and Clear reset keys cluster-wide: every slice
// goes, Set's value becomes a base owned by no instance, and the key keeps
// a tombstone for TombstoneTTL so that an instance cut off from Redis during
// the reset zeroes its slice when it returns instead of bringing it back.
// A base outlives its writer but not a loss of Redis data.
//
// A PerInstanceLax also hands out a [Handle] per key, for a key changed
// often: its Inc and Dec skip the key's look-up, an atomic add each.
//
// Close ends a counter: a SharedLax sends its buffered changes a last time,
// a per-instance counter removes its slices from Redis at once (the Total
// drops without waiting for a sweep) and stops its heartbeat. Later calls
// return [ErrClosed]. The Redis client is never closed by this package.
//
// # Keys
//
// A key is 1 to [MaxKeyLen] bytes without control characters (bytes below
// 0x20, and 0x7f); any other byte is fine, '{', '}' and ':' included. A
// Prefix is 1 to [MaxPrefixLen] bytes of letters, digits, '_', '.' and '-'.
// Each counter lives in Redis keys of its own, all in one Cluster hash
// slot: hc:v1:c:{prefix:key} for shared ones, hc:v1:i:{prefix:key} and
// hc:v1:i:{prefix:key}:seen for per-instance ones, where '%', '{' and '}'
// of the key are percent-encoded so that no key can leave its hash tag or
// collide with another. Per-instance counters expire within two slice
// leases (20 minutes by default) of their last write; shared counters stay
// until Del or Clear. A SharedLax also keeps, beside each key it flushes,
// hc:v1:c:{prefix:key}:w:<writer>, the number of its last batch there (one
// per key and process, for an hour after its last flush): what makes a
// flush resent after a timeout count once, as long as Redis answers within
// that hour.
//
// # Errors
//
// Bad arguments are refused before any Redis call: [ErrInvalidKey],
// [ErrInvalidDelta] (a negative delta to Inc or Dec), [ErrInvalidCond].
// Constructors wrap [ErrInvalidOptions]. Calls after Close return
// [ErrClosed]; a per-instance counter whose InstanceID another live process
// took over returns [ErrDuplicateInstance]. Test them with errors.Is: they
// are the same for all four kinds. Other errors come from Redis or the
// context.
//
// What an error means for the change: a per-instance Inc, Dec or
// SetOnInstance that fails stays in the instance's slice and reaches Redis
// with a later write or heartbeat (the slice is the truth Redis converges
// to; Dec undoes an Inc), unless its ctx ended before the change was made
// (before the call, or while the call waited for a Clear under way): then
// nothing changed; a per-instance IncIf that fails was not applied; a Set,
// Del or Clear that fails, and any failed call of a Shared, may or may not
// have been applied, unless ctx had ended before the call.
//
// # Contexts
//
// Every call takes a context first. Lax Inc and Dec never wait and ignore
// it. Every other call changes nothing if ctx has ended already, and
// returns ctx.Err() as soon as ctx ends, whether Redis
// is slow or hangs, whatever the client's own timeouts: its Redis command
// finishes in the background, bounded by those timeouts (go-redis honours
// a context's deadline on its sockets only with ContextTimeoutEnabled). A
// change whose caller gave up may have been applied; an IncIf of a
// per-instance counter is taken back if it was. Close returns when its
// context ends too: the per-instance kinds' slices it could not remove are
// swept after DeadInstanceThreshold, and a lax shared counter's last
// flush goes on in the background. Constructors wait on Redis for at most
// one second.
//
// # Redis
//
// Constructors take a go-redis [redis.UniversalClient]: a *redis.Client for
// a standalone server, redis.NewFailoverClient for Sentinel, a
// *redis.ClusterClient for Redis Cluster, or whatever
// redis.NewUniversalClient returns. On a Cluster every script touches the
// keys of one hash slot only (one counter's, or the registry's), so it
// runs on one node; Clear scans every master. Reads must go to masters: a
// client that routes them to replicas (ReadOnly, RouteByLatency,
// RouteRandomly) may read a count older than a change it was told of. A
// *redis.Ring, whose shards are servers of their own, is refused
// (ErrInvalidOptions).
// Redis 6.2 or newer, or Valkey. Liveness is judged by Redis' TIME, never
// by a process's clock. A constructor does not fail when Redis is down: it logs, and the
// counter catches up once Redis is back.
//
// A restart without persistence, a FLUSHALL, or a failover that loses the
// registry or, on a Cluster, a master's canary heals by itself for
// per-instance counters: at its next heartbeat (every HeartbeatInterval,
// DeadInstanceThreshold/3 by default) every live instance finds that the
// registry forgot it, or that its canary on a Cluster master is gone, and
// re-asserts its slices, so Totals are exact again within one heartbeat; a
// base from Set is lost. A failover that loses only the last writes before
// it (replication is asynchronous) and keeps those keys is not noticed: a
// slice it rolled back stays so until its instance writes that counter
// again or renews its lease. Shared counters lose what Redis lost.
package counter
