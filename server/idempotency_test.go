package server

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/quorumkv/quorumkv/storage"
)

// A write retried with its X-Request-Id, through another coordinator that
// already holds the first attempt, adds no version.
func TestRetriedWriteAddsNoVersion(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	first := c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `{"v":1}`, "X-Request-Id", "req-1"))
	retry := c.must(204, c.do("n2", "PUT", "/v1/kv/b/k?w=3", `{"v":1}`, "X-Request-Id", "req-1"))
	k := c.key("b", "k")
	for _, id := range c.running() {
		o, err := c.store(id).Get(k)
		if err != nil || len(o.Siblings) != 1 || o.Siblings[0].RequestID != "req-1" {
			t.Fatalf("%s holds %+v (%v), want one version of req-1", id, o, err)
		}
	}
	if got := testutil.ToFloat64(c.servers["n2"].Node.metrics.retries); got != 1 {
		t.Fatalf("n2 counted %v retries, want 1", got)
	}
	if first.header.Get("X-Context") != retry.header.Get("X-Context") {
		t.Fatalf("the retry answered context %s, the first attempt %s", retry.header.Get("X-Context"), first.header.Get("X-Context"))
	}
	// A different request id is a different write: a plain PUT replaces.
	c.must(204, c.do("n2", "PUT", "/v1/kv/b/k?w=3", `{"v":2}`, "X-Request-Id", "req-2"))
	if r := c.must(200, c.do("n3", "GET", "/v1/kv/b/k?r=3", "")); r.body != `{"v":2}` {
		t.Fatalf("GET answered %s", r.body)
	}
}

// A first attempt that reached one replica only, retried through a
// coordinator that never saw it, leaves two dots of one write: reads show
// one version, and a write with their context supersedes both.
func TestRetryThroughAnotherCoordinatorShowsOneVersion(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.PauseAntiEntropy = true })
	k := c.key("b", "k")
	tok := c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `{"v":0}`)).header.Get("X-Context")
	ctx0, err := storage.DecodeContext(tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.store("n1").Put(k, storage.Write{Context: ctx0, Value: []byte(`{"v":1}`), ContentType: "application/json", Now: time.Now(), RequestID: "req-1"}); err != nil {
		t.Fatal(err)
	}
	// The retry, with the same context, coordinated by n2, which does not
	// hold the first attempt.
	c.must(204, c.do("n2", "PUT", "/v1/kv/b/k?w=3", `{"v":1}`, "X-Request-Id", "req-1", "X-Context", tok))
	o, err := c.store("n1").Get(k)
	if err != nil || len(o.Siblings) != 2 {
		t.Fatalf("n1 holds %+v (%v), want both dots of req-1", o, err)
	}
	r := c.must(200, c.do("n1", "GET", "/v1/kv/b/k?r=3", ""))
	if r.body != `{"v":1}` {
		t.Fatalf("GET answered %d %s, want the one version", r.status, r.body)
	}
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `{"v":2}`, "X-Context", r.header.Get("X-Context")))
	for _, id := range c.running() {
		if got := c.liveValues(id, "b", "k"); len(got) != 1 || got[0] != `{"v":2}` {
			t.Fatalf("%s holds %v after the write that saw both dots", id, got)
		}
	}
}

func TestBadRequestIDRefused(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	for _, id := range []string{strings.Repeat("x", storage.MaxRequestID+1), "a b", "ä", "a/b"} {
		r := c.do("n1", "PUT", "/v1/kv/b/k", `{}`, "X-Request-Id", id)
		if r.status != 400 || !strings.Contains(r.body, "X-Request-Id") {
			t.Fatalf("X-Request-Id %q: %d %s", id, r.status, r.body)
		}
	}
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k", `{}`, "X-Request-Id", strings.Repeat("x", storage.MaxRequestID)))
}
