package icounter

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/lua"
	"github.com/headcount-go/headcount/internal/redistest"
)

// TestAssertionsApplyInSequence: an assertion ("my slice is L", with its
// session and sequence) applies only when it is newer than the one stored,
// so a write delivered twice or late (a retry, a reordered pipeline) never
// counts twice or undoes a newer one, also when the newer one changes
// nothing. Played on the script itself, in the order a network might
// deliver them.
func TestAssertionsApplyInSequence(t *testing.T) {
	t.Parallel()
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		ctx, p := ctxT(t), redistest.Prefix(t)
		s := newStrict(t, c, p, "reader")
		h := s.e.cfg.space.Key("k")
		assert := func(session, seq, slice int64) (status, total int64) {
			t.Helper()
			cmd := lua.Assert.Run(ctx, c, []string{h, h + seenSuffix}, "w", session, seq, -1, slice, "0",
				s.e.cfg.leaseMs, s.e.cfg.counterTTLMs, 64, "", "0", "0", "", "")
			vals, err := cmd.Slice()
			if err != nil {
				t.Fatalf("assert (session %d, sequence %d, slice %d): %v", session, seq, slice, err)
			}
			status, _ = vals[0].(int64)
			total, err = strconv.ParseInt(fmt.Sprint(vals[1]), 10, 64)
			if err != nil {
				t.Fatalf("assert replied total %v: %v", vals[1], err)
			}
			return status, total
		}
		steps := []struct {
			what                  string
			session, seq, slice   int64
			wantStatus, wantTotal int64
		}{
			{"first", 2, 1, 4, 1, 4},
			{"newer", 2, 3, 7, 1, 7},
			{"the same again (a retry)", 2, 3, 7, 0, 7},
			{"older, delivered late", 2, 2, 5, 0, 7},
			{"an older session's", 1, 9, 9, 3, 7},
			{"a newer session's", 3, 1, 1, 1, 1},
			// A change in flight (sequence 2) whose outcome the writer
			// does not know, then its slice back as stored (3): the
			// late change must not apply over it.
			{"the stored slice again, newer", 3, 3, 1, 1, 1},
			{"a change sent before it, delivered late", 3, 2, 6, 0, 1},
		}
		for _, st := range steps {
			status, total := assert(st.session, st.seq, st.slice)
			if status != st.wantStatus || total != st.wantTotal {
				t.Fatalf("%s assertion (session %d, sequence %d, slice %d): status %d, total %d; want %d, %d",
					st.what, st.session, st.seq, st.slice, status, total, st.wantStatus, st.wantTotal)
			}
		}
		if got := total(t, s, "k"); got != 1 {
			t.Fatalf("Get reads %d, want 1", got)
		}
	})
}
