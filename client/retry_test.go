package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/client"
)

// timeoutErr is what the test transport reports for an attempt whose
// answer it swallowed: a network timeout.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "simulated timeout (the node did answer)" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// loseFirstAnswer forwards requests for real, but for the first PUT or
// DELETE of key it waits for the whole answer and then reports a timeout
// to the client: the write happened, the client does not know it.
type loseFirstAnswer struct {
	*recorder
	bucket, key string
	fired       atomic.Bool

	mu     sync.Mutex
	status int // the swallowed answer's
}

func (l *loseFirstAnswer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.recorder.RoundTrip(req)
	if err != nil || req.Method == http.MethodGet || req.URL.Path != "/v1/kv/"+l.bucket+"/"+l.key || l.fired.Swap(true) {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	l.mu.Lock()
	l.status = resp.StatusCode
	l.mu.Unlock()
	return nil, timeoutErr{}
}

// TestRetriedWriteLeavesOneVersion: a PUT whose first attempt reached a
// replica (and was stored) but timed out for the client is retried through
// another node with the same X-Request-Id, and leaves one version, not two
// siblings. Both attempts carry the same causal context (the 404's), so
// without the request id they would be two concurrent versions.
func TestRetriedWriteLeavesOneVersion(t *testing.T) {
	cl := useShared(t)
	for _, routing := range []client.Routing{client.KeyAware, client.RoundRobin} {
		t.Run(routing.String(), func(t *testing.T) {
			bucket, key := fresh("idem"), "k-"+routing.String()
			lose := &loseFirstAnswer{recorder: newRecorder(), bucket: bucket, key: key}
			defer lose.close()
			c := newClient(t, cl.endpoints(), client.WithRouting(routing), client.WithHTTPClient(&http.Client{Transport: lose}))
			ctx := testCtx(t)
			read, err := c.Get(ctx, bucket, key)
			if !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("fresh key: %v", err)
			}
			before := len(lose.records())
			if _, err := c.Put(ctx, bucket, key, []byte(`{"n":1}`), client.ContentType("application/json"), client.WithContext(read.Context)); err != nil {
				t.Fatalf("Put: %v", err)
			}
			puts := lose.records()[before:]
			if len(puts) != 2 {
				t.Fatalf("%d attempts, want 2 (the lost one and its retry)", len(puts))
			}
			if lose.status != http.StatusNoContent {
				t.Fatalf("the first attempt was answered %d, want 204 (stored)", lose.status)
			}
			id := puts[0].header.Get("X-Request-Id")
			if id == "" || puts[1].header.Get("X-Request-Id") != id {
				t.Fatalf("request ids %q and %q, want one non-empty id", id, puts[1].header.Get("X-Request-Id"))
			}
			if puts[0].host == puts[1].host {
				t.Fatalf("the retry went to the same node %s", puts[0].host)
			}
			t.Logf("first attempt through %s (%s), retry through %s (%s)", cl.idOf(puts[0].host), puts[0].host, cl.idOf(puts[1].host), puts[1].host)
			res, err := c.Get(ctx, bucket, key, client.R(3))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Siblings) != 1 {
				t.Fatalf("%d siblings after a retried write, want 1: %+v", len(res.Siblings), res.Siblings)
			}
		})
	}
}

// closedAddrs returns loopback addresses nothing listens on.
func closedAddrs(t *testing.T, n int) []string {
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ln.Addr().String())
		ln.Close()
	}
	return out
}

