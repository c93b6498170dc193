// Package counter implements plain counters: one shared int64 per key in
// Redis, no per-instance slices. wsconn uses them for cumulative figures
// such as "connections accepted since start", which a crashed node must not
// take back (for live counts that must, see internal/icounter).
//
// # Strict and Lax
//
// [Strict] makes one Redis round trip per call. Inc, Dec and IncIf run the
// counter_incr script, an atomic read-compare-add on the server; Get, Set
// and Del are GET, SET and GETDEL (Redis 6.2 or later). Values are decimal
// strings changed by INCRBY end to end, never Lua or Go floats, so every
// int64 (1e17, 2^53+1, ...) round-trips exactly.
//
// [Lax] keeps Inc and Dec in memory (a sharded map, an atomic add, no
// allocation once a key is known) and a background goroutine sends all
// non-zero deltas every FlushInterval in one pipeline (one round trip per
// Redis node). Other processes see a change about one FlushInterval later;
// Lax.Get is exact for this process (Redis value plus its own unsent
// changes). Set, Del and IncIf first send the key's buffered changes and
// then act on Redis, so they see this process's earlier changes and none of
// those can land after them.
//
// # Exactly-once flushes
//
// A flush whose reply is lost (timeout, broken connection, go-redis retrying
// a pipeline) must not be counted twice when it is sent again. Each Lax is a
// writer session with a random ID and numbers its batches. For every key,
// Redis keeps the number of the last batch of that session it applied, in a
// companion key in the same cluster slot (with a one-hour TTL refreshed by
// every flush). The counter_flush script applies a delta only when its
// number is above the stored one.
//
// Once a key's delta has been sent with number N and the outcome is unknown,
// every later flush resends that same delta with the same N, and the key's
// newer changes wait until it is confirmed. If the first send was applied,
// the resend finds N stored and changes nothing; if it was not, the resend
// applies it. Either way it counts once. The guarantee lapses only if Redis
// stays unreachable longer than the token TTL, or loses its data.
//
// Strict has no such protection: a Strict call that fails with a network
// error, or whose context ends first, may or may not have been applied.
//
// # Contexts
//
// No call waits past its context, whether Redis is slow or hangs: go-redis
// honours a context's deadline on its sockets only with
// ContextTimeoutEnabled, so every call runs on a goroutine of its own and
// returns ctx.Err() when ctx ends, its command finishing in the background
// within the client's own timeouts (internal/bounded). Lax.Close returns
// when its context ends too, and its last flush then goes on in the
// background. The constructors wait on Redis for at most one second.
package counter
