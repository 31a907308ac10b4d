// Package e2e holds process-level fault tests: every node is a real
// quorumkv process (built once by TestMain), crashed with SIGKILL, paused
// with SIGSTOP and cut off from its peers through the hidden --debug-faults
// endpoints. The tests see the cluster as an operator or a client does,
// through HTTP; the only import from the module is storage's encoding of
// the empty context (see emptyContext).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binPath is the quorumkv binary TestMain built.
var binPath string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot find the module root: %v\n", err)
		return 1
	}
	sourceRoot = root
	dir, err := os.MkdirTemp("", "quorumkv-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "quorumkv")
	start := time.Now()
	build := exec.Command("go", "build", "-o", binPath, "./cmd/quorumkv")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAILED to build the quorumkv binary (go build -o %s ./cmd/quorumkv in %s): %v\n%s\n",
			binPath, root, err, out)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s in %v\n", binPath, time.Since(start).Round(time.Millisecond))
	return m.Run()
}

// sourceRoot is the module root the binary was built from.
var sourceRoot string

// TestSourcesTracked stats every source file of the module. The binary
// these tests run is built by a `go build` subprocess, which go test's
// result cache does not see; files a test stats are part of the cache key
// (only once m.Run has started, hence a test and not TestMain), so a change
// anywhere in the sources reruns these tests instead of reporting a stale
// cached pass.
func TestSourcesTracked(t *testing.T) {
	if err := trackSources(sourceRoot); err != nil {
		t.Fatal(err)
	}
}

func trackSources(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			_, err = os.Stat(path)
		}
		return err
	})
}

// moduleRoot is the directory of the go.mod of the module under test.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// testSeed returns the seed of a test's random generators: the value of
// QUORUMKV_E2E_SEED if set, else the clock. It is logged at the start and
// again if the test fails.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("QUORUMKV_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("QUORUMKV_E2E_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with QUORUMKV_E2E_SEED=%d)", seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d (rerun with QUORUMKV_E2E_SEED=%d)", seed, seed)
		}
	})
	return seed
}

// --- ports ---

var (
	portsMu sync.Mutex
	// portsUsed are the ports handed out in this process, so that two
	// nodes never get the same one even if the OS offers it again.
	portsUsed = map[int]bool{}
)

// freePort returns a loopback port that was free just now: free for TCP,
// and for UDP too if udp is set (gossip uses both).
func freePort(udp bool) (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := !portsUsed[port]
		if ok && udp {
			pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				ok = false
			} else {
				pc.Close()
			}
		}
		ln.Close()
		if ok {
			portsUsed[port] = true
			return port, nil
		}
	}
	return 0, errors.New("no free port found in 100 tries")
}

// --- HTTP ---

// reply is an HTTP answer, body read.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) String() string {
	b := r.body
	if len(b) > 300 {
		b = append(b[:300:300], "..."...)
	}
	return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(b))
}

// newHTTPClient is a client for many concurrent requests to a few hosts.
// Every call gets its deadline from its context; Timeout is a backstop.
func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// do sends one request, bounded by timeout. headers alternate name, value.
func do(client *http.Client, timeout time.Duration, method, url string, body []byte, headers ...string) (reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return reply{}, fmt.Errorf("reading the body of %s %s: %w", method, url, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// --- nodes ---

// node is one quorumkv process (and its restarts).
type node struct {
	id      string
	dataDir string
	logPath string
	join    *node    // the node whose gossip address --join names; nil for the first
	extra   []string // flags beyond the common ones

	mu         sync.Mutex
	httpAddr   string
	gossipAddr string
	cmd        *exec.Cmd
	done       chan struct{} // closed when the current process has exited
	exitErr    error
	paused     bool
	starts     int
}

func (n *node) url(path string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return "http://" + n.httpAddr + path
}

func (n *node) gossip() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gossipAddr
}

// args is n's command line: the same at every start, unless its ports had
// to change (see startReady).
func (n *node) args() []string {
	n.mu.Lock()
	args := []string{"serve", "--node-id", n.id, "--http-addr", n.httpAddr, "--gossip-addr", n.gossipAddr,
		"--data-dir", n.dataDir, "--log-format", "json", "--debug-faults", "--test-timing"}
	n.mu.Unlock()
	if n.join != nil {
		args = append(args, "--join", n.join.gossip())
	}
	return append(args, n.extra...)
}

// pickPorts gives n fresh loopback ports for HTTP and gossip.
func (n *node) pickPorts() error {
	hp, err := freePort(false)
	if err != nil {
		return err
	}
	gp, err := freePort(true)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.httpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(hp))
	n.gossipAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(gp))
	return nil
}

