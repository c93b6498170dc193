-- assert: "my slice of this counter is L", sent by instance id with sequence
-- (session, counter) in epoch E. Idempotent and order-safe: it applies only
-- when the sequence is newer than the stored one. Kept to few Redis calls:
-- it runs for every strict change, lax flush and heartbeat.
--
-- KEYS[1] counter hash: b base, t total, e epoch, x when the TTLs are due
--         for renewal (ms), d a member's metadata (presence), and per
--         instance v:<id> slice, s:<id> session, c:<id> counter, l:<id>
--         when its lease was last stamped in KEYS[2]
-- KEYS[2] lease set: instance id -> its lease stamp (ms, Redis time),
--         renewed at most every lease/8
-- ARGV    id, session, counter, epoch (-1: adopt the stored one), L, D (the
--         slice to take instead of L when the epoch moved on: changes not
--         made before the reset), lease ms, ttl ms, reap limit,
--         condition op ('' none), operand, conditional delta, then the
--         presence spec (see presence.lua; '' off) and the member's
--         metadata: '=' and the metadata, which may be empty, or '' when the
--         instance has set none
-- Returns {status, total, slice, epoch, reaped, condition held (0/1)}
--   status 1 applied, 2 applied after an epoch reset (slice = D),
--          0 stale (a newer assertion is stored), 3 superseded (another
--          session of the same instance id is newer), 4 swept (a sweeper
--          dropped this session here: it was declared dead)
hc_set_spec(ARGV[13])
return {hc_assert(KEYS[1], KEYS[2], ARGV[1], hc_fields(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]),
  ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]),
  ARGV[10], ARGV[11], ARGV[12], hc_now(), ARGV[14])}
