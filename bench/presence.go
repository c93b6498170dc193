package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/centrifugal/centrifuge"

	"github.com/headcount-go/headcount/wsconn"
)

// The presence scenarios: headcount with Options.Presence (a user per
// connection, with metadata, in a room) beside Centrifuge's Redis presence
// with user mapping, and, where said, the join and leave messages its
// broker publishes.

// presenceScenarios are the scenarios -only presence selects.
var presenceScenarios = []string{"presence-connect-50", "presence-members-1000", "presence-members-1000-changing", "presence-churn"}

// The headers the presence Trackers of the bench read a connection's user
// and metadata from.
const (
	userHeader = "X-Bench-User"
	metaHeader = "X-Bench-Meta"
)

// presenceOptions is a Tracker with presence on: strict, as the connect
// scenarios, the user and metadata taken from the request, the rest at
// its defaults (no grace: every leave is announced at once).
func presenceOptions(ns string) wsconn.Options {
	return wsconn.Options{
		Namespace: ns,
		User:      func(r *http.Request) string { return r.Header.Get(userHeader) },
		Presence: &wsconn.PresenceOptions{
			Metadata: func(r *http.Request) string { return r.Header.Get(metaHeader) },
		},
	}
}

// userRequest is a handshake request of user's connection in room.
func userRequest(room, user, meta string) *http.Request {
	r := roomRequest(room)
	r.Header.Set(userHeader, user)
	r.Header.Set(metaHeader, meta)
	return r
}

// metadata is what every user of the scenarios shows: headcount's
// presence metadata, Centrifuge's ConnInfo. 20-odd bytes.
func metadata(user string) string { return `{"name":"` + user + `"}` }

func cfInfo(client, user string) *centrifuge.ClientInfo {
	return &centrifuge.ClientInfo{ClientID: client, UserID: user, ConnInfo: []byte(metadata(user))}
}

// presenceConnectScenario: strict connect+disconnect from 50 clients on
// one node with presence on, each client a user of its own, over 100
// rooms. headcount counts the connection (globally and in its room) and
// its user (online, and a member of the room, with its metadata), and
// announces the user's join and leave (kept in the room's event history
// and published): Admit, then Release. Centrifuge adds and removes the
// presence with user mapping on (its per-user counts), and, on a third
// side, also publishes the join and leave through its Redis broker, as a
// node does on subscribe and unsubscribe with join/leave on.
func presenceConnectScenario() scenario {
	const clients = 50
	return scenario{
		name:    "presence-connect-50",
		about:   "connect+disconnect with presence (members, metadata, events), 50 clients (a user each), 1 node, 100 rooms",
		metrics: []string{"ops/s"},
		ratios:  []ratio{{0, 1}, {0, 2}},
		warmup:  true,
		setup: func(ctx context.Context, e *env) ([]side, func(context.Context) error, error) {
			hc, err := startHCNodes(e, 1, presenceOptions(e.ns("hc")))
			if err != nil {
				return nil, nil, err
			}
			var cf cfNodes
			teardown := func(ctx context.Context) error {
				cf.close()
				return hc.close(ctx)
			}
			for _, events := range []bool{false, true} {
				n, err := newCFNode(e.cfg.addr, e.ns("cf"), true)
				if err != nil {
					return nil, nil, errors.Join(err, teardown(ctx))
				}
				cf = append(cf, n)
				if events {
					if err := n.withEvents(e.ns("cfb")); err != nil {
						return nil, nil, errors.Join(err, teardown(ctx))
					}
				}
			}
			names := roomNames()
			// A request per client and room, reused: Admit only reads it.
			reqs := make([][]*http.Request, clients)
			for w := range reqs {
				user := "u" + strconv.Itoa(w)
				reqs[w] = make([]*http.Request, rooms)
				for i, room := range names {
					reqs[w][i] = userRequest(room, user, metadata(user))
				}
			}
			headcount := func(ctx context.Context, d time.Duration) ([]float64, error) {
				return hc.checked(func() ([]float64, error) {
					rate, err := spin(ctx, clients, d, func(ctx context.Context, w int, i int64) error {
						return hc[0].connectDisconnect(ctx, reqs[w][i%rooms])
					})
					return []float64{rate}, err
				})
			}
			centrifuge := func(n *cfNode) func(context.Context, time.Duration) ([]float64, error) {
				return func(ctx context.Context, d time.Duration) ([]float64, error) {
					rate, err := spin(ctx, clients, d, func(ctx context.Context, w int, i int64) error {
						info := cfInfo("c"+strconv.FormatInt(i, 10), "u"+strconv.Itoa(w))
						ch := names[i%rooms]
						if err := n.joinInfo(ch, info); err != nil {
							return err
						}
						return n.leaveInfo(ch, info)
					})
					return []float64{rate}, err
				}
			}
			return []side{
				{"headcount", headcount},
				{"centrifuge-usermap", centrifuge(cf[0])},
				{"centrifuge-usermap+events", centrifuge(cf[1])},
			}, teardown, nil
		},
	}
}

