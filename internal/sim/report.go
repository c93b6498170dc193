package sim

import (
	"fmt"
	"io"
	"strings"
)

// Print writes the report as text.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	flush := "20ms (default)"
	if c.Flush > 0 {
		flush = c.Flush.String()
	}
	fmt.Fprintf(w, "== hcsim: %d nodes, %d rooms, %d connections, %d masters; threshold %v, heartbeat %v, flush %s; %.0f%% of nodes lax\n",
		c.Nodes, c.Rooms, c.Conns, len(r.MemMasters), c.Threshold, c.Heartbeat, flush, 100*c.LaxNodes)
	if c.Users > 0 {
		fmt.Fprintf(w, "presence on: %d users, each connection one of them at random\n", c.Users)
	}
	fmt.Fprintf(w, "build-up: %.1fs of Admit calls; slices (room x node pairs): %d\n", r.BuildSeconds, r.Slices)
	fmt.Fprintf(w, "Redis memory (INFO memory: used_memory less mem_clients_normal, deltas, all masters): %s per connection, %s per room (with one slice), %s per further slice, %s per node (registry, canaries)\n",
		bytesH(r.MemPerConn), bytesH(r.MemPerRoom), bytesH(r.MemPerSlice), bytesH(r.MemPerNode))
	var ms []string
	for i, m := range r.MemMasters {
		ms = append(ms, fmt.Sprintf("master %d %s", i+1, bytesH(float64(m))))
	}
	fmt.Fprintf(w, "  used_memory (dataset and overhead) at full size: %s; Redis clients (connected_clients, all masters): %d with the nodes started, %d at full size\n",
		strings.Join(ms, ", "), r.ClientsBase, r.ClientsFull)
	fmt.Fprintf(w, "Go, per node (process-wide / nodes, model included): heap in use %s, %.1f goroutines\n", bytesH(r.HeapPerNode), r.GoroutinesPerNode)
	fmt.Fprintf(w, "per master, per second        Redis CPU        commands (incl. in scripts)   script runs\n")
	for _, win := range r.Windows {
		label := win.Name
		if win.Connects > 0 {
			label = fmt.Sprintf("%s %.0f conn/s", win.Name, float64(win.Connects)/win.Seconds)
		}
		if win.Name == "read" {
			continue
		}
		for i, m := range win.Masters {
			l := ""
			if i == 0 {
				l = label
			}
			fmt.Fprintf(w, "  %-26s m%d %6.2f%% of a core %12.0f %25.0f\n", l, i+1, 100*m.CPUPerSec, m.CmdsPerSec, m.EvalPerSec)
		}
	}
	for _, win := range r.Windows {
		if win.Name != "read" {
			continue
		}
		var parts []string
		for i, m := range win.Masters {
			parts = append(parts, fmt.Sprintf("m%d %.0f commands, %.1f ms CPU", i+1, m.CmdsPerSec*win.Seconds, 1000*m.CPUPerSec*win.Seconds))
		}
		fmt.Fprintf(w, "one read of %d counts (Counts of every room + Total) from one node, %.0f ms: %s\n", r.ReadKeys, 1000*win.Seconds, strings.Join(parts, "; "))
	}
	if len(r.Crashed) > 0 {
		var sc, cl float64
		for _, m := range r.CrashWindow.Masters {
			sc += m.EvalPerSec * r.CrashWindow.Seconds
			cl += m.CPUPerSec * r.CrashWindow.Seconds
		}
		fmt.Fprintf(w, "crash of %d nodes (%s) holding %d slices:\n", len(r.Crashed), strings.Join(r.Crashed, " "), r.CrashSlices)
		fmt.Fprintf(w, "  every count exact (crashed slices gone) %.2fs after the crash; deadline threshold+heartbeat+2s = %.1fs\n", r.GoneSeconds, r.Deadline)
		if c.Users > 0 {
			fmt.Fprintf(w, "  %d leaves (reason crashed) in %d rooms, the last received by a surviving node's Watch %.2fs after the crash\n", r.Leaves, r.LeaveRooms, r.LeavesSeconds)
		}
		outcome := map[bool]string{true: "all exact", false: "not all exact (see the failures)"}[r.Exact]
		fmt.Fprintf(w, "  every surviving node read its total and the rooms it holds connections in, %s by %.2fs after the crash\n", outcome, r.OwnSeconds)
		fmt.Fprintf(w, "  %d surviving nodes read every room and the total, %s by %.2fs after the crash\n", r.AllNodesChecked, outcome, r.AllNodesSeconds)
		fmt.Fprintf(w, "  until then, all masters: %.0f scripts, %.2fs Redis CPU (heartbeats, renewals, the probe's reads and the sweep); %.0f HDEL (one per slice dropped)\n", sc, cl, r.CrashWindow.Calls["hdel"])
	}
	if len(r.Failures) == 0 {
		fmt.Fprintln(w, "RESULT: PASS (every count exact)")
		return
	}
	fmt.Fprintf(w, "RESULT: FAIL (%d)\n", len(r.Failures))
	for i, f := range r.Failures {
		if i == 10 {
			fmt.Fprintf(w, "  ... %d more\n", len(r.Failures)-10)
			break
		}
		fmt.Fprintf(w, "  %s\n", f)
	}
}
