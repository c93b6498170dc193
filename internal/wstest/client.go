// Package wstest is the WebSocket client of the tests that drive a tracked
// server (wsconn's and the adapters'): a real coder/websocket client that
// can also drop its TCP connection without a close frame.
package wstest

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Client is a test client whose TCP connection can be dropped.
type Client struct {
	WS  *websocket.Conn
	raw net.Conn
}

// Ctx returns a context for one test's client calls, ended with the test.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Dial connects to url (ws://).
func Dial(ctx context.Context, url string) (*Client, *http.Response, error) {
	var raw atomic.Pointer[net.Conn]
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			raw.Store(&c)
		}
		return c, err
	}}
	defer tr.CloseIdleConnections()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		return nil, resp, err
	}
	return &Client{WS: ws, raw: *raw.Load()}, resp, nil
}

// MustDial connects, closes the connection when the test ends, and makes
// one echo round trip, which proves the server's Accept has returned (and,
// strict, counted the connection).
func MustDial(t testing.TB, url string) *Client {
	t.Helper()
	c, resp, err := Dial(Ctx(t), url)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, code)
	}
	t.Cleanup(func() { _ = c.WS.CloseNow() })
	c.RoundTrip(t)
	return c
}

// RoundTrip sends a message and waits for its echo.
func (c *Client) RoundTrip(t testing.TB) {
	t.Helper()
	ctx := Ctx(t)
	if err := c.WS.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, b, err := c.WS.Read(ctx); err != nil || string(b) != "ping" {
		t.Fatalf("echo: %q, %v", b, err)
	}
}

// DropTCP closes the TCP connection under the client without a close
// frame: with a reset (RST) if reset, else with a FIN.
func (c *Client) DropTCP(reset bool) {
	if tc, ok := c.raw.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = c.raw.Close()
}

// Send writes msg (the test servers act on "close", "panic"...).
func (c *Client) Send(t testing.TB, msg string) {
	t.Helper()
	if err := c.WS.Write(Ctx(t), websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
}

// CloseStatus reads until the connection ends and returns the close code
// the server sent, -1 if none.
func (c *Client) CloseStatus(t testing.TB) websocket.StatusCode {
	t.Helper()
	for {
		if _, _, err := c.WS.Read(Ctx(t)); err != nil {
			return websocket.CloseStatus(err)
		}
	}
}
