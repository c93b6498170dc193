// Package keyspace validates counter names and prefixes and maps them to Redis
// key names that are safe in a Redis Cluster.
//
// Layout, for a counter kind K ("i" instance-aware, "c" plain), prefix P and
// counter key N:
//
//	hc:v1:K:{P:enc(N)}       the counter's main key
//	hc:v1:K:{P:enc(N)}:<s>   companion keys (same hash slot)
//
// enc percent-encodes '%', '{' and '}', so a name can never end the hash tag
// early (all keys of one counter share a slot, distinct names never share a
// key) and the prefix, which admits no ':' or braces, cannot be forged.
package keyspace

import (
	"errors"
	"fmt"
	"strings"
)

// Version is the key format version carried in every key name, so that a
// later release can find and migrate keys written by this one.
const Version = "v1"

// Limits on names.
const (
	MaxPrefixLen = 64
	MaxKeyLen    = 255
)

var (
	// ErrInvalidKey is returned for a counter key that is empty, longer than
	// MaxKeyLen bytes or contains a control character.
	ErrInvalidKey = errors.New("headcount: invalid counter key")
	// ErrInvalidDelta is returned when Inc or Dec get a negative delta.
	ErrInvalidDelta = errors.New("headcount: invalid delta")
	// ErrInvalidPrefix is returned for a prefix that is empty, longer than
	// MaxPrefixLen bytes, or has characters other than letters, digits, '_',
	// '.' and '-'.
	ErrInvalidPrefix = errors.New("headcount: invalid prefix")
)

// CheckPrefix reports whether p is a valid prefix.
func CheckPrefix(p string) error {
	if len(p) == 0 || len(p) > MaxPrefixLen {
		return fmt.Errorf("%w: %q must be 1-%d bytes", ErrInvalidPrefix, p, MaxPrefixLen)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return fmt.Errorf("%w: %q may only hold letters, digits, '_', '.' and '-'", ErrInvalidPrefix, p)
		}
	}
	return nil
}

// ValidKey reports whether k is a valid counter key. It does not allocate, so
// it can sit on the lax warm path.
func ValidKey(k string) bool {
	if len(k) == 0 || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// CheckKey returns an error wrapping ErrInvalidKey when k is not valid.
func CheckKey(k string) error {
	if ValidKey(k) {
		return nil
	}
	if len(k) == 0 {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if len(k) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidKey, len(k), MaxKeyLen)
	}
	return fmt.Errorf("%w: %q contains a control character", ErrInvalidKey, k)
}

// Encode makes k safe to place inside a hash tag: '%', '{' and '}' become
// %25, %7B and %7D. The mapping is injective.
func Encode(k string) string {
	if !strings.ContainsAny(k, "%{}") {
		return k
	}
	var b strings.Builder
	b.Grow(len(k) + 8)
	for i := 0; i < len(k); i++ {
		switch c := k[i]; c {
		case '%':
			b.WriteString("%25")
		case '{':
			b.WriteString("%7B")
		case '}':
			b.WriteString("%7D")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Decode reverses Encode. It returns false for a string Encode cannot produce.
func Decode(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, !strings.ContainsAny(s, "{}")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '{' || c == '}' {
			return "", false
		}
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+3 > len(s) {
			return "", false
		}
		switch s[i+1 : i+3] {
		case "25":
			b.WriteByte('%')
		case "7B":
			b.WriteByte('{')
		case "7D":
			b.WriteByte('}')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

// Space names the keys of one kind of counter under one prefix.
type Space struct {
	kind, prefix string
	head         string // "hc:v1:K:{P:"
}

// NewSpace returns the key space for counters of the given kind ("i", "c")
// under prefix, which must pass CheckPrefix.
func NewSpace(kind, prefix string) (Space, error) {
	if err := CheckPrefix(prefix); err != nil {
		return Space{}, err
	}
	return Space{kind: kind, prefix: prefix, head: "hc:" + Version + ":" + kind + ":{" + prefix + ":"}, nil
}

// Prefix returns the prefix of the space.
func (s Space) Prefix() string { return s.prefix }

// Key returns the main Redis key of counter k (see Member for the key of
// a member).
func (s Space) Key(k string) string {
	if g, n, listed, ok := SplitMember(k); ok {
		sep := countedSep
		if listed {
			sep = memberSep
		}
		return s.head + Encode(g) + sep + EncodeMember(n)
	}
	return s.head + Encode(k) + "}"
}

// Companion returns the companion Redis key of counter k with the given
// suffix; it hashes to the same cluster slot as Key(k).
func (s Space) Companion(k, suffix string) string { return s.Key(k) + ":" + suffix }

// Pattern is a SCAN MATCH pattern for every key of the space, main keys and
// companions alike.
func (s Space) Pattern() string { return s.head + "*" }

// Parse returns the counter key for a Redis main key of this space, and
// false for companions and foreign keys: those Key would not give back,
// such as a decoded name holding a member separator, which would make
// callers act on another key.
func (s Space) Parse(redisKey string) (string, bool) {
	k, ok := s.parse(redisKey)
	if !ok || s.Key(k) != redisKey {
		return "", false
	}
	return k, true
}

func (s Space) parse(redisKey string) (string, bool) {
	if !strings.HasPrefix(redisKey, s.head) {
		return "", false
	}
	rest := redisKey[len(s.head):]
	if strings.HasSuffix(rest, "}") {
		return Decode(rest[:len(rest)-1])
	}
	join := Member
	g, n, ok := strings.Cut(rest, memberSep)
	if !ok {
		if g, n, ok = strings.Cut(rest, countedSep); !ok {
			return "", false
		}
		join = CountedMember
	}
	group, ok := Decode(g)
	if !ok {
		return "", false
	}
	name, ok := DecodeMember(n)
	if !ok || name == "" {
		return "", false
	}
	return join(group, name), true
}
