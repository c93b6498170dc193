package wsconn

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/headcount-go/headcount/internal/icounter"
)

// Presence counts each connection's user, besides the connection, in a
// member counter per room (icounter.Member: listed, and announced when its
// first connection anywhere in the cluster comes and its last one goes),
// per tenant and overall (icounter.CountedMember: counted only; overall in
// one of several groups, see onlineGroup).

// presenceOn reports whether m's user is counted as a member.
func (m *member) presenceOn() bool { return m.t.cfg.Presence != nil && m.user != "" }

// readMetadata reads and checks the connection's presence metadata.
func (t *Tracker) readMetadata(r *http.Request) (string, error) {
	if t.cfg.Presence == nil || t.cfg.Presence.Metadata == nil {
		return "", nil
	}
	meta := t.cfg.Presence.Metadata(r)
	switch {
	case len(meta) > MaxMetadataLen:
		return "", fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidMetadata, len(meta), MaxMetadataLen)
	case !utf8.ValidString(meta):
		return "", fmt.Errorf("%w: not valid UTF-8", ErrInvalidMetadata)
	}
	return meta, nil
}

// memberIn counts m's user in group (a counter key: a group of the users
// overall, a tenant's or a room's, which alone lists its users) and
// returns the member key, to acknowledge when strict. Call with m.mu held.
func (t *Tracker) memberIn(m *member, group string, listed bool) string {
	key := icounter.CountedMember(group, m.user)
	if listed {
		key = icounter.Member(group, m.user)
	}
	d := int64(1)
	if t.graces.cancel(key) {
		d = 0 // takes the place of a leave held back: neither is announced
	}
	if _, err := t.lax.AddMember(key, d, m.meta); err != nil && !errors.Is(err, icounter.ErrClosed) {
		t.cfg.log.Warn("wsconn: counting failed", "key", key, "err", err)
	}
	return key
}

// onlineGroup returns the group of the users overall that counts user:
// always the same one for the same user, on every node (FNV-1a of the
// name), so that a user with connections on several nodes is one member.
func (t *Tracker) onlineGroup(user string) string {
	h := fnv.New32a()
	_, _ = io.WriteString(h, user) // a hash.Hash never fails
	return t.online[h.Sum32()%uint32(len(t.online))]
}

// roomMemberIn counts m's user as a member of room, once, and returns the
// member key ("" when not counted now), to acknowledge if the room is
// strict. Call with m.mu held.
func (m *member) roomMemberIn(room string) string {
	if !m.presenceOn() || m.inRooms[room] {
		return ""
	}
	if m.inRooms == nil {
		m.inRooms = make(map[string]bool)
	}
	m.inRooms[room] = true
	return m.t.memberIn(m, roomKey(room), true)
}

// roomMemberOut uncounts m's user from room, if counted, and returns the
// member key if it is to be acknowledged now. Call with m.mu held.
func (m *member) roomMemberOut(room string, strict bool) string {
	if !m.inRooms[room] {
		return ""
	}
	delete(m.inRooms, room)
	key := icounter.Member(roomKey(room), m.user)
	if m.t.memberOut(key, strict) {
		return key
	}
	return ""
}

// memberOut uncounts a member key (see memberIn): at once, or after the
// grace. It reports whether to acknowledge it now. Call with the member's
// mu held.
func (t *Tracker) memberOut(key string, strict bool) bool {
	out := func() {
		t.addLocal(key, -1)
	}
	if grace := t.cfg.Presence.Grace; grace > 0 && !t.draining.Load() {
		t.graces.hold(key, grace, func() {
			out()
			if strict {
				t.ackAsync([]string{key})
			}
		})
		return false
	}
	out()
	return strict
}

// graces are the leaves held back by PresenceOptions.Grace, per member key,
// oldest first. A leave is run, or cancelled, by whoever removes it from
// held, once.
type graces struct {
	mu   sync.Mutex
	held map[string][]*heldLeave
}

type heldLeave struct {
	timer *time.Timer
	run   func()
}

func (g *graces) hold(key string, d time.Duration, run func()) {
	h := &heldLeave{run: run}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held == nil {
		g.held = make(map[string][]*heldLeave)
	}
	g.held[key] = append(g.held[key], h)
	h.timer = time.AfterFunc(d, func() {
		if g.remove(key, h) {
			run()
		}
	})
}

// remove takes h (nil: the oldest) out of key's held leaves and reports
// whether it was there.
func (g *graces) remove(key string, h *heldLeave) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	hs := g.held[key]
	i := 0
	if h != nil {
		i = slices.Index(hs, h)
	}
	if i < 0 || i >= len(hs) {
		return false
	}
	hs[i].timer.Stop() // set under mu by hold; a no-op from the timer's own run
	if hs = slices.Delete(hs, i, i+1); len(hs) == 0 {
		delete(g.held, key)
	} else {
		g.held[key] = hs
	}
	return true
}

// cancel cancels the oldest leave of key held back, if any: the join that
// calls it takes its place (the count stays what it was).
func (g *graces) cancel(key string) bool { return g.remove(key, nil) }

// flush runs every held leave now (Drain and Close).
func (g *graces) flush() {
	g.mu.Lock()
	held := g.held
	g.held = nil
	g.mu.Unlock()
	for _, hs := range held {
		for _, h := range hs {
			h.timer.Stop() // its own run finds it gone
			h.run()
		}
	}
}
