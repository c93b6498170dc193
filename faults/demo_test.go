package faults

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/headcount-go/headcount/internal/redistest"
)

// The programs the tests run as real processes (./demo, and the nemesis
// test's ./faults/nemesisnode) are built once per test binary, without
// -race unless asked: the crash tests run them so that a crash is a
// SIGKILL.
var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*build
}

type build struct {
	once sync.Once
	bin  string
	err  error
}

func demoBinary(t *testing.T) string { return goBinary(t, "./demo", false) }

// goBinary builds the main package pkg (a path from the module root), once
// per test binary and race setting, and returns the executable's path.
func goBinary(t *testing.T, pkg string, race bool) string {
	t.Helper()
	name := strings.Trim(strings.ReplaceAll(pkg, "/", "-"), ".-")
	if race {
		name += "-race"
	}
	builds.mu.Lock()
	if builds.bins == nil {
		builds.bins = map[string]*build{}
	}
	b := builds.bins[name]
	if b == nil {
		b = &build{}
		builds.bins[name] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() {
		start := time.Now()
		builds.mu.Lock()
		if builds.dir == "" {
			builds.dir, b.err = os.MkdirTemp("", "headcount-faults-")
		}
		dir := builds.dir
		builds.mu.Unlock()
		if b.err != nil {
			return
		}
		gobin, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
		if err != nil {
			b.err = fmt.Errorf("no go tool to build %s: %v", pkg, err)
			return
		}
		b.bin = filepath.Join(dir, name)
		args := []string{"build", "-o", b.bin}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.Command(gobin, append(args, pkg)...)
		cmd.Dir = ".." // the module root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
			return
		}
		t.Logf("built %s in %v", pkg, time.Since(start).Round(time.Millisecond))
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// removeDemo deletes the built programs; TestMain calls it after the tests.
func removeDemo() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		_ = os.RemoveAll(builds.dir)
	}
}

// demoProc is one running demo node.
type demoProc struct {
	cmd  *exec.Cmd
	out  *procOutput
	done chan struct{} // closed once the process is reaped
}

// procOutput keeps a process's output and finds the address it listens on.
type procOutput struct {
	mu    sync.Mutex
	b     bytes.Buffer
	found bool
	addr  chan string
}

// listenRE matches what a demo node prints about its address: "open
// http://127.0.0.1:PORT/" alone, "listening on 127.0.0.1:PORT" supervised.
var listenRE = regexp.MustCompile(`(?:http://|listening on )(127\.0\.0\.1:[0-9]+)`)

func (o *procOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.b.Write(p)
	if !o.found {
		if m := listenRE.FindSubmatch(o.b.Bytes()); m != nil {
			o.found = true
			o.addr <- string(m[1])
		}
	}
	return len(p), nil
}

func (o *procOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// startDemo starts a demo node process on a free loopback port, counting
// in the fleet's namespace with the suite's timings through the Redis at
// redisArg (host:port, or comma-separated cluster seeds), and waits until
// it serves presence. It is stopped when the test ends.
func (f *fleet) startDemo(name, redisArg string) *node {
	f.t.Helper()
	n := f.startProcess(name, demoBinary(f.t),
		"-addr", "127.0.0.1:0",
		"-redis", redisArg,
		"-threshold", threshold.String(),
		"-heartbeat", heartbeat.String(),
		"-instance", name,
		"-namespace", f.ns,
	)
	deadline := time.Now().Add(settleDeadline)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := f.presence(ctx, n)
		cancel()
		if err == nil {
			return n
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("demo %s at %s does not serve presence: %v\n%s", name, n.base, err, n.proc.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startProcess runs bin with args as a node of the fleet and waits until
// it prints the loopback address it listens on ("http://127.0.0.1:PORT"
// or "listening on 127.0.0.1:PORT"). It is stopped when the test ends, and
// its output is logged if the test failed.
func (f *fleet) startProcess(name, bin string, args ...string) *node {
	t := f.t
	t.Helper()
	cmd := exec.Command(bin, args...)
	out := &procOutput{addr: make(chan string, 1)}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := redistest.StartChild(cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	proc := &demoProc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(proc.done)
	}()
	n := &node{f: f, name: name, proc: proc, conns: map[*conn]struct{}{}}
	n.stopFn = func() {
		proc.stop()
		if t.Failed() {
			t.Logf("process %s (%v) output:\n%s", name, cmd.ProcessState, tail(out.String(), 4<<10))
		}
	}
	f.add(n)
	select {
	case addr := <-out.addr:
		n.base = "http://" + addr
	case <-proc.done:
		t.Fatalf("%s exited at start (%v):\n%s", name, cmd.ProcessState, out)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s said no address within 30s:\n%s", name, out)
	}
	return n
}

// stop ends the process: SIGTERM (it drains and removes its counts), then
// SIGKILL if it is still there after a while.
func (p *demoProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill crashes a demo node with SIGKILL and waits until it is gone; its
// client connections are dropped. It returns when the signal was sent.
func (n *node) kill() time.Time {
	n.f.t.Helper()
	n.mu.Lock()
	n.dead = true
	conns := n.conns
	n.conns = map[*conn]struct{}{}
	n.mu.Unlock()
	at := time.Now()
	if err := n.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		n.f.t.Fatalf("SIGKILL %s: %v", n.name, err)
	}
	<-n.proc.done
	for c := range conns {
		_ = c.ws.CloseNow()
		<-c.done
	}
	return at
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
