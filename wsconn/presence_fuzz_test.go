package wsconn

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/headcount-go/headcount/internal/redistest"
)

// FuzzPresenceNames: whatever user name and metadata a client sends, either
// the handshake is refused (ErrInvalidName, ErrInvalidMetadata) and nothing
// is listed, or the room's member list shows exactly that user, with that
// metadata, byte for byte; and the user leaves the list on release.
func FuzzPresenceNames(f *testing.F) {
	for _, s := range [][2]string{
		{"ann", "Ann"}, {"ann", ""}, {"}#{x}", "%3A:"}, {"a:b%", "\x00"}, {"é", strings.Repeat("m", MaxMetadataLen+1)},
		{"u\n", "ok"}, {"\xff", "ok"}, {"ok", "\xff"}, {strings.Repeat("u", MaxNameLen+1), ""},
	} {
		f.Add(s[0], s[1])
	}
	c := redistest.Standalone(f)
	o := testOptions(redistest.Prefix(f), "fuzz")
	o.User = func(r *http.Request) string { return r.Header.Get("X-User") }
	o.Presence = &PresenceOptions{Metadata: func(r *http.Request) string { return r.Header.Get("X-Meta") }}
	tr := newTracker(f, c, o)
	f.Fuzz(func(t *testing.T, user, meta string) {
		const room = "fuzz"
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header = http.Header{"X-User": {user}, "X-Meta": {meta}} // raw: no canonicalisation of values
		l, err := tr.Admit(ctxT(t), WithRooms(r, room))
		if err != nil {
			if !errors.Is(err, ErrInvalidName) && !errors.Is(err, ErrInvalidMetadata) && user != "" {
				t.Fatalf("Admit(%q, %q): %v", user, meta, err)
			}
			m, err := tr.Members(ctxT(t), room, "", 10)
			if err != nil || m.Users != 0 {
				t.Fatalf("refused (%q, %q), yet members %+v, %v", user, meta, m, err)
			}
			return
		}
		defer func() {
			l.Release()
			eventually(t, 5e9, "the user gone", func() (bool, string) {
				m, err := tr.Members(ctxT(t), room, "", 10)
				return err == nil && m.Users == 0, ""
			})
		}()
		if user == "" {
			return // anonymous: not a member
		}
		m, err := tr.Members(ctxT(t), room, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if m.Users != 1 || len(m.Members) != 1 || m.Members[0].User != user || m.Members[0].Meta != meta || m.Members[0].Connections != 1 {
			t.Fatalf("Admit(%q, %q): members %+v", user, meta, m)
		}
	})
}
