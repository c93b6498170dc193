package wsconn

import (
	"container/list"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// maxLastEventID caps the Last-Event-ID a client may send back.
const maxLastEventID = 64 << 10

// maxResumeRooms and maxResumeIDLen cap the rooms an all=1 stream's id
// names (the rooms most recently changed) and its length, and so those a
// Last-Event-ID may resume: an id is sent back as a header, which proxies
// commonly cap at 8 KiB. A room left out gets a snapshot with its next
// event, as a new room does.
const (
	maxResumeRooms = 1000
	maxResumeIDLen = 8 << 10
)

// resumePoint is an event stream's id: the last sequence of each room
// it names, as "a=41&b=7" (url.Values' encoding, sorted by room). Each
// room's pair is kept encoded, so that an event costs a copy of the id,
// not an encoding of every room: an all=1 stream's id names up to 1,000.
type resumePoint struct {
	sorted  []*resumeRoom // by room: the id's order
	byRoom  map[string]*resumeRoom
	pairs   int // the pairs' length: the id's, less the '&' between them
	bounded bool
	// changed orders the rooms by their last change, oldest first: with
	// bounded (all=1), the oldest leave the id while it names more than
	// maxResumeRooms or is longer than maxResumeIDLen.
	changed list.List
}

// resumeRoom is one room of a resumePoint.
type resumeRoom struct {
	room string
	pair string // room=seq, escaped
	at   *list.Element
}

// newResumePoint returns the resume point of a stream resuming from last
// (as parseLastEventID gives it), bounded with all=1.
func newResumePoint(last map[string]int64, bounded bool) *resumePoint {
	p := &resumePoint{byRoom: make(map[string]*resumeRoom, len(last)), bounded: bounded}
	for _, room := range slices.Sorted(maps.Keys(last)) {
		p.set(room, last[room])
	}
	return p
}

// set makes seq room's last sequence, and room the one changed last.
func (p *resumePoint) set(room string, seq int64) {
	pair := url.QueryEscape(room) + "=" + strconv.FormatInt(seq, 10)
	if r := p.byRoom[room]; r != nil {
		p.pairs += len(pair) - len(r.pair)
		r.pair = pair
		p.changed.MoveToBack(r.at)
	} else {
		r = &resumeRoom{room: room, pair: pair}
		r.at = p.changed.PushBack(r)
		p.byRoom[room] = r
		i, _ := slices.BinarySearchFunc(p.sorted, room, byName)
		p.sorted = slices.Insert(p.sorted, i, r)
		p.pairs += len(pair)
	}
	for p.bounded && (len(p.sorted) > maxResumeRooms || p.size() > maxResumeIDLen) {
		p.remove(p.changed.Front().Value.(*resumeRoom).room)
	}
}

// remove takes room out of the id.
func (p *resumePoint) remove(room string) {
	r := p.byRoom[room]
	if r == nil {
		return
	}
	delete(p.byRoom, room)
	p.changed.Remove(r.at)
	i, _ := slices.BinarySearchFunc(p.sorted, room, byName)
	p.sorted = slices.Delete(p.sorted, i, i+1)
	p.pairs -= len(r.pair)
}

// size is the id's length.
func (p *resumePoint) size() int { return p.pairs + max(len(p.sorted)-1, 0) }

func byName(r *resumeRoom, room string) int { return strings.Compare(r.room, room) }

// id returns the encoded resume point.
func (p *resumePoint) id() string {
	var b strings.Builder
	b.Grow(p.size())
	for i, r := range p.sorted {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(r.pair)
	}
	return b.String()
}

// parseLastEventID reads the resume point of each of rooms (of every room
// it names, with all): a malformed or foreign one is ignored, and the room
// starts with a snapshot.
func parseLastEventID(r *http.Request, rooms []string, all bool) map[string]int64 {
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		id = r.URL.Query().Get("last_event_id")
	}
	out := make(map[string]int64, len(rooms))
	if id == "" || len(id) > maxLastEventID || all && len(id) > maxResumeIDLen {
		return out // not one this handler wrote
	}
	v, err := url.ParseQuery(id)
	if err != nil {
		return out
	}
	if all {
		rooms = rooms[:0:0]
		for room := range v {
			if checkName("room", room) == nil {
				rooms = append(rooms, room)
			}
		}
		slices.Sort(rooms)
		rooms = rooms[:min(len(rooms), maxResumeRooms)]
	}
	for _, room := range rooms {
		if n, err := strconv.ParseInt(v.Get(room), 10, 64); err == nil && n >= 0 {
			out[room] = n
		}
	}
	return out
}
