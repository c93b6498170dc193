package keyspace

import (
	"strings"
	"testing"
)

func TestMemberKeys(t *testing.T) {
	sp, err := NewSpace("i", "ns")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "a:b", "a:z", "%3A", "}#x", "{x}", "x}", "%", "é", "a#b", "a\x1fb"}
	seen := map[string]string{}
	for _, g := range names[:len(names)-1] {
		for _, n := range names[:len(names)-1] {
			for _, k := range []string{Member(g, n), CountedMember(g, n)} {
				if !ValidMemberKey(k) {
					t.Fatalf("ValidMemberKey(%q) = false", k)
				}
				rk := sp.Key(k)
				if prev, dup := seen[rk]; dup {
					t.Fatalf("%q and %q share Redis key %q", prev, k, rk)
				}
				seen[rk] = k
				if got, ok := sp.Parse(rk); !ok || got != k {
					t.Errorf("Parse(%q) = %q, %v; want %q", rk, got, ok, k)
				}
			}
			k := Member(g, n)
			rk := sp.Key(k)
			if Slot(rk) != Slot(sp.Key(g)) {
				t.Errorf("member %q of %q: slot %d, group's %d", n, g, Slot(rk), Slot(sp.Key(g)))
			}
			if got, ok := sp.Parse(rk); !ok || got != k {
				t.Errorf("Parse(%q) = %q, %v; want %q", rk, got, ok, k)
			}
			for _, c := range []string{sp.Companion(k, "z"), sp.GroupKey(g, "pu"), sp.GroupKey(g, "pp")} {
				if got, ok := sp.Parse(c); ok {
					t.Errorf("Parse(companion %q) = %q, want none", c, got)
				}
				if _, dup := seen[c]; dup {
					t.Errorf("companion %q is a main key", c)
				}
			}
		}
	}
	for _, bad := range []string{"a\x1f", "\x1fa", "a\x1fb\x1fc", "a\x1fb\n"} {
		if ValidMemberKey(bad) {
			t.Errorf("ValidMemberKey(%q) = true", bad)
		}
	}
	if ValidKey(Member("a", "b")) {
		t.Error("ValidKey accepts a member key; only ValidMemberKey should")
	}
}

// FuzzMemberKey: any valid group and name map to a key in the group's slot
// that parses back to them, and never to a companion's.
func FuzzMemberKey(f *testing.F) {
	f.Add("room", "user")
	f.Add("r:}{", "u%3A:")
	sp, _ := NewSpace("i", "ns")
	f.Fuzz(func(t *testing.T, g, n string) {
		if !ValidKey(g) || !ValidKey(n) {
			return
		}
		k := Member(g, n)
		rk := sp.Key(k)
		if got, ok := sp.Parse(rk); !ok || got != k {
			t.Fatalf("Parse(Key(%q)) = %q, %v", k, got, ok)
		}
		if Slot(rk) != Slot(sp.Key(g)) {
			t.Fatalf("member key %q not in its group's slot", rk)
		}
		if strings.Count(rk, "}#") != 1 {
			t.Fatalf("%q: want exactly one group separator", rk)
		}
	})
}