// running reports whether the process is up (paused or not).
func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// cluster is a set of quorumkv processes with their logs and data in the
// test's temp directory.
type cluster struct {
	t      *testing.T
	dir    string
	client *http.Client
	nodes  []*node
	byID   map[string]*node
}

// newCluster prepares n nodes (n1..nn) with their ports, data directories
// and command lines, and registers the cleanup that kills them all (and
// prints the tail of their logs if the test failed). extra flags go to
// every node. Nothing is started.
func newCluster(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), client: newHTTPClient(), byID: map[string]*node{}}
	t.Cleanup(c.cleanup)
	for i := range n {
		c.addNode(fmt.Sprintf("n%d", i+1), extra...)
	}
	return c
}

// addNode prepares one more node; all but the first join the first.
func (c *cluster) addNode(id string, extra ...string) *node {
	c.t.Helper()
	n := &node{
		id:      id,
		dataDir: filepath.Join(c.dir, "data", id),
		logPath: filepath.Join(c.dir, id+".log"),
		extra:   extra,
	}
	if err := n.pickPorts(); err != nil {
		c.t.Fatal(err)
	}
	if len(c.nodes) > 0 {
		n.join = c.nodes[0]
	}
	c.nodes = append(c.nodes, n)
	c.byID[id] = n
	return n
}

// startAll starts the first node, then the others (they join it), waits
// until each answers /readyz and the cluster settles.
func (c *cluster) startAll() {
	c.t.Helper()
	start := time.Now()
	c.startReady(c.nodes[0])
	for _, n := range c.nodes[1:] {
		c.start(n)
	}
	for _, n := range c.nodes[1:] {
		if err := c.waitReady(n, 30*time.Second); err != nil {
			c.retryStart(n, err)
		}
	}
	c.waitSettled(60 * time.Second)
	c.t.Logf("cluster of %d nodes up and settled in %v", len(c.nodes), time.Since(start).Round(time.Millisecond))
}

// start starts n's process (again, after a kill: same flags, same data
// directory), appending to its log file.
func (c *cluster) start(n *node) {
	c.t.Helper()
	if n.running() {
		c.t.Fatalf("start %s: already running", n.id)
	}
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	args := n.args()
	n.mu.Lock()
	n.starts++
	fmt.Fprintf(f, "=== e2e: start #%d of %s at %s: %s %s\n", n.starts, n.id, time.Now().Format(time.RFC3339Nano), binPath, strings.Join(args, " "))
	n.mu.Unlock()
	cmd := exec.Command(binPath, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("start %s: %v", n.id, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done, n.exitErr, n.paused = cmd, done, nil, false
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		close(done)
	}()
}

// signal sends sig to n's process.
func (c *cluster) signal(n *node, sig syscall.Signal) {
	c.t.Helper()
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil || !n.running() {
		c.t.Fatalf("signal %v to %s: not running", sig, n.id)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v to %s: %v", sig, n.id, err)
	}
}

// kill crashes n (SIGKILL) and waits for the process to be gone.
func (c *cluster) kill(n *node) {
	c.t.Helper()
	c.signal(n, syscall.SIGKILL)
	n.mu.Lock()
	done := n.done
	n.paused = false
	n.mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s did not exit within 10s of SIGKILL", n.id)
	}
}

// pause stops n with SIGSTOP; resume continues it with SIGCONT.
func (c *cluster) pause(n *node) {
	c.t.Helper()
	c.signal(n, syscall.SIGSTOP)
	n.mu.Lock()
	n.paused = true
	n.mu.Unlock()
}

func (c *cluster) resume(n *node) {
	c.t.Helper()
	c.signal(n, syscall.SIGCONT)
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
}

// restart starts a killed node again, with the same flags and data
// directory, and waits until it is ready.
func (c *cluster) restart(n *node) {
	c.t.Helper()
	c.startReady(n)
}

// startReady starts n and waits until it is ready.
func (c *cluster) startReady(n *node) {
	c.t.Helper()
	c.start(n)
	if err := c.waitReady(n, 30*time.Second); err != nil {
		c.retryStart(n, err)
	}
}

