package icounter

import (
	"strconv"
	"strings"
	"testing"

	"github.com/headcount-go/headcount/internal/keyspace"
)

// eventPayload builds a group channel's payload as presence.lua's
// hc_publish does: "q\te\tr\ti\ts\tm\td", the member's name encoded as in
// its key.
func eventPayload(seq int64, kind, reason, instance, start, name, meta string) string {
	return strconv.FormatInt(seq, 10) + "\t" + kind + "\t" + reason + "\t" + instance + "\t" + start + "\t" +
		keyspace.EncodeMember(name) + "\t" + meta
}

// allParser is a counter that can call ParseAllEvent, which needs only
// the namespace's key space: no Redis.
func allParser(tb testing.TB, prefix string) common {
	tb.Helper()
	sp, err := keyspace.NewSpace("i", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	return common{e: &engine{cfg: config{space: sp}}}
}

// FuzzParseEvent: ParseEvent never panics; what it refuses comes back as a
// zero Event with an error; what it accepts is seven tab-separated fields
// (the metadata, last, may hold tabs) that it reads one for one, and an
// accepted event written again as hc_publish would parses to itself.
func FuzzParseEvent(f *testing.F) {
	for _, p := range []string{
		eventPayload(41, EventJoin, "closed", "node-1", "0", "ann", "Ann"),
		eventPayload(1700000000000, EventOccupied, "closed", "n", "1", "", ""),
		eventPayload(42, EventLeave, "crashed", "n", "0", "a:b%{}", "x\ty\nz"),
		eventPayload(43, EventVacated, "drained", "n", "0", "", ""),
		"", "\t", "\t\t\t\t\t", "\t\t\t\t\t\t", "0\t\t\t\t\t\t", "x\tjoin\tclosed\tn\t0\tann\t",
		"-1\tjoin\tclosed\tn\t0\tann\t", "+7\tjoin\tclosed\tn\t1\tann\t", "007\tjoin\tclosed\tn\t1\tann\t",
		"9223372036854775808\tjoin\tclosed\tn\t0\tann\t", "1\tjoin\tclosed\tn\t0\ta:b\t", "1\tjoin\tclosed\tn\t0\t%3a\t",
		"1\tjoin\tclosed\tn\t0\ta}#b\t", "1\tjoin\tclosed\tn\t0\t%\t", "1\tjoin\tclosed\tn\t0\tann", "1 join closed n 0 ann meta",
		"1\tjoin\tclosed\tn\t0\tann\t\t\t\t", "\xff\tjoin\tclosed\tn\t0\tann\t\xff",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		e, err := ParseEvent(payload)
		if err != nil {
			if e != (Event{}) {
				t.Fatalf("ParseEvent(%q) = %+v with error %v", payload, e, err)
			}
			return
		}
		fields := strings.SplitN(payload, "\t", 7)
		if len(fields) != 7 {
			t.Fatalf("ParseEvent(%q) accepted %d fields", payload, len(fields))
		}
		if n, perr := strconv.ParseInt(fields[0], 10, 64); perr != nil || n != e.Seq {
			t.Fatalf("ParseEvent(%q): seq %d from %q", payload, e.Seq, fields[0])
		}
		if e.Kind != fields[1] || e.Reason != fields[2] || e.Instance != fields[3] || e.Start != (fields[4] == "1") ||
			keyspace.EncodeMember(e.Member) != fields[5] || e.Meta != fields[6] {
			t.Fatalf("ParseEvent(%q) = %+v, not its fields %q", payload, e, fields)
		}
		start := "0"
		if e.Start {
			start = "1"
		}
		again := eventPayload(e.Seq, e.Kind, e.Reason, e.Instance, start, e.Member, e.Meta)
		if e2, err := ParseEvent(again); err != nil || e2 != e {
			t.Fatalf("ParseEvent(%q) = %+v, written again %q parses as %+v, %v", payload, e, again, e2, err)
		}
	})
}

