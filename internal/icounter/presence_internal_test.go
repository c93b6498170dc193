package icounter

import (
	"strconv"
	"testing"
)

// TestHeldListsBounded: the member lists an instance keeps stay within
// their bounds in number and in members, whatever it reads.
func TestHeldListsBounded(t *testing.T) {
	var l lists
	big := make([]MemberInfo, maxHeldMembers/10)
	for i := range 5000 {
		n := 1
		if i%100 == 0 {
			n = len(big)
		}
		l.put("g"+strconv.Itoa(i%2000), wholeList{tag: strconv.Itoa(i), members: big[:n]})
		sum := 0
		for _, w := range l.m {
			sum += len(w.members)
		}
		if len(l.m) > maxHeldLists || l.members > maxHeldMembers || sum != l.members {
			t.Fatalf("after %d puts: %d lists, %d members held (counted %d)", i+1, len(l.m), sum, l.members)
		}
	}
	l.put("huge", wholeList{members: make([]MemberInfo, maxHeldMembers+1)})
	if _, ok := l.m["huge"]; ok {
		t.Fatal("a list above the bound was held")
	}
}
