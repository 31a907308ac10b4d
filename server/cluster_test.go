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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/server/faultnet"
	"github.com/quorumkv/quorumkv/storage"
)

// testCluster runs nodes in this process, each with its own Pebble
// directory, its own HTTP server on a loopback port picked at run time and
// its own memberlist. Nodes talk to each other over real HTTP and real
// gossip, through a fault-injecting network (c.net).
type testCluster struct {
	t       testing.TB
	cfg     Config
	net     *faultnet.Network
	ids     []string
	dirs    map[string]string
	peers   map[string]string // id -> HTTP address (kept across restarts)
	gossip  map[string]string // id -> gossip address (kept across restarts)
	servers map[string]*Server
	client  *http.Client
	// mu guards the maps against load goroutines; the test goroutine, the
	// only writer, reads them without it.
	mu sync.Mutex
}

func quietLogger() *slog.Logger {
	if os.Getenv("QUORUMKV_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is the base configuration of test nodes: small partitions and
// fast gossip, so that membership settles in a fraction of a second.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Ring.Partitions = 64
	cfg.Logger = quietLogger()
	cfg.FastTiming()
	return cfg
}

func newTestCluster(t testing.TB, nodes int, mutate func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{
		t:       t,
		net:     faultnet.New(),
		dirs:    map[string]string{},
		peers:   map[string]string{},
		gossip:  map[string]string{},
		servers: map[string]*Server{},
		client:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
	root := t.TempDir()
	c.cfg = testConfig()
	if mutate != nil {
		mutate(&c.cfg)
	}
	t.Cleanup(c.close)
	for i := range nodes {
		id := fmt.Sprintf("n%d", i+1)
		c.ids = append(c.ids, id)
		c.dirs[id] = filepath.Join(root, id)
		c.start(id)
	}
	c.waitSettled()
	return c
}

// start starts (or restarts) a node on its address and data directory. A
// node with no data joins through the running nodes.
func (c *testCluster) start(id string) {
	c.t.Helper()
	addr := c.peers[id]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		c.t.Fatalf("listen %s: %v", id, err)
	}
	cfg := c.cfg
	cfg.NodeID = id
	cfg.Advertise = ln.Addr().String()
	cfg.Gossip.BindAddr = c.gossip[id]
	if cfg.Gossip.BindAddr == "" {
		cfg.Gossip.BindAddr = "127.0.0.1:0"
	}
	for _, other := range c.running() {
		cfg.Gossip.Join = append(cfg.Gossip.Join, c.gossip[other])
	}
	cfg.Dial = c.net.DialerWith(id, newDialer())
	cfg.Gossip.WrapTransport = func(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport { return c.net.Transport(id, t) }
	s, err := Start(cfg, c.dirs[id], 8<<20, ln)
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	c.mu.Lock()
	c.servers[id] = s
	c.peers[id] = cfg.Advertise
	c.gossip[id] = *s.Node.gossip.addr.Load()
	c.mu.Unlock()
	c.net.Register(id, c.peers[id], c.gossip[id])
}

// running lists the nodes that are up, in id order.
func (c *testCluster) running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range c.ids {
		if c.servers[id] != nil {
			out = append(out, id)
		}
	}
	return out
}

// waitSettled waits until every running node sees every node of the
// cluster that is not removed as a member, sees the running ones alive, has
// no transfer or drop pending, and all agree on the ring version.
func (c *testCluster) waitSettled() {
	c.t.Helper()
	defer func() {
		if c.t.Failed() {
			for _, id := range c.running() {
				n := c.servers[id].Node
				pl := n.placement()
				c.t.Logf("%s: settled=%v version=%s members=%v pulls=%d holds=%d", id, pl.Settled(), pl.Version(),
					pl.Membership().All(), len(pl.Pulls(id)), pl.Holdings()[id].Parts.Count())
			}
		}
	}()
	// Joins pull every partition; with the race detector and other test
	// packages sharing two cores a 5-node cluster can take well over 10 s.
	eventuallyWithin(c.t, 45*time.Second, "the cluster to settle", func() bool {
		version := ""
		for _, id := range c.running() {
			n := c.servers[id].Node
			pl := n.placement()
			if !pl.Settled() || len(pl.Drops(id)) > 0 {
				return false
			}
			for _, other := range c.ids {
				m, ok := pl.Membership().Get(other)
				if !ok {
					return false
				}
				if m.State != ring.StateMember && m.State != ring.StateRemoved {
					return false
				}
				if c.servers[other] != nil && !n.alive(other) {
					return false
				}
			}
			if version != "" && pl.Version() != version {
				return false
			}
			version = pl.Version()
		}
		return true
	})
}

func (c *testCluster) stop(id string) {
	c.t.Helper()
	s := c.servers[id]
	if s == nil {
		return
	}
	c.mu.Lock()
	delete(c.servers, id)
	c.mu.Unlock()
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

func (c *testCluster) table() *ring.Table { return c.anyNode().Table() }

func (c *testCluster) anyNode() *Node { return c.servers[c.running()[0]].Node }

type response struct {
	status int
	header http.Header
	body   string
}

// do sends a request to node id. headers alternate name, value.
func (c *testCluster) do(id, method, path, body string, headers ...string) response {
	c.t.Helper()
	r, err := c.tryDo(id, method, path, body, headers...)
	if err != nil {
		c.t.Fatalf("%s %s on %s: %v", method, path, id, err)
	}
	return r
}

// tryDo is do for goroutines other than the test's: it returns errors.
func (c *testCluster) tryDo(id, method, path, body string, headers ...string) (response, error) {
	c.mu.Lock()
	addr := c.peers[id]
	c.mu.Unlock()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

func (c *testCluster) must(want int, r response) response {
	c.t.Helper()
	if r.status != want {
		c.t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	return r
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, 10*time.Second, what, cond)
}

// eventuallyWithin polls cond until it holds or d passes.
func eventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
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

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// timeout returns a channel closed after the test's polling deadline.
func timeout(t testing.TB) <-chan time.Time { return time.After(20 * time.Second) }

// envInt reads an integer knob for benchmarks.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
