package wsconn

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrInvalidName: a room, tenant or user name is empty, longer than
	// MaxNameLen bytes, not valid UTF-8 or holds a control character (or
	// a read names too many rooms, or a bad member page: see Members).
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
	// ErrInvalidMetadata: PresenceOptions.Metadata returned more than
	// MaxMetadataLen bytes or invalid UTF-8. Handshakes answer 400.
	ErrInvalidMetadata = errors.New("wsconn: invalid presence metadata")
	// ErrPresenceOff: a presence read was asked of a Tracker without
	// Options.Presence.
	ErrPresenceOff = errors.New("wsconn: presence is off")
	// ErrNotVisible: PresenceOptions.Visible refused a request. Handlers
	// answer 403.
	ErrNotVisible = errors.New("wsconn: not visible to this request")
)

// errShuttingDown refuses a handshake that comes while the Tracker drains
// or after it closed.
var errShuttingDown = fmt.Errorf("%w: shutting down", ErrClosed)

// errNilRequest is Accept's and Admit's answer to a nil request, which
// names no connection.
var errNilRequest = errors.New("wsconn: nil request")

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
	Limit int64     // the cap in force (Limits.PerTenant or TenantCap(Name), ...)
	// Usage is the cluster-wide count of Name that Redis checked the cap
	// against, in the same atomic step as the refusal: Limit, or more when
	// the cap was lowered below what is open.
	Usage int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("wsconn: %s limit of %d reached for %q (%d in use)", e.Kind, e.Limit, e.Name, e.Usage)
}

// Is makes errors.Is(err, ErrLimit) true.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// Rejection reasons: the reason label of headcount_rejections_total, and
// the "error" field of a refused handshake's JSON body.
const (
	reasonLimitTenant  = "limit_tenant"
	reasonLimitUser    = "limit_user"
	reasonLimitRoom    = "limit_room"
	reasonInvalidName  = "invalid_name"
	reasonInvalidMeta  = "invalid_metadata"
	reasonTooManyRooms = "too_many_rooms"
	reasonUnavailable  = "unavailable"
	reasonClosed       = "closed"
	reasonOther        = "other"
)

// rejectionReasons lists every value reason returns.
var rejectionReasons = []string{reasonLimitTenant, reasonLimitUser, reasonLimitRoom,
	reasonInvalidName, reasonInvalidMeta, reasonTooManyRooms, reasonUnavailable, reasonClosed, reasonOther}

// reason is a short machine-readable rejection reason, used as a metrics
// label and in close reasons: one of rejectionReasons.
func reason(err error) string {
	var le *LimitError
	switch {
	case errors.As(err, &le):
		switch le.Kind {
		case LimitTenant:
			return reasonLimitTenant
		case LimitUser:
			return reasonLimitUser
		case LimitRoom:
			return reasonLimitRoom
		}
	case errors.Is(err, ErrInvalidName):
		return reasonInvalidName
	case errors.Is(err, ErrInvalidMetadata):
		return reasonInvalidMeta
	case errors.Is(err, ErrTooManyRooms):
		return reasonTooManyRooms
	case errors.Is(err, ErrUnavailable):
		return reasonUnavailable
	case errors.Is(err, ErrClosed):
		return reasonClosed
	}
	return reasonOther
}

// httpStatus maps an admission error to its HTTP status.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, ErrLimit):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrInvalidName), errors.Is(err, ErrTooManyRooms), errors.Is(err, ErrInvalidMetadata),
		errors.Is(err, ErrPresenceOff):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotVisible):
		return http.StatusForbidden
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// WriteError answers a refused handshake: 400 for bad names, bad metadata
// or too many rooms (and ErrPresenceOff), 403 for ErrNotVisible, 429 with
// Retry-After for a limit, 503 (with Retry-After) when Redis is
// unavailable under FailClosed or the Tracker is shutting down, 500 for
// any other error. The body is JSON: "error" is the reason (limit,
// invalid_name, invalid_metadata, too_many_rooms, unavailable, closed,
// other) and "message" the error's text; a
// limit also says which cap refused, its value and the cluster-wide usage:
//
//	{"error":"limit","cap":"tenant","name":"acme","limit":3,"usage":3,
//	 "message":"wsconn: tenant limit of 3 reached for \"acme\" (3 in use)"}
//
// Accept and Middleware call it themselves; it is exported for callers of
// Admit that upgrade with another library.
func (t *Tracker) WriteError(w http.ResponseWriter, err error) {
	if err == nil {
		err = errors.New("wsconn: WriteError without an error")
	}
	code := httpStatus(err)
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfterSeconds(t.cfg.retryAfter))
	}
	body := refusal{Error: reason(err), Message: err.Error()}
	var le *LimitError
	if errors.As(err, &le) {
		body.Error, body.Cap, body.Name = "limit", string(le.Kind), le.Name
		body.Limit, body.Usage = &le.Limit, &le.Usage
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// refusal is the JSON body of a refused handshake.
type refusal struct {
	Error   string `json:"error"`
	Cap     string `json:"cap,omitempty"`
	Name    string `json:"name,omitempty"`
	Limit   *int64 `json:"limit,omitempty"`
	Usage   *int64 `json:"usage,omitempty"`
	Message string `json:"message"`
}

// retryAfterSeconds renders d as whole seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64(d / time.Second) // rounded up below, without overflowing
	if d%time.Second != 0 {
		s++
	}
	return strconv.FormatInt(max(s, 1), 10)
}
