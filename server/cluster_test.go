package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// testCluster runs nodes in this process, each with its own Pebble
// directory and its own HTTP server on a loopback port picked at run time.
// Nodes talk to each other over real HTTP.
type testCluster struct {
	t       testing.TB
	cfg     Config
	ids     []string
	dirs    map[string]string
	peers   map[string]string
	servers map[string]*Server
	client  *http.Client
}

func quietLogger() *slog.Logger {
	if os.Getenv("QUORUMKV_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newTestCluster(t testing.TB, nodes int, mutate func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{
		t:       t,
		dirs:    map[string]string{},
		peers:   map[string]string{},
		servers: map[string]*Server{},
		client:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
	root := t.TempDir()
	listeners := map[string]net.Listener{}
	for i := range nodes {
		id := fmt.Sprintf("n%d", i+1)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.ids = append(c.ids, id)
		c.dirs[id] = filepath.Join(root, id)
		c.peers[id] = ln.Addr().String()
		listeners[id] = ln
	}
	c.cfg = DefaultConfig()
	c.cfg.Ring.Partitions = 64
	c.cfg.Logger = quietLogger()
	if mutate != nil {
		mutate(&c.cfg)
	}
	c.cfg.Peers = c.peers
	for _, id := range c.ids {
		c.startOn(id, listeners[id])
	}
	t.Cleanup(c.close)
	return c
}

func (c *testCluster) startOn(id string, ln net.Listener) {
	c.t.Helper()
	cfg := c.cfg
	cfg.NodeID = id
	s, err := Start(cfg, c.dirs[id], 8<<20, ln)
	if err != nil {
		ln.Close()
		c.t.Fatalf("start %s: %v", id, err)
	}
	c.servers[id] = s
}

// start restarts a stopped node on its old address and data directory.
func (c *testCluster) start(id string) {
	c.t.Helper()
	ln, err := net.Listen("tcp", c.peers[id])
	if err != nil {
		c.t.Fatalf("relisten %s: %v", id, err)
	}
	c.startOn(id, ln)
}

func (c *testCluster) stop(id string) {
	c.t.Helper()
	s := c.servers[id]
	if s == nil {
		return
	}
	delete(c.servers, id)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		c.t.Errorf("stop %s: %v", id, err)
	}
}

func (c *testCluster) wipe(id string) {
	c.t.Helper()
	if err := os.RemoveAll(c.dirs[id]); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testCluster) close() {
	for _, id := range c.ids {
		c.stop(id)
	}
	c.client.CloseIdleConnections()
}

func (c *testCluster) store(id string) *storage.Store { return c.servers[id].store }

func (c *testCluster) table() *ring.Table { return c.servers[c.ids[0]].Node.Table() }

type response struct {
	status int
	header http.Header
	body   string
}

// do sends a request to node id. headers alternate name, value.
func (c *testCluster) do(id, method, path, body string, headers ...string) response {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+c.peers[id]+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s on %s: %v", method, path, id, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (c *testCluster) must(want int, r response) response {
	c.t.Helper()
	if r.status != want {
		c.t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	return r
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// liveValues returns the live sibling values node id stores for bucket/key.
func (c *testCluster) liveValues(id, bucket, key string) []string {
	c.t.Helper()
	k := storage.Key{Partition: uint32(c.table().Partition(bucket, key)), Bucket: bucket, Key: key}
	o, err := c.store(id).Get(k)
	if err != nil {
		return nil
	}
	var vs []string
	for _, s := range o.Live() {
		vs = append(vs, string(s.Value))
	}
	return vs
}
