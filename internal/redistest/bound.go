package redistest

import (
	"testing"
	"time"
)

// BoundSlack is what Within allows beyond a bound: room for a loaded
// machine, far below the ten seconds of a client's own timeouts.
const BoundSlack = 500 * time.Millisecond

// Within runs f and fails the test if it took longer than bound plus
// BoundSlack: a time bound the code promises (a context, RedisTimeout, a
// constructor's second), not a speed.
func Within(tb testing.TB, what string, bound time.Duration, f func()) {
	tb.Helper()
	start := time.Now()
	f()
	if d := time.Since(start); d > bound+BoundSlack {
		tb.Errorf("%s took %v, want at most %v", what, d, bound)
	}
}
