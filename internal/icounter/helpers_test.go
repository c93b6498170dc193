package icounter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

func TestMain(m *testing.M) {
	if childNode() {
		return
	}
	redistest.Main(m)
}

// Short timings so that crash tests finish in seconds.
const (
	testThreshold = time.Second
	testHeartbeat = 250 * time.Millisecond
	testFlush     = 20 * time.Millisecond
	// healDeadline is the promise: a crash or a loss of data is healed
	// within one threshold plus one heartbeat plus a second.
	healDeadline = testThreshold + testHeartbeat + time.Second
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func testOptions(prefix, id string) Options {
	return Options{Prefix: prefix, DeadInstanceThreshold: testThreshold, HeartbeatInterval: testHeartbeat, InstanceID: id}
}

// quietOptions is testOptions with no heartbeat in a test's time: a test
// that plays the heartbeat's part (a loss, a session change) itself.
func quietOptions(prefix, id string) Options {
	o := testOptions(prefix, id)
	o.HeartbeatInterval, o.DeadInstanceThreshold = time.Hour, 3*time.Hour
	return o
}

func newStrict(t testing.TB, c redis.UniversalClient, prefix, id string) *Strict {
	t.Helper()
	return newStrictWith(t, c, testOptions(prefix, id))
}

// newStrictWith is newStrict with options of the test's own.
func newStrictWith(t testing.TB, c redis.UniversalClient, o Options) *Strict {
	t.Helper()
	s, err := NewStrict(c, o)
	if err != nil {
		t.Fatalf("NewStrict: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func newLax(t testing.TB, c redis.UniversalClient, prefix, id string) *Lax {
	t.Helper()
	l, err := NewLax(c, LaxOptions{Options: testOptions(prefix, id), FlushInterval: testFlush})
	if err != nil {
		t.Fatalf("NewLax: %v", err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// counter is what Strict and Lax have in common.
type counter interface {
	Inc(ctx context.Context, key string, delta int64) (Value, error)
	Dec(ctx context.Context, key string, delta int64) (Value, error)
	Get(ctx context.Context, key string) (Value, error)
	Set(ctx context.Context, key string, v int64) (Value, error)
	SetOnInstance(ctx context.Context, key string, mine int64) (Value, error)
	Del(ctx context.Context, key string) (Value, error)
	DelOnInstance(ctx context.Context, key string) (Value, error)
	IncIf(ctx context.Context, key string, delta int64, c Cond) (Value, bool, error)
	Clear(ctx context.Context) error
	Close(ctx context.Context) error
	Kill()
	InstanceID() string
}

var (
	_ counter = (*Strict)(nil)
	_ counter = (*Lax)(nil)
)

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// total reads key's cluster-wide total through c.
func total(t testing.TB, c counter, key string) int64 {
	t.Helper()
	v, err := c.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return v.Total
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, deadline time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v; last: %s", what, deadline, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventuallyTotal waits until reader sees key's total at want.
func eventuallyTotal(t testing.TB, reader counter, key string, want int64, deadline time.Duration) {
	t.Helper()
	eventually(t, deadline, fmt.Sprintf("total of %q = %d", key, want), func() (bool, string) {
		v, err := reader.Get(ctxT(t), key)
		if err != nil {
			return false, err.Error()
		}
		return v.Total == want, fmt.Sprint(v.Total)
	})
}

// stableTotal checks reader sees key's total at want for the whole window.
func stableTotal(t testing.TB, reader counter, key string, want int64, window time.Duration) {
	t.Helper()
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		if got := total(t, reader, key); got != want {
			t.Fatalf("total of %q = %d, want %d throughout %v", key, got, want, window)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// errCut is what a cut-off instance gets from Redis.
var errCut = errors.New("test: network cut")

// faults is a go-redis hook that cuts an instance off Redis on demand
// (every command fails without being sent) or loses replies (the command
// runs but the caller gets an error), to play partitions and lost replies.
type faults struct {
	cut       atomic.Bool
	loseNext  atomic.Int32 // replies still to lose
	commands  atomic.Int64 // commands sent, pipelined ones counted singly
	roundTrip atomic.Int64 // round trips: a pipeline counts once
	hold      atomic.Pointer[hold]
	// stall, when set, has each command wait that long (or until its
	// context ends) before it is sent, as go-redis' retries do while a
	// Cluster is down.
	stall atomic.Int64
	// after, when set, runs after each pipeline has run, before its
	// replies reach the caller.
	after atomic.Pointer[func([]redis.Cmder)]
}

// stalled waits for the stall set, or until ctx ends.
func (f *faults) stalled(ctx context.Context) error {
	d := time.Duration(f.stall.Load())
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hold holds back the replies of the commands that name key, which have
// run in Redis, until release is closed; or, with before, the first
// pipeline naming key, unsent.
type hold struct {
	key     string
	release chan struct{}
	before  bool
}

// names reports whether one of cmds has key among its arguments.
func names(cmds []redis.Cmder, key string) bool {
	return slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return slices.Contains(c.Args(), any(key)) })
}

// holdReplies has the replies of commands naming key wait (see hold); the
// caller closes the channel it returns to let them through.
func (f *faults) holdReplies(key string) chan struct{} {
	h := &hold{key: key, release: make(chan struct{})}
	f.hold.Store(h)
	return h.release
}

// holdRequest has the next pipeline naming key wait before it is sent,
// until the caller closes the channel it returns; the ones after it pass.
func (f *faults) holdRequest(key string) chan struct{} {
	h := &hold{key: key, release: make(chan struct{}), before: true}
	f.hold.Store(h)
	return h.release
}

// abandon calls op with a context that ends after 100 ms, while release
// (of holdReplies or holdRequest) keeps op's Redis call from finishing, and
// fails the test, releasing the hold, unless op gave up with the context's
// error: the call is then abandoned, still under way.
func abandon(t testing.TB, ctx context.Context, release chan struct{}, op func(context.Context) error) {
	t.Helper()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err := op(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		close(release)
		t.Fatalf("a call with its Redis call held: %v, want the context's error", err)
	}
}

// wait holds the caller while cmds name the key of a hold of replies.
func (f *faults) wait(cmds ...redis.Cmder) {
	if h := f.hold.Load(); h != nil && !h.before && names(cmds, h.key) {
		<-h.release
	}
}

// waitToSend holds the caller while cmds are the ones a holdRequest waits
// for.
func (f *faults) waitToSend(cmds []redis.Cmder) {
	if h := f.hold.Load(); h != nil && h.before && names(cmds, h.key) && f.hold.CompareAndSwap(h, nil) {
		<-h.release
	}
}

func (f *faults) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *faults) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.cut.Load() {
			cmd.SetErr(errCut)
			return errCut
		}
		if connectionSetup(cmd) {
			return next(ctx, cmd)
		}
		f.commands.Add(1)
		f.roundTrip.Add(1)
		err := next(ctx, cmd)
		f.wait(cmd)
		if f.loseNext.Load() > 0 && f.loseNext.Add(-1) >= 0 {
			cmd.SetErr(errCut)
			return errCut
		}
		return err
	}
}

func (f *faults) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f.cut.Load() {
			for _, c := range cmds {
				c.SetErr(errCut)
			}
			return errCut
		}
		if connectionSetup(cmds[0]) {
			return next(ctx, cmds)
		}
		f.commands.Add(int64(len(cmds)))
		f.roundTrip.Add(1)
		f.waitToSend(cmds)
		if err := f.stalled(ctx); err != nil {
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		err := next(ctx, cmds)
		if fn := f.after.Load(); fn != nil {
			(*fn)(cmds)
		}
		f.wait(cmds...)
		if f.loseNext.Load() > 0 && f.loseNext.Add(-1) >= 0 {
			for _, c := range cmds {
				c.SetErr(errCut)
			}
			return errCut
		}
		return err
	}
}

// connectionSetup tells the commands go-redis sends on a new connection,
// which pass through hooks too but are no part of what a test counts.
func connectionSetup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}

// ownClient returns a new client to the same Redis as c, with its own fault
// hook, so one instance can be cut off while the others go on.
func ownClient(t testing.TB, c redis.UniversalClient) (redis.UniversalClient, *faults) {
	t.Helper()
	var nc redis.UniversalClient
	switch c := c.(type) {
	case *redis.ClusterClient:
		o := c.Options()
		nc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: o.Addrs})
	case *redis.Client:
		nc = redis.NewClient(&redis.Options{Addr: c.Options().Addr})
	default:
		t.Fatalf("unexpected client %T", c)
	}
	f := &faults{}
	nc.AddHook(f)
	t.Cleanup(func() { _ = nc.Close() })
	return nc, f
}

// holdRooms has l hold d in each of n counters room-0 .. room-<n-1>, in
// Redis (flushed), and returns their names.
func holdRooms(t testing.TB, l *Lax, n int, d int64) []string {
	t.Helper()
	ctx := ctxT(t)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "room-" + strconv.Itoa(i)
		must[Value](t)(l.Inc(ctx, keys[i], d))
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return keys
}
