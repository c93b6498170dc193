package wsconn

import (
	"context"
	"fmt"

	"github.com/headcount-go/headcount/internal/icounter"
)

// Presence reads. Distinct users are counted in Redis by the scripts that
// make a user's first connection come and last one go, cluster-wide: a user
// with three tabs on two nodes is one user; one node dying leaves the user
// there, both dying takes the user away. Strict changes are read at once;
// another node's lax ones within FlushInterval (plus a round trip), as for
// counts. Like counts, reads wait on Redis for at most RedisTimeout.

// MaxMembersPage is the largest page Members returns.
const MaxMembersPage = 1000

// maxCursorLen caps a member list cursor (an encoded user name).
const maxCursorLen = 3*MaxNameLen + 16

// Member is a user present in a room.
type Member struct {
	User        string `json:"user"`
	Connections int64  `json:"connections"` // the user's in the room, cluster-wide
	Meta        string `json:"meta,omitempty"`
}

// Members is a page of a room's member list, in the order of user names
// (byte order, except that '%', '{', '}' and ':' sort as their
// percent-encodings).
type Members struct {
	// Users counts the room's users, listed or not (see
	// PresenceOptions.MaxMembers).
	Users int64 `json:"users"`
	// Seq is the room's last event sequence when the page was read: the
	// events after it (see Watch) continue the first page.
	Seq     int64    `json:"seq"`
	Members []Member `json:"members"`
	// Next is the cursor of the next page; "" after the last one.
	Next string `json:"next,omitempty"`
}

// Members returns a page of at most limit (1 to MaxMembersPage) users
// present in room, after cursor ("" for the first page; then Next). An
// invalid room name, limit or cursor is an ErrInvalidName, before any
// Redis call.
func (t *Tracker) Members(ctx context.Context, room, cursor string, limit int) (Members, error) {
	if err := t.presenceRead(); err != nil {
		return Members{}, err
	}
	if err := checkName("room", room); err != nil {
		return Members{}, err
	}
	if limit < 1 || limit > MaxMembersPage {
		return Members{}, fmt.Errorf("%w: member page limit %d, want 1 to %d", ErrInvalidName, limit, MaxMembersPage)
	}
	if len(cursor) > maxCursorLen {
		return Members{}, fmt.Errorf("%w: member cursor of %d bytes", ErrInvalidName, len(cursor))
	}
	ctx, cancel := context.WithDeadline(ctx, t.deadline(ctx))
	defer cancel()
	p, err := t.strict.Members(ctx, roomKey(room), cursor, limit)
	if err != nil {
		return Members{}, t.readErr(err)
	}
	return membersOf(p), nil
}

func membersOf(p icounter.MemberPage) Members {
	out := Members{Users: p.Present, Seq: p.Seq, Next: p.Next, Members: make([]Member, len(p.Members))}
	for i, m := range p.Members {
		out.Members[i] = Member{User: m.Name, Connections: m.Connections, Meta: m.Meta}
	}
	return out
}

// RoomUsers returns the number of distinct users in each room, in one
// round trip per Redis node.
func (t *Tracker) RoomUsers(ctx context.Context, rooms ...string) (map[string]int64, error) {
	return t.users(ctx, "room", roomKey, rooms)
}

// TenantUsers returns the number of distinct users of each tenant.
func (t *Tracker) TenantUsers(ctx context.Context, tenants ...string) (map[string]int64, error) {
	return t.users(ctx, "tenant", tenantKey, tenants)
}

// OnlineUsers returns the number of distinct users connected anywhere: the
// sum of the groups the users overall are split into (see the package doc,
// Presence), read in one round trip per Redis node.
func (t *Tracker) OnlineUsers(ctx context.Context) (int64, error) {
	if err := t.presenceRead(); err != nil {
		return 0, err
	}
	ns, err := t.present(ctx, t.online)
	if err != nil {
		return 0, err
	}
	return sum(ns), nil
}

// sum adds up the member counts of the groups of the users overall.
func sum(ns []int64) int64 {
	var n int64
	for _, v := range ns {
		n += v
	}
	return n
}

func (t *Tracker) users(ctx context.Context, kind string, key func(string) string, names []string) (map[string]int64, error) {
	if err := t.presenceRead(); err != nil {
		return nil, err
	}
	groups := make([]string, len(names))
	for i, n := range names {
		if err := checkName(kind, n); err != nil {
			return nil, err
		}
		groups[i] = key(n)
	}
	ns, err := t.present(ctx, groups)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(names))
	for i, n := range names {
		out[n] = ns[i]
	}
	return out, nil
}

func (t *Tracker) present(ctx context.Context, groups []string) ([]int64, error) {
	ctx, cancel := context.WithDeadline(ctx, t.deadline(ctx))
	defer cancel()
	ns, err := t.strict.Present(ctx, groups)
	if err != nil {
		return nil, t.readErr(err)
	}
	return ns, nil
}

func (t *Tracker) presenceRead() error {
	switch {
	case t.cfg.Presence == nil:
		return ErrPresenceOff
	case t.closed.Load():
		return ErrClosed
	}
	return nil
}
