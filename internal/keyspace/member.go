package keyspace

import "strings"

// Members of a group: a counter named Member(G, n) counts n inside group G
// (a user inside a room), and lists it; one named CountedMember(G, n) only
// counts it (a user of a tenant). Either lives in G's hash slot, so that
// one script can change the member and the group's presence keys together:
//
//	hc:v1:K:{P:enc(G)}#menc(n)        a listed member's main key
//	hc:v1:K:{P:enc(G)}!menc(n)        a counted member's main key
//	hc:v1:K:{P:enc(G)}#menc(n):<s>    their companions (likewise with !)
//	hc:v1:K:{P:enc(G)}:p<x>           the group's presence keys
//
// menc also encodes ':', so that no member's main key is another one's
// companion.

// MemberSep joins a group and a member name into a counter key. It is a
// control character, which ValidKey refuses, so that only callers that ask
// for members (ValidMemberKey) can name one.
const MemberSep = "\x1f"

// CountedSep is MemberSep for members that are counted, not listed.
const CountedSep = "\x1e"

// Member returns the counter key of member name of group.
func Member(group, name string) string { return group + MemberSep + name }

// CountedMember returns the counter key of name counted in group.
func CountedMember(group, name string) string { return group + CountedSep + name }

// SplitMember returns the group and the name of a member counter key (listed
// or counted), whether it is listed, and false for any other key.
func SplitMember(k string) (group, name string, listed, ok bool) {
	for i := 0; i < len(k); i++ {
		switch k[i] {
		case MemberSep[0]:
			return k[:i], k[i+1:], true, true
		case CountedSep[0]:
			return k[:i], k[i+1:], false, true
		}
	}
	return "", "", false, false
}

// ValidMemberKey reports whether k is a valid counter key or a member key
// whose group and name are both valid counter keys.
func ValidMemberKey(k string) bool {
	if ValidKey(k) {
		return true
	}
	g, n, _, ok := SplitMember(k)
	return ok && ValidKey(g) && ValidKey(n)
}

// memberSep and countedSep follow the group's hash tag in a member's
// Redis key.
const (
	memberSep  = "}#"
	countedSep = "}!"
)

// EncodeMember is how a member's name appears in its Redis key and in its
// group's presence keys and events.
func EncodeMember(n string) string {
	if !strings.ContainsAny(n, "%{}:") {
		return n
	}
	return strings.ReplaceAll(Encode(n), ":", "%3A")
}

// DecodeMember reverses EncodeMember.
func DecodeMember(s string) (string, bool) {
	if strings.Contains(s, ":") {
		return "", false
	}
	return Decode(strings.ReplaceAll(s, "%3A", ":"))
}

// GroupKey returns the Redis key that a group's presence key with the given
// suffix ("pu", "pp", "pe") has: in the group's slot, and not the main key
// of any counter.
func (s Space) GroupKey(group, suffix string) string { return s.Companion(group, suffix) }
