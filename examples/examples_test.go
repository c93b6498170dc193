package examples

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/internal/redistest"
	"github.com/headcount-go/headcount/wsconn"
)

// TestMain stops the redis-server the tests may have started (none under
// make test, which provides HEADCOUNT_REDIS_ADDR).
func TestMain(m *testing.M) { redistest.Main(m) }

// quickStarts are the adapters' programs: each serves /ws/{room} and
// /presence, and they share main and run.
var quickStarts = []string{"nethttp", "echo", "gorilla", "gin", "chi"}

// programs are all the programs of examples/, each with the test of what
// it serves.
var programs = map[string]func(t *testing.T, bin, redisAddr string){
	"nethttp": serveWebSockets,
	"echo":    serveWebSockets,
	"gorilla": serveWebSockets,
	"gin":     serveWebSockets,
	"chi":     serveWebSockets,
	"counter": serveCounter,
}

const (
	// startWait bounds a program's start: until it prints its address and
	// answers, or until it exits on a busy port.
	startWait = 30 * time.Second
	// countWait bounds the wait for a connection's count (see
	// serveWebSockets).
	countWait = 10 * time.Second
	// exitWait bounds SIGTERM to exit; the programs give their shutdown
	// 10 s at most, and a clean one takes milliseconds.
	exitWait = 20 * time.Second
)

// TestQuickStarts builds every program of examples/ and checks, for each,
// that it serves what it should, shuts down cleanly on SIGTERM, and fails
// with a message when its port is taken.
func TestQuickStarts(t *testing.T) {
	redisAddr := redistest.StandaloneServer(t).Addr() // fails, never skips, without Redis
	names := mainPackages(t)
	for _, name := range names {
		if programs[name] == nil {
			t.Fatalf("examples/%s has no test: add it to programs", name)
		}
	}
	bins := build(t, names...)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("serve and SIGTERM", func(t *testing.T) {
				t.Parallel()
				programs[name](t, bins[name], redisAddr)
			})
			t.Run("port in use", func(t *testing.T) {
				t.Parallel()
				portInUse(t, bins[name], redisAddr)
			})
		})
	}
}

