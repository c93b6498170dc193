// Package icounter implements instance-aware counters in Redis: the count of
// something (connections in a room) kept exact across a cluster of server
// processes, even when one of them crashes.
//
// # Model
//
// Each process is an instance (Options.InstanceID) that owns a slice of
// every counter. The total is a base (set by Set) plus the sum of the
// slices. Every write an instance makes is an absolute, sequenced assertion
// of its own slice, "my slice of K is L, sequence S, epoch E", applied by a
// Lua script only when S is newer than the stored sequence. Writes are
// therefore idempotent and order-safe: a retried or reordered write cannot
// double count. The sequence is (session, counter), where the session is
// Redis TIME at start (the local clock if Redis does not answer TIME in
// time), and a later time at each new session (see below).
//
// # Liveness
//
// Liveness is kept once per instance, not per counter. A registry per
// prefix holds every instance's session and last heartbeat. Each instance
// runs one short heartbeat script per HeartbeatInterval, whatever the
// number of its counters (plus, on a Cluster, one canary per master); the
// script also hands it the instances unseen for DeadInstanceThreshold,
// each claimed for it with an expiry. Every session keeps an index, a set
// in a slot of its own, of the counters where it holds a slice: an SADD
// ahead of its first assertion there, in the same pipeline on a single
// server; on a Cluster, where the set has a master of its own, in a round
// trip before it, and a slice whose entry the set's master did not take is
// not sent (it stays pending, for the next flush or heartbeat), so that no
// slice reaches Redis without its entry. The claimer sweeps a dead
// session: it drops that session's slice from every counter of the index,
// in pipelined batches. A drop applies to that session (or an older one)
// only and is idempotent, so two sweepers, or a sweeper racing the
// instance's return, never subtract twice; a sweeper that dies loses its
// claim when it lapses and another takes the sweep over. A drop leaves a
// tombstone (the session, with a sequence no write reaches), so that a
// write of the dead session that a stalled link delivers late is refused
// instead of bringing the slice back, also on a counter the write was to
// create (its index entry went ahead of it); passes that follow, every
// heartbeat for two thresholds, find the counters such a late write first
// indexed.
//
// A Redis outage stops every heartbeat alike, so it must not count against
// anyone: an instance whose heartbeats paused for more than half a
// threshold judges no instance dead that was seen within a threshold
// before its previous heartbeat, until a threshold after the pause, by
// which time the live ones have stamped again. A pause of that instance
// alone only delays what it sweeps; the others go on judging. A heartbeat
// gives up after half a threshold: a master that does not answer must not
// hold the next one, which stamps the instance wherever the registry's
// master answers.
//
// A process started under the InstanceID of a live session (a restart with
// a stable pod name) registers a newer session and sweeps the older one at
// once. An instance the registry no longer knows, because it was swept
// after being cut off for longer than the threshold or because Redis lost
// the registry, takes a new session, so that a late drop aimed at the old
// one cannot remove what it writes now, and re-asserts every slice at once:
// at its next heartbeat, or at once when a write meets a sweep's tombstone.
// On a Cluster each instance keeps a canary on every master; one found
// missing means that master lost its data (or, when the instance could not
// set it for longer than a canary lives, that it expired), and the
// instance re-asserts its slices, as it does when the canary holds its
// previous session. Either way the live instances' slices are back within one
// heartbeat. A failover that loses only the last writes before it
// (replication is asynchronous) and leaves the registry and the canaries
// is not noticed: a slice it rolled back stays so until its instance
// writes that counter again or renews its lease. A master that lost its data may also have taken the registry
// entry or the index of an instance that died before it was swept; so an
// instance that notices the loss waits one heartbeat (the live ones register
// again meanwhile), takes a lock and reconciles: it removes, from every
// counter, the slices of sessions the registry does not know, of instances
// that have no canary left (a canary lives a threshold and a heartbeat past
// the heartbeat that set it; a pass that met one runs again once it has
// expired). An instance registers a new session before it writes under
// it, and a reconcile reads the registry after each batch of slices, so an
// instance registering again while a reconcile runs keeps what it writes.
// It leaves for a pass the slices of an older session of an instance whose
// newer one a running process took (the registry notes such renewals):
// that process asserts them again, and a drop first would take its count
// away for as long as an outage delayed its assertions.
// The slices it keeps of an instance with a canary missing on
// some master, which has not heartbeated since the loss and so has not
// rebuilt an index the loss may have taken, it enters in that session's
// index, for the sweep should the instance be dead. An answer to an
// assertion sent before a loss was noticed does not count as Redis holding
// the slice: it is asserted again with the others.
//
// Each slice also carries a lease (Options.SliceLease, by default 10
// minutes or ten thresholds, whichever is longer): the instance re-asserts it about every half lease, paced: a
// steady share of its counters per heartbeat, even of counters it took all
// at once. A script that renews a counter's TTL (once per lease) drops the
// slices whose lease ran out. The sweeper makes removal prompt; the lease
// makes it certain should an index be lost. Reads never remove anything.
//
// Set and Del reset a counter cluster-wide: they bump its epoch and leave it
// behind as a tombstone (TombstoneTTL, 24h by default), and note the reset
// in the registry, so that every instance holding a slice there asserts it
// again at its next heartbeat and, finding the newer epoch, zeroes it. An
// instance whose next assertion carries an older epoch has its slice zeroed
// instead of applied, so a cut-off instance never brings back what a reset
// removed; only the strict changes being made at that moment are counted
// in the new epoch. A counter missing altogether means Redis lost it: the
// next assertions recreate it from the live instances' slices. The base
// written by Set belongs to no instance and is lost with the data.
//
// # Strict and Lax
//
// Strict calls return once Redis has acknowledged an assertion that
// includes the change. They go through the engine's committer: the changes
// that callers make, to any counters, while a batch is in flight go out
// together in the next one, one pipeline (one round trip per Redis node,
// and on a single server one script run per 64 counters), and concurrent
// changes of one counter share one assertion (group commit). A strict
// change that fails stays in the slice and reaches Redis with the next
// write or heartbeat: the local slice is the truth Redis converges to.
//
// Lax calls change the slice in memory (an atomic add, no allocation) and a
// flusher sends every changed slice every FlushInterval in one pipeline.
// Totals seen by other instances are at most FlushInterval plus a round trip
// behind; within one instance they are exact. Lax.Strict gives strict calls
// on the same slices, so a key can move between modes at any time; Lax.Sync
// commits chosen keys through the committer, and Lax.Push hands them over
// without waiting, after holding them for 10 ms: a change that undoes a
// pushed one meanwhile (a release, then a connection to the same room)
// leaves the slice as Redis holds it, and neither is sent.
//
// A read is a plain HMGET of the counter's hash. Reads go through a reader
// that batches them like the committer: concurrent reads of one counter
// that have not been sent yet share one, and GetMany costs one round trip
// per Redis node.
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
// slices it could not remove are swept by other instances after
// DeadInstanceThreshold. The constructors wait on Redis for at most one
// second.
//
// # Keys
//
// A counter K under prefix P lives in two Redis keys in one Cluster slot:
// the hash hc:v1:i:{P:K} (base, total, epoch, and a value, session,
// sequence and lease stamp per instance) and the sorted set
// hc:v1:i:{P:K}:seen (instance -> its last lease stamp). '%', '{' and '}'
// in K are percent-encoded so that K can never leave its hash tag. Both
// keys expire within two leases of the last write (their TTL, two leases,
// is renewed once per lease). The registry is
// hc:v1:i:reg:{P}:live, :sessions, :claims, :resets and :renewed; the index of
// session S of instance I is hc:v1:i:idx:{P:I}:S; its canaries are
// hc:v1:i:canary:{tag}:P:I, one tag per master.
package icounter
