package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/headcount-go/headcount/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// buildDemo builds this package's binary. Not with -race: three
// race-enabled nodes would load the machine's two cores while other
// packages' timing-sensitive tests run; TestNodeInProcess runs the node
// under the race detector instead.
func buildDemo(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		t.Fatalf("no go tool to build the demo: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "demo")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// demoProc is a demo process started by a test.
type demoProc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	url  string // from the line the demo prints: what to open
	out  *lockedBuffer
	done chan struct{}
}

var openLine = regexp.MustCompile(`^headcount demo: .*open (http://\S+)/$`)

// startDemo runs bin with args and waits until it prints the URL to open.
// The process is killed, if still running, when the test ends; its output
// is logged if the test failed.
func startDemo(t *testing.T, bin, name string, args ...string) *demoProc {
	t.Helper()
	p := &demoProc{t: t, name: name, cmd: exec.Command(bin, args...), out: &lockedBuffer{}, done: make(chan struct{})}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = nodeProcAttr() // and SIGTERM if the test binary dies
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.out.Write([]byte(line + "\n"))
			if m := openLine.FindStringSubmatch(line); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.out.String())
		}
	})
	select {
	case p.url = <-urls:
	case <-p.done:
		t.Fatalf("%s exited at start: %v\n%s", name, p.cmd.ProcessState, p.out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s printed no URL in 30s:\n%s", name, p.out.String())
	}
	return p
}

func (p *demoProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process and, for SIGTERM, waits for it to exit
// and checks it exited 0.
func (p *demoProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("%s did not exit within 20s of %v", p.name, sig)
	}
	if sig == syscall.SIGTERM && p.cmd.ProcessState.ExitCode() != 0 {
		p.t.Fatalf("%s exited with %v after SIGTERM, want 0", p.name, p.cmd.ProcessState)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// presence is the JSON of GET /api/presence.
type presence struct {
	Instance string           `json:"instance"`
	Total    count            `json:"total"`
	Rooms    map[string]count `json:"rooms"`
}

type count struct {
	Total int64 `json:"total"`
	Local int64 `json:"local"`
}

func (c count) String() string { return fmt.Sprintf("%d/%d", c.Total, c.Local) }

// getPresence asks base (a node, or a proxied node) for rooms.
func getPresence(base string, rooms ...string) (presence, error) {
	q := url.Values{"room": rooms}
	body, code, err := get(base + "/api/presence?" + q.Encode())
	if err != nil {
		return presence{}, err
	}
	if code != http.StatusOK {
		return presence{}, fmt.Errorf("GET presence: %d %s", code, body)
	}
	var p presence
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		return presence{}, fmt.Errorf("presence %s: %w", body, err)
	}
	return p, nil
}

func get(u string) (body string, code int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}

// eventually polls f until it returns nil, and returns how long that took;
// it fails the test with f's last error after within.
func eventually(t *testing.T, within time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chatter is a chat client.
type chatter struct {
	t    *testing.T
	name string
	ws   *websocket.Conn
}

// dial connects user to room at base (http://...), with tenant if not "",
// and reads its welcome, which says the node's instance.
func dial(t *testing.T, base, room, user, tenant string) *chatter {
	t.Helper()
	ws, resp, err := dialWS(base, room, user, tenant)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("dial %s as %s: %v (HTTP %d)", room, user, err, code)
	}
	c := &chatter{t: t, name: user, ws: ws}
	t.Cleanup(func() { _ = ws.CloseNow() })
	if ev := c.next("welcome"); ev.Room != room || ev.User != user {
		t.Fatalf("welcome %+v: want room %q user %q", ev, room, user)
	}
	return c
}

func dialWS(base, room, user, tenant string) (*websocket.Conn, *http.Response, error) {
	q := url.Values{"user": {user}}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws/" + url.PathEscape(room) + "?" + q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return websocket.Dial(ctx, u, nil)
}

// next reads events until one of type typ, and returns it.
func (c *chatter) next(typ string) event {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			c.t.Fatalf("%s waiting for a %s event: %v", c.name, typ, err)
		}
		var ev event
		if err := json.Unmarshal(data, &ev); err != nil {
			c.t.Fatalf("%s: event %s: %v", c.name, data, err)
		}
		if ev.Type == typ {
			return ev
		}
	}
}

func (c *chatter) say(text string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
		c.t.Fatalf("%s says %q: %v", c.name, text, err)
	}
}

// closed waits until the server closes the connection, and returns how.
func (c *chatter) closed() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if _, _, err := c.ws.Read(ctx); err != nil {
			return err
		}
	}
}
