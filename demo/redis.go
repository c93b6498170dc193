package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// startTimeout bounds the wait for Redis at start.
const startTimeout = 5 * time.Second

// redisConn is the Redis of -redis, or the embedded one.
type redisConn struct {
	client   redis.UniversalClient
	addr     string // what nodes started by the supervisor get as -redis
	desc     string // what the page shows: addresses without credentials, or "embedded"
	embedded *miniredis.Miniredis
}

// openRedis connects to the Redis of spec (-redis), or, when spec is
// empty, starts an embedded one served by this process, and checks that it
// answers, so that a wrong -redis fails at start with a clear error.
func openRedis(ctx context.Context, spec string, stdout io.Writer) (*redisConn, error) {
	opts, err := redisOptions(spec)
	if err != nil {
		return nil, err
	}
	rc := &redisConn{addr: spec, desc: "embedded"}
	if opts != nil {
		rc.desc = strings.Join(opts.Addrs, ",")
	} else {
		if rc.embedded, err = startEmbedded(); err != nil {
			return nil, err
		}
		rc.addr = rc.embedded.Addr()
		opts = &redis.UniversalOptions{Addrs: []string{rc.addr}}
		fmt.Fprintf(stdout, "headcount demo: embedded Redis (miniredis) on %s\n", rc.addr)
	}
	rc.client = redis.NewUniversalClient(opts)
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := rc.client.Ping(ctx).Err(); err != nil {
		rc.close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", strings.Join(opts.Addrs, ","), err)
	}
	return rc, nil
}

func (rc *redisConn) close() {
	_ = rc.client.Close()
	if rc.embedded != nil {
		rc.embedded.Close()
	}
}

// redisOptions turns -redis into client options: one host:port or redis://
// URL is a single server, several (comma-separated) are the seeds of a Redis
// Cluster. URLs give their credentials and TLS settings (those of the first
// one apply to every cluster node). "" gives nil: use the embedded Redis.
func redisOptions(spec string) (*redis.UniversalOptions, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, nil
	}
	items := strings.Split(spec, ",")
	o := &redis.UniversalOptions{}
	for i, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("%q: empty address", spec)
		}
		if !strings.Contains(item, "://") {
			if _, _, err := net.SplitHostPort(item); err != nil {
				return nil, fmt.Errorf("%q: not host:port nor a redis:// URL: %v", item, err)
			}
			o.Addrs = append(o.Addrs, item)
			continue
		}
		u, err := redis.ParseURL(item)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", item, err)
		}
		if len(items) > 1 && u.DB != 0 {
			return nil, fmt.Errorf("%q: a Redis Cluster has only database 0", item)
		}
		o.Addrs = append(o.Addrs, u.Addr)
		if i == 0 {
			o.DB, o.Username, o.Password, o.TLSConfig = u.DB, u.Username, u.Password, u.TLSConfig
		}
	}
	return o, nil // redis.NewUniversalClient: a ClusterClient for several
}

// startEmbedded serves an in-memory Redis (miniredis, with Lua through
// gopher-lua) on a free loopback port. Keys expire with the wall clock, as
// they do in Redis (miniredis' default is to expire them only when told).
func startEmbedded() (*miniredis.Miniredis, error) {
	m := miniredis.NewMiniRedis()
	m.ClockTTL(true)
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, errors.Join(errors.New("starting the embedded Redis"), err)
	}
	return m, nil
}
