package wsconn

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// lastEventIDRequest is a request carrying id as EventsHandler reads it:
// the Last-Event-ID header (raw, as a client sends it), or the
// ?last_event_id= parameter.
func lastEventIDRequest(id string, query bool) *http.Request {
	r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}, Header: http.Header{}}
	if query {
		r.URL.RawQuery = url.Values{"last_event_id": {id}}.Encode()
	} else {
		r.Header["Last-Event-Id"] = []string{id}
	}
	return r
}

// maxQueryParams is the most pairs url.ParseQuery takes (GODEBUG
// urlmaxqueryparams): an id with more is malformed.
const maxQueryParams = 10000

// FuzzParseLastEventID: whatever Last-Event-ID a client sends, header or
// parameter alike (both give the same), parseLastEventID never panics and
// resumes only what it may: with all=1, at most maxResumeRooms valid room
// names, without it only rooms of the request; each at the non-negative
// sequence the id gives it. The id is padded with pad empty pairs ("&"),
// which change nothing within the bounds (and url.ParseQuery's cap on
// pairs), and beyond maxResumeIDLen (with all=1) or maxLastEventID resume
// nothing: small inputs reach the bounds.
func FuzzParseLastEventID(f *testing.F) {
	for _, s := range []struct {
		id, a, b string
		all      bool
		pad      uint16
	}{
		{"a=41&b=7", "a", "b", false, 0},
		{"a=41&b=7", "", "", true, 0},
		{"a=41&b=7&c=3", "a", "b", false, 1},
		{"a=-1&b=%2B5&c=007", "a", "b", true, 0},
		{"a=9223372036854775807&b=9223372036854775808", "a", "b", true, 0},
		{"r%3Aa=1&%7B%7D=2&caf%C3%A9=3", "r:a", "{}", true, 0},
		{"a=1;b=2", "a", "b", false, 0},
		{"a=1&a=2", "a", "", true, 0},
		{"a%00b=1&%FF=2&a%0Ab=3&=4&%E2%80%8B=5", "a\x00b", "\xff", true, 0},
		{"%zz=1&a=2", "a", "", true, 0},
		{"a", "a", "", true, 0},
		{"=&&=&", "", "", true, 0},
		{"", "a", "", true, 3},
		{"a=1", "a", "", true, maxResumeIDLen - 3},
		{"a=1", "a", "", true, maxResumeIDLen - 2},
		{"a=1", "a", "", false, maxResumeIDLen},
		{"a=1", "a", "", false, maxLastEventID - 3},
		{"a=1", "a", "", false, maxLastEventID - 2},
		{"a=1", "a", "", false, maxQueryParams - 1},
		{"a=1", "a", "", false, maxQueryParams},
	} {
		f.Add(s.id, s.a, s.b, s.all, s.pad)
	}
	f.Fuzz(func(t *testing.T, short, a, b string, all bool, pad uint16) {
		var rooms []string
		if !all {
			rooms = []string{a, b}
		}
		id := short + strings.Repeat("&", int(pad))
		got := parseLastEventID(lastEventIDRequest(id, false), rooms, all)
		if q := parseLastEventID(lastEventIDRequest(id, true), rooms, all); !maps.Equal(got, q) {
			t.Fatalf("id %q + %d '&': header resumes %v, parameter %v", short, pad, got, q)
		}
		switch {
		case len(id) > maxLastEventID || all && len(id) > maxResumeIDLen:
			if len(got) > 0 {
				t.Fatalf("id of %d bytes (all=%v) resumes %d rooms", len(id), all, len(got))
			}
			return
		case pad > 0 && strings.Count(id, "&") < maxQueryParams:
			if unpadded := parseLastEventID(lastEventIDRequest(short, false), rooms, all); !maps.Equal(got, unpadded) {
				t.Fatalf("id %q resumes %v, with %d '&' %v", short, unpadded, pad, got)
			}
		}
		if all && len(got) > maxResumeRooms {
			t.Fatalf("id %q resumes %d rooms, above %d", short, len(got), maxResumeRooms)
		}
		v, err := url.ParseQuery(id)
		if len(got) > 0 && err != nil {
			t.Fatalf("malformed id %q (%v) resumes %v", short, err, got)
		}
		for room, seq := range got {
			if all {
				if err := checkName("room", room); err != nil {
					t.Fatalf("id %q resumes an invalid room: %v", short, err)
				}
			} else if !slices.Contains(rooms, room) {
				t.Fatalf("id %q resumes %q, not one of %q", short, room, rooms)
			}
			if n, err := strconv.ParseInt(v.Get(room), 10, 64); err != nil || seq != n || seq < 0 {
				t.Fatalf("id %q resumes %q at %d (its value %q)", short, room, seq, v.Get(room))
			}
		}
	})
}

