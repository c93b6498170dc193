package wsconn

import (
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// resumeModel is what an all=1 stream's id must be, kept the plain way:
// every room's last sequence and when it last changed, encoded whole after
// each change, the room changed least recently dropped while the id is
// beyond its bounds.
type resumeModel struct {
	last, changed map[string]int64
	n             int64
	bounded       bool
}

func (m *resumeModel) set(room string, seq int64) {
	m.n++
	m.last[room], m.changed[room] = seq, m.n
	for m.bounded && (len(m.last) > maxResumeRooms || len(m.id()) > maxResumeIDLen) {
		oldest, at := "", int64(math.MaxInt64)
		for room := range m.last {
			if c := m.changed[room]; c < at {
				oldest, at = room, c
			}
		}
		m.remove(oldest)
	}
}

func (m *resumeModel) remove(room string) {
	delete(m.last, room)
	delete(m.changed, room)
}

func (m *resumeModel) id() string {
	v := url.Values{}
	for room, seq := range m.last {
		v.Set(room, strconv.FormatInt(seq, 10))
	}
	return v.Encode()
}

// FuzzResumePoint: after any sequence of changes and removals, a resume
// point's id is the model's, byte for byte, bounded (all=1) or not.
func FuzzResumePoint(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, uint16(0), false)
	f.Add([]byte{1, 1, 255, 1, 3}, uint16(maxResumeRooms+20), true)
	f.Add([]byte{7, 200, 7, 9, 130, 7}, uint16(300), true)
	f.Fuzz(func(t *testing.T, ops []byte, fill uint16, bounded bool) {
		// Room names: short ones, long ones (the length bound) and ones
		// url.QueryEscape changes.
		name := func(i int) string {
			switch i % 3 {
			case 0:
				return "r" + strconv.Itoa(i)
			case 1:
				return strings.Repeat("l", 100) + strconv.Itoa(i)
			}
			return "a b&c=" + strconv.Itoa(i) + "€"
		}
		p := newResumePoint(map[string]int64{}, bounded)
		m := &resumeModel{last: map[string]int64{}, changed: map[string]int64{}, bounded: bounded}
		check := func(step string) {
			t.Helper()
			got, want := p.id(), m.id()
			if got != want {
				t.Fatalf("%s: id\n%q\nwant\n%q", step, got, want)
			}
			if got != "" && p.size() != len(got) {
				t.Fatalf("%s: size %d, id of %d bytes", step, p.size(), len(got))
			}
		}
		for i := range int(fill) % (2 * maxResumeRooms) {
			room := "f" + strconv.Itoa(i)
			p.set(room, int64(i))
			m.set(room, int64(i))
		}
		check("fill")
		for i, op := range ops {
			room := name(int(op) % 64)
			if op >= 192 {
				p.remove(room)
				m.remove(room)
			} else {
				p.set(room, int64(i)*int64(op))
				m.set(room, int64(i)*int64(op))
			}
			check(fmt.Sprintf("op %d (%d, %s)", i, op, room))
		}
	})
}

// TestResumePointBounded: an all=1 stream's id names the rooms changed
// last, at most maxResumeRooms of them in at most maxResumeIDLen bytes,
// and a Last-Event-ID naming more resumes that many; a longer one, which
// the handler never writes, resumes none.
func TestResumePointBounded(t *testing.T) {
	resumed := func(id string) map[string]int64 {
		r := httptest.NewRequest(http.MethodGet, "/?all=1", nil)
		r.Header.Set("Last-Event-ID", id)
		return parseLastEventID(r, nil, true)
	}
	build := func(name func(int) string, n int) map[string]int64 {
		p := newResumePoint(map[string]int64{}, true)
		for i := range n {
			p.set(name(i), 1)
			if id := p.id(); len(id) > maxResumeIDLen || len(p.sorted) > maxResumeRooms {
				t.Fatalf("after %d rooms: id of %d bytes naming %d rooms", i+1, len(id), len(p.sorted))
			}
		}
		last := resumed(p.id())
		if len(last) != len(p.sorted) {
			t.Fatalf("id naming %d rooms resumes %d", len(p.sorted), len(last))
		}
		return last
	}
	short := func(i int) string { return fmt.Sprintf("r%d", i) }
	last := build(short, maxResumeRooms+50)
	if len(last) != maxResumeRooms {
		t.Fatalf("id names %d rooms, want %d", len(last), maxResumeRooms)
	}
	for i := range 50 {
		if _, ok := last[short(i)]; ok {
			t.Fatalf("r%d, among the rooms changed first, still named", i)
		}
	}
	// Long names: the length bounds the id first, to the rooms changed last.
	long := func(i int) string { return fmt.Sprintf("%0100d", i) }
	last = build(long, 200)
	if len(last) < 50 || len(last) > 100 {
		t.Fatalf("id names %d rooms of 100 bytes, want the 50 to 100 that fit in %d bytes", len(last), maxResumeIDLen)
	}
	if _, ok := last[long(199)]; !ok {
		t.Fatal("the room changed last is not named")
	}
	// A resume point keeps what it resumed, the rooms in it changed
	// before any that changes later.
	p := newResumePoint(last, true)
	if got := resumed(p.id()); !maps.Equal(got, last) {
		t.Fatalf("resume point of %d rooms gives back %d", len(last), len(got))
	}
	id := ""
	for i := range maxResumeRooms + 200 {
		id += fmt.Sprintf("&%d=3", i)
	}
	if n := len(resumed(id[1:])); n != maxResumeRooms {
		t.Fatalf("Last-Event-ID naming %d rooms resumes %d, want %d", maxResumeRooms+200, n, maxResumeRooms)
	}
	if n := len(resumed(id[1:] + "&" + strings.Repeat("x", maxResumeIDLen) + "=3")); n != 0 {
		t.Fatalf("Last-Event-ID of more than %d bytes resumes %d rooms, want 0", maxResumeIDLen, n)
	}
}

// BenchmarkResumePoint is an all=1 stream's bookkeeping per event, its id
// naming as many rooms as fit: the change of one room, and the id to send.
func BenchmarkResumePoint(b *testing.B) {
	p := newResumePoint(map[string]int64{}, true)
	room := func(i int) string { return "room-" + strconv.Itoa(i%(2*maxResumeRooms)) }
	for i := range 2 * maxResumeRooms {
		p.set(room(i), int64(i))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.set(room(i), int64(i))
		_ = p.id()
	}
}
