package faultproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/headcount-go/headcount/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestStallLatencyCut(t *testing.T) {
	srv := redistest.StandaloneServer(t)
	ignore := goleak.IgnoreCurrent()
	p, err := New(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: p.Addr(), ReadTimeout: 300 * time.Millisecond, MaxRetries: -1})
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}

	p.Stall(true)
	start := time.Now()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("Ping answered while stalled")
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Fatalf("stalled Ping failed after %v, before its read timeout", time.Since(start))
	}
	p.Stall(false)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("after the stall: %v", err)
	}

	// A client with go-redis' default read timeout: a loaded machine must
	// not turn the added latency into a timeout.
	patient := redis.NewClient(&redis.Options{Addr: p.Addr()})
	p.SetLatency(100 * time.Millisecond)
	start = time.Now()
	if err := patient.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("Ping took %v with 100ms each way", d)
	}
	p.SetLatency(0)

	raw, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := raw.Read(buf); err != nil || string(buf[:n]) != "+PONG\r\n" {
		t.Fatalf("raw PING through the proxy: %q, %v", buf[:n], err)
	}
	p.CutAll()
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("read after CutAll: %v, want EOF", err)
	}
	if err := c.Ping(ctx).Err(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("first Ping after CutAll: %v", err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("a new connection after CutAll: %v", err)
	}
	_ = c.Close()
	_ = patient.Close()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, ignore)
}
