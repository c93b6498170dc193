package redistest

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Environment variables naming externally managed servers.
const (
	// EnvAddr is host:port of a standalone server shared by all tests.
	EnvAddr = "HEADCOUNT_REDIS_ADDR"
	// EnvClusterAddrs is a comma-separated list of host:port seeds of a
	// Redis Cluster shared by all tests.
	EnvClusterAddrs = "HEADCOUNT_REDIS_CLUSTER_ADDRS"
)

const (
	startTimeout     = 10 * time.Second // until a started process answers
	stopTimeout      = 10 * time.Second // SIGTERM grace period in Stop
	restartPortWait  = 5 * time.Second  // Restart: wait for the old port to be free
	maxStartAttempts = 10               // fresh port per attempt on bind conflicts
	maxPollInterval  = 25 * time.Millisecond
	maxPrefixLen     = 48
)

const installHint = "run `make test` (installs it with apt-get) or `apt-get install -y redis-server`"

var errPortInUse = errors.New("port already in use")

// dirPrefix starts the name of every server directory in os.TempDir(); the
// owner's pid follows, so removeStaleDirs can tell leftovers.
const dirPrefix = "redistest-"

var staleDirsOnce sync.Once

type serverKind int

const (
	kindPrivate  serverKind = iota // NewServer / NewCluster: owned by one test
	kindShared                     // started lazily, shared by the test binary
	kindExternal                   // named by an environment variable
)

// Server is a redis-server process started by this package, or a server
// named by HEADCOUNT_REDIS_ADDR / HEADCOUNT_REDIS_CLUSTER_ADDRS.
//
// Only private servers (from [NewServer] or [NewCluster]) may be stopped,
// killed or restarted; doing so to a shared or external server is a bug in
// the test and panics (Kill, Stop) or fails the test (Restart).
type Server struct {
	addr    string // immutable once the Server is returned
	port    int
	kind    serverKind
	cluster bool          // started with --cluster-enabled
	group   *clusterGroup // set for the nodes of a cluster started here
	bin     string
	dir     string

	mu     sync.Mutex
	proc   *process // nil while stopped
	closed bool
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Client returns a new client connected to this server (for a cluster node:
// to that node only). It is closed when the test ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill sends SIGKILL to the server and waits until it is gone, simulating a
// crash. Data is lost; use Restart to bring the server back.
func (s *Server) Kill() {
	s.mustOwn("Kill")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

// Stop shuts the server down (SIGTERM, then SIGKILL after 10s) and waits for
// it to exit. Restart starts it again. Stopping a stopped server is a no-op.
func (s *Server) Stop() {
	s.mustOwn("Stop")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.signalAndWait(syscall.SIGTERM, stopTimeout)
		s.proc = nil
	}
}

// Restart kills the server if it is still running and starts it again on the
// same port, with an empty data set, then waits until it answers. A node of a
// cluster from [NewCluster] keeps its nodes.conf (so it rejoins with its node
// ID and slots, but without data), and Restart also waits until every node of
// the cluster reports cluster_state:ok again.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if s.kind != kindPrivate {
		tb.Fatalf("redistest: Restart called on %s; tests that stop or crash Redis must use NewServer/NewCluster", s.describe())
	}
	if err := s.restart(); err != nil {
		tb.Fatalf("redistest: restart %s: %v", s.addr, err)
	}
	if s.group != nil {
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		defer cancel()
		if err := s.group.waitOK(ctx); err != nil {
			tb.Fatalf("redistest: restarted %s but the cluster did not recover: %v", s.addr, err)
		}
	}
}

func (s *Server) restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("server was already cleaned up (Restart after the test ended?)")
	}
	s.killLocked()
	deadline := time.Now().Add(restartPortWait)
	for {
		err := s.start(false)
		if err == nil || !errors.Is(err, errPortInUse) || time.Now().After(deadline) {
			return err
		}
		// Someone else holds the port for a moment; poll until it is free.
		time.Sleep(maxPollInterval)
	}
}

func (s *Server) killLocked() {
	if s.proc != nil {
		s.proc.signalAndWait(syscall.SIGKILL, 0)
		s.proc = nil
	}
}

