package wsconn

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"golang.org/x/sync/errgroup"
)

// maxPresenceNames caps the names one presence request may ask about.
const maxPresenceNames = 1000

// membersReads is how many rooms' member lists a members=1 request reads
// at once.
const membersReads = 16

// maxMembersListed caps what one members=1 request may list: its rooms
// times its page size. A request's answer is built whole in memory.
const maxMembersListed = 10000

// presence is the JSON PresenceHandler serves.
type presence struct {
	Instance string           `json:"instance"`
	Total    Count            `json:"total"`
	Rooms    map[string]Count `json:"rooms"`
	Tenants  map[string]Count `json:"tenants,omitempty"`
	Users    map[string]Count `json:"users,omitempty"`
	// With Options.Presence: distinct users.
	OnlineUsers *int64           `json:"online_users,omitempty"`
	RoomUsers   map[string]int64 `json:"room_users,omitempty"`
	TenantUsers map[string]int64 `json:"tenant_users,omitempty"`
	// With members=1: the first page of each room's member list.
	Members map[string]Members `json:"members,omitempty"`
}

// PresenceHandler serves presence as JSON; its counts take one Redis round
// trip per node:
//
//	GET ?room=a&room=b&tenant=t&user=u
//	{"instance":"…","total":{"total":12,"local":4},
//	 "rooms":{"a":{"total":3,"local":1},…},"tenants":{…},"users":{…}}
//
// Without parameters it lists the rooms with connections on this node. A
// request names at most 1,000 rooms, tenants and users in all. An invalid
// name (or user= while per-user counting is off) gets 400, Redis not
// answering within RedisTimeout 503.
//
// With Options.Presence and users=1 the answer also holds distinct users
// (one more round trip): "online_users", and "room_users" and
// "tenant_users" for the rooms and tenants asked. With members=1 (which
// implies users=1) and room= (limit=N, at most MaxMembersPage, default
// 100; cursor=C for a single room's next page) it holds the first page of
// each room's member list under "members": a read per room, 16 at a time;
// the rooms times limit may be at most 10,000. Member lists say who is
// online: PresenceOptions.Visible decides which rooms, tenants and users a
// request may read; a name it refuses gets 403 before any Redis call, and
// without Visible members=1 gets 403. Every 400 comes before Visible is
// asked and before any Redis call.
func (t *Tracker) PresenceHandler() http.Handler {
	return http.HandlerFunc(t.servePresence)
}