func TestRetriesBounded(t *testing.T) {
	t.Run("attempts", func(t *testing.T) {
		rec := newRecorder()
		defer rec.close()
		down := closedAddrs(t, 2)
		c := newClient(t, down, client.WithRetries(4, time.Millisecond, 5*time.Millisecond),
			client.WithHTTPClient(&http.Client{Transport: rec}))
		_, err := c.Get(context.Background(), "b", "k")
		if err == nil || !client.IsRetryable(err) {
			t.Fatalf("all nodes down: %v", err)
		}
		if n := rec.attempts.Load(); n != 4 {
			t.Fatalf("%d attempts, want 4", n)
		}
		var netErr net.Error
		if !errors.As(err, &netErr) {
			t.Fatalf("%v is not a net.Error", err)
		}
		t.Log(err)
	})

	t.Run("deadline, refused connections", func(t *testing.T) {
		rec := newRecorder()
		defer rec.close()
		const attempts = 1000
		c := newClient(t, closedAddrs(t, 3), client.WithRetries(attempts, 5*time.Millisecond, 40*time.Millisecond),
			client.WithHTTPClient(&http.Client{Transport: rec}))
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.Delete(ctx, "b", "k")
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want the deadline's", err)
		}
		n := rec.attempts.Load()
		if n < 2 || n >= attempts || took > 5*time.Second {
			t.Fatalf("%d attempts in %v", n, took)
		}
		t.Logf("%d attempts in %v: %v", n, took, err)
	})

	t.Run("deadline, a node that never answers", func(t *testing.T) {
		release := make(chan struct{})
		var timeouts sync.Map
		hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			timeouts.Store(r.URL.Query().Get("timeout"), true)
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer hang.Close()
		defer close(release)
		rec := newRecorder()
		defer rec.close()
		c := newClient(t, []string{hang.URL}, client.WithRouting(client.RoundRobin), client.WithHTTPClient(&http.Client{Transport: rec}))
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Get(ctx, "b", "k")
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) || took > 5*time.Second {
			t.Fatalf("error %v after %v, want the deadline's", err, took)
		}
		if n := rec.attempts.Load(); n != 1 {
			t.Fatalf("%d attempts, want 1 (the deadline came first)", n)
		}
		// The node was asked to answer within the deadline, less a margin.
		timeouts.Range(func(k, _ any) bool {
			d, err := time.ParseDuration(k.(string))
			if err != nil || d <= 0 || d >= 200*time.Millisecond {
				t.Errorf("?timeout=%q", k)
			}
			return true
		})
		// The attempt timeout cuts an attempt short and the next one goes on.
		rec2 := newRecorder()
		defer rec2.close()
		c2 := newClient(t, []string{hang.URL}, client.WithRouting(client.RoundRobin), client.WithAttemptTimeout(30*time.Millisecond),
			client.WithRetries(3, time.Millisecond, time.Millisecond), client.WithHTTPClient(&http.Client{Transport: rec2}))
		if _, err := c2.Get(context.Background(), "b", "k"); !errors.Is(err, context.DeadlineExceeded) || !client.IsRetryable(err) {
			t.Fatalf("attempt timeouts: %v", err)
		}
		if n := rec2.attempts.Load(); n != 3 {
			t.Fatalf("%d attempts, want 3", n)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		c := newClient(t, closedAddrs(t, 1), client.WithRetries(100, 10*time.Millisecond, 10*time.Millisecond))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := c.Get(ctx, "b", "k")
		if !errors.Is(err, context.Canceled) || client.IsRetryable(err) {
			t.Fatalf("cancelled: %v", err)
		}
	})
}

// fakeNode answers from a script of (status, body) and records the
// request ids it saw.
func fakeNode(t *testing.T, script ...[2]string) (*httptest.Server, *[]string) {
	var mu sync.Mutex
	var ids []string
	i := 0
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		step := script[min(i, len(script)-1)]
		i++
		ids = append(ids, r.Header.Get("X-Request-Id"))
		mu.Unlock()
		w.Header().Set("X-Context", "ctx")
		if step[1] != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		var status int
		switch step[0] {
		case "204":
			status = 204
		case "400":
			status = 400
		case "500":
			status = 500
		case "502":
			status = 502
		case "503":
			status = 503
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, step[1])
	}))
	t.Cleanup(s.Close)
	return s, &ids
}

const quorumBody = `{"error":"quorum_not_met","message":"write quorum not met: required 3, acknowledged 2 (the deadline passed)","required":3,"acknowledged":2}`

