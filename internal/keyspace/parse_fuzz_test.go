package keyspace

import (
	"strings"
	"testing"
)

// FuzzDecode: Decode and DecodeMember never panic, and are the exact
// inverses of Encode and EncodeMember: whatever they accept encodes back to
// the same string (no two encodings of one name), and every string encodes
// to one that decodes back to it, free of the characters that would end a
// hash tag early (and, for a member, start a companion's suffix).
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"", "a", "room", "%", "%%", "%2", "%25", "%7B", "%7D", "%7b", "%7d", "%3A", "%3a", "%253A", "%2%3A",
		"%%3A", "%3A25", "%3A7B", "{", "}", "{a}", "a}#b", "a}!b", ":", "a:b", "a%3Ab", "%ZZ", "%\x00\x00",
		"\x1f", "\x1e", "a\x1fb", "\xff\xfe", "é%25日本", strings.Repeat("%25", 100),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, ok := Decode(s); ok {
			if e := Encode(d); e != s {
				t.Fatalf("Decode(%q) = %q, which encodes to %q", s, d, e)
			}
		}
		if d, ok := DecodeMember(s); ok {
			if e := EncodeMember(d); e != s {
				t.Fatalf("DecodeMember(%q) = %q, which encodes to %q", s, d, e)
			}
		}
		e := Encode(s)
		if strings.ContainsAny(e, "{}") {
			t.Fatalf("Encode(%q) = %q holds a brace", s, e)
		}
		if d, ok := Decode(e); !ok || d != s {
			t.Fatalf("Decode(Encode(%q)) = %q, %v", s, d, ok)
		}
		m := EncodeMember(s)
		if strings.ContainsAny(m, "{}:") {
			t.Fatalf("EncodeMember(%q) = %q holds a brace or ':'", s, m)
		}
		if d, ok := DecodeMember(m); !ok || d != s {
			t.Fatalf("DecodeMember(EncodeMember(%q)) = %q, %v", s, d, ok)
		}
	})
}

// FuzzParse: Space.Parse never panics on any Redis key, and what it accepts
// is a counter key whose main key is exactly that Redis key, so that a Scan's caller (Clear, reconcile) touches the key it
// found; a companion of an accepted key is never accepted.
func FuzzParse(f *testing.F) {
	sp, err := NewSpace("i", "ns")
	if err != nil {
		f.Fatal(err)
	}
	head := "hc:" + Version + ":i:{ns:"
	for _, k := range []string{
		"room", "r:a", "{", "}", "%", "a:b", "é",
		Member("r:a", "ann"), CountedMember("t:x", "bob"), Member("a}#b", "c:d%"), Member("x", "}!{"),
	} {
		f.Add(sp.Key(k))
		f.Add(sp.Companion(k, "seen"))
	}
	for _, k := range []string{
		"", "hc:v1:i:{ns:", "hc:v1:i:{ns:}", "hc:v1:i:{ns:a", "hc:v1:i:{ns:a}}", "hc:v1:i:{ns:a{}",
		"hc:v1:i:{ns:a}#", "hc:v1:i:{ns:a}!", "hc:v1:i:{ns:}#b", "hc:v1:i:{ns:a}#b}", "hc:v1:i:{ns:a}#b:pp",
		"hc:v1:i:{ns:a}#b}#c", "hc:v1:i:{ns:a}!b}#c", "hc:v1:i:{ns:a}#%3A", "hc:v1:i:{ns:a}#%3a", "hc:v1:i:{ns:%7b}",
		"hc:v1:i:{ns:%}", "hc:v1:i:{ns:a\n}", "hc:v1:i:{ns:a}#b\x00", "hc:v1:c:{ns:a}", "hc:v1:i:{other:a}",
		"hc:v1:i:reg:{ns}:live", "hc:v1:i:idx:{ns:id}:1", "hc:v1:i:canary:{x}:ns:id", head + strings.Repeat("x", 300) + "}",
	} {
		f.Add(k)
	}
	// Found by fuzzing: foreign main keys whose names hold a member
	// separator ("\x1f" or "\x1e"), which Parse took for member keys that
	// Key maps to other Redis keys (here "hc:v1:i:{ns:}!").
	f.Add("hc:v1:i:{ns:\x1e}")
	f.Add("hc:v1:i:{ns:a\x1fb}")
	f.Fuzz(func(t *testing.T, rk string) {
		k, ok := sp.Parse(rk)
		if !ok {
			return
		}
		if back := sp.Key(k); back != rk {
			t.Fatalf("Parse(%q) = %q, whose key is %q", rk, k, back)
		}
		for _, s := range []string{"seen", "pp", "pu", "pl", "pe", "pc", ""} {
			if c, ok := sp.Parse(sp.Companion(k, s)); ok {
				t.Fatalf("companion %q of %q parses as %q", sp.Companion(k, s), k, c)
			}
		}
	})
}