func (s *Server) describe() string {
	switch s.kind {
	case kindShared:
		return "the shared server " + s.addr
	case kindExternal:
		return "the external server " + s.addr + " (from " + EnvAddr + "/" + EnvClusterAddrs + ")"
	default:
		return "the private server " + s.addr
	}
}

func (s *Server) mustOwn(op string) {
	if s.kind != kindPrivate {
		panic(fmt.Sprintf("redistest: %s called on %s; tests that stop or crash Redis must use NewServer/NewCluster", op, s.describe()))
	}
}

// close kills the process for good and removes its directory.
func (s *Server) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.kind == kindExternal {
		return
	}
	s.closed = true
	s.killLocked()
	_ = os.RemoveAll(s.dir)
	releasePort(s.port, s.cluster)
	untrack(s)
}

func (s *Server) args() []string {
	a := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--dir", s.dir,
	}
	if s.cluster {
		a = append(a,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", "2000",
			"--cluster-announce-ip", "127.0.0.1",
			// cmd/hcsim's hundred nodes hold a connection pool each.
			"--maxclients", "20000",
		)
	}
	return a
}

// start launches redis-server on s.port and waits until it answers. fresh
// discards a cluster node's nodes.conf from a previous attempt.
func (s *Server) start(fresh bool) error {
	if fresh {
		_ = os.Remove(filepath.Join(s.dir, "nodes.conf"))
	}
	logPath := filepath.Join(s.dir, "redis.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	var logOffset int64
	if st, err := logf.Stat(); err == nil {
		logOffset = st.Size()
	}
	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	err = StartChild(cmd)
	_ = logf.Close() // the child has its own copy
	if err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go p.wait()
	if err := waitReady(s.addr, p, startTimeout); err != nil {
		p.signalAndWait(syscall.SIGKILL, 0)
		log := readFrom(logPath, logOffset)
		if strings.Contains(log, "Address already in use") {
			return fmt.Errorf("%w: %s", errPortInUse, s.addr)
		}
		return fmt.Errorf("redis-server on %s: %v\nredis-server log (%s):\n%s", s.addr, err, logPath, log)
	}
	s.proc = p
	return nil
}

// newServer starts a fresh redis-server on a free loopback port.
func newServer(kind serverKind, cluster bool) (*Server, error) {
	bin, err := redisServerPath(kind)
	if err != nil {
		return nil, err
	}
	staleDirsOnce.Do(removeStaleDirs)
	dir, err := os.MkdirTemp("", dirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, err
	}
	s := &Server{kind: kind, cluster: cluster, bin: bin, dir: dir}
	var lastErr error
	for range maxStartAttempts {
		port, err := pickPort(cluster)
		if err != nil {
			lastErr = err
			break
		}
		s.port, s.addr = port, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.mu.Lock()
		lastErr = s.start(true)
		s.mu.Unlock()
		if lastErr == nil {
			track(s)
			return s, nil
		}
		releasePort(port, cluster)
		if !errors.Is(lastErr, errPortInUse) {
			break
		}
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("start redis-server: %w", lastErr)
}

func redisServerPath(kind serverKind) (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err == nil {
		return bin, nil
	}
	if kind == kindPrivate {
		return "", fmt.Errorf("redis-server not found in PATH (this test starts a private server, so it needs the binary even when %s / %s are set): %s", EnvAddr, EnvClusterAddrs, installHint)
	}
	return "", fmt.Errorf("redis-server not found in PATH: %s, or set %s / %s", installHint, EnvAddr, EnvClusterAddrs)
}

// NewServer starts a private standalone redis-server for this test only;
// it is stopped and its directory removed when the test ends. Use it for
// tests that Kill, Stop or Restart Redis or change its configuration.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := newServer(kindPrivate, false)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(s.close)
	return s
}

var sharedStandalone struct {
	mu  sync.Mutex
	srv *Server
	err error
}

// StandaloneServer returns the standalone server shared by the whole test
// binary: the one named by HEADCOUNT_REDIS_ADDR, or else one started on the
// first call and stopped by [Main] / [StopAll]. Do not Kill, Stop or Restart
// it; use [NewServer] for that.
func StandaloneServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := standaloneServer()
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return s
}