// presenceMembersScenario: 50 concurrent readers of one room's member list
// while the room holds 1,000 users (a connection each, with metadata):
// headcount's Members (one page of 1,000: every user, its connections and
// metadata) against Centrifuge's Presence (every client's info). Every
// read is checked to list them all. An unchanged list costs headcount a
// reply of its header only (the reader keeps the last whole list and its
// version); with changing, the room has 999 users and a 1,000th comes and
// goes every millisecond during the reads, on both systems, so that most
// of headcount's reads find a changed list (headcount's reader then
// catches up through the joins and leaves since its last read).
func presenceMembersScenario(changing bool) scenario {
	const readers, room = 50, "lobby"
	users := 1000
	name, about := "presence-members-1000", "member list read, 50 readers, a room of 1,000 users (a connection each, with metadata)"
	if changing {
		users = 999
		name, about = name+"-changing", "member list read, 50 readers, a room of 999 users and a 1,000th coming and going every ms (a connection each, with metadata)"
	}
	return scenario{
		name:    name,
		about:   about,
		metrics: []string{"reads/s"},
		ratios:  []ratio{{0, 1}},
		warmup:  true,
		setup: func(ctx context.Context, e *env) ([]side, func(context.Context) error, error) {
			hc, err := startHCNodes(e, 1, presenceOptions(e.ns("hc")))
			if err != nil {
				return nil, nil, err
			}
			cf, err := startCFNodes(e, 1, e.ns("cf"), true)
			if err != nil {
				return nil, nil, errors.Join(err, hc.close(ctx))
			}
			teardown := func(ctx context.Context) error {
				cf.close()
				return hc.close(ctx)
			}
			// The leases stay counted until the Tracker closes.
			for i := range users {
				user := "u" + strconv.Itoa(i)
				if _, err := hc[0].tr.Admit(ctx, userRequest(room, user, metadata(user))); err != nil {
					return nil, nil, errors.Join(fmt.Errorf("headcount Admit: %w", err), teardown(ctx))
				}
				if err := cf[0].joinInfo(room, cfInfo("c"+strconv.Itoa(i), user)); err != nil {
					return nil, nil, errors.Join(err, teardown(ctx))
				}
			}
			// flicker has the 1,001st user come and go every millisecond
			// until ctx ends (changing only).
			flicker := func(ctx context.Context, in, out func() error) func() error {
				if !changing {
					return func() error { return nil }
				}
				done := make(chan error, 1)
				go func() {
					tick := time.NewTicker(time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-ctx.Done():
							done <- nil
							return
						case <-tick.C:
						}
						if err := in(); err != nil {
							done <- err
							return
						}
						if err := out(); err != nil {
							done <- err
							return
						}
					}
				}()
				return func() error { return <-done }
			}
			listed := func(n int) bool { return n == users || changing && n == users+1 }
			headcount := func(ctx context.Context, d time.Duration) ([]float64, error) {
				return hc.checked(func() ([]float64, error) {
					fctx, stop := context.WithCancel(ctx)
					var l *wsconn.Lease
					wait := flicker(fctx, func() (err error) {
						l, err = hc[0].tr.Admit(fctx, userRequest(room, "flicker", metadata("flicker")))
						return err
					}, func() error { l.Release(); return nil })
					rate, err := spin(ctx, readers, d, func(ctx context.Context, _ int, _ int64) error {
						m, err := hc[0].tr.Members(ctx, room, "", wsconn.MaxMembersPage)
						switch {
						case err != nil:
							return fmt.Errorf("headcount Members: %w", err)
						case !listed(int(m.Users)) || len(m.Members) != min(int(m.Users), wsconn.MaxMembersPage):
							return fmt.Errorf("headcount Members: %d users, %d listed, want %d", m.Users, len(m.Members), users)
						}
						return nil
					})
					stop()
					if ferr := wait(); ferr != nil && fctx.Err() == nil {
						err = errors.Join(err, ferr)
					}
					return []float64{rate}, err
				})
			}
			centrifuge := func(ctx context.Context, d time.Duration) ([]float64, error) {
				fctx, stop := context.WithCancel(ctx)
				wait := flicker(fctx, func() error {
					return cf[0].joinInfo(room, cfInfo("flicker", "flicker"))
				}, func() error { return cf[0].pm.RemovePresence(room, "flicker", "flicker") })
				rate, err := spin(ctx, readers, d, func(context.Context, int, int64) error {
					p, err := cf[0].pm.Presence(room)
					switch {
					case err != nil:
						return fmt.Errorf("centrifuge Presence: %w", err)
					case !listed(len(p)):
						return fmt.Errorf("centrifuge Presence: %d clients, want %d", len(p), users)
					}
					return nil
				})
				stop()
				if ferr := wait(); ferr != nil && fctx.Err() == nil {
					err = errors.Join(err, ferr)
				}
				return []float64{rate}, err
			}
			return []side{{"headcount", headcount}, {"centrifuge", centrifuge}}, teardown, nil
		},
	}
}

