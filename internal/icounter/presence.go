package icounter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/keyspace"
)

// Presence: with Options.Presence, a counter named Member(group, name)
// counts name inside group (a user's connections in a room). Whenever a
// member's total becomes non-zero or zero, the script that made the change
// lists or unlists it in its group, counts the group's members and emits an
// event, once cluster-wide: the assertion of a live instance (reason closed,
// or drained once Draining was called), the sweeper's drop of a dead one's
// slice (crashed), or an expired lease (crashed). Events carry a sequence
// per group, are kept in a capped history in Redis and published on the
// group's channel. See internal/lua/presence.lua for the keys.

var errNoPresence = fmt.Errorf("%w: presence is off (Options.Presence)", ErrInvalidOptions)

// Member returns the counter key of name inside group: counted, listed and
// announced by events.
func Member(group, name string) string { return keyspace.Member(group, name) }

// CountedMember returns the counter key of name inside group, counted
// only: Present counts it; it is neither listed nor announced.
func CountedMember(group, name string) string { return keyspace.CountedMember(group, name) }

// Event kinds.
const (
	EventJoin     = "join"
	EventLeave    = "leave"
	EventOccupied = "occupied" // the group's first member joined
	EventVacated  = "vacated"  // the group's last member left
)

// Event is one change of a group's members.
type Event struct {
	Seq      int64  // the group's event sequence: each event one more
	Kind     string // EventJoin, EventLeave, EventOccupied, EventVacated
	Member   string // "" for occupied and vacated
	Reason   string // closed, drained or crashed
	Instance string // whose slice change caused it
	Meta     string // the member's metadata, on joins
	// Start is true on the first event of a sequence: nothing precedes it
	// (the group's presence keys were new, expired or lost).
	Start bool
}

// MemberInfo is one member of a group.
type MemberInfo struct {
	Name        string
	Connections int64
	Meta        string
}

// MemberPage is a page of a group's member list.
type MemberPage struct {
	// Present counts the group's members, listed or not (see
	// PresenceOptions.MemberCap).
	Present int64
	// Seq is the group's last event sequence when the page was read: the
	// first page and the events after Seq describe the group.
	Seq     int64
	Members []MemberInfo
	// Next is the cursor of the next page; "" after the last one.
	Next string
}

// presenceOpen checks that presence is on and the counter not closed.
func (c common) presenceOpen() error {
	if !c.e.cfg.presence {
		return errNoPresence
	}
	if c.e.closed.Load() {
		return ErrClosed
	}
	return nil
}

// checkGroups checks that presence is on, the counter open and that groups
// name counters.
func (c common) checkGroups(groups ...string) error {
	if err := c.presenceOpen(); err != nil {
		return err
	}
	for _, g := range groups {
		if err := keyspace.CheckKey(g); err != nil {
			return err
		}
	}
	return nil
}

// Members returns a page of at most limit members of group (in the order
// of their encoded names), after cursor ("" for the first page). The page's
// Members must not be modified: a whole list is shared with the later
// reads that find it unchanged in Redis (by its version), which then cost
// one small reply.
func (c common) Members(ctx context.Context, group, cursor string, limit int) (MemberPage, error) {
	if err := c.checkGroups(group); err != nil {
		return MemberPage{}, err
	}
	if limit <= 0 {
		return MemberPage{}, fmt.Errorf("%w: member page limit %d", ErrInvalidOptions, limit)
	}
	var held wholeList
	if cursor == "" {
		held = c.e.lists.get(group)
	}
	vals, err := c.e.readMembers(ctx, memberPageKey{group: group, cursor: cursor, limit: limit, tag: held.tag})
	if err != nil {
		return MemberPage{}, fmt.Errorf("headcount: reading the members of %q: %w", group, err)
	}
	if len(vals) < 5 || (vals[3] == "0" || vals[3] == "1") && len(vals)%2 != 1 {
		return MemberPage{}, fmt.Errorf("headcount: members script replied %d values", len(vals))
	}
	var p MemberPage
	p.Present, _ = strconv.ParseInt(vals[0], 10, 64)
	p.Seq, _ = strconv.ParseInt(vals[1], 10, 64)
	more, form, tag := vals[2] == "1", vals[3], vals[4]
	switch form {
	case "2":
		p.Members = held.members
		return p, nil
	case "3":
		members, err := applyEvents(held.members, vals[5:])
		if err != nil {
			return MemberPage{}, err
		}
		p.Members = members
		c.e.lists.put(group, wholeList{tag: tag, members: members})
		return p, nil
	}
	entries := vals[5:]
	type named struct{ enc, entry string }
	list := make([]named, 0, len(entries)/2)
	for i := 0; i < len(entries); i += 2 {
		list = append(list, named{entries[i], entries[i+1]})
	}
	if form == "0" {
		slices.SortFunc(list, func(a, b named) int { return strings.Compare(a.enc, b.enc) })
	}
	p.Members = make([]MemberInfo, 0, len(list))
	for _, m := range list {
		name, ok := keyspace.DecodeMember(m.enc)
		if !ok {
			continue // not written by presence.lua
		}
		conns, meta, _ := strings.Cut(m.entry, "\t")
		n, _ := strconv.ParseInt(conns, 10, 64)
		p.Members = append(p.Members, MemberInfo{Name: name, Connections: n, Meta: meta})
	}
	if more && len(list) > 0 {
		p.Next = list[len(list)-1].enc
	}
	if form == "0" {
		c.e.lists.put(group, wholeList{tag: tag, members: p.Members})
	}
	return p, nil
}

