package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// listenerFDEnv tells a node started by the supervisor that its listener is
// file descriptor 3, opened for it by the supervisor (so that every port is
// known, and taken, before any node starts).
const listenerFDEnv = "HEADCOUNT_DEMO_LISTENER_FD"

// Node states, as /api/info reports them.
const (
	stateUp      = "up"      // the process runs
	stateCrashed = "crashed" // killed with SIGKILL by POST /node/{i}/crash
	stateExited  = "exited"  // ended by itself, or stopped
)

// supervisor runs -nodes node processes (this binary again) on one Redis,
// serves the page, and proxies /node/{i}/... to node i.
type supervisor struct {
	cfg       config
	exe       string
	redisAddr string // the nodes' -redis
	redisDesc string
	stdout    io.Writer
	stderr    io.Writer
	log       *slog.Logger
	procs     []*proc // procs[i-1] is node i

	mu sync.Mutex // guards the mutable fields of every proc
}

// proc is one node process.
type proc struct {
	index    int
	instance string
	addr     string // where it listens
	proxy    *httputil.ReverseProxy

	// under supervisor.mu
	cmd     *exec.Cmd
	state   string
	crashed bool // the exit was our SIGKILL
	// restarting is set while a restart starts the process, so that a
	// second restart meanwhile is refused.
	restarting bool
	exited     chan struct{} // closed once cmd is waited for
}

// nodeInfo is a node in the supervisor's /api/info.
type nodeInfo struct {
	Index    int    `json:"index"`
	Instance string `json:"instance"`
	Addr     string `json:"addr"`
	State    string `json:"state"`
	PID      int    `json:"pid,omitempty"`
}

// runSupervisor starts the nodes, serves the page and the proxy on ln until
// ctx ends, then stops the nodes with SIGTERM (they drain and remove their
// counts) and waits for them.
func runSupervisor(ctx context.Context, cfg config, ln net.Listener, stdout, stderr io.Writer, log *slog.Logger) error {
	defer ln.Close()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program to start the nodes: %w", err)
	}
	rc, err := openRedis(ctx, cfg.redis, stdout) // checked here once, not in each node
	if err != nil {
		return err
	}
	defer rc.close()
	s := &supervisor{cfg: cfg, exe: exe, redisAddr: rc.addr, redisDesc: rc.desc, stdout: stdout, stderr: stderr, log: log}
	defer s.stopAll()
	for i := 1; i <= cfg.nodes; i++ {
		if err := s.add(i); err != nil {
			return err
		}
	}

	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer srv.Close()
	if err := s.waitReady(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	fmt.Fprintf(stdout, "headcount demo: %d nodes up; open %s\n", cfg.nodes, pageURL(ln.Addr()))
	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	log.Info("stopping the nodes")
	return s.stopAll()
}

// add starts node i on its port.
func (s *supervisor) add(i int) error {
	host, port, err := s.cfg.nodeAddr(i)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("node %d: %w", i, err)
	}
	p := &proc{index: i, instance: s.cfg.instanceID(i), addr: ln.Addr().String()}
	p.proxy = s.newProxy(p)
	s.procs = append(s.procs, p)
	return s.start(p, ln)
}

// start runs p's process on ln, which it takes over.
func (s *supervisor) start(p *proc, ln net.Listener) error {
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(s.exe, s.cfg.nodeArgs(p.index, p.addr, s.redisAddr)...)
	cmd.Env = append(os.Environ(), listenerFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{f} // fd 3
	prefix := fmt.Sprintf("[%s] ", p.instance)
	cmd.Stdout = &linePrefixer{w: s.stdout, prefix: prefix}
	cmd.Stderr = &linePrefixer{w: s.stderr, prefix: prefix}
	cmd.SysProcAttr = nodeProcAttr()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting node %d: %w", p.index, err)
	}
	p.cmd, p.state, p.crashed, p.exited = cmd, stateUp, false, make(chan struct{})
	go s.wait(p, cmd, p.exited)
	return nil
}