// churnHold is how long each connection of the churn scenario stays, as
// in wsconn's BenchmarkChurnTraffic: at 5,000 connects/s, about 500 open
// at a time, 5 a room.
const churnHold = 100 * time.Millisecond

// churnSettle is how long a churn round waits, once its last connection
// has gone, before it reads the server's stats: headcount's Release
// returns before Redis has it.
const churnSettle = 200 * time.Millisecond

// presenceChurnScenario: what Redis spends on each connect+disconnect at a
// paced rate (-churn-rate, 5,000 connects/s by default), each connection
// a user of its own in one of 100 rooms, held 100ms: Redis CPU (INFO cpu)
// and commands (INFO commandstats, an EVALSHA and each command its script
// runs) per connection, with presence off and on, for headcount (counting
// only; Options.Presence with metadata) and Centrifuge (presence without
// user mapping, as connect-50; with user mapping and join/leave
// messages). cycles/s is the rate Redis kept up with: the connections over
// the round's time, their hold taken off; below -churn-rate, the machine
// did not sustain it. The CPU includes Redis's own idle work (serverCron,
// about 2ms a second here) and the other sides' idle nodes' heartbeats.
func presenceChurnScenario(rate float64) scenario {
	return scenario{
		name:    "presence-churn",
		about:   fmt.Sprintf("Redis cost per connect+disconnect at %s connects/s over 100 rooms, a user each, presence off vs on", count(int(rate))),
		metrics: []string{"redis-cpu-us/cycle", "commands/cycle", "cycles/s"},
		ratios:  []ratio{{1, 0}, {3, 2}, {1, 3}},
		warmup:  true,
		setup: func(ctx context.Context, e *env) ([]side, func(context.Context) error, error) {
			var hc hcNodes
			var cf cfNodes
			teardown := func(ctx context.Context) error {
				cf.close()
				return hc.close(ctx)
			}
			for _, o := range []wsconn.Options{{Namespace: e.ns("hc")}, presenceOptions(e.ns("hcp"))} {
				n, err := newHCNode(e.cfg.addr, o)
				if err != nil {
					return nil, nil, errors.Join(err, teardown(ctx))
				}
				hc = append(hc, n)
			}
			for _, on := range []bool{false, true} {
				n, err := newCFNode(e.cfg.addr, e.ns("cf"), on)
				if err != nil {
					return nil, nil, errors.Join(err, teardown(ctx))
				}
				cf = append(cf, n)
				if on {
					if err := n.withEvents(e.ns("cfb")); err != nil {
						return nil, nil, errors.Join(err, teardown(ctx))
					}
				}
			}
			names := roomNames()
			measure := func(ctx context.Context, d time.Duration, op func(ctx context.Context, i int64) (func() error, error)) ([]float64, error) {
				s0, err := readServerStats(ctx, e.admin)
				if err != nil {
					return nil, err
				}
				n, cycles, err := pace(ctx, rate, churnHold, d, op)
				if err != nil {
					return nil, err
				}
				if err := sleep(ctx, churnSettle); err != nil {
					return nil, err
				}
				s1, err := readServerStats(ctx, e.admin)
				if err != nil {
					return nil, err
				}
				return []float64{(s1.cpu - s0.cpu) * 1e6 / float64(n), float64(s1.commands-s0.commands) / float64(n), cycles}, nil
			}
			headcount := func(node *hcNode, presence bool) func(context.Context, time.Duration) ([]float64, error) {
				return func(ctx context.Context, d time.Duration) ([]float64, error) {
					return hcNodes{node}.checked(func() ([]float64, error) {
						v, err := measure(ctx, d, func(ctx context.Context, i int64) (func() error, error) {
							user := "u" + strconv.FormatInt(i, 10)
							l, err := node.admit(ctx, userRequest(names[i%rooms], user, metadata(user)))
							if err != nil {
								return nil, err
							}
							return func() error { return release(l) }, nil
						})
						if err != nil || !presence {
							return v, err
						}
						// Every user came and went: none is left online.
						if n, err := node.tr.OnlineUsers(ctx); err != nil || n != 0 {
							return nil, fmt.Errorf("headcount OnlineUsers after the round = %d, %v; want 0", n, err)
						}
						return v, nil
					})
				}
			}
			centrifuge := func(node *cfNode) func(context.Context, time.Duration) ([]float64, error) {
				return func(ctx context.Context, d time.Duration) ([]float64, error) {
					return measure(ctx, d, func(ctx context.Context, i int64) (func() error, error) {
						s := strconv.FormatInt(i, 10)
						info, ch := cfInfo("c"+s, "u"+s), names[i%rooms]
						if err := node.joinInfo(ch, info); err != nil {
							return nil, err
						}
						return func() error { return node.leaveInfo(ch, info) }, nil
					})
				}
			}
			return []side{
				{"headcount", headcount(hc[0], false)},
				{"headcount-presence", headcount(hc[1], true)},
				{"centrifuge", centrifuge(cf[0])},
				{"centrifuge-usermap+events", centrifuge(cf[1])},
			}, teardown, nil
		},
	}
}