// listKeys are the keys members.lua reads of group.
func (c common) listKeys(group string) []string {
	sp := c.e.cfg.space
	return []string{sp.GroupKey(group, "pu"), sp.GroupKey(group, "pp"), sp.GroupKey(group, "pl"), sp.GroupKey(group, "pe")}
}

// SpreadGroups returns n counter keys, prefix followed by a number, for
// one group split in n: their keys hash to n different parts of the Redis
// Cluster slot space, so that the members of a big group, counted in
// CountedMember(SpreadGroups(...)[i], name) for one i per name, spread
// over the masters. Every counter of the same Options.Prefix gets the same
// keys.
func (c common) SpreadGroups(prefix string, n int) []string {
	return c.e.cfg.space.Spread(prefix, n)
}

// Present returns how many members each group has: plain reads, batched
// with other callers' reads (counts' too) into one round trip per Redis
// node.
func (c common) Present(ctx context.Context, groups []string) ([]int64, error) {
	n, _, err := c.present(ctx, groups)
	return n, err
}

// Seqs returns each group's last event sequence (0: none yet), read like
// Present: subscribers that check for missed events share the reads.
func (c common) Seqs(ctx context.Context, groups []string) ([]int64, error) {
	_, q, err := c.present(ctx, groups)
	return q, err
}

