package wsconn

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/redistest"
)

var (
	invalidNames = []string{
		"",                                         // empty
		strings.Repeat("x", 300),                   // too long
		strings.Repeat("é", 65),                    // 130 bytes
		"a\x00b", "a\nb", "\t", "\x1b[31m", "\x7f", // C0 and DEL
		"a\u0085b", "\u009b", // C1 controls
		"\xff\xfe", "a\xc3", // invalid UTF-8
	}
	validNames = []string{
		"{", "}", ":", "{a}", "}{", "a:b", "r:a", "t:a", "g", "%", "%7B", "%257B",
		"café", "日本語", "😀", "a b", "a/b", "*", "?", "\u200b", "\ufeff",
		strings.Repeat("x", MaxNameLen), strings.Repeat("é", 64),
	}
)

// commandCounter counts the commands a client sends.
type commandCounter struct{ n atomic.Int64 }

func (h *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestBadNames: invalid room, tenant and user names get 400 before any
// Redis command; valid ones, however odd, each get their own counter.
func TestBadNames(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	cmds := &commandCounter{}
	c.AddHook(cmds)
	o := testOptions(redistest.Prefix(t), "a")
	o.CountUsers = true
	tr := newTracker(t, c, o)
	_, wsURL := serve(t, echo(tr, nil))

	before := cmds.n.Load()
	refused := 0
	for _, name := range invalidNames {
		for _, param := range []string{"room", "tenant", "user"} {
			if name == "" && param != "room" {
				continue // no tenant, anonymous: fine
			}
			refused++
			_, resp, err := dial(ctxT(t), wsURL+"?"+param+"="+url.QueryEscape(name))
			if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("%s=%q: %v, %+v; want 400", param, name, err, resp)
			}
		}
	}
	if _, err := tr.Count(ctxT(t), "a\x00"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("Count of an invalid room: %v", err)
	}
	if n := cmds.n.Load() - before; n != 0 {
		t.Fatalf("%d Redis commands sent for invalid names, want none", n)
	}
	if got := counterValue(tr.met.rejections.WithLabelValues("invalid_name")); got != int64(refused) {
		t.Fatalf("invalid_name rejections = %d", got)
	}

	// Every valid name is its own room, tenant and user.
	for _, name := range validNames {
		q := url.Values{"room": {name}, "tenant": {name}, "user": {name}}
		mustDial(t, wsURL+"?"+q.Encode())
	}
	n := int64(len(validNames))
	totalIs(t, tr, Count{Total: n, Local: n})
	got, err := tr.Counts(ctxT(t), validNames...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range validNames {
		if got[name] != (Count{Total: 1, Local: 1}) {
			t.Errorf("room %q: %+v, want 1", name, got[name])
		}
		for kind, read := range map[string]func(context.Context, string) (Count, error){"tenant": tr.TenantCount, "user": tr.UserCount} {
			if c, err := read(ctxT(t), name); err != nil || c != (Count{Total: 1, Local: 1}) {
				t.Errorf("%s %q: %+v, %v; want 1", kind, name, c, err)
			}
		}
	}
	// Too many static rooms is a 400 as well.
	q := url.Values{}
	for i := range DefaultMaxRoomsPerConn + 1 {
		q.Add("room", strings.Repeat("r", i+1))
	}
	if _, resp, err := dial(ctxT(t), wsURL+"?"+q.Encode()); err == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("%d rooms: %v, %v; want 400", DefaultMaxRoomsPerConn+1, err, resp)
	}
}

// FuzzRoomKey: every name checkName accepts is short, valid UTF-8 without
// control characters; distinct valid names map to distinct Redis keys,
// which never collide with another kind of counter, stay inside their
// cluster hash tag and parse back.
func FuzzRoomKey(f *testing.F) {
	for _, n := range append(append([]string{}, invalidNames...), validNames...) {
		f.Add(n, "{")
	}
	f.Add("a", "a")
	f.Add("%7B", "{")
	f.Add("a}b", "a%7Db")
	sp, err := keyspace.NewSpace("i", "ns")
	if err != nil {
		f.Fatal(err)
	}
	head := "hc:" + keyspace.Version + ":i:{ns:"
	f.Fuzz(func(t *testing.T, a, b string) {
		errA, errB := checkName("room", a), checkName("room", b)
		for _, p := range []struct {
			s   string
			err error
		}{{a, errA}, {b, errB}} {
			ok := p.s != "" && len(p.s) <= MaxNameLen && utf8.ValidString(p.s) && !strings.ContainsFunc(p.s, unicode.IsControl)
			if ok != (p.err == nil) {
				t.Fatalf("checkName(%q) = %v, want valid=%v", p.s, p.err, ok)
			}
			if p.err != nil && !errors.Is(p.err, ErrInvalidName) {
				t.Fatalf("checkName(%q) = %v, not ErrInvalidName", p.s, p.err)
			}
		}
		if errA != nil || errB != nil {
			return
		}
		ka := sp.Key(roomKey(a))
		// The whole name sits inside the hash tag: one slot per counter.
		if !strings.HasPrefix(ka, head) || strings.IndexByte(ka[len(head):], '}') != len(ka)-len(head)-1 || strings.Count(ka, "{") != 1 {
			t.Fatalf("room %q: key %q leaves its hash tag", a, ka)
		}
		if k, ok := sp.Parse(ka); !ok || k != roomKey(a) {
			t.Fatalf("room %q: key %q parses as %q, %v", a, ka, k, ok)
		}
		for _, other := range []string{sp.Key(tenantKey(b)), sp.Key(userKey(b)), sp.Key(globalKey)} {
			if ka == other {
				t.Fatalf("room %q collides with %q", a, other)
			}
		}
		if (ka == sp.Key(roomKey(b))) != (a == b) {
			t.Fatalf("rooms %q and %q: keys %q, %q", a, b, ka, sp.Key(roomKey(b)))
		}
	})
}
