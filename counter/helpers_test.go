package counter_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/headcount-go/headcount/counter"
	"github.com/headcount-go/headcount/internal/redistest"
)

// redisAddr is the standalone Redis server of the examples: the one named
// by HEADCOUNT_REDIS_ADDR (make test), or one redistest starts.
var redisAddr string

// runID and exampleSeq make the examples' prefixes unique per run and call.
var (
	runID      = strconv.FormatInt(time.Now().UnixNano(), 36)
	exampleSeq atomic.Int64
)

// TestMain finds (or starts) Redis before anything runs, because Example
// functions get no testing.T to fail with: a missing redis-server fails the
// package here, with redistest's message on how to get one. After the tests
// it stops the servers it started and checks that no goroutine outlived
// them (flushers, heartbeats, clients).
func TestMain(m *testing.M) {
	addr, err := redistest.StandaloneAddr()
	if err == nil {
		err = ping(addr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "counter: the tests and examples need Redis: %v\n", err)
		redistest.StopAll()
		os.Exit(1)
	}
	redisAddr = addr
	code := m.Run()
	redistest.StopAll()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "counter: goroutines leaked by the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// ping checks that the server at addr answers (HEADCOUNT_REDIS_ADDR may
// name one that is down).
func ping(addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("PING %s: %w", addr, err)
	}
	return nil
}

// Short timings, so that a crashed instance is reaped within seconds.
const (
	testThreshold = time.Second
	testHeartbeat = 250 * time.Millisecond
	testFlush     = 20 * time.Millisecond
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// shared is what Shared and SharedLax have in common.
type shared interface {
	Inc(ctx context.Context, key string, delta int64) (int64, error)
	Dec(ctx context.Context, key string, delta int64) (int64, error)
	Get(ctx context.Context, key string) (int64, error)
	Set(ctx context.Context, key string, v int64) (int64, error)
	Del(ctx context.Context, key string) (int64, error)
	IncIf(ctx context.Context, key string, delta int64, c counter.Cond) (int64, bool, error)
	Clear(ctx context.Context) error
	Close(ctx context.Context) error
}

// perInstance is what PerInstance and PerInstanceLax have in common.
type perInstance interface {
	InstanceID() string
	Inc(ctx context.Context, key string, delta int64) (counter.Value, error)
	Dec(ctx context.Context, key string, delta int64) (counter.Value, error)
	Get(ctx context.Context, key string) (counter.Value, error)
	Set(ctx context.Context, key string, v int64) (counter.Value, error)
	Del(ctx context.Context, key string) (counter.Value, error)
	SetOnInstance(ctx context.Context, key string, mine int64) (counter.Value, error)
	DelOnInstance(ctx context.Context, key string) (counter.Value, error)
	IncIf(ctx context.Context, key string, delta int64, c counter.Cond) (counter.Value, bool, error)
	Clear(ctx context.Context) error
	Close(ctx context.Context) error
}

var (
	_ shared      = (*counter.Shared)(nil)
	_ shared      = (*counter.SharedLax)(nil)
	_ perInstance = (*counter.PerInstance)(nil)
	_ perInstance = (*counter.PerInstanceLax)(nil)
)

// newShared returns a Shared, or a SharedLax when lax, closed at the end of
// the test.
func newShared(t testing.TB, c redis.UniversalClient, prefix string, lax bool) shared {
	t.Helper()
	var (
		ctr shared
		err error
	)
	o := counter.SharedOptions{Prefix: prefix}
	if lax {
		ctr, err = counter.NewSharedLax(c, counter.SharedLaxOptions{SharedOptions: o, FlushInterval: testFlush})
	} else {
		ctr, err = counter.NewShared(c, o)
	}
	if err != nil {
		t.Fatalf("new shared counter: %v", err)
	}
	t.Cleanup(func() { _ = ctr.Close(context.Background()) })
	return ctr
}

func perInstanceOptions(prefix, id string) counter.PerInstanceOptions {
	return counter.PerInstanceOptions{
		Prefix:                prefix,
		InstanceID:            id,
		DeadInstanceThreshold: testThreshold,
		HeartbeatInterval:     testHeartbeat,
	}
}

// newPerInstance returns a PerInstance, or a PerInstanceLax when lax,
// closed at the end of the test.
func newPerInstance(t testing.TB, c redis.UniversalClient, prefix, id string, lax bool) perInstance {
	t.Helper()
	var (
		ctr perInstance
		err error
	)
	o := perInstanceOptions(prefix, id)
	if lax {
		ctr, err = counter.NewPerInstanceLax(c, counter.PerInstanceLaxOptions{PerInstanceOptions: o, FlushInterval: testFlush})
	} else {
		ctr, err = counter.NewPerInstance(c, o)
	}
	if err != nil {
		t.Fatalf("new per-instance counter: %v", err)
	}
	t.Cleanup(func() { _ = ctr.Close(context.Background()) })
	return ctr
}

// modes runs fn for the strict and the lax variant of a kind, on
// standalone Redis and on the cluster, each with a fresh prefix.
func modes(t *testing.T, fn func(t *testing.T, c redis.UniversalClient, prefix string, lax bool)) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		for _, lax := range []bool{false, true} {
			name := "strict"
			if lax {
				name = "lax"
			}
			t.Run(name, func(t *testing.T) { fn(t, c, redistest.Prefix(t), lax) })
		}
	})
}

// flush sends a lax counter's buffered changes; strict ones have none.
func flush(t testing.TB, ctr any) {
	t.Helper()
	if f, ok := ctr.(interface{ Flush(context.Context) error }); ok {
		if err := f.Flush(context.Background()); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
}

// redisKeys returns every Redis key that holds prefix in its hash tag, on
// every master.
func redisKeys(t testing.TB, c redis.UniversalClient, prefix string) []string {
	t.Helper()
	var (
		mu   sync.Mutex
		keys []string
	)
	scan := func(ctx context.Context, m redis.UniversalClient) error {
		found, err := m.Keys(ctx, "*{"+prefix+":*").Result()
		mu.Lock()
		keys = append(keys, found...)
		mu.Unlock()
		return err
	}
	ctx := ctxT(t)
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
	} else {
		err = scan(ctx, c)
	}
	if err != nil {
		t.Fatalf("listing keys: %v", err)
	}
	return keys
}