// FuzzLastEventIDRoundTrip: the id a resume point writes for valid rooms
// at non-negative sequences (plus extra rooms, to reach the bounds) parses
// back to the same rooms and sequences, with all=1 within maxResumeRooms
// and maxResumeIDLen, and given the rooms without all=1 (within
// maxLastEventID, beyond which none are); with all=1 beyond
// maxResumeRooms (within the length) the first rooms by name are resumed,
// and beyond maxResumeIDLen none.
func FuzzLastEventIDRoundTrip(f *testing.F) {
	for i, n := range validNames {
		f.Add(n, validNames[(i+1)%len(validNames)], "a", int64(i), int64(0), int64(1<<62), uint16(0), false)
	}
	f.Add("a", "b", "c", int64(41), int64(7), int64(0), uint16(0), true)
	f.Add("a&b=1", "a=b", "%26", int64(9223372036854775807), int64(-1), int64(-9223372036854775808), uint16(3), false)
	f.Add("a;b", "+", " ", int64(1), int64(2), int64(3), uint16(maxResumeRooms-3), true)
	f.Add("zz", "z", "0", int64(1), int64(2), int64(3), uint16(maxResumeRooms+5), false)
	f.Add("zz", "z", "0", int64(1), int64(2), int64(3), uint16(2*maxResumeRooms-1), true)
	f.Add(strings.Repeat("x", MaxNameLen), "€", "\u200b", int64(1), int64(2), int64(3), uint16(900), true)
	f.Add("a\x00", "\xff", "", int64(1), int64(2), int64(3), uint16(1), false)
	f.Fuzz(func(t *testing.T, a, b, c string, sa, sb, sc int64, extra uint16, long bool) {
		want := map[string]int64{}
		for i, room := range []string{a, b, c} {
			if checkName("room", room) == nil {
				want[room] = nonNegative([]int64{sa, sb, sc}[i])
			}
		}
		// Extra rooms, to reach maxResumeRooms or, with long names,
		// maxResumeIDLen.
		for i := range int(extra) % (2 * maxResumeRooms) {
			room, seq := "x"+strconv.FormatInt(int64(i), 36), int64(i%10)
			if long {
				room, seq = room+strings.Repeat("y", 30), int64(i)*1e9 // 2,000 rooms: above maxLastEventID
			}
			if _, ok := want[room]; !ok {
				want[room] = seq
			}
		}
		id := newResumePoint(want, false).id()
		rooms := slices.Sorted(maps.Keys(want))
		for _, query := range []bool{false, true} {
			got := parseLastEventID(lastEventIDRequest(id, query), rooms, false)
			if len(id) > maxLastEventID && len(got) > 0 || len(id) <= maxLastEventID && !maps.Equal(got, want) {
				t.Fatalf("id of %d rooms in %d bytes: resumes %d rooms, want %d (%v / %v)", len(want), len(id), len(got), len(want), got, want)
			}
			got = parseLastEventID(lastEventIDRequest(id, query), nil, true)
			expect := want
			switch {
			case len(id) > maxResumeIDLen:
				expect = map[string]int64{}
			case len(want) > maxResumeRooms:
				expect = map[string]int64{}
				for _, room := range rooms[:maxResumeRooms] {
					expect[room] = want[room]
				}
			}
			if !maps.Equal(got, expect) {
				t.Fatalf("id of %d rooms in %d bytes, all=1: resumes %d rooms, want %d (%v / %v)",
					len(want), len(id), len(got), len(expect), got, expect)
			}
		}
	})
}

// nonNegative maps any int64 onto the non-negative ones.
func nonNegative(n int64) int64 {
	if n < 0 {
		return -(n + 1)
	}
	return n
}
