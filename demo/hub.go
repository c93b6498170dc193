package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// event is what chat clients receive, as one JSON text message each:
//
//	{"type":"message","room":"lobby","user":"ann","instance":"node1","text":"hi","time":"…"}
//
// type is "message" (a client's text), "join" or "leave" (a client came or
// went, on any node), or "welcome" (sent to a new client alone, once it
// receives every later event of its room). instance is the node of the
// client the event is about.
type event struct {
	Type     string    `json:"type"`
	Room     string    `json:"room"`
	User     string    `json:"user,omitempty"`
	Instance string    `json:"instance"`
	Text     string    `json:"text,omitempty"`
	Time     time.Time `json:"time"`
}

// clientBuffer is how many events may wait for a slow client; more are
// dropped for that client.
const clientBuffer = 64

// hub relays chat events between the nodes through Redis pub/sub: one
// channel per room, "<namespace>:chat:<room>". Each node subscribes once,
// at start, to the pattern of all of them, and hands each event to its own
// clients of that room; so a client that got its welcome misses nothing.
type hub struct {
	rdb    redis.UniversalClient
	prefix string
	ps     *redis.PubSub
	log    *slog.Logger
	done   chan struct{}

	mu    sync.Mutex
	rooms map[string]map[*client]struct{}
}

// client is one chat connection's mailbox.
type client struct {
	room string
	send chan []byte
}

// newHub subscribes to the chat channels of namespace and waits for Redis
// to confirm, so that a wrong -redis fails at start with a clear error.
func newHub(ctx context.Context, rdb redis.UniversalClient, namespace string, log *slog.Logger) (*hub, error) {
	h := &hub{
		rdb:    rdb,
		prefix: namespace + ":chat:",
		log:    log,
		done:   make(chan struct{}),
		rooms:  make(map[string]map[*client]struct{}),
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	h.ps = rdb.PSubscribe(ctx, h.prefix+"*")
	if _, err := h.ps.Receive(ctx); err != nil {
		_ = h.ps.Close()
		return nil, fmt.Errorf("subscribing to the chat channels: %w", err)
	}
	go h.run(h.ps.Channel())
	return h, nil
}

func (h *hub) run(ch <-chan *redis.Message) {
	defer close(h.done)
	for msg := range ch {
		room := strings.TrimPrefix(msg.Channel, h.prefix)
		h.deliver(room, []byte(msg.Payload))
	}
}

func (h *hub) deliver(room string, payload []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.rooms[room] {
		select {
		case c.send <- payload:
		default:
			h.log.Warn("chat: client too slow, event dropped", "room", room)
		}
	}
}

// join registers a client of room, with first waiting in its mailbox; after
// first it receives every event of the room published from now on.
func (h *hub) join(room string, first []byte) *client {
	c := &client{room: room, send: make(chan []byte, clientBuffer)}
	c.send <- first
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rooms[room] == nil {
		h.rooms[room] = make(map[*client]struct{})
	}
	h.rooms[room][c] = struct{}{}
	return c
}

// leave unregisters c.
func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.rooms[c.room], c)
	if len(h.rooms[c.room]) == 0 {
		delete(h.rooms, c.room)
	}
}

// publish sends ev to every client of its room, on every node.
func (h *hub) publish(ctx context.Context, ev event) error {
	payload, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return h.rdb.Publish(ctx, h.prefix+ev.Room, payload).Err()
}

// close ends the subscription.
func (h *hub) close() {
	_ = h.ps.Close()
	<-h.done
}