// pace starts a connection every 1/rate seconds for d, each on a goroutine
// of its own: op connects it and returns its disconnect, run after hold.
// It returns how many it started, and the rate at which they went: that
// number over the time until the last had gone, hold taken off (the rate
// Redis kept up with; the issuing itself never runs ahead of rate). The
// first error stops it and is returned.
func pace(ctx context.Context, rate float64, hold, d time.Duration, op func(ctx context.Context, i int64) (func() error, error)) (n int64, cycles float64, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	start := time.Now()
	for ; ctx.Err() == nil && time.Since(start) < d; n++ {
		if wait := time.Until(start.Add(time.Duration(float64(n) * float64(time.Second) / rate))); wait > 0 {
			time.Sleep(wait)
		}
		i := n
		wg.Go(func() {
			disconnect, err := op(ctx, i)
			if err != nil {
				cancel(err)
				return
			}
			// Held even when another connection failed: every connection
			// disconnects, so that none is left counted.
			time.Sleep(hold)
			if err := disconnect(); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return 0, 0, err
	}
	if n == 0 {
		return 0, 0, errors.New("no connection in the round")
	}
	return n, float64(n) / (time.Since(start) - hold).Seconds(), nil
}

// roomNames are the names of the connect scenarios' rooms.
func roomNames() []string {
	names := make([]string, rooms)
	for i := range names {
		names[i] = "room-" + strconv.Itoa(i)
	}
	return names
}
