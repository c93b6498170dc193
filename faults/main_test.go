package faults

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/headcount-go/headcount/internal/redistest"
)

// Timings of every test but the soak: short, so that a crash is seen in
// seconds, yet with room for -race on a busy two-CPU machine.
const (
	threshold = 2 * time.Second
	heartbeat = 500 * time.Millisecond
	flushIvl  = 20 * time.Millisecond
	// reapDeadline is the promise for a dead node's counts, from the moment
	// it stopped (crash, partition).
	reapDeadline = threshold + heartbeat + time.Second
	// healDeadline is the promise once Redis answers again (restart with
	// data loss, partition healed, SCRIPT FLUSH, latency removed).
	healDeadline = heartbeat + time.Second
	// settleDeadline bounds waits that promise nothing in particular (the
	// counts of connections just opened, before any fault).
	settleDeadline = 15 * time.Second
)

// TestMain stops the redis-servers the tests started and then checks that
// no goroutine outlived the tests (trackers, proxies, clients, servers).
func TestMain(m *testing.M) {
	// go-redis logs every failed dial; here Redis is down on purpose.
	redis.SetLogger(quietLogger{})
	ctx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		stalls.watch(ctx)
	}()
	code := m.Run()
	stopWatch()
	<-watched
	removeDemo()
	redistest.StopAll()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "faults: goroutines leaked by the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// quietLogger drops go-redis' log lines.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
