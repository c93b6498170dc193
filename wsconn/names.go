package wsconn

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen is the longest room, tenant or user name, in bytes.
const MaxNameLen = 128

// checkName validates a name that comes from a client. Names are encoded
// safely by the counter layer (braces cannot break a cluster hash tag, ':'
// cannot forge another kind of key), so only length, UTF-8 and control
// characters are checked here: control characters end up in logs and JSON,
// and invalid UTF-8 would not round-trip through JSON presence reads.
func checkName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidName, kind)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s is %d bytes, at most %d allowed", ErrInvalidName, kind, len(s), MaxNameLen)
	}
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidName, kind, s)
			}
		}
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s %q contains a control character", ErrInvalidName, kind, s)
		}
	}
	return nil
}

// Counter keys inside the Tracker's namespace. The one-letter kind and the
// ':' make the mapping injective: "r:a" can only be room "a".
const globalKey = "g"

// acceptedKey is the plain counter of connections ever counted (a
// different kind of key than the live counters: no clash with "g").
const acceptedKey = "accepted"

// The users overall are counted in onlineGroups groups, "o:" and a number
// each (see onlineGroup): one group would put every user's key, and a
// change at every user's first connect and last disconnect, on one Redis
// Cluster master.
const (
	onlineKeyPrefix = "o:"
	onlineGroups    = 16
)

func roomKey(room string) string     { return "r:" + room }
func tenantKey(tenant string) string { return "t:" + tenant }
func userKey(user string) string     { return "u:" + user }