// FuzzEventRoundTrip: an event of any group written as presence.lua does
// (a member name and instance that are valid keys, a reason of letters
// only, any metadata: tabs and newlines too) parses back to exactly its
// fields, from the group's channel (ParseEvent) and from the all-groups
// channel (ParseAllEvent, which also gives back the group).
func FuzzEventRoundTrip(f *testing.F) {
	f.Add(int64(41), uint8(0), "closed", "node-1", false, "r:a", "ann", "Ann")
	f.Add(int64(1700000000000), uint8(2), "closed", "n", true, "r:a", "", "")
	f.Add(int64(0), uint8(1), "crashed", "9b2c", false, "t:x", "a:b%{}", "x\ty\nz\t")
	f.Add(int64(-1), uint8(3), "drained", "i", false, "}#{", "%3A", "\t\t\t\t\t\t")
	f.Add(int64(9223372036854775807), uint8(0), "Closed", "x%7B", true, "r:%", "}!", "\x00\xff")
	f.Add(int64(5), uint8(0), "closed", "n", false, "a}#b", "c", "ann\tjoin\tclosed")
	p := allParser(f, "ns")
	kinds := []string{EventJoin, EventLeave, EventOccupied, EventVacated}
	f.Fuzz(func(t *testing.T, seq int64, kind uint8, reason, instance string, start bool, group, name, meta string) {
		if !isLetters(reason) || !keyspace.ValidKey(instance) || !keyspace.ValidKey(group) || name != "" && !keyspace.ValidKey(name) {
			return // not what presence.lua publishes
		}
		want := Event{Seq: seq, Kind: kinds[int(kind)%len(kinds)], Reason: reason, Instance: instance, Start: start, Member: name, Meta: meta}
		s := "0"
		if start {
			s = "1"
		}
		payload := eventPayload(seq, want.Kind, reason, instance, s, name, meta)
		if e, err := ParseEvent(payload); err != nil || e != want {
			t.Fatalf("ParseEvent(%q) = %+v, %v; want %+v", payload, e, err, want)
		}
		// The all-groups channel prefixes the group's hash tag part of its
		// members' keys: string.sub(h, 1, i), through the '}'.
		g := p.e.cfg.space.Key(group)
		all := g + "\t" + payload
		gotGroup, e, err := p.ParseAllEvent(all)
		if err != nil || gotGroup != group || e != want {
			t.Fatalf("ParseAllEvent(%q) = %q, %+v, %v; want %q, %+v", all, gotGroup, e, err, group, want)
		}
	})
}

// FuzzParseAllEvent: ParseAllEvent never panics; an error comes with a
// zero Event; an accepted event names a group of the namespace whose key
// is exactly the payload's first field, and the rest is ParseEvent's.
func FuzzParseAllEvent(f *testing.F) {
	p := allParser(f, "ns")
	sp := p.e.cfg.space
	ev := eventPayload(41, EventJoin, "closed", "n", "0", "ann", "Ann")
	for _, s := range []string{
		sp.Key("r:a") + "\t" + ev, sp.Key("}{%") + "\t" + ev, sp.Key("r:a") + "\t", sp.Key("r:a"), ev, "", "\t", "\t" + ev,
		sp.GroupKey("r:a", "pc") + "\t" + ev, sp.Key(keyspace.Member("r:a", "ann")) + "\t" + ev,
		"hc:v1:i:{other:r:a}\t" + ev, "hc:v1:c:{ns:r:a}\t" + ev, "hc:v1:i:{ns:r:a}}\t" + ev, "hc:v1:i:{ns:%7b}\t" + ev,
		sp.Key("r:a") + "\tx\tjoin", sp.Key("r:a") + "\t\t\t\t\t\t\t",
	} {
		f.Add(s)
	}
	// A foreign group key whose name holds "\x1e" or "\x1f" (see
	// keyspace's FuzzParse).
	f.Add("hc:v1:i:{ns:\x1e}\t" + ev)
	f.Fuzz(func(t *testing.T, payload string) {
		group, e, err := p.ParseAllEvent(payload)
		if err != nil {
			if e != (Event{}) {
				t.Fatalf("ParseAllEvent(%q) = %+v with error %v", payload, e, err)
			}
			return
		}
		g, rest, _ := strings.Cut(payload, "\t")
		if k := sp.Key(group); k != g {
			t.Fatalf("ParseAllEvent(%q): group %q, whose key is %q", payload, group, k)
		}
		if want, err := ParseEvent(rest); err != nil || e != want {
			t.Fatalf("ParseAllEvent(%q) = %+v; ParseEvent of its rest %+v, %v", payload, e, want, err)
		}
	})
}

// isLetters reports whether s matches presence.lua's '%a+' (the C locale).
func isLetters(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}
