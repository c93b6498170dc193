// Command browser drives headless Chromium through chromedriver (the W3C
// WebDriver protocol, plain JSON over HTTP) through the demo's page served
// with -nodes 2: it joins a room on node1 as alice, chats, opens 5 bot
// connections on node2, joins the room as bob on node2 in a second tab,
// and saves a screenshot once alice's tab shows them all (counts, members,
// "bob joined"); then it crashes node2 and saves one while the crashed
// node's connections are still counted, and one once alice's chat shows
// "bob left: node crashed" (the presence event of the sweep), which it
// must within the dead-instance threshold plus a heartbeat plus a few
// seconds, and the counts are reaped. Run by demo/e2e/browser.sh (make
// e2e-browser).
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	pageURL := flag.String("url", "", "the demo page, served with -nodes 2")
	out := flag.String("out", "demo/e2e/out", "directory for the screenshots")
	chromium := flag.String("chromium", "/usr/bin/chromium", "Chromium binary")
	driver := flag.String("chromedriver", "/usr/bin/chromedriver", "chromedriver binary")
	timeout := flag.Duration("timeout", 90*time.Second, "give up after this long")
	flag.Parse()
	if *pageURL == "" {
		log.Fatal("-url is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *pageURL, *out, *chromium, *driver); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, pageURL, out, chromium, driverPath string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	profile, err := os.MkdirTemp("", "headcount-chromium-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	d, err := startDriver(ctx, driverPath)
	if err != nil {
		return err
	}
	defer d.stop()
	s, err := d.newSession(ctx, chromium, []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile, "--window-size=1400,1000",
	})
	if err != nil {
		return err
	}
	defer s.close()

	if err := s.do(ctx, "POST", "/url", map[string]any{"url": pageURL}, nil); err != nil {
		return err
	}
	log.Print("page loaded; waiting for the node list")
	if err := s.waitJS(ctx, `return document.querySelectorAll("#node option").length == 2`); err != nil {
		return fmt.Errorf("the page did not list 2 nodes (run the demo with -nodes 2): %w", err)
	}
	for _, f := range []struct{ css, text string }{{"#room", "lobby"}, {"#name", "alice"}} {
		if err := s.typeInto(ctx, f.css, f.text); err != nil {
			return err
		}
	}
	if err := s.clickAll(ctx, []step{
		{"select node1", `#node option[value="1"]`},
		{"join", "#join-btn"},
	}); err != nil {
		return err
	}
	if err := s.waitJS(ctx, `return !document.getElementById("text").disabled`); err != nil {
		return fmt.Errorf("joining: %w (status: %s)", err, s.text(ctx, "#status"))
	}
	if err := s.typeInto(ctx, "#text", "hello from headless Chromium"); err != nil {
		return err
	}
	if err := s.clickAll(ctx, []step{
		{"send", "#send-btn"},
		{"select node2", `#node option[value="2"]`},
		{"add 5 bots", "#bots-btn"},
	}); err != nil {
		return err
	}

	// bob, in a tab of his own, is on node2 alone.
	alice, err := s.window(ctx)
	if err != nil {
		return err
	}
	bob, err := s.newTab(ctx)
	if err != nil {
		return err
	}
	bobURL, err := withQuery(pageURL, map[string]string{"room": "lobby", "name": "bob", "node": "2", "autojoin": "1"})
	if err != nil {
		return err
	}
	if err := s.do(ctx, "POST", "/url", map[string]any{"url": bobURL}, nil); err != nil {
		return err
	}
	if err := s.waitJS(ctx, `return !document.getElementById("text").disabled`); err != nil {
		return fmt.Errorf("bob joining on node2: %w (status: %s)", err, s.text(ctx, "#status"))
	}
	log.Printf("bob joined lobby on node2 in a second tab (%s)", bob)
	if err := s.switchTo(ctx, alice); err != nil {
		return err
	}

	log.Print("waiting for alice's tab: 7 in lobby, 1 on node1, 6 on node2; bob among the members, and his join in the chat")
	if err := s.waitJS(ctx, `
		const row = [...document.querySelectorAll("#rooms-body tr")].find(r => r.cells[0].textContent.startsWith("lobby"));
		const lobby = document.querySelector('#members .members[data-room="lobby"]');
		return document.getElementById("total-n").textContent === "7" && !!row &&
			row.cells[1].textContent === "7" && row.cells[2].textContent === "1" && row.cells[3].textContent === "6" &&
			!!lobby && lobby.textContent.includes("7 users") && lobby.textContent.includes("bob") &&
			document.getElementById("log").textContent.includes("hello from headless Chromium") &&
			[...document.querySelectorAll("#log li.presence.join b")].some(b => b.textContent === "bob")`); err != nil {
		return fmt.Errorf("counts and members: %w; the page shows: %s; chat: %s", err, s.text(ctx, "#counts-panel"), s.text(ctx, "#log"))
	}
	if err := s.screenshot(ctx, filepath.Join(out, "1-joined.png")); err != nil {
		return err
	}

	in, err := getInfo(ctx, pageURL)
	if err != nil {
		return err
	}
	// wsconn's promise: a crashed node's users leave within the threshold
	// plus a heartbeat (plus about a second); a few more for the page.
	leaveWithin := time.Duration(in.ThresholdMS+in.HeartbeatMS)*time.Millisecond + 3*time.Second
	log.Print("crashing node2 from the page")
	crashed := time.Now()
	if err := s.clickAll(ctx, []step{{"crash node2", ".node:nth-child(2) button"}}); err != nil {
		return err
	}
	if err := s.waitJS(ctx, `return !document.getElementById("ghosts").hidden && document.getElementById("total-n").textContent === "7"`); err != nil {
		return fmt.Errorf("after the crash: %w; the page shows: %s", err, s.text(ctx, "#counts-panel"))
	}
	if err := s.screenshot(ctx, filepath.Join(out, "2-crashed.png")); err != nil {
		return err
	}
	log.Printf("waiting for \"bob left: node crashed\" in alice's chat (at most %v after the crash), and the reap", leaveWithin)
	lctx, cancel := context.WithDeadline(ctx, crashed.Add(leaveWithin))
	defer cancel()
	if err := s.waitJS(lctx, `
		return [...document.querySelectorAll("#log li.presence.leave.crashed")].some(li =>
			li.querySelector("b").textContent === "bob" && li.textContent.includes("left: node crashed"))`); err != nil {
		return fmt.Errorf("bob's crash leave not in alice's chat within %v of the crash: %w; chat: %s", leaveWithin, err, s.text(ctx, "#log"))
	}
	log.Printf("alice's chat shows \"bob left: node crashed\" %v after the crash", time.Since(crashed).Round(time.Millisecond))
	if err := s.waitJS(ctx, `
		const lobby = document.querySelector('#members .members[data-room="lobby"]');
		return document.getElementById("ghosts").hidden && document.getElementById("total-n").textContent === "1" &&
			!!lobby && lobby.textContent.includes("1 user") && !lobby.textContent.includes("bob")`); err != nil {
		return fmt.Errorf("reap: %w; the page shows: %s", err, s.text(ctx, "#counts-panel"))
	}
	return s.screenshot(ctx, filepath.Join(out, "3-reaped.png"))
}

