package faults

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/headcount-go/headcount/internal/redistest"
)

// The demo (./demo) is built once per test binary, without -race: the
// crash tests run it as real processes, so that a crash is a SIGKILL.
var demo struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func demoBinary(t *testing.T) string {
	t.Helper()
	demo.once.Do(func() {
		start := time.Now()
		demo.dir, demo.err = os.MkdirTemp("", "headcount-faults-")
		if demo.err != nil {
			return
		}
		demo.bin = filepath.Join(demo.dir, "demo")
		gobin, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
		if err != nil {
			demo.err = fmt.Errorf("no go tool to build ./demo: %v", err)
			return
		}
		cmd := exec.Command(gobin, "build", "-o", demo.bin, "./demo")
		cmd.Dir = ".." // the module root
		if out, err := cmd.CombinedOutput(); err != nil {
			demo.err = fmt.Errorf("go build ./demo: %v\n%s", err, out)
			return
		}
		t.Logf("built ./demo in %v", time.Since(start).Round(time.Millisecond))
	})
	if demo.err != nil {
		t.Fatal(demo.err)
	}
	return demo.bin
}

// removeDemo deletes the demo binary; TestMain calls it after the tests.
func removeDemo() {
	if demo.dir != "" {
		_ = os.RemoveAll(demo.dir)
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
	t := f.t
	t.Helper()
	bin := demoBinary(t)
	cmd := exec.Command(bin,
		"-addr", "127.0.0.1:0",
		"-redis", redisArg,
		"-threshold", threshold.String(),
		"-heartbeat", heartbeat.String(),
		"-instance", name,
		"-namespace", f.ns,
	)
	out := &procOutput{addr: make(chan string, 1)}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := redistest.StartChild(cmd); err != nil {
		t.Fatalf("start demo %s: %v", name, err)
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
			t.Logf("demo %s (%v) output:\n%s", name, cmd.ProcessState, tail(out.String(), 4<<10))
		}
	}
	f.add(n)
	select {
	case addr := <-out.addr:
		n.base = "http://" + addr
	case <-proc.done:
		t.Fatalf("demo %s exited at start (%v):\n%s", name, cmd.ProcessState, out)
	case <-time.After(30 * time.Second):
		t.Fatalf("demo %s said no address within 30s:\n%s", name, out)
	}
	deadline := time.Now().Add(settleDeadline)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := f.presence(ctx, n)
		cancel()
		if err == nil {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo %s at %s does not serve presence: %v\n%s", name, n.base, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
