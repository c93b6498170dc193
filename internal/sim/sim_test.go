package sim

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// runExact runs the simulation with cfg, logs its output and report, and
// fails t unless it ran and every count was exact in time.
func runExact(t *testing.T, cfg Config) (*Report, string) {
	t.Helper()
	// A bound on the whole run, not a speed target: a tiny run takes about
	// 15 s alone, and under the parallel packages of `make test` with -race
	// starting the nodes and waiting for Redis memory to settle took 50 s
	// once, which a 60 s bound failed.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := Run(ctx, cfg, &out)
	if rep != nil {
		rep.Print(&out)
	}
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Exact || len(rep.Failures) > 0 {
		t.Fatalf("not exact: %v", rep.Failures)
	}
	return rep, out.String()
}

// TestTinyRun runs the simulation at a tiny size with a crash: 3 nodes
// (one lax), 100 rooms, 1,000 connections, one node crashed. Run fails
// unless every surviving node reads every count exact within threshold +
// heartbeat + 2 s of the crash.
func TestTinyRun(t *testing.T) {
	rep, out := runExact(t, Config{
		Nodes: 3, Rooms: 100, Conns: 1000, LaxNodes: 0.34, Crash: 1,
		Threshold: 2 * time.Second, Heartbeat: 500 * time.Millisecond,
		Rest: time.Second, ChurnRate: 200, ChurnFor: time.Second, Workers: 32,
	})
	if rep.GoneSeconds <= 0 || rep.GoneSeconds > rep.Deadline || rep.AllNodesChecked != 2 {
		t.Errorf("crash: gone after %.2fs (deadline %.1fs), %d nodes checked, want 2", rep.GoneSeconds, rep.Deadline, rep.AllNodesChecked)
	}
	if rep.OwnSeconds < rep.GoneSeconds || rep.OwnSeconds > rep.Deadline {
		t.Errorf("crash: survivors' own counts exact after %.2fs, want between %.2fs and the deadline %.1fs", rep.OwnSeconds, rep.GoneSeconds, rep.Deadline)
	}
	if rep.CrashSlices == 0 || len(rep.Crashed) != 1 {
		t.Errorf("crashed %v holding %d slices", rep.Crashed, rep.CrashSlices)
	}
	if rep.Slices < 100 || rep.MemFull <= rep.MemBase || rep.MemPerConn <= 0 || rep.HeapPerNode <= 0 || rep.GoroutinesPerNode <= 0 {
		t.Errorf("figures missing: slices %d, memory %d -> %d, %.0f B/conn, heap %.0f B/node, %.1f goroutines/node",
			rep.Slices, rep.MemBase, rep.MemFull, rep.MemPerConn, rep.HeapPerNode, rep.GoroutinesPerNode)
	}
	// Every node's pool is opened at start: each node holds at least
	// one connection to each master before the build-up.
	if rep.ClientsBase < 3*len(rep.MemMasters) || rep.ClientsFull < rep.ClientsBase {
		t.Errorf("Redis clients: %d with the nodes started, %d at full size; want at least %d, not fewer at full size", rep.ClientsBase, rep.ClientsFull, 3*len(rep.MemMasters))
	}
	want := map[string]bool{"rest": false, "churn-strict": false, "churn-lax": false, "read": false}
	for _, w := range rep.Windows {
		if _, ok := want[w.Name]; !ok {
			continue
		}
		want[w.Name] = true
		if len(w.Masters) != 3 {
			t.Errorf("window %s: %d masters, want 3", w.Name, len(w.Masters))
			continue
		}
		var cmds, cpu float64
		for _, m := range w.Masters {
			cmds += m.CmdsPerSec
			cpu += m.CPUPerSec
		}
		if cmds <= 0 || cpu <= 0 {
			t.Errorf("window %s: %.0f commands/s, %.4f CPU/s: want both > 0", w.Name, cmds, cpu)
		}
		if strings.HasPrefix(w.Name, "churn") && w.Connects == 0 {
			t.Errorf("window %s: no connects", w.Name)
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("report has no %s window", name)
		}
	}
	for _, s := range []string{"per connection", "per room", "heap in use", "goroutines", "after the crash", "RESULT: PASS"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

// TestTinyRunWithUsers is TestTinyRun with presence on: 30 users over
// 1,000 connections, so that most users have connections in several rooms
// and on several nodes. Run fails unless every node reads every room's
// distinct users exact too, a surviving node's Watch receives one leave
// (reason crashed) for each user whose last connection in a room was on
// the crashed node and none for the others, within threshold + heartbeat
// + 2 s, and the rooms' member lists match the model.
func TestTinyRunWithUsers(t *testing.T) {
	rep, out := runExact(t, Config{
		Nodes: 3, Rooms: 100, Conns: 1000, Users: 30, LaxNodes: 0.34, Crash: 1,
		Threshold: 2 * time.Second, Heartbeat: 500 * time.Millisecond,
		ChurnRate: 200, ChurnFor: time.Second, Workers: 32,
	})
	// 1,000 connections of 30 users over 100 rooms: a room's users are
	// mostly on one node each, so the crash has leaves to send in most of
	// the rooms the crashed node held.
	if rep.Leaves == 0 || rep.LeaveRooms == 0 || rep.LeavesSeconds <= 0 || rep.LeavesSeconds > rep.Deadline {
		t.Errorf("crash: %d leaves in %d rooms, the last after %.2fs (deadline %.1fs)", rep.Leaves, rep.LeaveRooms, rep.LeavesSeconds, rep.Deadline)
	}
	for _, s := range []string{"presence on: 30 users", "leaves (reason crashed)", "member lists of the", "RESULT: PASS"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}