// info is what the page's /api/info says of the timings.
type info struct {
	ThresholdMS int64 `json:"threshold_ms"`
	HeartbeatMS int64 `json:"heartbeat_ms"`
}

func getInfo(ctx context.Context, pageURL string) (info, error) {
	u, err := url.JoinPath(pageURL, "api/info")
	if err != nil {
		return info{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return info{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return info{}, err
	}
	defer resp.Body.Close()
	var in info
	if resp.StatusCode != http.StatusOK {
		return info{}, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil || in.ThresholdMS <= 0 {
		return info{}, fmt.Errorf("GET %s: %v, threshold %dms", u, err, in.ThresholdMS)
	}
	return in, nil
}

// withQuery is u with the parameters q set.
func withQuery(u string, q map[string]string) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	v := p.Query()
	for k, x := range q {
		v.Set(k, x)
	}
	p.RawQuery = v.Encode()
	return p.String(), nil
}

// driver is a chromedriver process.
type driver struct {
	cmd  *exec.Cmd
	base string
}

func startDriver(ctx context.Context, path string) (*driver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(path, "--port="+strconv.Itoa(port))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("chromedriver: %w", err)
	}
	d := &driver{cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	for {
		if resp, err := http.Get(d.base + "/status"); err == nil {
			resp.Body.Close()
			return d, nil
		}
		select {
		case <-ctx.Done():
			d.stop()
			return nil, fmt.Errorf("chromedriver did not start: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *driver) stop() {
	_ = d.cmd.Process.Kill()
	_ = d.cmd.Wait()
}

// call sends one WebDriver command and decodes its "value" into out.
func call(ctx context.Context, method, url string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var reply struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		return fmt.Errorf("%s %s: %s: %w", method, url, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, reply.Value)
	}
	if out != nil {
		return json.Unmarshal(reply.Value, out)
	}
	return nil
}

// session is a browser session.
type session struct {
	base string // .../session/{id}
}

func (d *driver) newSession(ctx context.Context, chromium string, args []string) (*session, error) {
	var v struct {
		SessionID string `json:"sessionId"`
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":        "chrome",
		"goog:chromeOptions": map[string]any{"binary": chromium, "args": args},
	}}}
	if err := call(ctx, "POST", d.base+"/session", caps, &v); err != nil {
		return nil, fmt.Errorf("starting Chromium: %w", err)
	}
	return &session{base: d.base + "/session/" + v.SessionID}, nil
}

func (s *session) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = call(ctx, "DELETE", s.base, nil, nil)
}

func (s *session) do(ctx context.Context, method, path string, body, out any) error {
	return call(ctx, method, s.base+path, body, out)
}

// window is the handle of the current tab.
func (s *session) window(ctx context.Context) (string, error) {
	var h string
	err := s.do(ctx, "GET", "/window", nil, &h)
	return h, err
}

// newTab opens a tab and switches to it.
func (s *session) newTab(ctx context.Context) (string, error) {
	var v struct {
		Handle string `json:"handle"`
	}
	if err := s.do(ctx, "POST", "/window/new", map[string]string{"type": "tab"}, &v); err != nil {
		return "", fmt.Errorf("new tab: %w", err)
	}
	return v.Handle, s.switchTo(ctx, v.Handle)
}

func (s *session) switchTo(ctx context.Context, handle string) error {
	return s.do(ctx, "POST", "/window", map[string]string{"handle": handle}, nil)
}

// find returns the WebDriver ID of the element matching css.
func (s *session) find(ctx context.Context, css string) (string, error) {
	var v map[string]string
	if err := s.do(ctx, "POST", "/element", map[string]string{"using": "css selector", "value": css}, &v); err != nil {
		return "", fmt.Errorf("finding %s: %w", css, err)
	}
	for _, id := range v {
		return id, nil
	}
	return "", fmt.Errorf("finding %s: no element", css)
}

func (s *session) typeInto(ctx context.Context, css, text string) error {
	id, err := s.find(ctx, css)
	if err != nil {
		return err
	}
	if err := s.do(ctx, "POST", "/element/"+id+"/clear", map[string]any{}, nil); err != nil {
		return err
	}
	return s.do(ctx, "POST", "/element/"+id+"/value", map[string]string{"text": text}, nil)
}

// step is a click on the element matching css.
type step struct{ what, css string }

func (s *session) clickAll(ctx context.Context, steps []step) error {
	for _, st := range steps {
		id, err := s.find(ctx, st.css)
		if err == nil {
			err = s.do(ctx, "POST", "/element/"+id+"/click", map[string]any{}, nil)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", st.what, err)
		}
	}
	return nil
}

// text is the visible text of the element matching css, for error messages.
func (s *session) text(ctx context.Context, css string) string {
	id, err := s.find(ctx, css)
	if err != nil {
		return err.Error()
	}
	var t string
	if err := s.do(ctx, "GET", "/element/"+id+"/text", nil, &t); err != nil {
		return err.Error()
	}
	return strings.Join(strings.Fields(t), " ")
}

// waitJS polls script (a function body returning a boolean) until it
// returns true.
func (s *session) waitJS(ctx context.Context, script string) error {
	for {
		var ok bool
		err := s.do(ctx, "POST", "/execute/sync", map[string]any{"script": script, "args": []any{}}, &ok)
		if err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(errors.New("timed out waiting for the page"), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *session) screenshot(ctx context.Context, path string) error {
	var b64 string
	if err := s.do(ctx, "GET", "/screenshot", nil, &b64); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return err
	}
	log.Printf("saved %s", path)
	return nil
}
