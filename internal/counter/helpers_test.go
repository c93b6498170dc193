package counter

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/keyspace"
	"github.com/headcount-go/headcount/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// api is what Strict and Lax have in common, so one test covers both.
type api interface {
	Inc(ctx context.Context, key string, delta int64) (int64, error)
	Dec(ctx context.Context, key string, delta int64) (int64, error)
	Get(ctx context.Context, key string) (int64, error)
	Set(ctx context.Context, key string, v int64) (int64, error)
	Del(ctx context.Context, key string) (int64, error)
	IncIf(ctx context.Context, key string, delta int64, c Cond) (int64, bool, error)
	Clear(ctx context.Context) error
	Close(ctx context.Context) error
}

type kind struct {
	name string
	new  func(t *testing.T, c redis.UniversalClient, prefix string) api
}

var kinds = []kind{
	{"strict", func(t *testing.T, c redis.UniversalClient, p string) api { return newStrict(t, c, p) }},
	{"lax", func(t *testing.T, c redis.UniversalClient, p string) api { return newLax(t, c, p, 0) }},
}

// eachKind runs fn for Strict and Lax against standalone Redis and the
// cluster, each with a fresh prefix.
func eachKind(t *testing.T, fn func(t *testing.T, c redis.UniversalClient, prefix string, ctr api)) {
	redistest.Each(t, func(t *testing.T, c redis.UniversalClient) {
		for _, k := range kinds {
			t.Run(k.name, func(t *testing.T) {
				p := redistest.Prefix(t)
				fn(t, c, p, k.new(t, c, p))
			})
		}
	})
}

func newStrict(t testing.TB, c redis.UniversalClient, prefix string) *Strict {
	t.Helper()
	s, err := NewStrict(c, Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// newLax returns a Lax closed at the end of the test; a zero interval is
// the default.
func newLax(t testing.TB, c redis.UniversalClient, prefix string, interval time.Duration) *Lax {
	t.Helper()
	l, err := NewLax(c, LaxOptions{Options: Options{Prefix: prefix}, FlushInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// flush flushes ctr when it is a Lax, so Redis holds every change.
func flush(t testing.TB, ctr api) {
	t.Helper()
	if l, ok := ctr.(*Lax); ok {
		if err := l.Flush(context.Background()); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
}

// raw reads the counter's Redis key directly, as a string, so that a value
// is compared digit by digit ("" for a missing key).
func raw(t testing.TB, c redis.UniversalClient, prefix, key string) string {
	t.Helper()
	sp, err := keyspace.NewSpace("c", prefix)
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Get(context.Background(), sp.Key(key)).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	return v
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// countHook counts the commands and pipelines a client sends.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

var errLost = errors.New("test: reply lost")

// loseHook makes script pipelines fail (not the handshake pipelines of new
// connections). Each armed "after" failure lets the pipeline run on the
// server and then loses every reply, as a timeout after the write would;
// each armed "before" failure drops the pipeline before it is sent.
type loseHook struct{ after, before atomic.Int32 }

func (h *loseHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *loseHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *loseHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || cmds[0].Name() != "evalsha" {
			return next(ctx, cmds)
		}
		if h.before.Add(-1) >= 0 {
			fail(cmds)
			return errLost
		}
		h.before.Store(0)
		err := next(ctx, cmds)
		if h.after.Add(-1) >= 0 {
			fail(cmds)
			return errLost
		}
		h.after.Store(0)
		return err
	}
}

func fail(cmds []redis.Cmder) {
	for _, c := range cmds {
		c.SetErr(errLost)
	}
}