// StandaloneAddr returns the host:port of the shared standalone server (see
// [StandaloneServer]), starting it if needed, for code that has no
// testing.TB: a TestMain preparing Example functions. An error says why no
// server is available; the caller must fail with it, never skip.
func StandaloneAddr() (string, error) {
	s, err := standaloneServer()
	if err != nil {
		return "", fmt.Errorf("redistest: %w", err)
	}
	return s.addr, nil
}

func standaloneServer() (*Server, error) {
	sharedStandalone.mu.Lock()
	defer sharedStandalone.mu.Unlock()
	if sharedStandalone.srv == nil && sharedStandalone.err == nil {
		if addr := strings.TrimSpace(os.Getenv(EnvAddr)); addr != "" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				sharedStandalone.err = fmt.Errorf("%s=%q is not host:port: %v", EnvAddr, addr, err)
			} else {
				sharedStandalone.srv = &Server{addr: addr, kind: kindExternal}
			}
		} else {
			sharedStandalone.srv, sharedStandalone.err = newServer(kindShared, false)
		}
	}
	return sharedStandalone.srv, sharedStandalone.err
}

// Standalone returns a client to the shared standalone server (see
// [StandaloneServer]). The client is closed when the test ends. Keys must be
// built from [Prefix] so that tests sharing the server do not clash.
func Standalone(tb testing.TB) *redis.Client {
	tb.Helper()
	s := StandaloneServer(tb)
	c := s.Client(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("redistest: PING %s failed: %v", s.describe(), err)
	}
	return c
}

var (
	prefixSeq   atomic.Uint64
	prefixRunID = newRunID()
)

func newRunID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [5]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// Prefix returns a key prefix unique to this call: "t_<test name>_<run>_<n>",
// where <run> is random per test binary (so packages sharing a server via
// HEADCOUNT_REDIS_ADDR do not clash) and n counts calls. It contains only
// letters, digits and "_.-" and is at most 48 bytes long; the test name is
// shortened to fit.
func Prefix(tb testing.TB) string {
	tb.Helper()
	suffix := "_" + prefixRunID + "_" + strconv.FormatUint(prefixSeq.Add(1), 10)
	name := []byte(tb.Name())
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			name[i] = '_'
		}
	}
	if room := maxPrefixLen - len("t_") - len(suffix); len(name) > room {
		name = name[:room]
	}
	return "t_" + string(name) + suffix
}

// Main runs the tests, stops every server this test binary started and
// exits with the tests' status. Call it from TestMain:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	StopAll()
	os.Exit(code)
}

// StopAll kills every server started by this process (shared and private),
// removes their directories and forgets the shared instances, so a later
// call starts new ones. [Main] calls it after the tests; call it yourself
// only from a custom TestMain, after m.Run.
func StopAll() {
	sharedStandalone.mu.Lock()
	sharedStandalone.srv, sharedStandalone.err = nil, nil
	sharedStandalone.mu.Unlock()
	resetSharedCluster()

	live.mu.Lock()
	servers := make([]*Server, 0, len(live.m))
	for s := range live.m {
		servers = append(servers, s)
	}
	live.mu.Unlock()
	for _, s := range servers {
		s.close()
	}
	stopSpawner()
}

// live tracks servers started by this process for StopAll.
var live = struct {
	mu sync.Mutex
	m  map[*Server]struct{}
}{m: map[*Server]struct{}{}}

func track(s *Server) {
	live.mu.Lock()
	live.m[s] = struct{}{}
	live.mu.Unlock()
}

func untrack(s *Server) {
	live.mu.Lock()
	delete(live.m, s)
	live.mu.Unlock()
}

// reserved holds ports (and cluster bus ports) handed out by pickPort and
// still in use, so that concurrent starts in this process never pick the
// same port or a port that is another node's bus port.
var reserved = struct {
	mu sync.Mutex
	m  map[int]bool
}{m: map[int]bool{}}

