package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/quorumkv/quorumkv/storage"
)

// Sentinel errors of the coordinator and the API.
var (
	// ErrBadRequest is a client mistake: bad bucket, key, parameter or body.
	ErrBadRequest = errors.New("bad request")
	// ErrTooLarge is a body over the configured maximum.
	ErrTooLarge = errors.New("body too large")
	// ErrNotFound is an absent key.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable means the request could not be served now; for a write
	// the outcome is unknown.
	ErrUnavailable = errors.New("unavailable")
)

// QuorumError reports a quorum that was not met before the deadline. For a
// write, the version may still be on fewer than W replicas and become
// visible later: it was not acknowledged, and it was not rolled back.
type QuorumError struct {
	Op           string // "read" or "write"
	Required     int
	Acknowledged int
	Timeout      bool // the deadline passed before every replica answered
}

func (e *QuorumError) Error() string {
	why := "too few replicas answered"
	if e.Timeout {
		why = "the deadline passed"
	}
	return fmt.Sprintf("%s quorum not met: required %d, acknowledged %d (%s)", e.Op, e.Required, e.Acknowledged, why)
}

// errorBody is the JSON shape of every error response.
type errorBody struct {
	Error        string `json:"error"`
	Message      string `json:"message"`
	Required     int    `json:"required,omitempty"`
	Acknowledged *int   `json:"acknowledged,omitempty"`
}

// classify is the one table that maps errors to HTTP statuses and codes.
func classify(err error) (int, errorBody) {
	var q *QuorumError
	msg := err.Error()
	switch {
	case errors.As(err, &q):
		return http.StatusServiceUnavailable, errorBody{Error: "quorum_not_met", Message: msg, Required: q.Required, Acknowledged: &q.Acknowledged}
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest, errorBody{Error: "bad_request", Message: msg}
	case errors.Is(err, storage.ErrBadContext):
		return http.StatusBadRequest, errorBody{Error: "bad_context", Message: msg}
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, errorBody{Error: "too_large", Message: msg}
	case errors.Is(err, storage.ErrTooManySiblings):
		return http.StatusConflict, errorBody{Error: "too_many_siblings", Message: msg +
			"; resolve them: GET the key, merge the siblings, and PUT the result with the X-Context of that GET"}
	case errors.Is(err, ErrNotFound), errors.Is(err, storage.ErrNotFound):
		return http.StatusNotFound, errorBody{Error: "not_found", Message: msg}
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, storage.ErrClosed):
		return http.StatusServiceUnavailable, errorBody{Error: "unavailable", Message: msg}
	default:
		return http.StatusInternalServerError, errorBody{Error: "internal", Message: msg}
	}
}

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
