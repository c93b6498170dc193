package wsconn

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/redistest"
)

// TestOptionsRefused: New refuses invalid options with a clear error.
func TestOptionsRefused(t *testing.T) {
	t.Parallel()
	c := redistest.Standalone(t)
	for _, tc := range []struct {
		name string
		o    Options
		msg  string
	}{
		{"namespace with a brace", Options{Namespace: "a{b"}, "Namespace"},
		{"namespace too long", Options{Namespace: strings.Repeat("n", 65)}, "Namespace"},
		{"negative limit", Options{Limits: Limits{PerRoom: -1}}, "Limits"},
		{"negative rate", Options{AutoLaxRate: -1}, "AutoLaxRate"},
		{"NaN rate", Options{AutoLaxRate: math.NaN()}, "AutoLaxRate"},
		{"negative room cap", Options{MaxRoomsPerConn: -1}, "MaxRoomsPerConn"},
		{"negative timeout", Options{RedisTimeout: -time.Second}, "RedisTimeout"},
		{"negative retry", Options{RetryAfter: -time.Second}, "RetryAfter"},
		{"reserved drain status", Options{DrainStatus: websocket.StatusAbnormalClosure}, "DrainStatus"},
		{"negative threshold", Options{DeadInstanceThreshold: -time.Second}, "DeadInstanceThreshold"},
		{"heartbeat too long", Options{DeadInstanceThreshold: time.Second, HeartbeatInterval: 600 * time.Millisecond}, "HeartbeatInterval"},
		{"negative flush", Options{FlushInterval: -time.Second}, "FlushInterval"},
		{"flush below 1ms", Options{FlushInterval: time.Microsecond}, "FlushInterval"},
		{"heartbeat below 1ms", Options{HeartbeatInterval: time.Microsecond}, "HeartbeatInterval"},
		{"bad instance ID", Options{InstanceID: "a\nb"}, "InstanceID"},
		{"tenant cap without Tenant", Options{Limits: Limits{PerTenant: 1}}, "Options.Tenant"},
		{"user cap without User", Options{Limits: Limits{UserCap: func(string) int64 { return 1 }}}, "Options.User"},
		{"rate past int32", Options{AutoLaxRate: 1e19}, "AutoLaxRate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := New(c, tc.o)
			if err == nil {
				_ = tr.Close(ctxT(t))
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q: want ErrInvalidOptions naming %s", err, tc.msg)
			}
		})
	}
	var typedNil *redis.Client
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": c.Options().Addr}})
	defer ring.Close()
	for name, client := range map[string]redis.UniversalClient{"nil": nil, "nil *redis.Client": typedNil, "Ring": ring} {
		if _, err := New(client, Options{}); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("%s client: %v, want ErrInvalidOptions", name, err)
		}
	}
	tr, err := New(c, Options{Namespace: redistest.Prefix(t)})
	if err != nil {
		t.Fatalf("zero options: %v", err)
	}
	defer tr.Close(ctxT(t))
	if tr.cfg.maxRooms != DefaultMaxRoomsPerConn || tr.cfg.timeout != DefaultRedisTimeout || tr.cfg.drainStatus != websocket.StatusGoingAway || tr.InstanceID() == "" {
		t.Fatalf("defaults: %+v", tr.cfg)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "1", time.Millisecond: "1", time.Second: "1", 1500 * time.Millisecond: "2", 3 * time.Second: "3"} {
		if got := retryAfterSeconds(d); got != want {
			t.Errorf("retryAfterSeconds(%v) = %s, want %s", d, got, want)
		}
	}
}