// pickPort returns a port that was free on 127.0.0.1. For a cluster node,
// the bus port (port+10000) must be free too, so the port is below 55535.
// Another process may still grab the port before redis-server binds it; the
// caller retries on "Address already in use".
func pickPort(cluster bool) (int, error) {
	reserved.mu.Lock()
	defer reserved.mu.Unlock()
	var lastErr error
	for range 200 {
		p, err := listenFree(0)
		if err != nil {
			lastErr = err
			continue
		}
		if reserved.m[p] {
			continue
		}
		if cluster {
			if p >= 65535-10000 || reserved.m[p+10000] {
				continue
			}
			if _, err := listenFree(p + 10000); err != nil {
				continue
			}
			reserved.m[p+10000] = true
		}
		reserved.m[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("no free loopback port found (last error: %v)", lastErr)
}

func releasePort(p int, cluster bool) {
	reserved.mu.Lock()
	delete(reserved.m, p)
	if cluster {
		delete(reserved.m, p+10000)
	}
	reserved.mu.Unlock()
}

// listenFree binds 127.0.0.1:port (0 = any), closes it, and returns the port.
func listenFree(port int) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0, err
	}
	p := l.Addr().(*net.TCPAddr).Port
	return p, l.Close()
}

// process is one running redis-server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed after cmd.Wait returned
}

func (p *process) wait() {
	_ = p.cmd.Wait()
	close(p.done)
}

// signalAndWait sends sig and waits for the exit; if timeout > 0 and the
// process is still alive after it, it is killed.
func (p *process) signalAndWait(sig os.Signal, timeout time.Duration) {
	_ = p.cmd.Process.Signal(sig)
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-p.done:
			return
		case <-t.C:
			_ = p.cmd.Process.Kill()
		}
	}
	<-p.done
}

// waitReady polls addr until the redis-server of p answers INFO with its own
// process_id (not some other process that grabbed the port).
func waitReady(addr string, p *process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for {
		pid, err := probe(addr)
		if err == nil {
			if pid == p.cmd.Process.Pid {
				return nil
			}
			err = fmt.Errorf("%s is served by another process (pid %d)", addr, pid)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %v", timeout, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-p.done:
			t.Stop()
			return fmt.Errorf("exited during startup (%v)", p.cmd.ProcessState)
		case <-t.C:
		}
		delay = min(2*delay, maxPollInterval)
	}
}

// probe sends INFO server over a raw connection and returns process_id. It
// does not use go-redis, whose pool backs off for a second after dial errors.
func probe(addr string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	head = strings.TrimRight(head, "\r\n")
	if !strings.HasPrefix(head, "$") {
		return 0, fmt.Errorf("INFO: unexpected reply %q", head)
	}
	n, err := strconv.Atoi(head[1:])
	if err != nil || n < 0 {
		return 0, fmt.Errorf("INFO: bad bulk length %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO: no process_id")
}

func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return "(no log: " + err.Error() + ")"
	}
	b, _ := io.ReadAll(io.LimitReader(f, 8<<10))
	return string(b)
}

// The spawner forks every redis-server from one goroutine locked to its OS
// thread. PR_SET_PDEATHSIG fires when the forking *thread* exits, and the Go
// runtime may end threads (a goroutine exiting while locked to its thread),
// so forking from arbitrary test goroutines could kill servers early.
var spawner struct {
	mu   sync.Mutex
	reqs chan spawnReq
}

type spawnReq struct {
	cmd *exec.Cmd
	res chan error
}

// StartChild starts cmd as a child that does not outlive the test binary:
// on Linux the kernel SIGKILLs it when the binary dies, even by a crash or
// a go test timeout, which cleanups cannot cover. It sets cmd.SysProcAttr.
// Use it for every process a test starts (redis-server, a node binary).
func StartChild(cmd *exec.Cmd) error {
	cmd.SysProcAttr = sysProcAttr()
	spawner.mu.Lock()
	defer spawner.mu.Unlock()
	if spawner.reqs == nil {
		spawner.reqs = make(chan spawnReq)
		go spawnLoop(spawner.reqs)
	}
	res := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd: cmd, res: res}
	return <-res
}

func spawnLoop(reqs <-chan spawnReq) {
	// Never unlocked: when StopAll closes reqs the thread exits with this
	// goroutine, which also SIGKILLs any child that is somehow still alive.
	runtime.LockOSThread()
	for r := range reqs {
		r.res <- r.cmd.Start()
	}
}

func stopSpawner() {
	spawner.mu.Lock()
	defer spawner.mu.Unlock()
	if spawner.reqs != nil {
		close(spawner.reqs)
		spawner.reqs = nil
	}
}
