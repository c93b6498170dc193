package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// env is what every scenario shares: the Redis server, an admin client of
// the harness's own (cleanup, INFO), and the run's ID, which every key
// name written in this run contains.
type env struct {
	cfg     config
	admin   *redis.Client
	runID   string
	version string
	seq     atomic.Int64
}

func newEnv(ctx context.Context, cfg config) (*env, error) {
	admin := newClient(cfg.addr)
	info, err := admin.Info(ctx, "server").Result()
	if err != nil {
		admin.Close()
		return nil, fmt.Errorf("redis %s: %w", cfg.addr, err)
	}
	if cfg.runID == "" {
		cfg.runID = "hcbench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return &env{
		cfg:     cfg,
		admin:   admin,
		runID:   cfg.runID,
		version: "Redis " + infoFields(info)["redis_version"],
	}, nil
}

func (e *env) close() { _ = e.admin.Close() }

// newClient is a go-redis client with room for 50 concurrent callers, as
// the load benchmarks of headcount use; each side gets its own.
func newClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
}

// ns returns a new namespace (a headcount Namespace, a Centrifuge Prefix,
// a key prefix) for one side: unique in this run, and no namespace is a
// prefix of another, so that dropping one by pattern leaves the others.
func (e *env) ns(tag string) string {
	return e.runID + "-" + strconv.FormatInt(e.seq.Add(1), 10) + "-" + tag
}

// warm is how long a warm-up round lasts.
func (e *env) warm() time.Duration {
	return min(max(e.cfg.round/4, 50*time.Millisecond), 500*time.Millisecond)
}

// drop deletes every key whose name contains ns.
func (e *env) drop(ctx context.Context, ns string) error {
	return dropMatching(ctx, e.admin, "*"+ns+"*")
}

// dropRun deletes every key of this run.
func (e *env) dropRun(ctx context.Context) error { return e.drop(ctx, e.runID+"-") }

// dropMatching deletes the keys matching pattern, SCAN by SCAN. DEL, not
// UNLINK: no freeing left to a background thread, whose CPU time would
// show in the next heartbeat measurement.
func dropMatching(ctx context.Context, c *redis.Client, pattern string) error {
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return fmt.Errorf("scan %s: %w", pattern, err)
		}
		if len(keys) > 0 {
			if err := c.Del(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("del %d keys of %s: %w", len(keys), pattern, err)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// infoFields parses the "name:value" lines of an INFO reply.
func infoFields(info string) map[string]string {
	out := make(map[string]string)
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out
}
