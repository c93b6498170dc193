package main

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

type config struct {
	nodes      []*url.URL
	conns      int
	rate       float64
	rooms      int
	hold       time.Duration
	duration   time.Duration
	settle     time.Duration
	tenant     string
	roomPrefix string
	jsonOut    bool
}

func (c config) room(i int) string { return fmt.Sprintf("%s%d", c.roomPrefix, i%c.rooms) }

// parseNodes reads comma-separated http(s) base URLs and refuses any whose
// host is not a loopback address.
func parseNodes(s string) ([]*url.URL, error) {
	var out []*url.URL
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, fmt.Errorf("-nodes: %w", err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("-nodes: %q: want an http:// or https:// base URL", part)
		}
		if err := checkLoopback(u.Hostname()); err != nil {
			return nil, fmt.Errorf("-nodes: %q: %w", part, err)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-nodes: no node given")
	}
	return out, nil
}

func checkLoopback(host string) error {
	if host == "" {
		return fmt.Errorf("no host")
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		addrs, err := net.LookupIP(host)
		if err != nil {
			return err
		}
		ips = addrs
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address; wsload only loads this machine", ip)
		}
	}
	return nil
}
