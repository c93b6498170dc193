package wsconn

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"golang.org/x/sync/errgroup"
)

// maxPresenceNames caps the names one presence request may ask about.
const maxPresenceNames = 1000

// membersReads is how many rooms' member lists a members=1 request reads
// at once.
const membersReads = 16

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

// PresenceHandler serves presence as JSON, in one Redis round trip per
// node:
//
//	GET ?room=a&room=b&tenant=t&user=u
//	{"instance":"…","total":{"total":12,"local":4},
//	 "rooms":{"a":{"total":3,"local":1},…},"tenants":{…},"users":{…}}
//
// Without parameters it lists the rooms with connections on this node. An
// invalid name (or user= while per-user counting is off) gets 400, Redis
// not answering within RedisTimeout 503.
//
// With Options.Presence and users=1 the answer also holds distinct users:
// "online_users", and "room_users" and "tenant_users" for the rooms and
// tenants asked. With members=1 (which implies users=1) (and limit=N, at
// most MaxMembersPage, default 100; cursor=C for a single room's next
// page) it holds the first page of each room's member list under
// "members": a read per room, 16 at a time. Member lists say
// who is online: PresenceOptions.Visible decides which rooms, tenants and
// users a request may read; a name it refuses gets 403 before any Redis
// call, and without Visible members=1 gets 403.
func (t *Tracker) PresenceHandler() http.Handler {
	return http.HandlerFunc(t.servePresence)
}

func (t *Tracker) servePresence(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSONError(w, http.StatusMethodNotAllowed, errors.New("method not allowed"))
		return
	}
	q := r.URL.Query()
	rooms, tenants, users := q["room"], q["tenant"], q["user"]
	if n := len(rooms) + len(tenants) + len(users); n > maxPresenceNames {
		writeJSONError(w, http.StatusBadRequest, fmt.Errorf("%d names asked, at most %d", n, maxPresenceNames))
		return
	}
	if len(rooms)+len(tenants)+len(users) == 0 {
		rooms = t.LocalRooms() // this node's own: however many, not a request's
	}
	if len(users) > 0 && !t.cfg.countUsers {
		writeJSONError(w, http.StatusBadRequest, ErrUsersNotCounted)
		return
	}
	members := q.Get("members") == "1"
	if err := t.visible(r, members, rooms, tenants, users); err != nil {
		writeJSONError(w, httpStatus(err), err)
		return
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxMembersPage {
			writeJSONError(w, http.StatusBadRequest, fmt.Errorf("limit %q: want 1 to %d", s, MaxMembersPage))
			return
		}
		limit = n
	}
	cursor := q.Get("cursor")
	if cursor != "" && len(rooms) != 1 {
		writeJSONError(w, http.StatusBadRequest, errors.New("cursor needs exactly one room"))
		return
	}
	keys := []string{globalKey}
	for _, g := range []struct {
		kind  string
		names []string
		key   func(string) string
	}{{"room", rooms, roomKey}, {"tenant", tenants, tenantKey}, {"user", users, userKey}} {
		for _, name := range g.names {
			if err := checkName(g.kind, name); err != nil {
				writeJSONError(w, http.StatusBadRequest, err)
				return
			}
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
	if t.cfg.Presence != nil && (members || q.Get("users") == "1") {
		if err := t.presenceOf(r, &p, rooms, tenants, members, cursor, limit); err != nil {
			writeJSONError(w, httpStatus(err), err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(p)
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

func writeJSONError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
