package main

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// Report is what one run measured.
type Report struct {
	Attempted   int            `json:"attempted"`
	Opened      int            `json:"opened"`
	Errors      map[string]int `json:"errors"`
	ConnectRate float64        `json:"connect_rate"` // opened per second during the connect phase
	P50ms       float64        `json:"handshake_p50_ms"`
	P99ms       float64        `json:"handshake_p99_ms"`
	Elapsed     float64        `json:"elapsed_s"`
	// Open is the presence expected while our connections were open (the
	// key "" is the global total); OpenCheck how the nodes matched it, and
	// ClosedCheck how they matched the presence before the run once all of
	// ours were closed again.
	Open        map[string]int64 `json:"-"`
	OpenCheck   Check            `json:"open_check"`
	ClosedCheck Check            `json:"closed_check"`
}

// Check compares the nodes' presence with what wsload expects.
type Check struct {
	OK         bool     `json:"ok"`
	Total      int64    `json:"expected_total"`
	Mismatches int      `json:"mismatches"`
	After      float64  `json:"after_s"` // how long it took to match, or to give up
	Examples   []string `json:"examples,omitempty"`
}

// OK reports whether every connection opened and the nodes' presence matched.
func (r *Report) OK() bool {
	return r.Opened == r.Attempted && r.OpenCheck.OK && r.ClosedCheck.OK
}

func (l *loader) report(connectPhase time.Duration) *Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &Report{Attempted: l.cfg.conns, Opened: l.opened, Errors: l.errs}
	if s := connectPhase.Seconds(); s > 0 {
		r.ConnectRate = float64(l.opened) / s
	}
	lat := append([]time.Duration(nil), l.lat...)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.P50ms, r.P99ms = ms(percentile(lat, 0.50)), ms(percentile(lat, 0.99))
	return r
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r *Report) print(w io.Writer) {
	fmt.Fprintf(w, "connections  %d of %d opened, %.0f/s, handshake p50 %.2f ms, p99 %.2f ms\n",
		r.Opened, r.Attempted, r.ConnectRate, r.P50ms, r.P99ms)
	for kind, n := range r.Errors {
		fmt.Fprintf(w, "errors       %s: %d\n", kind, n)
	}
	for _, c := range []struct {
		name string
		Check
	}{{"while open", r.OpenCheck}, {"after close", r.ClosedCheck}} {
		verdict := "exact"
		if !c.OK {
			verdict = fmt.Sprintf("%d mismatches", c.Mismatches)
		}
		fmt.Fprintf(w, "presence     %s: expected total %d, nodes %s after %.2fs\n", c.name, c.Total, verdict, c.After)
		for _, e := range c.Examples {
			fmt.Fprintf(w, "             %s\n", e)
		}
	}
	fmt.Fprintf(w, "elapsed      %.2fs\n", r.Elapsed)
}
