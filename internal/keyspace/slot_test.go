package keyspace

import (
	"slices"
	"testing"
)

// The slots Redis documents for these keys (CLUSTER KEYSLOT).
func TestSlot(t *testing.T) {
	for key, want := range map[string]int{
		"foo":          12182,
		"bar":          5061,
		"{user1000}.a": Slot("user1000"),
		"hello":        866,
		"{}x":          Slot("{}x"),
		"a{":           Slot("a{"),
		"123456789":    0x31C3 % Slots, // the CRC16-XMODEM check value
	} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestTagIn(t *testing.T) {
	for _, r := range [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}, {700, 700}} {
		tag, ok := TagIn(r[0], r[1])
		if s := Slot(tag); !ok || s < r[0] || s > r[1] {
			t.Errorf("TagIn(%d, %d) = %q (slot %d), %v", r[0], r[1], tag, s, ok)
		}
	}
	if _, ok := TagIn(5, 4); ok {
		t.Error("TagIn of an empty range succeeded")
	}
}

// TestSpread: the keys are distinct, valid, each in its own part of the
// slot space, and the same for the same prefix.
func TestSpread(t *testing.T) {
	for _, prefix := range []string{"headcount", "app", "a.b-c_1"} {
		sp, err := NewSpace("i", prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 3, 16} {
			keys := sp.Spread("o:", n)
			if len(keys) != n {
				t.Fatalf("Spread(%d) gave %d keys", n, len(keys))
			}
			seen := map[string]bool{}
			for i, k := range keys {
				if !ValidKey(k) || seen[k] {
					t.Errorf("prefix %q: key %q invalid or repeated", prefix, k)
				}
				seen[k] = true
				if s := Slot(sp.Key(k)); s < i*Slots/n || s >= (i+1)*Slots/n {
					t.Errorf("prefix %q, n %d: key %d (%q) in slot %d", prefix, n, i, k, s)
				}
			}
			if again := sp.Spread("o:", n); !slices.Equal(again, keys) {
				t.Errorf("prefix %q: Spread changed from %q to %q", prefix, keys, again)
			}
		}
	}
}