// FuzzMemberKeys: for valid groups and names, listed and counted member
// keys parse back to their group and name; distinct (group, name) pairs, or
// a listed and a counted member, never share a Redis key; and a member's key
// is never a group's main key, a group's presence key (":pp", ":pu", ":pl",
// ":pe", ":pc") or another counter's companion.
func FuzzMemberKeys(f *testing.F) {
	for _, s := range [][4]string{
		{"r:a", "ann", "r:a", "bob"},
		{"r:a", "ann", "r:a", "ann"},
		{"a}#b", "c", "a", "b}#c"},
		{"a", "b}#c", "a}#b", "c"},
		{"a", "b:pp", "a", "b"},
		{"a}#b", "pp", "a", "b"},
		{"a:b", "c", "a", "b:c"},
		{"%", "%25", "%25", "%"},
		{"{", "}", "}", "{"},
		{"a", "%3A", "a", ":"},
		{"a", ":pp", "a", "pp"},
		{"g", "n!x", "g}!n", "x"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	sp, err := NewSpace("i", "ns")
	if err != nil {
		f.Fatal(err)
	}
	companions := []string{"pp", "pu", "pl", "pe", "pc"}
	f.Fuzz(func(t *testing.T, g1, n1, g2, n2 string) {
		if !ValidKey(g1) || !ValidKey(n1) || !ValidKey(g2) || !ValidKey(n2) {
			return
		}
		same := g1 == g2 && n1 == n2
		l1, c1 := sp.Key(Member(g1, n1)), sp.Key(CountedMember(g1, n1))
		l2, c2 := sp.Key(Member(g2, n2)), sp.Key(CountedMember(g2, n2))
		for _, p := range []struct{ k, rk string }{{Member(g1, n1), l1}, {CountedMember(g1, n1), c1}} {
			if got, ok := sp.Parse(p.rk); !ok || got != p.k {
				t.Fatalf("Parse(Key(%q)) = %q, %v", p.k, got, ok)
			}
			g, n, _, ok := SplitMember(p.k)
			if !ok || g != g1 || n != n1 {
				t.Fatalf("SplitMember(%q) = %q, %q, %v", p.k, g, n, ok)
			}
		}
		if (l1 == l2) != same || (c1 == c2) != same {
			t.Fatalf("members (%q, %q) and (%q, %q): keys %q, %q and %q, %q", g1, n1, g2, n2, l1, l2, c1, c2)
		}
		if l1 == c2 || c1 == l2 {
			t.Fatalf("a listed and a counted member share a key: %q, %q / %q, %q", l1, c2, c1, l2)
		}
		others := []string{sp.Key(g2), sp.Key(g1), sp.Companion(Member(g2, n2), "seen"), sp.Companion(CountedMember(g2, n2), "seen")}
		for _, s := range companions {
			others = append(others, sp.GroupKey(g2, s), sp.GroupKey(g1, s))
		}
		for _, o := range others {
			for _, m := range []string{l1, c1} {
				if m == o {
					t.Fatalf("member key %q is another key of (%q, %q)", m, g2, n2)
				}
			}
		}
	})
}
