package client_test

import (
	"bufio"
	"context"
	"encoding/json"
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
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quorumkv/quorumkv/server"
)

// TestMain closes the cluster the examples share, then checks that no
// goroutine outlived the tests (every client and node was closed).
func TestMain(m *testing.M) {
	code := m.Run()
	closeShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// cluster runs quorumkv nodes in this process, each with its own Pebble
// directory, HTTP listener on a loopback port picked at run time, and
// memberlist, talking real HTTP and real gossip. N=3 and 64 partitions,
// fast gossip timing.
type cluster struct {
	root    string
	ownRoot bool
	cfg     server.Config
	hc      *http.Client

	mu      sync.Mutex
	ids     []string
	addrs   map[string]string // id -> HTTP address
	gossip  map[string]string // id -> gossip address
	servers map[string]*server.Server
}

const settleTimeout = 60 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("QUORUMKV_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startCluster starts nodes n1..nodes and waits until they settle. root is
// the data directory ("" for a temporary one, removed by close).
func startCluster(nodes int, root string, mutate func(*server.Config)) (*cluster, error) {
	c := &cluster{root: root, addrs: map[string]string{}, gossip: map[string]string{}, servers: map[string]*server.Server{},
		hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	if c.root == "" {
		dir, err := os.MkdirTemp("", "quorumkv-client-test-")
		if err != nil {
			return nil, err
		}
		c.root, c.ownRoot = dir, true
	}
	c.cfg = server.DefaultConfig()
	c.cfg.Ring.Partitions = 64
	c.cfg.FastTiming()
	c.cfg.Logger = testLogger()
	if mutate != nil {
		mutate(&c.cfg)
	}
	for range nodes {
		if _, err := c.addNode(); err != nil {
			c.close()
			return nil, err
		}
	}
	if err := c.waitSettled(settleTimeout); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// newCluster is startCluster for tests: it fails the test on error and
// closes the cluster when the test ends.
func newCluster(t testing.TB, nodes int) *cluster {
	t.Helper()
	start := time.Now()
	c, err := startCluster(nodes, t.TempDir(), nil)
	if err != nil {
		t.Fatalf("starting a %d-node cluster: %v", nodes, err)
	}
	t.Cleanup(c.close)
	t.Logf("%d-node cluster up and settled in %v", nodes, time.Since(start).Round(time.Millisecond))
	return c
}

// addNode starts the next node (n1, n2, ...); every node after the first
// joins through the running ones. It does not wait for the cluster to
// settle.
func (c *cluster) addNode() (string, error) {
	c.mu.Lock()
	id := fmt.Sprintf("n%d", len(c.ids)+1)
	var join []string
	for _, other := range c.ids {
		if c.servers[other] != nil {
			join = append(join, c.gossip[other])
		}
	}
	c.mu.Unlock()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	cfg := c.cfg
	cfg.NodeID = id
	cfg.Advertise = ln.Addr().String()
	cfg.Gossip.BindAddr = "127.0.0.1:0"
	cfg.Gossip.Join = join
	s, err := server.Start(cfg, filepath.Join(c.root, id), 8<<20, ln)
	if err != nil {
		return "", fmt.Errorf("start %s: %w", id, err)
	}
	c.mu.Lock()
	c.ids = append(c.ids, id)
	c.addrs[id] = cfg.Advertise
	c.gossip[id] = s.Node.GossipAddr()
	c.servers[id] = s
	c.mu.Unlock()
	return id, nil
}

// running lists the ids of the nodes that are up, in order.
func (c *cluster) running() []string {
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

// endpoints returns the HTTP addresses of the running nodes.
func (c *cluster) endpoints() []string {
	var out []string
	for _, id := range c.running() {
		out = append(out, c.addr(id))
	}
	return out
}

func (c *cluster) addr(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addrs[id]
}

// idOf returns the node id serving HTTP at addr.
func (c *cluster) idOf(addr string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, a := range c.addrs {
		if a == addr {
			return id
		}
	}
	return ""
}

// stop closes node id (a crash-free stop: it stays a member, only its
// liveness changes).
func (c *cluster) stop(id string) error {
	c.mu.Lock()
	s := c.servers[id]
	delete(c.servers, id)
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Close(ctx)
}

func (c *cluster) close() {
	for _, id := range c.running() {
		_ = c.stop(id)
	}
	c.hc.CloseIdleConnections()
	if c.ownRoot {
		os.RemoveAll(c.root)
	}
}

// clusterView is the part of GET /v1/cluster the harness checks.
type clusterView struct {
	States  map[string]string `json:"states"`
	Settled bool              `json:"settled"`
	Version string            `json:"ring_version"`
}

type statusView struct {
	Members []struct {
		Node  string `json:"node"`
		State string `json:"state"`
		Alive bool   `json:"alive"`
	} `json:"members"`
}

func (c *cluster) getJSON(id, path string, v any) error {
	resp, err := c.hc.Get("http://" + c.addr(id) + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s on %s: %d %s", path, id, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// settledVersion returns the ring version every running node reports when
// they all see every node as a member, the running ones alive, transfers
// settled and the same ring version; otherwise "" and, in why, what is not
// there yet.
func (c *cluster) settledVersion() (version, why string, err error) {
	c.mu.Lock()
	all := len(c.ids)
	c.mu.Unlock()
	for _, id := range c.running() {
		var v clusterView
		if err := c.getJSON(id, "/v1/cluster", &v); err != nil {
			return "", "", err
		}
		switch {
		case !v.Settled:
			return "", id + " has transfers pending", nil
		case len(v.States) != all:
			return "", fmt.Sprintf("%s knows %d of %d nodes", id, len(v.States), all), nil
		}
		for node, st := range v.States {
			if st != "member" {
				return "", fmt.Sprintf("%s sees %s %s", id, node, st), nil
			}
		}
		if version != "" && v.Version != version {
			return "", fmt.Sprintf("%s is at ring version %s, others at %s", id, v.Version, version), nil
		}
		version = v.Version
		var s statusView
		if err := c.getJSON(id, "/v1/admin/status", &s); err != nil {
			return "", "", err
		}
		for _, m := range s.Members {
			c.mu.Lock()
			up := c.servers[m.Node] != nil
			c.mu.Unlock()
			if m.Alive != up {
				return "", fmt.Sprintf("%s sees %s alive=%v", id, m.Node, m.Alive), nil
			}
		}
	}
	return version, "", nil
}

// waitSettled polls settledVersion until it reports a version or d passes.
func (c *cluster) waitSettled(d time.Duration) error {
	deadline := time.Now().Add(d)
	var lastWhy string
	var lastErr error
	for {
		v, why, err := c.settledVersion()
		if v != "" {
			return nil
		}
		if err != nil {
			lastErr = err
		} else {
			lastWhy = why
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster did not settle within %v (last seen: %s; last error: %v)", d, lastWhy, lastErr)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// coordinated reads quorumkv_requests_coordinated_total from node id's
// /metrics: the sums over op, by replica label ("true", "false").
func (c *cluster) coordinated(id string) (map[string]float64, error) {
	resp, err := c.hc.Get("http://" + c.addr(id) + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	const name = "quorumkv_requests_coordinated_total"
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels, value := parseSample(rest)
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %w", line, err)
		}
		out[labels["replica"]] += f
	}
	return out, sc.Err()
}

// parseSample splits `{a="x",b="y"} 12` into its labels and value (the
// Prometheus text format, without escapes in label values, which these
// metrics do not have).
func parseSample(s string) (map[string]string, string) {
	labels := map[string]string{}
	if strings.HasPrefix(s, "{") {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return labels, ""
		}
		for _, kv := range strings.Split(s[1:end], ",") {
			k, v, ok := strings.Cut(kv, "=")
			if ok {
				labels[strings.TrimSpace(k)] = strings.Trim(v, `"`)
			}
		}
		s = s[end+1:]
	}
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return labels, ""
	}
	return labels, fields[0]
}

// coordinatedTotals sums coordinated over every running node.
func (c *cluster) coordinatedTotals() (map[string]float64, error) {
	out := map[string]float64{}
	for _, id := range c.running() {
		m, err := c.coordinated(id)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out, nil
}

// shared is one 5-node cluster for the tests and examples that do not
// stop or add nodes; started on first use, closed by TestMain.
var shared struct {
	once sync.Once
	c    *cluster
	err  error
}

func sharedCluster() (*cluster, error) {
	shared.once.Do(func() { shared.c, shared.err = startCluster(5, "", nil) })
	return shared.c, shared.err
}

func closeShared() {
	if shared.c != nil {
		shared.c.close()
	}
}

// useShared returns the shared cluster or fails the test.
func useShared(t testing.TB) *cluster {
	t.Helper()
	c, err := sharedCluster()
	if err != nil {
		t.Fatalf("shared cluster: %v", err)
	}
	return c
}

var freshCount atomic.Int64

// fresh returns base with a suffix that no other call in this process
// returned: a bucket of its own for each run of a test on the shared
// cluster (go test -count=N reuses it).
func fresh(base string) string { return fmt.Sprintf("%s-%d", base, freshCount.Add(1)) }

// waitUntil polls cond until it holds, failing the test after 20 s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
