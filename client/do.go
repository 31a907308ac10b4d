package client

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// request is one logical operation on a key; do sends it, retrying.
type request struct {
	method      string
	bucket, key string
	query       url.Values
	body        []byte
	contentType string
	context     string // X-Context, for writes
	requestID   string // X-Request-Id, for writes: the same on every attempt
}

// response is a node's answer that the operation interprets: 200, 204,
// 300 or 404. Other statuses become errors.
type response struct {
	status int
	header http.Header
	body   []byte
	addr   string
}

// do runs req: up to the configured attempts, each on the next candidate
// node, with backoff between them, within ctx.
func (c *Client) do(ctx context.Context, req *request, cc *callConfig) (*response, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	cands := c.candidates(req.bucket, req.key)
	var lastErr error
	var quorumErr *QuorumError // the last quorum_not_met answer, if any
	for attempt := 0; attempt < c.cfg.attempts; attempt++ {
		if attempt > 0 {
			if err := c.sleep(ctx, attempt); err != nil {
				return nil, giveUp(err, attempt, lastErr)
			}
		}
		addr := cands[attempt%len(cands)]
		resp, err := c.attempt(ctx, addr, req, cc)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		errors.As(err, &quorumErr)
		if ctx.Err() != nil {
			return nil, giveUp(ctx.Err(), attempt+1, lastErr)
		}
		if !IsRetryable(err) {
			return nil, err
		}
		if attempt+1 < c.cfg.attempts {
			c.log().Debug("quorumkv: retrying", "method", req.method, "bucket", req.bucket, "key", req.key,
				"attempt", attempt+1, "node", addr, "err", err)
		}
	}
	if c.cfg.attempts == 1 {
		return nil, lastErr
	}
	var q *QuorumError
	if quorumErr != nil && !errors.As(lastErr, &q) {
		// A live node's 503 says more than the last candidate's refused
		// connection (with one replica dead, the candidates end on it).
		return nil, fmt.Errorf("%w (gave up after %d attempts; last: %w)", quorumErr, c.cfg.attempts, lastErr)
	}
	return nil, fmt.Errorf("%w (gave up after %d attempts)", lastErr, c.cfg.attempts)
}

// giveUp is the error of an operation that stopped because its context
// ended (or would end before the next attempt): it wraps both the
// context's error and the last attempt's.
func giveUp(ctxErr error, attempts int, last error) error {
	if last == nil {
		return fmt.Errorf("quorumkv: %w", ctxErr)
	}
	return fmt.Errorf("quorumkv: %w after %d attempts; last: %w", ctxErr, attempts, last)
}

// sleep waits the backoff before retry k (k >= 1): a random duration in
// [0, min(max, base·2^(k-1))). It returns at once with
// context.DeadlineExceeded if that would end past ctx's deadline, and with
// ctx's error if ctx ends while it waits.
func (c *Client) sleep(ctx context.Context, k int) error {
	ceiling := backoffCeiling(c.cfg.backoffBase, c.cfg.backoffMax, k)
	var d time.Duration
	if ceiling > 0 {
		d = rand.N(ceiling)
	}
	if deadline, ok := ctx.Deadline(); ok && time.Now().Add(d).After(deadline) {
		return context.DeadlineExceeded
	}
	if d == 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// maxServerTimeout is the longest ?timeout= every node accepts.
const maxServerTimeout = 60 * time.Second

// backoffCeiling is min(max, base·2^(k-1)).
func backoffCeiling(base, max time.Duration, k int) time.Duration {
	ceiling := base
	for i := 1; i < k && ceiling < max; i++ {
		ceiling *= 2
	}
	return min(ceiling, max)
}

// attempt sends req once to addr and reads the answer.
func (c *Client) attempt(ctx context.Context, addr string, req *request, cc *callConfig) (*response, error) {
	perAttempt := max(c.cfg.attemptTimeout, cc.timeout)
	now := time.Now()
	deadline := now.Add(perAttempt)
	query := req.query
	if d, ok := ctx.Deadline(); ok && !d.After(deadline) {
		// The caller's deadline comes first: ask the node to answer
		// within it, less a margin for the answer to travel, so that a
		// quorum failure arrives as the node's 503 rather than a timeout.
		deadline = d
		left := d.Sub(now)
		left -= min(left/10, 100*time.Millisecond)
		if cc.timeout == 0 {
			// Every node accepts up to 60s (more only if its --timeout
			// is larger); only an explicit Timeout asks for more.
			left = min(left, maxServerTimeout)
		}
		ms := max(left.Milliseconds(), 1)
		query = cloneValues(req.query)
		query.Set("timeout", strconv.FormatInt(ms, 10)+"ms")
	}
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	u := c.scheme + "://" + addr + "/v1/kv/" + url.PathEscape(req.bucket) + "/" + url.PathEscape(req.key)
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hreq, err := http.NewRequestWithContext(actx, req.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("quorumkv: %w", err)
	}
	c.setAuth(hreq)
	if req.contentType != "" {
		hreq.Header.Set("Content-Type", req.contentType)
	}
	if req.context != "" {
		hreq.Header.Set("X-Context", req.context)
	}
	if req.requestID != "" {
		hreq.Header.Set("X-Request-Id", req.requestID)
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			// Refused, reset, unreachable: try this node after the others
			// for a while. (A timeout may be a slow quorum, not the node.)
			c.health.markDown(addr)
		}
		return nil, fmt.Errorf("quorumkv: %s %s: %w", req.method, addr, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("quorumkv: %s %s: reading the answer: %w", req.method, addr, err)
	}
	c.noteVersion(addr, resp.Header.Get("X-Ring-Version"))
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent, http.StatusMultipleChoices, http.StatusNotFound:
		return &response{status: resp.StatusCode, header: resp.Header, body: b, addr: addr}, nil
	}
	return nil, decodeError(resp.StatusCode, b)
}

func (c *Client) setAuth(req *http.Request) {
	req.Header.Set("User-Agent", "quorumkv-go-client")
	if c.cfg.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.token)
	}
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v)+1)
	for k, vs := range v {
		out[k] = vs
	}
	return out
}

// newRequestID returns a random request id: 16 bytes, hex.
func newRequestID() string {
	var b [16]byte
	_, _ = cryptorand.Read(b[:]) // never fails (it crashes the program instead)
	return hex.EncodeToString(b[:])
}

// validRequestID checks the server's rule: 1 to 64 bytes of
// [A-Za-z0-9._:-].
func validRequestID(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
