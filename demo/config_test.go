package main

import (
	"errors"
	"flag"
	"io"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		addr:      ":8080",
		threshold: 30 * time.Second,
		flush:     20 * time.Millisecond,
		nodes:     1,
		namespace: defaultNamespace,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults = %+v\nwant %+v", c, want)
	}
	if hb := c.heartbeatEvery(); hb != 10*time.Second {
		t.Errorf("heartbeat = %v, want threshold/3", hb)
	}
	o := c.trackerOptions()
	if o.InstanceID != "" || o.LaxRooms != nil || o.Limits.PerTenant != 0 {
		t.Errorf("tracker options %+v: want a random ID, no lax rooms, no cap", o)
	}
}

func TestParseConfigFlags(t *testing.T) {
	c, err := parseConfig([]string{
		"-addr", "127.0.0.1:9000", "-redis", "redis://:pw@10.0.0.1:6380/2",
		"-threshold", "6s", "-heartbeat", "3s", "-instance", "web-",
		"-lax", " big-*, lobby ,,", "-flush", "50ms", "-tenant-cap", "3",
		"-nodes", "3", "-namespace", "ns_1",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		addr: "127.0.0.1:9000", redis: "redis://:pw@10.0.0.1:6380/2",
		threshold: 6 * time.Second, heartbeat: 3 * time.Second, instance: "web-",
		lax: []string{"big-*", "lobby"}, flush: 50 * time.Millisecond, tenantCap: 3,
		nodes: 3, namespace: "ns_1",
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("config = %+v\nwant %+v", c, want)
	}
	for room, lax := range map[string]bool{"lobby": true, "big-1": true, "big-": true, "lobby2": false, "big/1": false, "small": false} {
		if got := c.isLax(room); got != lax {
			t.Errorf("isLax(%q) = %v, want %v", room, got, lax)
		}
	}
	if id := c.instanceID(2); id != "web-2" {
		t.Errorf("instanceID(2) = %q", id)
	}
	if host, port, err := c.nodeAddr(3); host != "127.0.0.1" || port != 9003 || err != nil {
		t.Errorf("nodeAddr(3) = %q, %d, %v", host, port, err)
	}

	o := c.trackerOptions()
	if o.Namespace != "ns_1" || o.InstanceID != "web-" || o.DeadInstanceThreshold != 6*time.Second ||
		o.HeartbeatInterval != 3*time.Second || o.FlushInterval != 50*time.Millisecond ||
		o.Limits.PerTenant != 3 || o.LaxRooms == nil || !o.LaxRooms("big-x") || o.LaxRooms("x") {
		t.Errorf("tracker options %+v", o)
	}
	r := httptest.NewRequest("GET", "/ws/lobby?user=ann&tenant=acme", nil)
	if u, tn := o.User(r), o.Tenant(r); u != "ann" || tn != "acme" {
		t.Errorf("user, tenant = %q, %q", u, tn)
	}

	// A node started by the supervisor gets the same settings back.
	args := c.nodeArgs(2, "127.0.0.1:9002", "127.0.0.1:6379")
	n, err := parseConfig(args, io.Discard)
	if err != nil {
		t.Fatalf("node args %q: %v", args, err)
	}
	want.addr, want.redis, want.instance, want.nodes = "127.0.0.1:9002", "127.0.0.1:6379", "web-2", 1
	if !reflect.DeepEqual(n, want) {
		t.Fatalf("node config = %+v\nwant %+v", n, want)
	}
}

func TestParseConfigNodeDefaults(t *testing.T) {
	c, err := parseConfig([]string{"-nodes", "2", "-addr", ":0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if id := c.instanceID(1); id != "node1" {
		t.Errorf("instanceID(1) = %q, want node1", id)
	}
	if _, port, err := c.nodeAddr(2); port != 0 || err != nil {
		t.Errorf("nodeAddr(2) with port 0 = %d, %v; want any free port", port, err)
	}
	n, err := parseConfig(c.nodeArgs(1, "[::]:41000", "127.0.0.1:1"), io.Discard)
	if err != nil || n.heartbeat != 0 || n.lax != nil {
		t.Errorf("node config %+v, %v: want the default heartbeat and no lax rooms", n, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-threshold", "0s"}, "-threshold 0s: must be positive"},
		{[]string{"-threshold", "-1s"}, "-threshold -1s: must be positive"},
		{[]string{"-heartbeat", "-1s"}, "-heartbeat -1s: negative"},
		{[]string{"-threshold", "10s", "-heartbeat", "6s"}, "at most half of -threshold"},
		{[]string{"-flush", "0s"}, "-flush 0s: must be positive"},
		{[]string{"-threshold", "9ms"}, "-threshold 9ms: at least 10ms"},
		{[]string{"-heartbeat", "1ns"}, "-heartbeat 1ns: at least 1ms"},
		{[]string{"-flush", "999us"}, "-flush 999µs: at least 1ms"},
		{[]string{"-tenant-cap", "-1"}, "-tenant-cap -1: negative"},
		{[]string{"-nodes", "0"}, "-nodes 0: must be 1 to 16"},
		{[]string{"-nodes", "17"}, "-nodes 17: must be 1 to 16"},
		{[]string{"-lax", "a,[b"}, `-lax "[b"`},
		{[]string{"-addr", "8080"}, `-addr "8080"`},
		{[]string{"-addr", ":http"}, "bad port"},
		{[]string{"-addr", ":65535", "-nodes", "2"}, "ports past 65535"},
		{[]string{"-redis", "localhost"}, "not host:port nor a redis:// URL"},
		{[]string{"-redis", "a:1,"}, "empty address"},
		{[]string{"-redis", "http://a:1"}, "-redis"},
		{[]string{"-redis", "a:1,redis://b:2/3"}, "only database 0"},
		{[]string{"-namespace", "a:b"}, "only letters, digits"},
		{[]string{"-namespace", ""}, "must be 1 to 64 bytes"},
		{[]string{"-nodes", "x"}, "invalid value"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		var out strings.Builder
		_, err := parseConfig(tc.args, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
		if !strings.Contains(out.String(), "-h") && !strings.Contains(out.String(), "Usage") && !strings.Contains(out.String(), "usage") {
			t.Errorf("%q: printed %q: want the error and where to find help", tc.args, out.String())
		}
	}
	var out strings.Builder
	if _, err := parseConfig([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	for _, name := range []string{"-addr", "-redis", "-threshold", "-heartbeat", "-instance", "-lax", "-flush", "-tenant-cap", "-nodes", "-namespace"} {
		if !strings.Contains(out.String(), name+" ") {
			t.Errorf("usage does not mention %s:\n%s", name, out.String())
		}
	}
}

func TestRedisOptions(t *testing.T) {
	for _, tc := range []struct {
		spec           string
		addrs          []string
		db             int
		user, password string
		tls            bool
	}{
		{spec: "localhost:6379", addrs: []string{"localhost:6379"}},
		{spec: "redis://u:p@h:7000/4", addrs: []string{"h:7000"}, db: 4, user: "u", password: "p"},
		{spec: "rediss://h:7000", addrs: []string{"h:7000"}, tls: true},
		{spec: "a:1, b:2 ,c:3", addrs: []string{"a:1", "b:2", "c:3"}},
		{spec: "redis://:pw@a:1,b:2", addrs: []string{"a:1", "b:2"}, password: "pw"},
	} {
		o, err := redisOptions(tc.spec)
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if !reflect.DeepEqual(o.Addrs, tc.addrs) || o.DB != tc.db || o.Username != tc.user ||
			o.Password != tc.password || (o.TLSConfig != nil) != tc.tls {
			t.Errorf("%q: %+v", tc.spec, o)
		}
	}
	if o, err := redisOptions(" "); o != nil || err != nil {
		t.Errorf("empty: %v, %v; want nil for the embedded Redis", o, err)
	}
}

func TestPageURL(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:8080":   "http://localhost:8080/",
		"[::]:8080":      "http://localhost:8080/",
		"127.0.0.1:8080": "http://127.0.0.1:8080/",
		"[::1]:8080":     "http://[::1]:8080/",
	} {
		if got := pageURL(fakeAddr(addr)); got != want {
			t.Errorf("pageURL(%s) = %s, want %s", addr, got, want)
		}
	}
	if got := dialAddr("[::]:8081"); got != "127.0.0.1:8081" {
		t.Errorf("dialAddr = %s", got)
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// -h lists what a node and the supervisor serve, then the flags.
func TestUsageListsEndpoints(t *testing.T) {
	var out strings.Builder
	if _, err := parseConfig([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	usage := out.String()
	node, sup, flags := strings.Index(usage, "A node serves:"), strings.Index(usage, "a supervisor serves"), strings.Index(usage, "Flags:")
	if node < 0 || sup < node || flags < sup {
		t.Fatalf("usage: want the node's endpoints, the supervisor's, then the flags:\n%s", usage)
	}
	for _, part := range []struct {
		text string
		es   []endpoint
	}{{usage[node:sup], nodeEndpoints}, {usage[sup:flags], supervisorEndpoints}} {
		for _, e := range part.es {
			if !strings.Contains(part.text, e.Method+" ") || !strings.Contains(part.text, " "+e.Path+" ") || !strings.Contains(part.text, e.What) {
				t.Errorf("usage does not list %s %s (%s) in:\n%s", e.Method, e.Path, e.What, part.text)
			}
		}
	}
	for _, path := range []string{"/metrics", "/api/presence", "/ws/{room}", "/node/{i}/crash"} {
		if !strings.Contains(usage, path) {
			t.Errorf("usage does not mention %s", path)
		}
	}
}