// serveWebSockets runs a WebSocket quick start on a free port, connects a
// client to a room of its own, waits for /presence to count it, sends
// SIGTERM, and checks that the client is closed with 1001, that the
// program exits with status 0, and that its count has left Redis.
func serveWebSockets(t *testing.T, bin, redisAddr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := start(t, bin, "-redis", redisAddr, "-addr", "127.0.0.1:0")
	base := "http://" + p.addr()
	p.poll("to answer /presence", startWait, func() (bool, string) {
		code, err := getJSON(ctx, base+"/presence", nil)
		return err == nil && code == http.StatusOK, fmt.Sprintf("HTTP %d, %v", code, err)
	})

	room := redistest.Prefix(t)
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws/"+room, nil)
	if err != nil {
		t.Fatalf("dial /ws/%s: %v", room, err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "hello" {
		t.Fatalf("echo: %q, %v; want \"hello\"", msg, err)
	}

	// The echo proves that the handler runs, so the adapter's Accept has
	// returned, and with strict counting (wsconn's default, which the
	// quick starts keep) Accept returns only once Redis holds the count:
	// the first read already sees it. The poll also covers lax counting,
	// where the count reaches Redis within FlushInterval (20 ms) plus a
	// round trip; countWait is hundreds of times either, so running out of
	// it means the count is wrong, not late.
	want := wsconn.Count{Total: 1, Local: 1}
	p.poll("to count the client in /presence", countWait, func() (bool, string) {
		var presence struct{ Rooms map[string]wsconn.Count }
		code, err := getJSON(ctx, base+"/presence?room="+room, &presence)
		got := presence.Rooms[room]
		return err == nil && code == http.StatusOK && got == want,
			fmt.Sprintf("HTTP %d, %v, room %+v, want %+v", code, err, got, want)
	})

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The server shuts down first, leaving the hijacked connection; then
	// tracker.Shutdown closes it with 1001 (going away).
	rctx, rcancel := context.WithTimeout(ctx, exitWait)
	defer rcancel()
	if _, _, err := ws.Read(rctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("after SIGTERM the client reads %v, want a close with 1001", err)
	}
	if code := p.exit(exitWait); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	// tracker.Shutdown removed the program's slice at once: the room is
	// empty now, not one dead-instance threshold (30 s) later.
	tr, err := wsconn.New(redistest.Standalone(t), wsconn.Options{}) // the programs' namespace
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close(context.Background())
	if got, err := tr.Count(ctx, room); err != nil || got != (wsconn.Count{}) {
		t.Fatalf("room after exit: %+v, %v; want 0", got, err)
	}
}

// serveCounter runs two processes of the counter quick start, adds views
// of a page through one and reads them through the other, then stops both
// with SIGTERM and checks that they exit with status 0.
func serveCounter(t *testing.T, bin, redisAddr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	page := redistest.Prefix(t)
	type views struct {
		Page  string
		Views int64
	}
	var bases []string
	var procs []*proc
	for range 2 {
		p := start(t, bin, "-redis", redisAddr, "-addr", "127.0.0.1:0")
		base := "http://" + p.addr()
		p.poll("to answer /views", startWait, func() (bool, string) {
			var got views
			code, err := getJSON(ctx, base+"/views/"+page, &got)
			return err == nil && code == http.StatusOK && got == views{page, 0},
				fmt.Sprintf("HTTP %d, %v, %+v", code, err, got)
		})
		procs, bases = append(procs, p), append(bases, base)
	}
	for i := range int64(2) {
		var got views
		code, err := postJSON(ctx, bases[0]+"/hit/"+page, &got)
		if err != nil || code != http.StatusOK || got != (views{page, i + 1}) {
			t.Fatalf("POST /hit: HTTP %d, %v, %+v; want %d views", code, err, got, i+1)
		}
	}
	// A shared counter is strict: the POST answered once Redis held the
	// view, so the other process reads both at once, with no poll.
	var got views
	if code, err := getJSON(ctx, bases[1]+"/views/"+page, &got); err != nil || code != http.StatusOK || got != (views{page, 2}) {
		t.Fatalf("GET /views from the other process: HTTP %d, %v, %+v; want 2 views", code, err, got)
	}
	for _, p := range procs {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		if code := p.exit(exitWait); code != 0 {
			t.Fatalf("exit status %d after SIGTERM, want 0", code)
		}
	}
}

// portInUse runs the program on a port that is taken and checks that it
// exits with a non-zero status and says why.
func portInUse(t *testing.T, bin, redisAddr string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := start(t, bin, "-redis", redisAddr, "-addr", ln.Addr().String())
	if code := p.exit(startWait); code == 0 {
		t.Fatal("exit status 0 on a port in use")
	}
	out := p.out.String()
	for _, want := range []string{"listen tcp " + ln.Addr().String(), syscall.EADDRINUSE.Error()} {
		if !strings.Contains(out, want) {
			t.Fatalf("output %q does not say %q", out, want)
		}
	}
}

// build compiles the named programs (directories of examples/) with one go
// build into a temporary directory, and returns their paths by name.
func build(t *testing.T, names ...string) map[string]string {
	t.Helper()
	gobin, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		t.Fatalf("no go tool to build the examples: %v", err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	bins := make(map[string]string, len(names))
	for _, name := range names {
		args = append(args, "./"+name)
		bins[name] = filepath.Join(dir, name)
	}
	start := time.Now()
	if out, err := exec.Command(gobin, args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built %s in %v", strings.Join(names, ", "), time.Since(start).Round(time.Millisecond))
	return bins
}

// proc is a running program.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  output        // its stdout and stderr
	done chan struct{} // closed once it has exited and been reaped
}

// start runs bin with args; the program is killed, if still running, when
// the test ends, and its output logged if the test failed.
func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := redistest.StartChild(p.cmd); err != nil { // dies with the test binary
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

var listeningRE = regexp.MustCompile(`listening on (127\.0\.0\.1:[0-9]+)`)

// addr waits until the program says where it listens, and returns it.
func (p *proc) addr() string {
	p.t.Helper()
	var addr string
	p.poll("to print where it listens", startWait, func() (bool, string) {
		if m := listeningRE.FindStringSubmatch(p.out.String()); m != nil {
			addr = m[1]
			return true, ""
		}
		return false, "not yet"
	})
	return addr
}

// poll calls cond every 10 ms until it holds, and fails the test if the
// program exits first or wait runs out; cond also describes what it saw.
func (p *proc) poll(what string, wait time.Duration, cond func() (bool, string)) {
	p.t.Helper()
	end := time.Now().Add(wait)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("waiting for the program %s: it exited (%v); last: %s", what, p.cmd.ProcessState, saw)
		default:
		}
		if time.Now().After(end) {
			p.t.Fatalf("waited %v for the program %s; last: %s", wait, what, saw)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exit waits at most wait for the program to exit, and returns its exit
// status.
func (p *proc) exit(wait time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(wait):
		p.t.Fatalf("the program has not exited within %v", wait)
		return 0
	}
}

// output collects a program's output.
type output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(b)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// getJSON GETs url and, if v is not nil, decodes the JSON body into it.
func getJSON(ctx context.Context, url string, v any) (int, error) {
	return doJSON(ctx, http.MethodGet, url, v)
}

// postJSON POSTs to url, with no body, and decodes the JSON answer into v.
func postJSON(ctx context.Context, url string, v any) (int, error) {
	return doJSON(ctx, http.MethodPost, url, v)
}

func doJSON(ctx context.Context, method, url string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if v == nil || resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(v)
}

// Quick start regions: the lines of a program's main.go between these
// markers are, verbatim, a code block of the README.
const (
	startMarker = "// quickstart:start"
	endMarker   = "// quickstart:end"
)

// region returns the quick start region of examples/name/main.go, without
// its leading and trailing blank lines.
func region(t *testing.T, name string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(name, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(src), "\n")
	var from, to []int
	for i, l := range lines {
		switch strings.TrimSpace(l) {
		case startMarker:
			from = append(from, i)
		case endMarker:
			to = append(to, i)
		}
	}
	if len(from) != 1 || len(to) != 1 || from[0] > to[0] {
		t.Fatalf("examples/%s/main.go: want one %q line and, after it, one %q line", name, startMarker, endMarker)
	}
	return strings.Trim(strings.Join(lines[from[0]+1:to[0]], "\n"), "\n")
}

// mainPackages are the directories of examples/ that hold a main.go.
func mainPackages(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("*", "main.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples/*/main.go: %v", err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Dir(f))
	}
	return names
}

// readmeBlock is a Go code block of the README and the text before it
// (since the previous block).
type readmeBlock struct {
	line         int // of the opening ```go, 1-based
	before, code string
}

// quickStartBlocks returns the Go code blocks of the README's Quick start
// section.
func quickStartBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []readmeBlock
	var before, code []string
	inSection, inCode, opened := false, false, 0
	for i, l := range strings.Split(string(readme), "\n") {
		switch {
		case strings.HasPrefix(l, "## "):
			if inSection {
				return blocks
			}
			inSection = l == "## Quick start"
		case !inSection:
		case inCode && l == "```":
			blocks = append(blocks, readmeBlock{opened, strings.Join(before, "\n"), strings.Join(code, "\n")})
			inCode, before, code = false, nil, nil
		case inCode:
			code = append(code, l)
		case l == "```go":
			inCode, opened = true, i+1
		default:
			before = append(before, l)
		}
	}
	if !inSection {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	return blocks
}

var programLinkRE = regexp.MustCompile(`examples/([a-z0-9]+)/main\.go`)

// TestReadmeQuickStarts keeps the README and the programs in step: every
// Go code block of the README's Quick start section must be the quick
// start region of the program the text before it last names
// (examples/NAME/main.go), and every program's region must be in the
// section.
func TestReadmeQuickStarts(t *testing.T) {
	blocks := quickStartBlocks(t)
	inReadme := map[string]bool{}
	for _, b := range blocks {
		m := programLinkRE.FindAllStringSubmatch(b.before, -1)
		if m == nil {
			t.Errorf("README.md:%d: no examples/NAME/main.go in the text before this Quick start block", b.line)
			continue
		}
		name := m[len(m)-1][1]
		inReadme[name] = true
		if want := region(t, name); b.code != want {
			t.Errorf("README.md:%d: the block differs from the quick start of examples/%s/main.go %s; replace it with the lines between the markers:\n%s",
				b.line, name, firstDiff("README", b.code, "file", want), want)
		}
	}
	for _, name := range mainPackages(t) {
		if !inReadme[name] {
			t.Errorf("examples/%s/main.go has no block in the README's Quick start section", name)
		}
	}
}

// firstDiff describes where a, named aName, first differs from b.
func firstDiff(aName, a, bName, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("at its line %d: %s %q, %s %q", i+1, aName, al[i], bName, bl[i])
		}
	}
	return fmt.Sprintf("in length: %s %d lines, %s %d", aName, len(al), bName, len(bl))
}

// TestQuickStartsShareCode: the README shows main and run once, with
// net/http, then only what differs (routes for the other adapters, run and
// routes for the counter), so main must be the same text in every program,
// and run in every WebSocket one.
func TestQuickStartsShareCode(t *testing.T) {
	const ref = "nethttp"
	for _, name := range mainPackages(t) {
		fns := []string{"main"}
		if slices.Contains(quickStarts, name) {
			fns = append(fns, "run")
		}
		if got, want := funcs(t, name, fns...), funcs(t, ref, fns...); got != want {
			t.Errorf("examples/%s/main.go: %s differ from examples/%s/main.go's %s",
				name, strings.Join(fns, " and "), ref, firstDiff(name, got, ref, want))
		}
	}
}

// funcs returns the source of the named functions of examples/name/main.go,
// doc comments included, in order.
func funcs(t *testing.T, name string, fns ...string) string {
	t.Helper()
	path := filepath.Join(name, "main.go")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	decls := map[string]*ast.FuncDecl{}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
			decls[fd.Name.Name] = fd
		}
	}
	var parts []string
	for _, fn := range fns {
		d := decls[fn]
		if d == nil {
			t.Fatalf("%s: no func %s", path, fn)
		}
		from := d.Pos()
		if d.Doc != nil {
			from = d.Doc.Pos()
		}
		parts = append(parts, string(src[fset.Position(from).Offset:fset.Position(d.End()).Offset]))
	}
	return strings.Join(parts, "\n\n")
}