func (s *supervisor) wait(p *proc, cmd *exec.Cmd, exited chan struct{}) {
	err := cmd.Wait()
	s.mu.Lock()
	if p.crashed {
		p.state = stateCrashed
	} else {
		p.state = stateExited
		if err != nil {
			s.log.Warn("node exited", "node", p.instance, "err", err)
		}
	}
	s.mu.Unlock()
	close(exited)
}

// waitReady waits until every node answers HTTP.
func (s *supervisor) waitReady(ctx context.Context) error {
	for _, p := range s.procs {
		if err := s.waitNode(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// waitNode waits, 30 s at most, until p answers HTTP.
func (s *supervisor) waitNode(ctx context.Context, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if ok, exited := s.probe(ctx, p); ok {
			return nil
		} else if exited {
			return fmt.Errorf("node %d (%s) exited at start: see its output above", p.index, p.instance)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %d (%s) did not answer: %w", p.index, p.instance, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *supervisor) probe(ctx context.Context, p *proc) (ok, exited bool) {
	s.mu.Lock()
	exited = p.state != stateUp
	s.mu.Unlock()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+dialAddr(p.addr)+"/api/info", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, exited
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, exited
}

// stopAll sends SIGTERM to every running node and waits for them; a node
// still running after the drain timeout is killed. It reports the nodes
// that did not exit cleanly.
func (s *supervisor) stopAll() error {
	type running struct {
		p      *proc
		cmd    *exec.Cmd
		exited chan struct{}
	}
	var rs []running
	s.mu.Lock()
	for _, p := range s.procs {
		if p.state == stateUp {
			rs = append(rs, running{p, p.cmd, p.exited})
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				_ = p.cmd.Process.Kill()
			}
		}
	}
	s.mu.Unlock()
	var errs []error
	deadline := time.After(shutdownTimeout + 5*time.Second)
	for _, r := range rs {
		select {
		case <-r.exited:
		case <-deadline:
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
		if code := r.cmd.ProcessState.ExitCode(); code != 0 {
			errs = append(errs, fmt.Errorf("node %d (%s): %v", r.p.index, r.p.instance, r.cmd.ProcessState))
		}
	}
	return errors.Join(errs...)
}

func (s *supervisor) routes() http.Handler {
	mux := http.NewServeMux()
	servePage(mux)
	mux.HandleFunc("GET /api/info", func(w http.ResponseWriter, r *http.Request) {
		i := s.cfg.info(s.redisDesc)
		i.Nodes = s.nodes()
		i.Endpoints = supervisorEndpoints
		writeJSON(w, i)
	})
	mux.Handle("GET /metrics", s.metricsHandler())
	mux.HandleFunc("/node/{i}/crash", s.withProc(postOnly(s.crash)))
	mux.HandleFunc("/node/{i}/restart", s.withProc(postOnly(s.restart)))
	mux.HandleFunc("/node/{i}/{rest...}", s.withProc(func(w http.ResponseWriter, r *http.Request, p *proc) {
		p.proxy.ServeHTTP(w, r)
	}))
	return mux
}

func (s *supervisor) nodes() []nodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]nodeInfo, len(s.procs))
	for k, p := range s.procs {
		out[k] = nodeInfo{Index: p.index, Instance: p.instance, Addr: p.addr, State: p.state}
		if p.state == stateUp {
			out[k].PID = p.cmd.Process.Pid
		}
	}
	return out
}

// withProc resolves {i} to its node, or answers 404.
func (s *supervisor) withProc(h func(http.ResponseWriter, *http.Request, *proc)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		i, err := strconv.Atoi(r.PathValue("i"))
		if err != nil || i < 1 || i > len(s.procs) || strconv.Itoa(i) != r.PathValue("i") {
			http.Error(w, fmt.Sprintf("no node %q: nodes are 1 to %d", r.PathValue("i"), len(s.procs)), http.StatusNotFound)
			return
		}
		h(w, r, s.procs[i-1])
	}
}