func (c common) present(ctx context.Context, groups []string) (n, q []int64, err error) {
	if err := c.checkGroups(groups...); err != nil {
		return nil, nil, err
	}
	e := c.e
	if err := e.enter(ctx); err != nil {
		return nil, nil, err
	}
	defer e.ops.Leave()
	keys := make([]string, len(groups))
	for i, g := range groups {
		keys[i] = e.cfg.space.GroupKey(g, "pp")
	}
	reads := e.reads.putAllBy(ctx, keys, newPresentRead)
	e.reads.wake()
	n, q = make([]int64, len(groups)), make([]int64, len(groups))
	for i, rd := range reads {
		select {
		case <-rd.done:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		if rd.err != nil {
			return nil, nil, fmt.Errorf("headcount: presence of %q: %w", groups[i], rd.err)
		}
		n[i], q[i] = rd.total, rd.seq
	}
	return n, q, nil
}

// Events returns at most count events of group with a sequence above
// after, oldest first, from the history Redis keeps.
func (c common) Events(ctx context.Context, group string, after int64, count int64) ([]Event, error) {
	if err := c.checkGroups(group); err != nil {
		return nil, err
	}
	if count <= 0 {
		return nil, nil
	}
	// An entry holds one or two events (see presence.lua): count entries
	// hold at least count events.
	msgs, err := c.e.client.XRangeN(ctx, c.e.cfg.space.GroupKey(group, "pe"), "("+strconv.FormatInt(after, 10)+"-0", "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("headcount: reading the events of %q: %w", group, err)
	}
	out := make([]Event, 0, len(msgs)+1)
	for _, m := range msgs {
		evs, err := entryEvents(m)
		if err != nil {
			return nil, fmt.Errorf("headcount: event %s of %q: %w", m.ID, group, err)
		}
		for _, ev := range evs {
			if ev.Seq > after && int64(len(out)) < count {
				out = append(out, ev)
			}
		}
	}
	return out, nil
}

// entryEvents returns the events of one entry of a group's history: its
// member's join or leave and, with field g, the group's occupied before
// the join or vacated after the leave.
func entryEvents(m redis.XMessage) ([]Event, error) {
	seqPart, _, _ := strings.Cut(m.ID, "-")
	last, err := strconv.ParseInt(seqPart, 10, 64)
	if err != nil {
		return nil, errors.New("bad entry ID")
	}
	ev := Event{Kind: str(m.Values["e"]), Reason: str(m.Values["r"]), Instance: str(m.Values["i"]),
		Meta: str(m.Values["d"]), Start: str(m.Values["s"]) == "1", Seq: last}
	var ok bool
	if ev.Member, ok = memberName(str(m.Values["m"])); !ok {
		return nil, errors.New("bad member name")
	}
	group := Event{Reason: ev.Reason, Instance: ev.Instance}
	switch g := str(m.Values["g"]); {
	case g == "":
		return []Event{ev}, nil
	case g == EventOccupied && ev.Kind == EventJoin:
		group.Kind, group.Seq, group.Start = g, last-1, ev.Start
		ev.Start = false
		return []Event{group, ev}, nil
	case g == EventVacated && ev.Kind == EventLeave:
		ev.Seq = last - 1
		group.Kind, group.Seq = g, last
		return []Event{ev, group}, nil
	}
	return nil, errors.New("bad group event")
}

func str(v any) string { s, _ := v.(string); return s }

func memberName(enc string) (string, bool) {
	if enc == "" {
		return "", true
	}
	return keyspace.DecodeMember(enc)
}

// ParseEvent decodes an event published on a group's channel.
func ParseEvent(payload string) (Event, error) {
	f := strings.SplitN(payload, "\t", 7)
	if len(f) != 7 {
		return Event{}, fmt.Errorf("headcount: malformed presence event %q", payload)
	}
	seq, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return Event{}, fmt.Errorf("headcount: malformed presence event %q", payload)
	}
	name, ok := memberName(f[5])
	if !ok {
		return Event{}, fmt.Errorf("headcount: malformed presence event %q", payload)
	}
	return Event{Seq: seq, Kind: f[1], Reason: f[2], Instance: f[3], Start: f[4] == "1", Member: name, Meta: f[6]}, nil
}

// shardedRefused reports whether Redis refused SSUBSCRIBE as it refuses a
// command it does not have (6.2) or one the user may not run (an ACL
// without sharded pub/sub); presence.lua falls back to PUBLISH alike.
func shardedRefused(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "unknown command") || strings.Contains(s, "noperm")
}

// Subscribe subscribes to group's events, published on its channel in its
// slot: with SSUBSCRIBE where Redis has it (7 and newer), SUBSCRIBE
// otherwise, matching the scripts' SPUBLISH and PUBLISH. It returns once
// Redis confirmed the subscription, or when ctx ends; payloads go to
// ParseEvent.
func (c common) Subscribe(ctx context.Context, group string) (*redis.PubSub, error) {
	if err := c.checkGroups(group); err != nil {
		return nil, err
	}
	ch := c.e.cfg.space.GroupKey(group, "pc")
	ps, _, err := c.subscribeChannel(ctx, ch)
	if err != nil {
		return nil, fmt.Errorf("headcount: subscribing to the events of %q: %w", group, err)
	}
	return ps, nil
}