func (t *Tracker) servePresence(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSONError(w, http.StatusMethodNotAllowed, errors.New("method not allowed"))
		return
	}
	var pq presenceQuery
	q, err := query(r)
	if err == nil {
		pq, err = t.parsePresenceQuery(q)
	}
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err)
		return
	}
	rooms, tenants, users, members := pq.rooms, pq.tenants, pq.users, pq.members
	if len(rooms)+len(tenants)+len(users) == 0 {
		rooms = t.LocalRooms() // this node's own: however many, not a request's
	}
	if err := t.visible(r, members, rooms, tenants, users); err != nil {
		writeJSONError(w, httpStatus(err), err)
		return
	}
	keys := []string{globalKey}
	for _, g := range []struct {
		names []string
		key   func(string) string
	}{{rooms, roomKey}, {tenants, tenantKey}, {users, userKey}} {
		for _, name := range g.names {
			keys = append(keys, g.key(name))
		}
	}
	vals, err := t.read(r.Context(), keys)
	if err != nil {
		writeJSONError(w, httpStatus(err), err)
		return
	}
	p := presence{Instance: t.InstanceID(), Total: vals[0], Rooms: make(map[string]Count, len(rooms))}
	vals = vals[1:]
	fill := func(names []string) map[string]Count {
		if len(names) == 0 {
			return nil
		}
		m := make(map[string]Count, len(names))
		for _, name := range names {
			m[name] = vals[0]
			vals = vals[1:]
		}
		return m
	}
	if rm := fill(rooms); rm != nil {
		p.Rooms = rm
	}
	p.Tenants, p.Users = fill(tenants), fill(users)
	if t.cfg.Presence != nil && pq.distinct {
		if err := t.presenceOf(r, &p, rooms, tenants, members, pq.cursor, pq.limit); err != nil {
			writeJSONError(w, httpStatus(err), err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(p)
}

// presenceQuery is what a PresenceHandler request asks for.
type presenceQuery struct {
	rooms, tenants, users []string // each sorted, without repeats
	members               bool     // members=1
	distinct              bool     // users=1, or members=1
	cursor                string
	limit                 int
}

// parsePresenceQuery reads and checks PresenceHandler's query.
func (t *Tracker) parsePresenceQuery(q url.Values) (presenceQuery, error) {
	p := presenceQuery{rooms: q["room"], tenants: q["tenant"], users: q["user"],
		members: q.Get("members") == "1", cursor: q.Get("cursor"), limit: 100}
	p.distinct = p.members || q.Get("users") == "1"
	if n := len(p.rooms) + len(p.tenants) + len(p.users); n > maxPresenceNames {
		return p, fmt.Errorf("%d names asked, at most %d", n, maxPresenceNames)
	}
	for _, g := range []struct {
		kind  string
		names *[]string
	}{{"room", &p.rooms}, {"tenant", &p.tenants}, {"user", &p.users}} {
		for _, name := range *g.names {
			if err := checkName(g.kind, name); err != nil {
				return p, err
			}
		}
		*g.names = slices.Compact(slices.Sorted(slices.Values(*g.names)))
	}
	if len(p.users) > 0 && !t.cfg.countUsers {
		return p, ErrUsersNotCounted
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxMembersPage {
			return p, fmt.Errorf("limit %q: want 1 to %d", s, MaxMembersPage)
		}
		p.limit = n
	}
	switch {
	case p.members && len(p.rooms) == 0:
		return p, errors.New("members=1 needs room=")
	case p.members && len(p.rooms)*p.limit > maxMembersListed:
		return p, fmt.Errorf("members=1 lists at most %d users: %d rooms times limit %d", maxMembersListed, len(p.rooms), p.limit)
	case p.cursor != "" && (!p.members || len(p.rooms) != 1):
		return p, errors.New("cursor needs members=1 and exactly one room")
	case len(p.cursor) > maxCursorLen:
		return p, fmt.Errorf("cursor of %d bytes, at most %d", len(p.cursor), maxCursorLen)
	}
	return p, nil
}

// visible checks every name a request reads against
// PresenceOptions.Visible, before any Redis call.
func (t *Tracker) visible(r *http.Request, members bool, rooms, tenants, users []string) error {
	var vis func(*http.Request, string, string) bool
	if t.cfg.Presence != nil {
		vis = t.cfg.Presence.Visible
	}
	if members && t.cfg.Presence == nil {
		return ErrPresenceOff
	}
	if vis == nil {
		if members {
			return fmt.Errorf("%w: member lists need PresenceOptions.Visible", ErrNotVisible)
		}
		return nil
	}
	for _, g := range []struct {
		kind  string
		names []string
	}{{"room", rooms}, {"tenant", tenants}, {"user", users}} {
		for _, n := range g.names {
			if !vis(r, g.kind, n) {
				return fmt.Errorf("%w: %s %q", ErrNotVisible, g.kind, n)
			}
		}
	}
	return nil
}

// presenceOf adds distinct users, and member lists if asked, to p.
func (t *Tracker) presenceOf(r *http.Request, p *presence, rooms, tenants []string, members bool, cursor string, limit int) error {
	ctx := r.Context()
	groups := slices.Clone(t.online)
	for _, room := range rooms {
		groups = append(groups, roomKey(room))
	}
	for _, tenant := range tenants {
		groups = append(groups, tenantKey(tenant))
	}
	ns, err := t.present(ctx, groups)
	if err != nil {
		return err
	}
	online := sum(ns[:len(t.online)])
	p.OnlineUsers = &online
	ns = ns[len(t.online):]
	if len(rooms) > 0 {
		p.RoomUsers = make(map[string]int64, len(rooms))
		for i, room := range rooms {
			p.RoomUsers[room] = ns[i]
		}
	}
	ns = ns[len(rooms):]
	if len(tenants) > 0 {
		p.TenantUsers = make(map[string]int64, len(tenants))
		for i, tenant := range tenants {
			p.TenantUsers[tenant] = ns[i]
		}
	}
	if !members {
		return nil
	}
	// One read per room, a few at a time: a request naming many rooms
	// waits for the slowest of a few round trips, not for their sum.
	lists := make([]Members, len(rooms))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(membersReads)
	for i, room := range rooms {
		g.Go(func() (err error) {
			lists[i], err = t.Members(gctx, room, cursor, limit)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	p.Members = make(map[string]Members, len(rooms))
	for i, room := range rooms {
		p.Members[room] = lists[i]
	}
	return nil
}

// query parses r's query strictly: a malformed one (a bad escape, a ';')
// is refused, where r.URL.Query drops the pairs it cannot read and a
// handler would answer for the rest (room=%zz for this node's rooms).
func query(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("malformed query: %w", err)
	}
	return q, nil
}

func writeJSONError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
