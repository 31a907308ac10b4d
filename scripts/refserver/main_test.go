package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// seen records the requests a backend received.
type seen struct {
	mu   sync.Mutex
	reqs []string // "METHOD URI BODY"
}

func (s *seen) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Method+" "+r.URL.RequestURI()+" "+string(body))
		s.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		h.ServeHTTP(w, r)
	})
}

func (s *seen) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

// start serves h on 127.0.0.1:0 until the test ends and returns its address.
func start(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, h) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not return after shutdown")
		}
	})
	return ln.Addr().String()
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestNoop(t *testing.T) {
	addr := start(t, noopHandler())
	for _, m := range []string{"GET", "PUT", "POST"} {
		code, body := do(t, m, "http://"+addr+"/v1/kv/b/k", `{"x":1}`)
		if code != 200 || body != "ok" {
			t.Errorf("%s: got %d %q, want 200 \"ok\"", m, code, body)
		}
	}
}

func TestQuorumReachesBothBackends(t *testing.T) {
	var s1, s2 seen
	b1 := start(t, s1.wrap(noopHandler()))
	b2 := start(t, s2.wrap(noopHandler()))
	q := newQuorum([]string{b1, b2})
	t.Cleanup(q.client.CloseIdleConnections)
	coord := start(t, q)

	code, body := do(t, "PUT", "http://"+coord+"/v1/kv/bench/k1?w=2", `{"v":1}`)
	if code != 200 || body != "ok" {
		t.Fatalf("PUT through quorum: got %d %q, want 200 \"ok\"", code, body)
	}
	code, _ = do(t, "GET", "http://"+coord+"/v1/kv/bench/k1?r=2", "")
	if code != 200 {
		t.Fatalf("GET through quorum: got %d, want 200", code)
	}
	want := []string{"PUT /v1/kv/bench/k1?w=2 {\"v\":1}", "GET /v1/kv/bench/k1?r=2 "}
	for i, s := range []*seen{&s1, &s2} {
		got := s.list()
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("backend %d saw %q, want %q", i+1, got, want)
		}
	}
}

func TestQuorumFailsWhenABackendFails(t *testing.T) {
	ok := start(t, noopHandler())
	bad := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	q := newQuorum([]string{ok, bad})
	t.Cleanup(q.client.CloseIdleConnections)
	coord := start(t, q)
	if code, _ := do(t, "GET", "http://"+coord+"/x", ""); code != http.StatusBadGateway {
		t.Errorf("got %d, want 502 when a backend fails", code)
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"bogus"},
		{"quorum", "--addr", "127.0.0.1:0"},
		{"noop", "--backends", "127.0.0.1:1"},
		{"noop", "extra"},
	} {
		if err := run(args, io.Discard); err == nil {
			t.Errorf("run(%q): want an error", args)
		}
	}
}