// subscribeWithin returns what subscribe (which closes nothing) gives, or
// ctx's error when ctx ends first. go-redis does not give up a
// subscription's dial or handshake when ctx ends (only at its own
// timeouts), so the caller does not wait for it: a subscription made after
// ctx ended, or that failed, is closed.
func subscribeWithin(ctx context.Context, subscribe func() (*redis.PubSub, error)) (*redis.PubSub, error) {
	type result struct {
		ps  *redis.PubSub
		err error
	}
	done := make(chan result, 1)
	go func() {
		ps, err := subscribe()
		if err != nil {
			_ = ps.Close()
			ps = nil
		}
		done <- result{ps, err}
	}()
	select {
	case r := <-done:
		return r.ps, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.ps != nil {
				_ = r.ps.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// applyEvents returns a copy of members (in the order of encoded names)
// changed by the joins and leaves of members.lua's form '3': kind, name,
// total, metadata, listed, for each.
func applyEvents(members []MemberInfo, evs []string) ([]MemberInfo, error) {
	if len(evs)%5 != 0 {
		return nil, fmt.Errorf("headcount: members script replied %d event values", len(evs))
	}
	out := slices.Clone(members)
	at := func(enc string) (int, bool) {
		return slices.BinarySearchFunc(out, enc, func(m MemberInfo, enc string) int {
			return strings.Compare(keyspace.EncodeMember(m.Name), enc)
		})
	}
	for i := 0; i < len(evs); i += 5 {
		kind, enc, total, meta, listed := evs[i], evs[i+1], evs[i+2], evs[i+3], evs[i+4]
		name, ok := keyspace.DecodeMember(enc)
		if !ok {
			continue // not written by presence.lua
		}
		j, found := at(enc)
		switch {
		case kind == EventJoin && listed == "1" && !found:
			n, _ := strconv.ParseInt(total, 10, 64)
			out = slices.Insert(out, j, MemberInfo{Name: name, Connections: n, Meta: meta})
		case kind == EventLeave && found:
			out = slices.Delete(out, j, j+1)
		}
	}
	return out, nil
}

// lists holds the last whole member list read of some groups, each with
// its tag (sequence and version), so that a read of an unchanged list
// costs a reply of its header only.
type lists struct {
	mu      sync.Mutex
	m       map[string]wholeList
	members int // held, in all lists
}

type wholeList struct {
	tag     string
	members []MemberInfo
}

// The lists held are bounded in number and in members; beyond either
// bound, arbitrary ones go.
const (
	maxHeldLists   = 1024
	maxHeldMembers = 100000
)

func (l *lists) get(group string) wholeList {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[group]
}

func (l *lists) put(group string, w wholeList) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = make(map[string]wholeList)
	}
	if len(w.members) > maxHeldMembers {
		return
	}
	l.members -= len(l.m[group].members)
	delete(l.m, group)
	for k, old := range l.m {
		if len(l.m) < maxHeldLists && l.members+len(w.members) <= maxHeldMembers {
			break
		}
		l.members -= len(old.members)
		delete(l.m, k)
	}
	l.m[group] = w
	l.members += len(w.members)
}

// SubscribeAll subscribes to the events of every group, published with
// PresenceOptions.AllGroups; it returns once Redis confirmed the
// subscription, or when ctx ends. Payloads go to ParseAllEvent.
func (c common) SubscribeAll(ctx context.Context) (*redis.PubSub, error) {
	if err := c.presenceOpen(); err != nil {
		return nil, err
	}
	if c.e.cfg.allChannel == "" {
		return nil, fmt.Errorf("%w: PresenceOptions.AllGroups is off", ErrInvalidOptions)
	}
	ps, err := subscribeWithin(ctx, func() (*redis.PubSub, error) {
		ps := c.e.client.Subscribe(ctx, c.e.cfg.allChannel)
		_, err := ps.Receive(ctx)
		return ps, err
	})
	if err != nil {
		return nil, fmt.Errorf("headcount: subscribing to the events of every group: %w", err)
	}
	return ps, nil
}

// ReadAll reads ps, a subscription from SubscribeAll, until it is closed:
// it hands each payload to msg, in order, and calls gap whenever messages
// may have been lost, once go-redis has subscribed again after a broken
// connection (from then on every message comes through, as with Feed's
// Gaps).
func ReadAll(ps *redis.PubSub, msg func(payload string), gap func()) {
	receive(ps, nil, func(error) {}, func(m any) {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				gap() // the first confirmation was SubscribeAll's
			}
		case *redis.Message:
			msg(m.Payload)
		}
	})
}

// ParseAllEvent decodes an event from SubscribeAll: its group and itself.
func (c common) ParseAllEvent(payload string) (string, Event, error) {
	g, rest, ok := strings.Cut(payload, "\t")
	if !ok {
		return "", Event{}, fmt.Errorf("headcount: malformed presence event %q", payload)
	}
	group, ok := c.e.cfg.space.Parse(g)
	if !ok {
		return "", Event{}, fmt.Errorf("headcount: presence event of a foreign group %q", g)
	}
	e, err := ParseEvent(rest)
	return group, e, err
}