func TestRetryStatuses(t *testing.T) {
	fast := client.WithRetries(3, time.Millisecond, time.Millisecond)
	t.Run("503 then success, one request id", func(t *testing.T) {
		s, ids := fakeNode(t, [2]string{"503", quorumBody}, [2]string{"502", ""}, [2]string{"204", ""})
		c := newClient(t, []string{s.URL}, client.WithRouting(client.RoundRobin), fast)
		res, err := c.Put(context.Background(), "b", "k", []byte("v"))
		if err != nil || res.Context != "ctx" {
			t.Fatalf("Put: %+v %v", res, err)
		}
		if len(*ids) != 3 || (*ids)[0] == "" || (*ids)[0] != (*ids)[1] || (*ids)[1] != (*ids)[2] {
			t.Fatalf("request ids %q", *ids)
		}
	})
	t.Run("quorum error after the retries", func(t *testing.T) {
		s, ids := fakeNode(t, [2]string{"503", quorumBody})
		c := newClient(t, []string{s.URL}, client.WithRouting(client.RoundRobin), fast)
		_, err := c.Put(context.Background(), "b", "k", []byte("v"))
		var q *client.QuorumError
		if !errors.As(err, &q) || q.Op != "write" || q.Required != 3 || q.Acknowledged != 2 || !q.Timeout {
			t.Fatalf("error %v, want a write QuorumError 3/2", err)
		}
		var api *client.APIError
		if !errors.As(err, &api) || api.StatusCode != 503 || api.Code != "quorum_not_met" {
			t.Fatalf("QuorumError does not unwrap to its APIError: %+v", api)
		}
		if !client.IsRetryable(err) || len(*ids) != 3 {
			t.Fatalf("retryable %v after %d attempts", client.IsRetryable(err), len(*ids))
		}
	})
	t.Run("a quorum answer outranks a dead node's refusal", func(t *testing.T) {
		// One replica answers 503, the other candidate is down: whichever
		// is tried last, the error is the quorum answer. After a refusal
		// the client orders the down node last, so the refusal comes last
		// at least once.
		s, _ := fakeNode(t, [2]string{"503", quorumBody})
		c := newClient(t, []string{s.URL, "http://" + closedAddrs(t, 1)[0]}, client.WithRouting(client.RoundRobin),
			client.WithRetries(2, time.Millisecond, time.Millisecond))
		refusedLast := 0
		for range 3 {
			_, err := c.Put(context.Background(), "b", "k", []byte("v"))
			var q *client.QuorumError
			if !errors.As(err, &q) || q.Required != 3 || !client.IsRetryable(err) {
				t.Fatalf("error %v, want the QuorumError", err)
			}
			var netErr net.Error
			if errors.As(err, &netErr) {
				refusedLast++
			}
		}
		if refusedLast == 0 {
			t.Fatal("no call tried the down node last: the test checked nothing")
		}
	})
	t.Run("no retry of 4xx or 500", func(t *testing.T) {
		for _, status := range []string{"400", "500"} {
			s, ids := fakeNode(t, [2]string{status, `{"error":"x","message":"y"}`}, [2]string{"204", ""})
			c := newClient(t, []string{s.URL}, client.WithRouting(client.RoundRobin), fast)
			_, err := c.Put(context.Background(), "b", "k", []byte("v"))
			var api *client.APIError
			if !errors.As(err, &api) || api.Code != "x" || api.Message != "y" || len(*ids) != 1 {
				t.Fatalf("%s: %v after %d attempts", status, err, len(*ids))
			}
		}
	})
	t.Run("a body that is not the error shape", func(t *testing.T) {
		s, _ := fakeNode(t, [2]string{"502", ""})
		c := newClient(t, []string{s.URL}, client.WithRouting(client.RoundRobin), client.WithRetries(1, 0, 0))
		_, err := c.Get(context.Background(), "b", "k")
		var api *client.APIError
		if !errors.As(err, &api) || api.StatusCode != 502 || api.Code != "" || !client.IsRetryable(err) {
			t.Fatalf("502: %v", err)
		}
	})
}

func TestIsRetryable(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("something"), false},
		{client.ErrNotFound, false},
		{client.ErrSiblings, false},
		{client.ErrClosed, false},
		{context.Canceled, false},
		{context.DeadlineExceeded, true},
		{&client.QuorumError{Op: "read", Required: 2, Acknowledged: 1}, true},
		{&client.APIError{StatusCode: 503, Code: "unavailable"}, true},
		{&client.APIError{StatusCode: 502}, true},
		{&client.APIError{StatusCode: 504}, true},
		{&client.APIError{StatusCode: 500, Code: "internal"}, false},
		{&client.APIError{StatusCode: 400, Code: "bad_request"}, false},
		{&client.APIError{StatusCode: 409, Code: "too_many_siblings"}, false},
		{&client.APIError{StatusCode: 413, Code: "too_large"}, false},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{timeoutErr{}, true},
		{io.ErrUnexpectedEOF, true},
		{errors.Join(errors.New("wrapped"), io.EOF), true},
	}
	for _, tc := range cases {
		if got := client.IsRetryable(tc.err); got != tc.want {
			t.Errorf("IsRetryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
