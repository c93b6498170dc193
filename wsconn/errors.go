package wsconn

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrInvalidName: a room, tenant or user name is empty, longer than
	// MaxNameLen bytes, not valid UTF-8 or holds a control character.
	// Handshakes answer 400, before any Redis write.
	ErrInvalidName = errors.New("wsconn: invalid name")
	// ErrLimit: a per-tenant, per-user or per-room limit is reached. The
	// error is a *LimitError saying which. Handshakes answer 429.
	ErrLimit = errors.New("wsconn: limit reached")
	// ErrTooManyRooms: a connection would be in more than
	// Options.MaxRoomsPerConn rooms. Handshakes answer 400.
	ErrTooManyRooms = errors.New("wsconn: too many rooms for one connection")
	// ErrUnavailable: Redis did not answer in time (or failed) where an
	// answer was needed: a limit under Options.FailClosed, or a read.
	// Handshakes answer 503.
	ErrUnavailable = errors.New("wsconn: redis unavailable")
	// ErrClosed: the Tracker is draining or closed, or the connection or
	// lease is already released. Handshakes answer 503.
	ErrClosed = errors.New("wsconn: closed")
	// ErrUsersNotCounted: UserCount was called but per-user counting is off
	// (see Options.CountUsers).
	ErrUsersNotCounted = errors.New("wsconn: per-user counting is off")
)

// LimitKind names the limit a *LimitError is about.
type LimitKind string

// The limits.
const (
	LimitTenant LimitKind = "tenant"
	LimitUser   LimitKind = "user"
	LimitRoom   LimitKind = "room"
)

// LimitError reports a refused connection or join. It matches ErrLimit with
// errors.Is.
type LimitError struct {
	Kind  LimitKind // which limit
	Name  string    // the tenant, user or room
	Limit int64     // the configured cap
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("wsconn: %s limit of %d reached for %q", e.Kind, e.Limit, e.Name)
}

// Is makes errors.Is(err, ErrLimit) true.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// reason is a short machine-readable rejection reason, used as a metrics
// label and in close reasons.
func reason(err error) string {
	var le *LimitError
	switch {
	case errors.As(err, &le):
		return "limit_" + string(le.Kind)
	case errors.Is(err, ErrInvalidName):
		return "invalid_name"
	case errors.Is(err, ErrTooManyRooms):
		return "too_many_rooms"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrClosed):
		return "closed"
	}
	return "other"
}

// httpStatus maps an admission error to its HTTP status.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, ErrLimit):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrInvalidName), errors.Is(err, ErrTooManyRooms):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// WriteError answers a refused handshake: 400 for bad names or too many
// rooms, 429 with Retry-After for a limit, 503 (with Retry-After) when
// Redis is unavailable under FailClosed or the Tracker is shutting down.
// Accept and Middleware call it themselves; it is exported for callers of
// Admit that upgrade with another library.
func (t *Tracker) WriteError(w http.ResponseWriter, err error) {
	code := httpStatus(err)
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfterSeconds(t.cfg.retryAfter))
	}
	http.Error(w, err.Error(), code)
}

// retryAfterSeconds renders d as whole seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}
