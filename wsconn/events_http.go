package wsconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// sseKeepAlive is how often an idle event stream sends a comment, so that
// proxies do not close it.
const sseKeepAlive = 15 * time.Second

// sseWriteTimeout bounds each write to an event stream: a client that does
// not take an event within it is dropped (and resumes, reconnecting), so
// that it holds neither the Watch nor a shutdown.
const sseWriteTimeout = 10 * time.Second

// EventsHandler serves the presence of rooms as Server-Sent Events (see
// Watch; with all=1 instead of rooms, of every room: see WatchAll, which
// needs PresenceOptions.WatchAll and Visible(r, "all", "")):
//
//	GET ?room=a&room=b
//	id: a=41&b=7
//	event: snapshot
//	data: {"room":"a","seq":41,"kind":"snapshot","members":{…}}
//
//	id: a=42&b=7
//	event: join
//	data: {"room":"a","seq":42,"kind":"join","user":"ann","reason":"closed","node":"…","meta":"Ann"}
//
// Each event's id is the last sequence seen of every room (with all=1, of
// the rooms changed last: at most 1,000, in at most 8 KiB), so that a
// browser's EventSource, reconnecting with Last-Event-ID, resumes with no
// gap and no duplicate (or gets a new snapshot of a room whose events
// Redis no longer keeps, or the id does not name). A ?last_event_id= parameter does the same for
// clients that cannot set the header. A client that does not take an event
// within 10 seconds is dropped; it resumes when it reconnects. It needs
// Options.Presence (else 400) and PresenceOptions.Visible: a room it
// refuses, or any room without it, gets 403 before any Redis call. Invalid
// room names, or more than MaxWatchRooms rooms, get 400, Redis not
// answering in time 503.
//
// A stream lasts until the client goes, or EndStreams, Drain or Close is
// called; one they end before its first event is still a (empty) 200
// event stream, which a browser's EventSource reconnects from.
// http.Server.Shutdown waits for open streams: register EndStreams with
// http.Server.RegisterOnShutdown.
func (t *Tracker) EventsHandler() http.Handler { return http.HandlerFunc(t.serveEvents) }

// EndStreams ends every open EventsHandler stream (browsers reconnect,
// with Last-Event-ID, elsewhere); later requests are served as before.
func (t *Tracker) EndStreams() {
	t.streamsMu.Lock()
	if t.streamsEnd != nil {
		close(t.streamsEnd)
	}
	t.streamsEnd = make(chan struct{})
	t.streamsMu.Unlock()
}

func (t *Tracker) streamsDone() <-chan struct{} {
	t.streamsMu.Lock()
	defer t.streamsMu.Unlock()
	if t.streamsEnd == nil {
		t.streamsEnd = make(chan struct{})
	}
	return t.streamsEnd
}

func (t *Tracker) serveEvents(w http.ResponseWriter, r *http.Request) {
	// Taken first: an EndStreams during the checks below ends this
	// stream too.
	end := t.streamsDone()
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeJSONError(w, http.StatusMethodNotAllowed, errors.New("method not allowed"))
		return
	}
	q, err := query(r)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err)
		return
	}
	all := q.Get("all") == "1"
	rooms := q["room"]
	slices.Sort(rooms)
	rooms = slices.Compact(rooms)
	for _, room := range rooms {
		if err := checkName("room", room); err != nil {
			writeJSONError(w, http.StatusBadRequest, err)
			return
		}
	}
	if t.cfg.Presence == nil {
		writeJSONError(w, http.StatusBadRequest, ErrPresenceOff)
		return
	}
	switch {
	case all && len(rooms) > 0:
		writeJSONError(w, http.StatusBadRequest, errors.New("all=1 and room= together"))
		return
	case all && !t.cfg.Presence.WatchAll:
		writeJSONError(w, http.StatusBadRequest, errors.New("all=1 needs PresenceOptions.WatchAll"))
		return
	case !all && (len(rooms) == 0 || len(rooms) > MaxWatchRooms):
		writeJSONError(w, http.StatusBadRequest, fmt.Errorf("%d rooms: want 1 to %d", len(rooms), MaxWatchRooms))
		return
	case t.cfg.Presence.Visible == nil:
		writeJSONError(w, http.StatusForbidden, fmt.Errorf("%w: events need PresenceOptions.Visible", ErrNotVisible))
		return
	case all && !t.cfg.Presence.Visible(r, "all", ""):
		writeJSONError(w, http.StatusForbidden, fmt.Errorf("%w: every room", ErrNotVisible))
		return
	}
	if err := t.visible(r, true, rooms, nil, nil); err != nil {
		writeJSONError(w, httpStatus(err), err)
		return
	}
	if !unwrapsTo[http.Flusher](w) {
		writeJSONError(w, http.StatusInternalServerError, errors.New("streaming unsupported by this ResponseWriter"))
		return
	}
	last := parseLastEventID(r, rooms, all)
	resume := newResumePoint(last, all) // Watch and WatchAll only read last
	started := false
	rc := http.NewResponseController(w)
	write := func(s string) error {
		if !started {
			started = true
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-store")
			h.Set("X-Accel-Buffering", "no")
			w.WriteHeader(http.StatusOK)
		}
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout)) // not every ResponseWriter can
		if _, err := io.WriteString(w, s); err != nil {
			return err
		}
		return rc.Flush()
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-end:
		case <-t.life.Done():
		case <-ctx.Done():
		}
		cancel()
	}()
	keep := time.NewTicker(sseKeepAlive)
	defer keep.Stop()
	events := make(chan PresenceEvent)
	errc := make(chan error, 1)
	send := func(e PresenceEvent) error {
		select {
		case events <- e:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	go func() {
		if all {
			errc <- t.WatchAll(ctx, last, send)
		} else {
			errc <- t.Watch(ctx, rooms, last, send)
		}
	}()
	for {
		var err error
		select {
		case e := <-events:
			if all && (e.Kind == EventVacated || e.Kind == EventSnapshot && e.Members.Users == 0) {
				resume.remove(e.Room) // as WatchAll forgets it
			} else {
				resume.set(e.Room, e.Seq)
			}
			data, _ := json.Marshal(e)
			err = write(fmt.Sprintf("id: %s\nevent: %s\ndata: %s\n\n", resume.id(), e.Kind, data))
		case <-keep.C:
			err = write(": keep-alive\n\n")
		case err := <-errc:
			switch {
			case started || r.Context().Err() != nil: // the client is gone
			case ctx.Err() != nil:
				// EndStreams, Drain or Close before the first event: an
				// empty stream, not an error status, so that a browser's
				// EventSource reconnects (elsewhere) instead of giving up.
				_ = write(": stream ended, reconnect\n\n")
			case err != nil:
				writeJSONError(w, httpStatus(err), err)
			}
			return
		}
		if err != nil {
			return // the client is gone, or does not read: it resumes when it comes back
		}
	}
}