// postOnly answers 405 to any method but POST: without it, the proxy would
// take GET /node/{i}/crash for the node's own /crash.
func postOnly(h func(http.ResponseWriter, *http.Request, *proc)) func(http.ResponseWriter, *http.Request, *proc) {
	return func(w http.ResponseWriter, r *http.Request, p *proc) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed: use POST", http.StatusMethodNotAllowed)
			return
		}
		h(w, r, p)
	}
}

// crash is POST /node/{i}/crash: SIGKILL, so the node removes nothing from
// Redis; the others reap its counts after the dead-instance threshold.
func (s *supervisor) crash(w http.ResponseWriter, r *http.Request, p *proc) {
	s.mu.Lock()
	if p.state != stateUp {
		s.mu.Unlock()
		http.Error(w, fmt.Sprintf("node %d is not running", p.index), http.StatusConflict)
		return
	}
	p.crashed = true
	_ = p.cmd.Process.Kill()
	exited := p.exited
	s.mu.Unlock()
	<-exited
	s.log.Info("node crashed on request (SIGKILL): its counts stay in Redis until reaped",
		"node", p.instance, "threshold", s.cfg.threshold)
	writeJSON(w, s.nodes()[p.index-1])
}

// restart is POST /node/{i}/restart: start a node that is not running
// again, with the same instance ID, so that it takes over its slices at
// once instead of waiting for the reap.
// It answers once the node answers HTTP; 503 if its port is taken.
func (s *supervisor) restart(w http.ResponseWriter, r *http.Request, p *proc) {
	s.mu.Lock()
	busy := p.state == stateUp || p.restarting
	p.restarting = !busy
	s.mu.Unlock()
	if busy {
		http.Error(w, fmt.Sprintf("node %d is running", p.index), http.StatusConflict)
		return
	}
	defer func() {
		s.mu.Lock()
		p.restarting = false
		s.mu.Unlock()
	}()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		http.Error(w, fmt.Sprintf("node %d cannot listen again: %v", p.index, err), http.StatusServiceUnavailable)
		return
	}
	if err := s.start(p, ln); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if err := s.waitNode(r.Context(), p); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, s.nodes()[p.index-1])
}

// newProxy forwards /node/{i}/rest (HTTP and WebSocket) to p as /rest.
func (s *supervisor) newProxy(p *proc) *httputil.ReverseProxy {
	target := &url.URL{Scheme: "http", Host: dialAddr(p.addr)}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// Cut "/node/{i}" from the escaped path, so that escaped room
			// names reach the node as they were sent.
			esc := strings.TrimPrefix(pr.In.URL.EscapedPath(), "/node/")
			if j := strings.IndexByte(esc, '/'); j >= 0 {
				esc = esc[j:]
			}
			if path, err := url.PathUnescape(esc); err == nil {
				pr.Out.URL.Path, pr.Out.URL.RawPath = path, esc
			}
			// The page's host: the node checks a WebSocket's Origin
			// against it.
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, fmt.Sprintf("node %d (%s) is not answering: %v", p.index, p.instance, err), http.StatusBadGateway)
		},
	}
}

// dialAddr is an address to reach a listener on addr from this machine.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// linePrefixer writes whole lines to w, each after prefix.
type linePrefixer struct {
	w      io.Writer
	prefix string
	buf    []byte
}

var outputMu sync.Mutex // one line at a time on the shared output

func (l *linePrefixer) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		outputMu.Lock()
		_, err := fmt.Fprintf(l.w, "%s%s", l.prefix, l.buf[:i+1])
		outputMu.Unlock()
		l.buf = l.buf[i+1:]
		if err != nil {
			return len(b), err
		}
	}
}
