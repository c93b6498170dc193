// Package icounter implements instance-aware counters in Redis: the count of
// something (connections in a room) kept exact across a cluster of server
// processes, even when one of them crashes.
//
// # Model
//
// Each process is an instance (Options.InstanceID) that owns a slice of
// every counter. The total is a base (set by Set) plus the sum of the live
// slices. Every write an instance makes is an absolute, sequenced assertion
// of its own slice, "my slice of K is L, sequence S, epoch E", applied by a
// Lua script only when S is newer than the stored sequence. Writes are
// therefore idempotent and order-safe: a retried or reordered write cannot
// double count. The sequence is (session, counter), where the session is
// Redis TIME at start, so it keeps growing across a restart with the same
// InstanceID and the restarted process takes over its predecessor's slice:
// on every counter it writes, and on every counter it reads, where the read
// drops the older session's slice.
//
// Every script on a counter first reaps it: the slices of instances not
// seen on it for DeadInstanceThreshold (by Redis' clock) are removed, at most
// 64 per call. Only an instance's own assertions stamp it as seen; a read
// never keeps a slice alive. Each instance re-asserts all of its non-zero slices every
// HeartbeatInterval in one pipeline, which keeps it alive and heals lost
// data: after a FLUSHALL, a failover that lost writes, a reply lost in
// flight or a false reap during a partition, totals are exact again within
// one heartbeat.
//
// Set and Del reset a counter cluster-wide: they bump its epoch and leave it
// behind as a tombstone (TombstoneTTL, 24h by default). An instance whose
// next assertion carries an older epoch has its slice zeroed instead of
// applied, so a cut-off instance never brings back what a reset removed;
// only the strict changes being made at that moment are counted in the new
// epoch. A counter missing altogether means Redis lost it: the next
// assertions recreate it from the live instances' slices. The base written
// by Set belongs to no instance and is lost with the data.
//
// # Strict and Lax
//
// Strict calls return once Redis has acknowledged an assertion that
// includes the change. Concurrent changes to one key coalesce: while one
// assertion is in flight, later changes wait for the next, which carries
// them all (group commit). A strict change that fails stays in the slice
// and reaches Redis with the next write or heartbeat: the local slice is the
// truth Redis converges to.
//
// Lax calls change the slice in memory (an atomic add, no allocation) and a
// flusher sends every changed slice every FlushInterval in one pipeline.
// Totals seen by other instances are at most FlushInterval plus a round trip
// behind; within one instance they are exact. Lax.Strict gives strict calls
// on the same slices, so a key can move between modes at any time.
//
// # Contexts
//
// No call waits past its context, whether Redis answers slowly or hangs (a
// stopped server, a stalled link). go-redis honours a context's deadline on
// its sockets only when the client sets ContextTimeoutEnabled, so a call
// whose context ends first returns ctx.Err() at once and its Redis command
// finishes in the background, bounded by the client's own timeouts. An Inc
// then stays in the slice (it is this instance's truth and reaches Redis
// later); an IncIf applied after its caller gave up is taken back, so an
// error from IncIf means "not applied"; a Set or Del may have been applied;
// a Clear stops at its next command, leaving the counters it reached
// deleted. Close waits for the calls still running until its own context
// ends; then it returns, they end in the background as above, and the
// slices it could not remove are reaped by other instances after
// DeadInstanceThreshold. The constructors wait on Redis for at most one
// second.
//
// # Keys
//
// A counter K under prefix P lives in two Redis keys in one Cluster slot:
// the hash hc:v1:i:{P:K} (base, total, epoch, and a value and sequence per
// instance) and the sorted set hc:v1:i:{P:K}:seen (instance -> last seen).
// '%', '{' and '}' in K are percent-encoded so that K can never leave its
// hash tag. Both keys expire ten thresholds after the last write.
package icounter
