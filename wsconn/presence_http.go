package wsconn

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// maxPresenceNames caps the names one presence request may ask about.
const maxPresenceNames = 1000

// presence is the JSON PresenceHandler serves.
type presence struct {
	Instance string           `json:"instance"`
	Total    Count            `json:"total"`
	Rooms    map[string]Count `json:"rooms"`
	Tenants  map[string]Count `json:"tenants,omitempty"`
	Users    map[string]Count `json:"users,omitempty"`
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
	if len(rooms)+len(tenants)+len(users) == 0 {
		rooms = t.LocalRooms()
	}
	if n := len(rooms) + len(tenants) + len(users); n > maxPresenceNames {
		writeJSONError(w, http.StatusBadRequest, fmt.Errorf("%d names asked, at most %d", n, maxPresenceNames))
		return
	}
	if len(users) > 0 && !t.cfg.countUsers {
		writeJSONError(w, http.StatusBadRequest, ErrUsersNotCounted)
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
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSONError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
