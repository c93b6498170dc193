package wsconn

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/internal/redistest"
)

// The handshake benchmarks dial the same coder/websocket handler untracked,
// through a lax Tracker and through a strict one (each connection counted
// globally, in its tenant and in a room), with a few concurrent clients, as
// a server sees them. The client closes at once; the server reads until
// the connection ends.

const benchClients = 8

func benchHandler(tr *Tracker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ws *websocket.Conn
		if tr == nil {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			ws = c
		} else {
			c, err := tr.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			ws = c.WS()
		}
		defer ws.CloseNow()
		for {
			if _, _, err := ws.Read(r.Context()); err != nil {
				return
			}
		}
	})
}

// benchServers starts the untracked, lax and strict servers.
func benchServers(b *testing.B) (names []string, urls []string) {
	c := redistest.Standalone(b)
	ns := redistest.Prefix(b)
	opts := func(id string, lax bool) Options {
		o := Options{
			Namespace:  ns,
			InstanceID: id,
			Lax:        lax,
			Rooms:      func(*http.Request) []string { return []string{"bench"} },
			Tenant:     func(*http.Request) string { return "acme" },
		}
		if lax {
			o.LaxRooms = func(string) bool { return true }
		}
		return o
	}
	// mixed: strict global and tenant counters, lax rooms.
	mixed := opts("mixed", false)
	mixed.LaxRooms = func(string) bool { return true }
	for _, v := range []struct {
		name string
		tr   *Tracker
	}{
		{"untracked", nil},
		{"lax", newTracker(b, c, opts("lax", true))},
		{"strict", newTracker(b, c, opts("strict", false))},
		{"mixed", newTracker(b, c, mixed)},
	} {
		_, url := serve(b, benchHandler(v.tr))
		names, urls = append(names, v.name), append(urls, url)
	}
	return names, urls
}

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchClients}}

func handshake(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: benchClient})
	if err != nil {
		return err
	}
	return ws.CloseNow()
}

// handshakes runs n handshakes to url from benchClients goroutines.
func handshakes(b *testing.B, url string, n int) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range benchClients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := handshake(url); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkHandshake measures each variant on its own.
func BenchmarkHandshake(b *testing.B) {
	names, urls := benchServers(b)
	for i, name := range names {
		b.Run(name, func(b *testing.B) {
			d := handshakes(b, urls[i], b.N)
			b.ReportMetric(float64(b.N)/d.Seconds(), "handshakes/s")
		})
	}
}

// BenchmarkHandshakeRatio measures the three variants in one run,
// interleaved in small batches so that drift in the machine's load hits
// them alike, and reports the handshake rates and the tracked/untracked
// ratios (targets: lax >= 0.95, strict >= 0.7; mixed is strict counters
// with lax rooms). One op is one handshake of each variant.
func BenchmarkHandshakeRatio(b *testing.B) {
	names, urls := benchServers(b)
	for _, u := range urls { // warm up: scripts loaded, connections pooled
		handshakes(b, u, 50)
	}
	const batch = 64
	took := make([]time.Duration, len(urls))
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		k := min(batch, b.N-done)
		for i := range urls {
			j := (i + done/batch) % len(urls) // rotate who goes first
			took[j] += handshakes(b, urls[j], k)
		}
	}
	b.StopTimer()
	rate := make([]float64, len(urls))
	for i := range urls {
		rate[i] = float64(b.N) / took[i].Seconds()
		b.ReportMetric(rate[i], names[i]+"-hs/s")
	}
	b.ReportMetric(rate[1]/rate[0], "lax/untracked")
	b.ReportMetric(rate[2]/rate[0], "strict/untracked")
	b.ReportMetric(rate[3]/rate[0], "mixed/untracked")
	b.ReportMetric(0, "ns/op")
	if testing.Verbose() {
		fmt.Printf("handshakes/s: untracked %.0f, lax %.0f (%.2f), strict %.0f (%.2f), mixed %.0f (%.2f)\n",
			rate[0], rate[1], rate[1]/rate[0], rate[2], rate[2]/rate[0], rate[3], rate[3]/rate[0])
	}
}
