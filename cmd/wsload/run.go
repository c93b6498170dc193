package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// count is one presence figure as the nodes report it.
type count struct {
	Total int64 `json:"total"`
	Local int64 `json:"local"`
}

type presence struct {
	Instance string           `json:"instance"`
	Total    count            `json:"total"`
	Rooms    map[string]count `json:"rooms"`
}

// loader holds one run's state.
type loader struct {
	cfg    config
	http   *http.Client
	mu     sync.Mutex
	open   []*websocket.Conn
	perRm  map[string]int64 // connections of ours open now, per room
	lat    []time.Duration
	errs   map[string]int
	opened int
	last   time.Time // when the last connection opened
}

func run(ctx context.Context, cfg config) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	l := &loader{cfg: cfg, http: &http.Client{Timeout: 5 * time.Second}, perRm: map[string]int64{}, errs: map[string]int{}}
	rooms := make([]string, min(cfg.rooms, cfg.conns))
	for i := range rooms {
		rooms[i] = cfg.room(i)
	}
	base, err := l.presence(ctx, cfg.nodes[0], rooms)
	if err != nil {
		return nil, fmt.Errorf("reading presence before the run: %w", err)
	}

	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < cfg.conns; i++ {
		due := start.Add(time.Duration(float64(i) / cfg.rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l.connect(ctx, i)
		}(i)
	}
	wg.Wait()

	rep := l.report(l.last.Sub(start))
	want := expected(base, l.snapshot(), rooms)
	rep.Open = want
	rep.OpenCheck = l.check(ctx, rooms, want)
	l.closeAll()
	rep.ClosedCheck = l.check(ctx, rooms, expected(base, map[string]int64{}, rooms))
	rep.Elapsed = time.Since(start).Seconds()
	return rep, nil
}

// connect opens connection i and keeps it (hold 0) or closes it after hold.
func (l *loader) connect(ctx context.Context, i int) {
	node := l.cfg.nodes[i%len(l.cfg.nodes)]
	room := l.cfg.room(i)
	u := *node
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[node.Scheme]
	u.Path = node.Path + "/ws/" + url.PathEscape(room)
	q := url.Values{"user": {"load-" + strconv.Itoa(i)}}
	if l.cfg.tenant != "" {
		q.Set("tenant", l.cfg.tenant)
	}
	u.RawQuery = q.Encode()

	t0 := time.Now()
	c, resp, err := websocket.Dial(ctx, u.String(), nil)
	d := time.Since(t0)
	if err != nil {
		kind := "dial"
		if resp != nil {
			kind = "http " + strconv.Itoa(resp.StatusCode)
		}
		l.mu.Lock()
		l.errs[kind]++
		l.mu.Unlock()
		return
	}
	go discard(c) // answer pings and close frames; nodes may send messages
	l.mu.Lock()
	l.lat = append(l.lat, d)
	l.opened++
	l.last = time.Now()
	if l.cfg.hold == 0 {
		l.open = append(l.open, c)
		l.perRm[room]++
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	select {
	case <-time.After(l.cfg.hold):
	case <-ctx.Done():
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
}

// discard reads and drops c's messages until c closes. (CloseRead would
// close the connection at the first data message, and a chat node sends
// some.)
func discard(c *websocket.Conn) {
	for {
		if _, _, err := c.Read(context.Background()); err != nil {
			return
		}
	}
}

func (l *loader) snapshot() map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]int64, len(l.perRm))
	for k, v := range l.perRm {
		m[k] = v
	}
	return m
}

func (l *loader) closeAll() {
	l.mu.Lock()
	open := l.open
	l.open, l.perRm = nil, map[string]int64{}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close(websocket.StatusNormalClosure, "")
		}()
	}
	wg.Wait()
}

// expected is the presence every node should report: what was there before
// plus what we hold open now.
func expected(base *presence, ours map[string]int64, rooms []string) map[string]int64 {
	want := map[string]int64{"": base.Total.Total}
	for _, r := range rooms {
		want[r] = base.Rooms[r].Total + ours[r]
		want[""] += ours[r]
	}
	return want
}

// check polls every node until it reports want (the key "" is the global
// total) or settle passes, and says how far off the last reports were.
func (l *loader) check(ctx context.Context, rooms []string, want map[string]int64) Check {
	deadline := time.Now().Add(l.cfg.settle)
	start := time.Now()
	for {
		var diffs []string
		for _, n := range l.cfg.nodes {
			p, err := l.presence(ctx, n, rooms)
			if err != nil {
				diffs = append(diffs, fmt.Sprintf("%s: %v", n.Host, err))
				continue
			}
			if p.Total.Total != want[""] {
				diffs = append(diffs, fmt.Sprintf("%s: total %d, want %d", n.Host, p.Total.Total, want[""]))
			}
			for _, r := range rooms {
				if got := p.Rooms[r].Total; got != want[r] {
					diffs = append(diffs, fmt.Sprintf("%s: room %s %d, want %d", n.Host, r, got, want[r]))
				}
			}
		}
		if len(diffs) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			sort.Strings(diffs)
			c := Check{OK: len(diffs) == 0, Mismatches: len(diffs), After: time.Since(start).Seconds(), Total: want[""]}
			if len(diffs) > 5 {
				diffs = diffs[:5]
			}
			c.Examples = diffs
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// presence asks node for the global total and the given rooms.
func (l *loader) presence(ctx context.Context, node *url.URL, rooms []string) (*presence, error) {
	u := *node
	u.Path = node.Path + "/api/presence"
	u.RawQuery = url.Values{"room": rooms}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := l.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("presence: %s", resp.Status)
	}
	var p presence
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return nil, err
	}
	if p.Rooms == nil {
		return nil, errors.New("presence: no rooms in the reply")
	}
	return &p, nil
}