// retryStart handles a start that failed with err. The ports were free
// when they were picked, but the OS may hand a free port to any socket
// (an outgoing connection's ephemeral port, say) until the node binds it:
// if the node exited because an address was in use, it starts again on
// fresh ports (a node may change addresses; the cluster learns the new
// ones by gossip). Any other failure fails the test.
func (c *cluster) retryStart(n *node, err error) {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		if !errors.Is(err, errExited) || !strings.Contains(lastStart(n.logPath), "address already in use") || attempt > 3 {
			c.fatalf("%v", err)
		}
		if perr := n.pickPorts(); perr != nil {
			c.fatalf("%v (and no fresh port: %v)", err, perr)
		}
		c.t.Logf("%s could not bind its address (in use since it was picked); starting it on fresh ports", n.id)
		c.start(n)
		if err = c.waitReady(n, 30*time.Second); err == nil {
			return
		}
	}
}

// lastStart returns the log of n's latest start.
func lastStart(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndex(s, "=== e2e: start #"); i >= 0 {
		s = s[i:]
	}
	return s
}

// cleanup kills every process and, if the test failed, prints the tail of
// every node's log.
func (c *cluster) cleanup() {
	for _, n := range c.nodes {
		n.mu.Lock()
		cmd, done := n.cmd, n.done
		n.mu.Unlock()
		if cmd == nil {
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.t.Errorf("%s (pid %d) did not exit within 10s of SIGKILL", n.id, cmd.Process.Pid)
		}
	}
	c.client.CloseIdleConnections()
	if c.t.Failed() {
		c.dumpLogs(40)
	}
}

// dumpLogs prints the last lines of every node's log.
func (c *cluster) dumpLogs(lines int) {
	for _, n := range c.nodes {
		c.t.Logf("----- last %d lines of %s (%s) -----\n%s", lines, n.id, n.logPath, tail(n.logPath, lines))
	}
}

// tail returns the last lines of a file, each cut at 600 bytes.
func tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	var ring []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l := sc.Text()
		if len(l) > 600 {
			l = l[:600] + "..."
		}
		ring = append(ring, l)
		if len(ring) > lines {
			ring = ring[1:]
		}
	}
	return strings.Join(ring, "\n")
}

// fatalf fails the test now, naming the processes' state.
func (c *cluster) fatalf(format string, args ...any) {
	c.t.Helper()
	var st []string
	for _, n := range c.nodes {
		n.mu.Lock()
		s := "never started"
		switch {
		case n.done == nil:
		case n.paused:
			s = "paused"
		default:
			select {
			case <-n.done:
				s = fmt.Sprintf("exited (%v)", n.exitErr)
			default:
				s = "running"
			}
		}
		n.mu.Unlock()
		st = append(st, n.id+": "+s)
	}
	c.t.Fatalf(format+"\nprocesses: %s", append(args, strings.Join(st, ", "))...)
}

// errExited is wrapped by the error of waitReady when the process exited.
var errExited = errors.New("exited before it was ready")

