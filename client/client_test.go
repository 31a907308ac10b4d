package client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quorumkv/quorumkv/client"
)

// recorder is an http.RoundTripper that counts and records the key
// requests (/v1/kv/...) going through it.
type recorder struct {
	base http.RoundTripper

	attempts atomic.Int64
	mu       sync.Mutex
	log      []recorded
}

type recorded struct {
	method, host, path, query string
	header                    http.Header
}

func newRecorder() *recorder {
	return &recorder{base: &http.Transport{MaxIdleConnsPerHost: 64}}
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasPrefix(req.URL.Path, "/v1/kv/") {
		r.attempts.Add(1)
		r.mu.Lock()
		r.log = append(r.log, recorded{req.Method, req.URL.Host, req.URL.EscapedPath(), req.URL.RawQuery, req.Header.Clone()})
		r.mu.Unlock()
	}
	return r.base.RoundTrip(req)
}

func (r *recorder) records() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.log...)
}

func (r *recorder) close() { r.base.(*http.Transport).CloseIdleConnections() }

func newClient(t testing.TB, endpoints []string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(endpoints, opts...)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// seeded returns a deterministic source for the test and logs its seed.
func seeded(t testing.TB, seed uint64) *rand.Rand {
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

type user struct {
	Name  string   `json:"name"`
	Langs []string `json:"langs"`
}

func TestOperations(t *testing.T) {
	cl := useShared(t)
	rec := newRecorder()
	defer rec.close()
	c := newClient(t, cl.endpoints(), client.WithHTTPClient(&http.Client{Transport: rec}), client.WithBearerToken("s3cret"))
	ctx := testCtx(t)
	ops := fresh("ops")
	if c.RingVersion() == "" {
		t.Fatal("key-aware client has no table after New")
	}
	if got := len(c.Replicas(ops, "k")); got != 3 {
		t.Fatalf("Replicas: %d addresses, want N=3", got)
	}

	t.Run("put and get bytes", func(t *testing.T) {
		before := time.Now().Add(-time.Second)
		res, err := c.Put(ctx, ops, "bytes", []byte("\x00hello\xff"), client.ContentType("text/plain"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Context == "" || len(res.Siblings) != 0 || res.RingVersion == "" {
			t.Fatalf("Put result %+v", res)
		}
		got, err := c.Get(ctx, ops, "bytes")
		if err != nil {
			t.Fatal(err)
		}
		v, err := got.Value()
		if err != nil || string(v) != "\x00hello\xff" {
			t.Fatalf("Value %q, %v", v, err)
		}
		s := got.Siblings[0]
		if s.ContentType != "text/plain" || s.JSON || s.LastModified.Before(before.Truncate(time.Second)) || got.Context == "" {
			t.Fatalf("sibling %+v, context %q", s, got.Context)
		}
		// The default content type.
		if _, err := c.Put(ctx, ops, "raw", []byte{1, 2}); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Get(ctx, ops, "raw"); err != nil || got.Siblings[0].ContentType != "application/octet-stream" {
			t.Fatalf("raw: %+v %v", got, err)
		}
	})

	t.Run("json", func(t *testing.T) {
		want := user{Name: "Ada", Langs: []string{"en", "fr"}}
		if _, err := client.PutJSON(ctx, c, ops, "ada", want); err != nil {
			t.Fatal(err)
		}
		got, res, err := client.GetJSON[user](ctx, c, ops, "ada", client.R(3))
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != want.Name || len(got.Langs) != 2 || !res.Siblings[0].JSON || res.Siblings[0].ContentType != "application/json" {
			t.Fatalf("GetJSON %+v %+v", got, res)
		}
		if _, err := client.PutJSON(ctx, c, ops, "bad", func() {}); err == nil {
			t.Fatal("PutJSON of a func succeeded")
		}
	})

	t.Run("quorum and timeout options", func(t *testing.T) {
		if _, err := c.Put(ctx, ops, "q", []byte(`1`), client.W(3), client.R(3), client.Sloppy(false), client.Timeout(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, ops, "q", client.R(1), client.Sloppy(false), client.Timeout(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		last := rec.records()
		get, put := last[len(last)-1], last[len(last)-2]
		for _, want := range []string{"w=3", "r=3", "sloppy=false", "timeout="} {
			if !strings.Contains(put.query, want) {
				t.Errorf("PUT query %q lacks %s", put.query, want)
			}
		}
		for _, want := range []string{"r=1", "sloppy=false", "timeout="} {
			if !strings.Contains(get.query, want) {
				t.Errorf("GET query %q lacks %s", get.query, want)
			}
		}
		if put.header.Get("Authorization") != "Bearer s3cret" || len(put.header.Get("X-Request-Id")) != 32 {
			t.Errorf("PUT headers %v", put.header)
		}
		if get.header.Get("X-Request-Id") != "" {
			t.Errorf("GET carries a request id")
		}
	})

	t.Run("return body", func(t *testing.T) {
		res, err := c.Put(ctx, ops, "rb", []byte(`{"v":1}`), client.ContentType("application/json"), client.ReturnBody())
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Siblings) != 1 || string(res.Siblings[0].Value) != `{"v":1}` || !res.Siblings[0].JSON {
			t.Fatalf("ReturnBody %+v", res)
		}
	})

	t.Run("keys are taken literally", func(t *testing.T) {
		keys := []string{"a/b", "a%2Fb", "sp ace", "q?x=1#f", "ü/€", "+plus", strings.Repeat("k", 1024)}
		for i, k := range keys {
			if _, err := c.Put(ctx, ops, k, []byte(fmt.Sprint(i))); err != nil {
				t.Fatalf("Put %q: %v", k, err)
			}
		}
		for i, k := range keys {
			res, err := c.Get(ctx, ops, k, client.R(3))
			if err != nil {
				t.Fatalf("Get %q: %v", k, err)
			}
			if v, _ := res.Value(); string(v) != fmt.Sprint(i) {
				t.Fatalf("Get %q = %q, want %d", k, v, i)
			}
		}
	})

	t.Run("not found and delete", func(t *testing.T) {
		res, err := c.Get(ctx, ops, "never-written")
		if !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("absent key: %v", err)
		}
		if res == nil || res.Context == "" || res.Deleted || len(res.Siblings) != 0 {
			t.Fatalf("absent key result %+v", res)
		}
		if _, err := res.Value(); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("Value of a 404: %v", err)
		}
		if _, _, err := client.GetJSON[user](ctx, c, ops, "never-written"); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("GetJSON absent: %v", err)
		}
		if _, err := c.Put(ctx, ops, "del", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, ops, "del", client.W(3)); err != nil {
			t.Fatal(err)
		}
		res, err = c.Get(ctx, ops, "del", client.R(3))
		if !errors.Is(err, client.ErrNotFound) || !res.Deleted || res.Context == "" {
			t.Fatalf("deleted key: %+v %v", res, err)
		}
		// A write with the tombstone's context supersedes the delete.
		if _, err := c.Put(ctx, ops, "del", []byte("back"), client.WithContext(res.Context)); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Get(ctx, ops, "del", client.R(3)); err != nil || len(got.Siblings) != 1 {
			t.Fatalf("after re-put: %+v %v", got, err)
		}
		// Deleting an absent key succeeds.
		if err := c.Delete(ctx, ops, "never-written-either"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("siblings", func(t *testing.T) {
		read, err := c.Get(ctx, ops, "sib")
		if !errors.Is(err, client.ErrNotFound) {
			t.Fatal(err)
		}
		// Two writers from the same (empty) context are concurrent: one
		// JSON, one binary, so that the 300 carries both encodings.
		if _, err := client.PutJSON(ctx, c, ops, "sib", user{Name: "one"}, client.WithContext(read.Context)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, ops, "sib", []byte{0xff, 0}, client.WithContext(read.Context)); err != nil {
			t.Fatal(err)
		}
		res, err := c.Get(ctx, ops, "sib", client.R(3))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Siblings) != 2 {
			t.Fatalf("%d siblings, want 2", len(res.Siblings))
		}
		var sawJSON, sawBinary bool
		for _, s := range res.Siblings {
			switch {
			case s.JSON && string(s.Value) == `{"name":"one","langs":null}`:
				sawJSON = true
			case !s.JSON && bytes.Equal(s.Value, []byte{0xff, 0}) && s.ContentType == "application/octet-stream":
				sawBinary = true
			}
			if s.LastModified.IsZero() {
				t.Errorf("sibling without last-modified: %+v", s)
			}
		}
		if !sawJSON || !sawBinary {
			t.Fatalf("siblings %+v", res.Siblings)
		}
		var u user
		if err := res.Decode(&u); !errors.Is(err, client.ErrSiblings) {
			t.Fatalf("Decode of siblings: %v", err)
		}
		if _, err := res.Value(); !errors.Is(err, client.ErrSiblings) {
			t.Fatalf("Value of siblings: %v", err)
		}
		if _, r2, err := client.GetJSON[user](ctx, c, ops, "sib", client.R(3)); !errors.Is(err, client.ErrSiblings) || len(r2.Siblings) != 2 {
			t.Fatalf("GetJSON of siblings: %v", err)
		}
		if client.IsRetryable(err) {
			t.Fatal("ErrSiblings is retryable")
		}
		// Writing with the 300's context resolves them.
		if _, err := client.PutJSON(ctx, c, ops, "sib", user{Name: "merged"}, client.WithContext(res.Context), client.W(3)); err != nil {
			t.Fatal(err)
		}
		got, _, err := client.GetJSON[user](ctx, c, ops, "sib", client.R(3))
		if err != nil || got.Name != "merged" {
			t.Fatalf("after resolving: %+v %v", got, err)
		}
	})
}

func TestAPIErrors(t *testing.T) {
	cl := useShared(t)
	rec := newRecorder()
	defer rec.close()
	c := newClient(t, cl.endpoints(), client.WithHTTPClient(&http.Client{Transport: rec}))
	ctx := testCtx(t)
	cases := []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"bad bucket", func() error { _, err := c.Get(ctx, "bad bucket!", "k"); return err }, 400, "bad_request"},
		{"empty bucket", func() error { _, err := c.Put(ctx, "", "k", []byte("x")); return err }, 400, "bad_request"},
		{"empty key", func() error { _, err := c.Get(ctx, "b", ""); return err }, 400, "bad_request"},
		{"key too long", func() error { _, err := c.Get(ctx, "b", strings.Repeat("k", 1025)); return err }, 400, "bad_request"},
		{"R above N", func() error { _, err := c.Get(ctx, "b", "k", client.R(4)); return err }, 400, "bad_request"},
		{"invalid JSON", func() error {
			_, err := c.Put(ctx, "b", "k", []byte("{oops"), client.ContentType("application/json"))
			return err
		}, 400, "bad_request"},
		{"malformed context", func() error {
			_, err := c.Put(ctx, "b", "k", []byte("x"), client.WithContext("not-a-context"))
			return err
		}, 400, "bad_request"},
		{"too large", func() error { _, err := c.Put(ctx, "b", "big", make([]byte, 1<<20+1)); return err }, 413, "too_large"},
		{"timeout above the maximum", func() error {
			// Without a shorter deadline on the context, the node is asked
			// for the whole two minutes.
			_, err := c.Get(context.Background(), "b", "k", client.Timeout(2*time.Minute))
			return err
		}, 400, "bad_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := rec.attempts.Load()
			err := tc.call()
			var api *client.APIError
			if !errors.As(err, &api) {
				t.Fatalf("error %v (%T), want an *APIError", err, err)
			}
			if api.StatusCode != tc.status || api.Code != tc.code || api.Message == "" {
				t.Fatalf("APIError %+v, want %d %s", api, tc.status, tc.code)
			}
			if client.IsRetryable(err) {
				t.Fatalf("%v is retryable", err)
			}
			if n := rec.attempts.Load() - before; n != 1 {
				t.Fatalf("%d attempts for a 4xx, want 1", n)
			}
			t.Logf("%v", err)
		})
	}
	// Caught before anything is sent.
	for name, call := range map[string]func() error{
		"negative R":     func() error { _, err := c.Get(ctx, "b", "k", client.R(-1)); return err },
		"negative W":     func() error { return c.Delete(ctx, "b", "k", client.W(-1)) },
		"bad request id": func() error { _, err := c.Put(ctx, "b", "k", nil, client.RequestID("no spaces")); return err },
		"long request id": func() error {
			_, err := c.Put(ctx, "b", "k", nil, client.RequestID(strings.Repeat("x", 65)))
			return err
		},
		"negative timeout": func() error { _, err := c.Get(ctx, "b", "k", client.Timeout(-time.Second)); return err },
	} {
		before := rec.attempts.Load()
		if err := call(); err == nil {
			t.Errorf("%s: no error", name)
		}
		if rec.attempts.Load() != before {
			t.Errorf("%s: a request was sent", name)
		}
	}
	// A caller-chosen request id is sent as is.
	if _, err := c.Put(ctx, "b", "rid", []byte("x"), client.RequestID("order-17:attempt.1")); err != nil {
		t.Fatal(err)
	}
	last := rec.records()
	if got := last[len(last)-1].header.Get("X-Request-Id"); got != "order-17:attempt.1" {
		t.Fatalf("X-Request-Id %q", got)
	}
}

func TestNewAndClose(t *testing.T) {
	for _, bad := range [][]string{nil, {}, {"no-port"}, {"ftp://h:1"}, {"http://h:1/path"}, {"http://a:1", "https://b:1"}} {
		if c, err := client.New(bad); err == nil {
			c.Close()
			t.Errorf("New(%q) succeeded", bad)
		}
	}
	if _, err := client.New([]string{"127.0.0.1:1"}, client.WithHTTPClient(http.DefaultClient), client.WithTLSConfig(&tls.Config{})); err == nil {
		t.Errorf("New with both WithHTTPClient and WithTLSConfig succeeded")
	}

	// A fake node, so that no goroutine but the client's comes and goes
	// (a real cluster's nodes open connections to each other at any time).
	var tables atomic.Int64
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Ring-Version", "v1")
		if r.URL.Path == "/v1/cluster" {
			tables.Add(1)
			addr := r.Host
			fmt.Fprintf(w, `{"ring_version":"v1","n":1,"partitions":2,"counting":[["n1"],["n1"]],"addresses":{"n1":%q},"states":{"n1":"member"}}`, addr)
			return
		}
		w.Header().Set("X-Context", "ctx")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer fake.Close()
	ignore := goleak.IgnoreCurrent()
	c, err := client.New([]string{fake.URL}, client.WithRefreshInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if c.RingVersion() != "v1" {
		t.Fatalf("ring version %q", c.RingVersion())
	}
	ctx := testCtx(t)
	for i := range 10 {
		if _, err := c.Put(ctx, "close", fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the refresher's loads", func() bool { return tables.Load() >= 4 }) // New's load, then the refresher's
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := c.Get(ctx, "close", "k"); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	// The refresher is gone, and so are the connections: the fake node's
	// end of each closed when the client closed its own.
	goleak.VerifyNone(t, ignore)
}

// TestRoundRobinRotates checks that round-robin spreads requests over every
// endpoint.
func TestRoundRobinRotates(t *testing.T) {
	cl := useShared(t)
	rec := newRecorder()
	defer rec.close()
	c := newClient(t, cl.endpoints(), client.WithRouting(client.RoundRobin), client.WithHTTPClient(&http.Client{Transport: rec}))
	if c.RingVersion() != "" || c.Replicas("b", "k") != nil {
		t.Fatal("a round-robin client has a table")
	}
	ctx := testCtx(t)
	for i := range 10 {
		if _, err := c.Put(ctx, "rr", fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	hosts := map[string]int{}
	for _, r := range rec.records() {
		hosts[r.host]++
	}
	if len(hosts) != 5 {
		t.Fatalf("requests went to %v, want all 5 nodes twice", hosts)
	}
	for h, n := range hosts {
		if n != 2 {
			t.Fatalf("requests went to %v: %s got %d", hosts, h, n)
		}
	}
}
