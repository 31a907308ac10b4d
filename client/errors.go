package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
)

var (
	// ErrNotFound is returned by Get (and GetJSON) when the key does not
	// exist or was deleted. The Result returned with it is not nil: it
	// carries the causal context of the 404, which a write can use to create
	// the key without overwriting a concurrent creation (see Update).
	ErrNotFound = errors.New("quorumkv: not found")

	// ErrSiblings is returned by Result.Value, Result.Decode and GetJSON
	// when the key has several concurrent values (siblings). Read them from
	// Result.Siblings, merge them, and write the merge with Result.Context,
	// or let Update do it.
	ErrSiblings = errors.New("quorumkv: the key has siblings")

	// ErrClosed is returned by operations on a Client after Close.
	ErrClosed = errors.New("quorumkv: client closed")
)

// APIError is an error answer of a quorumkv node: a 4xx or 5xx status with
// the server's JSON error body ({"error": code, "message": text}). 404s are
// reported as ErrNotFound and quorum failures as *QuorumError (which wraps
// an *APIError) instead.
type APIError struct {
	// StatusCode is the HTTP status, e.g. 400.
	StatusCode int
	// Code is the body's "error" field: bad_request, bad_context,
	// too_many_siblings, too_large, unavailable, internal, ... (see
	// docs/api.md). Empty if the body was not the server's JSON shape.
	Code string
	// Message is the body's "message", or the raw body if it was not JSON.
	Message string
}

// Error returns "quorumkv: <status> <code>: <message>".
func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.StatusCode)
	}
	if e.Message == "" {
		return fmt.Sprintf("quorumkv: %d %s", e.StatusCode, code)
	}
	return fmt.Sprintf("quorumkv: %d %s: %s", e.StatusCode, code, e.Message)
}

// QuorumError is a 503 quorum_not_met: fewer than R (read) or W (write)
// replicas answered before the deadline. For a write the outcome is
// unknown: the version may be on fewer than W replicas and become visible
// later; it was not rolled back. It is retryable (IsRetryable), and the
// client retries it itself: writes are idempotent through their request id.
// errors.As also finds the underlying *APIError.
type QuorumError struct {
	// Op is "read" or "write", as the server reports it. A plain Put or
	// Delete (without WithContext) first reads at R, so it can fail with a
	// read quorum error.
	Op string
	// Required is the quorum asked for (R or W).
	Required int
	// Acknowledged is how many replicas answered (reads) or stored the
	// version (writes) in time.
	Acknowledged int
	// Timeout reports that the server's deadline passed (rather than too
	// few replicas being reachable).
	Timeout bool
	// Message is the server's message.
	Message string
}

// Error returns "quorumkv: " and the server's message.
func (e *QuorumError) Error() string {
	return "quorumkv: " + e.Message
}

// Unwrap returns the 503 as an *APIError with code quorum_not_met.
func (e *QuorumError) Unwrap() error {
	return &APIError{StatusCode: http.StatusServiceUnavailable, Code: "quorum_not_met", Message: e.Message}
}

// errorBody is the JSON shape of every error answer of the server.
type errorBody struct {
	Error        string `json:"error"`
	Message      string `json:"message"`
	Required     int    `json:"required"`
	Acknowledged int    `json:"acknowledged"`
}

// decodeError turns a non-2xx, non-300, non-404 answer into an error.
func decodeError(status int, body []byte) error {
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" {
		return &APIError{StatusCode: status, Message: strings.TrimSpace(string(truncate(body, 512)))}
	}
	if eb.Error == "quorum_not_met" {
		op, _, _ := strings.Cut(eb.Message, " ")
		if op != "read" && op != "write" {
			op = ""
		}
		return &QuorumError{Op: op, Required: eb.Required, Acknowledged: eb.Acknowledged,
			Timeout: strings.Contains(eb.Message, "deadline passed"), Message: eb.Message}
	}
	return &APIError{StatusCode: status, Code: eb.Error, Message: eb.Message}
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// IsRetryable reports whether a new attempt of the operation that failed
// with err may succeed: network errors (refused or reset connections, EOFs),
// timeouts (context.DeadlineExceeded included), quorum failures
// (*QuorumError) and 502, 503 and 504 answers. Not retryable: nil, 4xx
// answers (ErrNotFound included), ErrSiblings, a cancelled context, other
// 5xx answers and decoding errors. The client already retries retryable
// errors itself, up to WithRetries' attempts and the context's deadline.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) ||
		errors.Is(err, ErrNotFound) || errors.Is(err, ErrSiblings) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var q *QuorumError
	if errors.As(err, &q) {
		return true
	}
	var api *APIError
	if errors.As(err, &api) {
		switch api.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}