// waitReady polls n's /readyz until it answers 200. It returns an error
// wrapping errExited at once if the process exits, or another after
// timeout.
func (c *cluster) waitReady(n *node, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		n.mu.Lock()
		done := n.done
		n.mu.Unlock()
		select {
		case <-done:
			n.mu.Lock()
			err := n.exitErr
			n.mu.Unlock()
			return fmt.Errorf("%s %w (%v); the end of its log:\n%s", n.id, errExited, err, tail(n.logPath, 20))
		default:
		}
		r, err := do(c.client, time.Second, http.MethodGet, n.url("/readyz"), nil)
		if err == nil && r.status == http.StatusOK {
			return nil
		}
		last = fmt.Sprint(r, err)
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: last answer %s", n.id, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running lists the nodes whose process is up, paused ones included.
func (c *cluster) running() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

// --- admin status ---

// memberStatus and clusterStatus mirror server.MemberStatus and
// server.ClusterStatus (GET /v1/admin/status).
type memberStatus struct {
	Node         string `json:"node"`
	State        string `json:"state"`
	Alive        bool   `json:"alive"`
	Address      string `json:"address"`
	PendingHints *int64 `json:"pending_hints"`
	Transfers    int    `json:"transfers"`
	RingVersion  string `json:"ring_version"`
	Error        string `json:"error"`
}

type clusterStatus struct {
	Node        string         `json:"node"`
	RingVersion string         `json:"ring_version"`
	Settled     bool           `json:"settled"`
	Members     []memberStatus `json:"members"`
}

func (c *cluster) status(n *node) (clusterStatus, error) {
	r, err := do(c.client, 5*time.Second, http.MethodGet, n.url("/v1/admin/status"), nil)
	if err != nil {
		return clusterStatus{}, err
	}
	if r.status != http.StatusOK {
		return clusterStatus{}, fmt.Errorf("GET /v1/admin/status: %s", r)
	}
	var st clusterStatus
	if err := json.Unmarshal(r.body, &st); err != nil {
		return clusterStatus{}, fmt.Errorf("GET /v1/admin/status: %v: %s", err, r)
	}
	return st, nil
}

// notSettled returns why the cluster is not settled, or "" if it is: every
// node of the cluster runs and, as every node sees it, the ring is settled,
// every node is listed, alive and a member with no pending hint and no
// transfer, and all of them report the same ring version.
func (c *cluster) notSettled() string {
	version := ""
	for _, n := range c.nodes {
		if !n.running() {
			return n.id + " is not running"
		}
	}
	for _, n := range c.nodes {
		st, err := c.status(n)
		if err != nil {
			return fmt.Sprintf("%s: %v", n.id, err)
		}
		if !st.Settled {
			return n.id + ": ring not settled (transfers pending)"
		}
		if version == "" {
			version = st.RingVersion
		}
		if st.RingVersion != version {
			return fmt.Sprintf("%s: ring version %s, another node has %s", n.id, st.RingVersion, version)
		}
		var listed []string
		for _, m := range st.Members {
			listed = append(listed, m.Node)
			switch {
			case c.byID[m.Node] == nil:
				return fmt.Sprintf("%s lists an unknown member %s", n.id, m.Node)
			case !m.Alive:
				return fmt.Sprintf("%s sees %s down", n.id, m.Node)
			case m.State != "member":
				return fmt.Sprintf("%s sees %s %s", n.id, m.Node, m.State)
			case m.Error != "":
				return fmt.Sprintf("%s cannot ask %s: %s", n.id, m.Node, m.Error)
			case m.PendingHints == nil || *m.PendingHints != 0:
				h := "unknown"
				if m.PendingHints != nil {
					h = strconv.FormatInt(*m.PendingHints, 10)
				}
				return fmt.Sprintf("%s: %s has %s pending hints", n.id, m.Node, h)
			case m.Transfers != 0:
				return fmt.Sprintf("%s: %s has %d transfers pending", n.id, m.Node, m.Transfers)
			case m.RingVersion != version:
				return fmt.Sprintf("%s: %s reports ring version %q, %s has %s", n.id, m.Node, m.RingVersion, n.id, version)
			}
		}
		if len(listed) != len(c.nodes) {
			slices.Sort(listed)
			return fmt.Sprintf("%s lists members %v, want all %d nodes", n.id, listed, len(c.nodes))
		}
	}
	return ""
}

// waitSettled polls until notSettled is "" (see there).
func (c *cluster) waitSettled(timeout time.Duration) {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		why := c.notSettled()
		if why == "" {
			c.t.Logf("settled after %v", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			c.fatalf("cluster not settled after %v: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --- faults through the --debug-faults endpoints ---

// debugPost posts to a debug endpoint, retrying until it answers 204.
func (c *cluster) debugPost(n *node, path string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := do(c.client, 2*time.Second, http.MethodPost, n.url(path), nil)
		if err == nil && r.status == http.StatusNoContent {
			return nil
		}
		if err == nil && r.status == http.StatusNotFound {
			return fmt.Errorf("POST %s on %s: %s (is the node started with --debug-faults?)", path, n.id, r)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("POST %s on %s: %v %v", path, n.id, r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// partition cuts every link between a node of side a and a node of side
// b, on both ends.
func (c *cluster) partition(a, b []*node) error {
	cut := func(from *node, to []*node) error {
		q := make([]string, len(to))
		for i, n := range to {
			q[i] = "peer=" + n.id
		}
		return c.debugPost(from, "/v1/debug/partition?"+strings.Join(q, "&"))
	}
	for _, n := range a {
		if err := cut(n, b); err != nil {
			return err
		}
	}
	for _, n := range b {
		if err := cut(n, a); err != nil {
			return err
		}
	}
	return nil
}

// heal restores every link of every running node.
func (c *cluster) heal() error {
	var errs []error
	for _, n := range c.running() {
		errs = append(errs, c.debugPost(n, "/v1/debug/heal"))
	}
	return errors.Join(errs...)
}

// --- metrics ---

// metric returns the sum of a Prometheus metric's samples (all label
// sets) on n.
func (c *cluster) metric(n *node, name string) (float64, error) {
	r, err := do(c.client, 5*time.Second, http.MethodGet, n.url("/metrics"), nil)
	if err != nil {
		return 0, err
	}
	if r.status != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics on %s: %s", n.id, r)
	}
	var sum float64
	for line := range strings.SplitSeq(string(r.body), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum, nil
}
