package keyspace

import "strconv"

// The keys of an instance-aware namespace that are not counters: the
// registry of instances, each instance's index of the counters it holds
// slices of, and its canaries. Each has a head of its own, so that a Scan
// of the counters never meets them.

// Registry returns the registry key named name ("live", "sessions",
// "claims"); all three share the slot of the prefix.
func (s Space) Registry(name string) string {
	return "hc:" + Version + ":" + s.kind + ":reg:{" + s.prefix + "}:" + name
}

// Index returns the key of the set of counter keys where session of
// instance id holds or held a slice. Each instance's index has a slot of its
// own, so that no shard holds every index.
func (s Space) Index(id string, session int64) string {
	return "hc:" + Version + ":" + s.kind + ":idx:{" + s.prefix + ":" + Encode(id) + "}:" + strconv.FormatInt(session, 10)
}

// Canary returns the key of instance id's canary in the slot of tag (see
// TagIn), which picks the Redis master it lives on.
func (s Space) Canary(tag, id string) string {
	return "hc:" + Version + ":" + s.kind + ":canary:{" + tag + "}:" + s.prefix + ":" + Encode(id)
}
