package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writers of a running
// command (its loggers and the banner).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePorts returns the first of k consecutive loopback ports that were
// free a moment ago: it takes a port from the kernel and tries to bind the
// k-1 after it, again until that works.
func freePorts(t *testing.T, k int) int {
	t.Helper()
	for range 100 {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := first.Addr().(*net.TCPAddr).Port
		held := []net.Listener{first}
		ok := base+k-1 <= 65535
		for i := 1; ok && i < k; i++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, ln)
		}
		for _, ln := range held {
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("found no %d consecutive free ports", k)
	return 0
}

// started runs the command line in-process and returns its exit code
// channel; cancel stops it the way a signal does.
type started struct {
	code           chan int
	cancel         context.CancelFunc
	stdout, stderr *syncBuffer
}

func start(t *testing.T, args ...string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{code: make(chan int, 1), cancel: cancel, stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	a := newApp(s.stdout, s.stderr)
	a.lookupEnv = func(string) (string, bool) { return "", false } // the test's environment must not leak in
	go func() { s.code <- run(ctx, args, a) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.code:
		case <-time.After(30 * time.Second):
			t.Errorf("command did not stop")
		}
	})
	return s
}

// stop cancels the command and returns its exit code.
func (s *started) stop(t *testing.T) int {
	t.Helper()
	s.cancel()
	select {
	case code := <-s.code:
		s.code <- code // for the cleanup
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("command did not stop within 30s; stderr:\n%s", s.stderr.String())
		return -1
	}
}

var testClient = &http.Client{Timeout: 5 * time.Second}

// waitReady polls GET /readyz on every address until each answers 200,
// failing the test at the deadline or if the command exits first.
func (s *started) waitReady(t *testing.T, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for _, addr := range addrs {
		for {
			resp, err := testClient.Get("http://" + addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready by the deadline (last error %v); stderr:\n%s", addr, err, s.stderr.String())
			}
			select {
			case code := <-s.code:
				t.Fatalf("command exited %d before %s was ready; stderr:\n%s", code, addr, s.stderr.String())
			case <-tick.C:
			}
		}
	}
}

func do(t *testing.T, method, url, body string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// waitFor polls until cond holds, failing the test at the deadline or if
// the command exits first. what names the awaited state in the failure.
func (s *started) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s by the deadline; stdout:\n%s\nstderr:\n%s", what, s.stdout.String(), lastLines(s.stderr.String(), 30))
		}
		select {
		case code := <-s.code:
			s.code <- code
			t.Fatalf("command exited %d while waiting for %s; stderr:\n%s", code, what, lastLines(s.stderr.String(), 30))
		case <-tick.C:
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// devNodeInfo is one node line of the dev banner.
type devNodeInfo struct{ id, http, gossip, dir string }

var bannerLine = regexp.MustCompile(`(?m)^  (n\d+)\s+http://(\S+)\s+gossip (\S+)\s+data (.+)$`)

// waitBanner waits for the dev banner (printed once the cluster settled)
// and returns its node lines.
func (s *started) waitBanner(t *testing.T) []devNodeInfo {
	t.Helper()
	s.waitFor(t, "dev banner", func() bool { return strings.Contains(s.stdout.String(), "Press Ctrl-C") })
	var out []devNodeInfo
	for _, m := range bannerLine.FindAllStringSubmatch(s.stdout.String(), -1) {
		out = append(out, devNodeInfo{id: m[1], http: m[2], gossip: m[3], dir: m[4]})
	}
	return out
}

// runCmd runs a command line to completion with env as the whole
// environment.
func runCmd(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e syncBuffer
	a := newApp(&o, &e)
	a.lookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code = run(context.Background(), args, a)
	return code, o.String(), e.String()
}

// clusterView is what the tests read of GET /v1/cluster.
type clusterView struct {
	Settled bool              `json:"settled"`
	States  map[string]string `json:"states"`
	Members []string          `json:"members"`
}

func getCluster(t *testing.T, addr string) clusterView {
	t.Helper()
	resp, body := do(t, http.MethodGet, "http://"+addr+"/v1/cluster", "", nil)
	var v clusterView
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/cluster on %s: %d %s", addr, resp.StatusCode, body)
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("GET /v1/cluster on %s: %v", addr, err)
	}
	return v
}

// portsFree reports whether the TCP and UDP port of addr can be bound.
func portsFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	return pc.Close()
}

// TestDev runs `dev` on free ports, checks that it settled before printing
// its banner, uses it, runs the cluster commands against it and stops it.
func TestDev(t *testing.T) {
	dir := t.TempDir()
	s := start(t, "dev", "--base-port", "0", "--data-dir", dir, "--partitions", "64")
	nodes := s.waitBanner(t)
	if len(nodes) != 3 {
		t.Fatalf("banner lists %d nodes, want 3:\n%s", len(nodes), s.stdout.String())
	}
	// The banner comes only after the cluster settled: every node sees
	// every node as a member and no transfer pending.
	for _, n := range nodes {
		v := getCluster(t, n.http)
		if !v.Settled || len(v.States) != 3 || len(v.Members) != 3 {
			t.Errorf("%s after the banner: settled=%v states=%v members=%v", n.id, v.Settled, v.States, v.Members)
		}
		for id, st := range v.States {
			if st != "member" {
				t.Errorf("%s sees %s as %s after the banner", n.id, id, st)
			}
		}
	}

	// Write through one node, read through another.
	key := "/v1/kv/demo/doc%2F1"
	resp, body := do(t, http.MethodPut, "http://"+nodes[0].http+key, `{"hello":"world"}`, map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Context") == "" {
		t.Errorf("PUT answered no X-Context")
	}
	resp, body = do(t, http.MethodGet, "http://"+nodes[2].http+key+"?sloppy=false&r=3", "", nil)
	if resp.StatusCode != http.StatusOK || body != `{"hello":"world"}` || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	out := s.stdout.String()
	if !strings.Contains(out, "http://"+nodes[0].http) || !strings.Contains(out, "curl") || !strings.Contains(out, dir) ||
		!strings.Contains(out, "quorumkv cluster status --addr "+nodes[0].http) {
		t.Errorf("banner lacks the endpoints, the data dir, a curl line or the status command:\n%s", out)
	}

	t.Run("cluster status", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, nil, "cluster", "status", "--addr", nodes[1].http)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != 6 || !strings.HasPrefix(lines[0], "ring ") || !strings.Contains(lines[0], "as seen by n2; transfers settled") {
			t.Fatalf("want a header, a blank line, the column titles and 3 rows; got:\n%s", stdout)
		}
		if got := strings.Fields(lines[2]); !slices.Equal(got, []string{"NODE", "STATE", "LIVENESS", "ADDRESS", "OWNERSHIP", "PENDING", "HINTS", "TRANSFERS", "LAST", "AAE", "ROUND"}) {
			t.Errorf("column titles %q", lines[2])
		}
		// The first scheduled anti-entropy round comes 22s to 38s after a
		// node starts: either is right here.
		lastRound := regexp.MustCompile(`^(never|\d+s ago|\d+m\d+s ago)$`)
		for i, n := range nodes {
			f := strings.Fields(lines[3+i])
			if len(f) < 8 || f[0] != n.id || f[1] != "member" || f[2] != "alive" || f[3] != n.http ||
				!strings.HasSuffix(f[4], "%") || f[5] == "-" || f[6] != "0" || !lastRound.MatchString(strings.Join(f[7:], " ")) {
				t.Errorf("row of %s: %q", n.id, lines[3+i])
			}
		}

		code, stdout, stderr = runCmd(t, map[string]string{"QUORUMKV_ADDR": nodes[2].http}, "cluster", "status", "-o", "json")
		if code != 0 {
			t.Fatalf("-o json: exit %d: %s", code, stderr)
		}
		var st struct {
			Node    string `json:"node"`
			Settled bool   `json:"settled"`
			Members []struct {
				Node, State, Address string
				Alive                bool
				Ownership            float64
			} `json:"members"`
		}
		if err := json.Unmarshal([]byte(stdout), &st); err != nil {
			t.Fatalf("-o json printed %q: %v", stdout, err)
		}
		total := 0.0
		if st.Node != "n3" || !st.Settled || len(st.Members) != 3 {
			t.Fatalf("status from QUORUMKV_ADDR=%s: %+v", nodes[2].http, st)
		}
		for i, m := range st.Members {
			if m.Node != nodes[i].id || m.State != "member" || !m.Alive || m.Address != nodes[i].http {
				t.Errorf("member %d: %+v", i, m)
			}
			total += m.Ownership
		}
		if total < 0.999 || total > 1.001 {
			t.Errorf("ownership sums to %v, want 1", total)
		}
	})

	t.Run("repair", func(t *testing.T) {
		// Every node keeps all 64 partitions (N=3) and compares each with
		// both peers.
		code, stdout, stderr := runCmd(t, nil, "repair", "--addr", nodes[1].http)
		if code != 0 || stderr != "" {
			t.Fatalf("exit %d, stderr %q; stdout:\n%s", code, stderr, stdout)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != 4 || !slices.Equal(strings.Fields(lines[0]), []string{"NODE", "EXCHANGES", "DIFFERING", "LEAVES", "KEYS", "PULLED", "PUSHED", "ERRORS", "TOOK", "RESULT"}) {
			t.Fatalf("want the column titles and 3 rows; got:\n%s", stdout)
		}
		for i, n := range nodes {
			f := strings.Fields(lines[1+i])
			if len(f) != 10 || f[0] != n.id || f[1] != "128" || f[7] != "0" || f[9] != "ok" {
				t.Errorf("row of %s: %q", n.id, lines[1+i])
			}
		}

		code, stdout, stderr = runCmd(t, map[string]string{"QUORUMKV_ADDR": nodes[2].http}, "repair", "--partition", "5", "--partition", "63", "--rebuild")
		if code != 0 || stderr != "" {
			t.Fatalf("--partition 5 --partition 63 --rebuild: exit %d, stderr %q; stdout:\n%s", code, stderr, stdout)
		}
		for _, n := range nodes {
			if !regexp.MustCompile(`(?m)^` + n.id + `\s+4\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+\s+0\s+\S+\s+ok$`).MatchString(stdout) {
				t.Errorf("no row of %s with 4 exchanges:\n%s", n.id, stdout)
			}
		}

		code, stdout, stderr = runCmd(t, nil, "repair", "--partition", "64", "--addr", nodes[0].http)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "--partition 64: the cluster has 64 partitions, 0 to 63") {
			t.Errorf("--partition 64: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})

	t.Run("remove of a live node is refused", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, nil, "cluster", "remove", "n2", "--addr", "http://"+nodes[0].http+"/")
		if code != 1 || stdout != "" {
			t.Fatalf("exit %d, stdout %q: want 1 and nothing", code, stdout)
		}
		if !strings.HasPrefix(stderr, "quorumkv: ") || strings.Count(stderr, "\n") != 1 ||
			!strings.Contains(stderr, "n2 is alive") || !strings.Contains(stderr, "quorumkv cluster leave") {
			t.Errorf("want one line saying n2 is alive and should leave, got %q", stderr)
		}
		code, _, stderr = runCmd(t, nil, "cluster", "remove", "n9", "--addr", nodes[0].http)
		if code != 1 || !strings.Contains(stderr, `no member "n9"`) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("remove of an unknown node: exit %d, %q", code, stderr)
		}
		// A leave that would leave fewer than N members is refused too,
		// and the node stays.
		code, _, stderr = runCmd(t, nil, "cluster", "leave", "--addr", nodes[2].http)
		if code != 1 || !strings.Contains(stderr, "too few members") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("leave below N: exit %d, %q", code, stderr)
		}
		if v := getCluster(t, nodes[0].http); v.States["n2"] != "member" || v.States["n3"] != "member" {
			t.Errorf("a refused change changed states: %v", v.States)
		}
	})

	if code := s.stop(t); code != 0 {
		t.Fatalf("dev exited %d; stderr:\n%s", code, lastLines(s.stderr.String(), 30))
	}
	if logs := s.stderr.String(); !strings.Contains(logs, "msg=stopped") {
		t.Errorf("no 'stopped' log:\n%s", lastLines(logs, 30))
	}
	// Clean shutdown released every port and wrote every node's data.
	for _, n := range nodes {
		for _, addr := range []string{n.http, n.gossip} {
			if err := portsFree(addr); err != nil {
				t.Errorf("port %s of %s still busy after shutdown: %v", addr, n.id, err)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, n.id)); err != nil {
			t.Errorf("data dir of %s: %v", n.id, err)
		}
	}
}

// TestDevLeave runs a 4-node dev cluster (N=3, so one node may leave):
// `cluster leave` on n4 hands its partitions over, dev shuts n4 down, and
// the data stays readable from the others.
func TestDevLeave(t *testing.T) {
	s := start(t, "dev", "--nodes", "4", "--base-port", "0", "--data-dir", t.TempDir(), "--partitions", "64")
	nodes := s.waitBanner(t)
	if len(nodes) != 4 {
		t.Fatalf("banner lists %d nodes, want 4", len(nodes))
	}
	for i := range 20 {
		resp, body := do(t, http.MethodPut, fmt.Sprintf("http://%s/v1/kv/b/k%d", nodes[i%4].http, i), "v"+strconv.Itoa(i), nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("PUT k%d: %d %s", i, resp.StatusCode, body)
		}
	}
	code, stdout, stderr := runCmd(t, nil, "cluster", "leave", "--addr", nodes[3].http)
	if code != 0 || !strings.HasPrefix(stdout, "n4 is leaving") {
		t.Fatalf("leave: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	s.waitFor(t, "n4 to leave and stop", func() bool {
		return strings.Contains(s.stderr.String(), `msg="left the cluster" node=n4`) && portsFree(nodes[3].http) == nil
	})
	s.waitFor(t, "n4 removed and transfers settled", func() bool {
		v := getCluster(t, nodes[0].http)
		return v.Settled && v.States["n4"] == "removed"
	})
	for i := range 20 {
		resp, body := do(t, http.MethodGet, fmt.Sprintf("http://%s/v1/kv/b/k%d?sloppy=false&r=3", nodes[i%3].http, i), "", nil)
		if resp.StatusCode != http.StatusOK || body != "v"+strconv.Itoa(i) {
			t.Errorf("GET k%d after n4 left: %d %q", i, resp.StatusCode, body)
		}
	}
	code, stdout, _ = runCmd(t, nil, "cluster", "status", "--addr", nodes[0].http)
	if code != 0 || !regexp.MustCompile(`(?m)^n4\s+removed\s+down\s`).MatchString(stdout) {
		t.Errorf("status after the leave: exit %d\n%s", code, stdout)
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("dev exited %d; stderr:\n%s", code, lastLines(s.stderr.String(), 30))
	}
}

// freeDevPorts returns a base port such that base..base+k-1 and the gossip
// ports base+100.. were free a moment ago.
func freeDevPorts(t *testing.T, k int) int {
	t.Helper()
	for range 100 {
		base := freePorts(t, k)
		ok := base+devGossipOffset+k-1 <= 65535
		for i := 0; ok && i < k; i++ {
			ok = portsFree(net.JoinHostPort("127.0.0.1", strconv.Itoa(base+devGossipOffset+i))) == nil
		}
		if ok {
			return base
		}
	}
	t.Fatalf("found no free ports for %d dev nodes", k)
	return 0
}

func TestDevBusyPort(t *testing.T) {
	for _, tt := range []struct {
		name   string
		offset int // of the busy port from the base port
	}{
		{"http", 1},
		{"gossip", devGossipOffset + 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := freeDevPorts(t, 3)
			busyPort := base + tt.offset
			busy, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(busyPort)))
			if err != nil {
				t.Skipf("port taken meanwhile: %v", err)
			}
			defer busy.Close()
			s := start(t, "dev", "--base-port", strconv.Itoa(base), "--data-dir", t.TempDir(), "--partitions", "64")
			select {
			case code := <-s.code:
				s.code <- code
				if code == 0 {
					t.Fatalf("dev exited 0 with port %d busy", busyPort)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("dev did not fail on a busy port")
			}
			if msg := s.stderr.String(); !strings.Contains(msg, "port "+strconv.Itoa(busyPort)) || strings.Count(msg, "\n") != 1 {
				t.Errorf("want one line naming port %d, got %q", busyPort, msg)
			}
			// It released the ports it had bound.
			for _, p := range []int{base, base + devGossipOffset} {
				if err := portsFree(net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err != nil {
					t.Errorf("port %d still held: %v", p, err)
				}
			}
		})
	}
}

// TestServe runs a single-node serve in-process, then restarts its data
// directory under another node id and with other cluster parameters: both
// are refused with one clear line.
func TestServe(t *testing.T) {
	port := freePorts(t, 1)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir()
	common := []string{"--http-addr", addr, "--gossip-addr", "127.0.0.1:0", "--data-dir", dir, "--n", "1", "--r", "1", "--w", "1"}
	s := start(t, append([]string{"serve", "--node-id", "solo", "--partitions", "16"}, common...)...)
	s.waitReady(t, addr)
	resp, body := do(t, http.MethodPut, "http://"+addr+"/v1/kv/b/k", "v", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("serve exited %d; stderr:\n%s", code, s.stderr.String())
	}
	if !strings.Contains(s.stderr.String(), "msg=stopped") {
		t.Errorf("no 'stopped' log:\n%s", s.stderr.String())
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"other node", append([]string{"serve", "--node-id", "other", "--partitions", "16"}, common...), "belongs to another node"},
		{"other partitions", append([]string{"serve", "--node-id", "solo", "--partitions", "32"}, common...), "cluster parameters mismatch"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, msg := runCmd(t, nil, append(tt.args, "--log-level", "error")...)
			if code == 0 || !strings.Contains(msg, tt.want) {
				t.Fatalf("exit %d, stderr %q; want an error containing %q", code, msg, tt.want)
			}
			if last := msg[strings.LastIndex(strings.TrimSuffix(msg, "\n"), "\n")+1:]; !strings.HasPrefix(last, "quorumkv: ") || strings.Contains(msg, "goroutine ") {
				t.Errorf("want a last line starting with quorumkv: and no stack trace, got %q", msg)
			}
			// The failed start released the port.
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("port still held: %v", err)
			}
			ln.Close()
		})
	}
}

// freeGossipAddr returns a loopback address whose TCP and UDP port were
// free a moment ago.
func freeGossipAddr(t *testing.T) string {
	t.Helper()
	h, err := holdPort("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	h.release()
	return h.addr
}

var advertiseLog = regexp.MustCompile(`msg="node started" node=(\S+) addr=\S+ advertise=(\S+)`)

// advertised waits for the "node started" line and returns the advertised
// HTTP address.
func (s *started) advertised(t *testing.T) string {
	t.Helper()
	s.waitFor(t, "node started log", func() bool { return advertiseLog.MatchString(s.stderr.String()) })
	return advertiseLog.FindStringSubmatch(s.stderr.String())[2]
}

// TestServeJoinAndLeave runs two serve commands in-process on ports picked
// by the kernel: a creates the cluster, b joins it through --join, and
// after `cluster leave` on b, b's serve exits 0 on its own.
func TestServeJoinAndLeave(t *testing.T) {
	root := t.TempDir()
	gossipA := freeGossipAddr(t)
	params := []string{"--n", "1", "--r", "1", "--w", "1", "--partitions", "32", "--http-addr", "127.0.0.1:0"}
	a := start(t, append([]string{"serve", "--node-id", "a", "--gossip-addr", gossipA, "--data-dir", filepath.Join(root, "a")}, params...)...)
	addrA := a.advertised(t)
	if strings.HasSuffix(addrA, ":0") {
		t.Fatalf("a advertises %s: port 0 was not resolved", addrA)
	}
	a.waitReady(t, addrA)
	b := start(t, append([]string{"serve", "--node-id", "b", "--gossip-addr", "127.0.0.1:0", "--join", gossipA, "--data-dir", filepath.Join(root, "b")}, params...)...)
	addrB := b.advertised(t)
	b.waitReady(t, addrB)
	settled := func(want map[string]string) func() bool {
		return func() bool {
			v := getCluster(t, addrA)
			return v.Settled && maps.Equal(v.States, want)
		}
	}
	a.waitFor(t, "b to become a member", settled(map[string]string{"a": "member", "b": "member"}))
	if v := getCluster(t, addrB); !maps.Equal(v.States, map[string]string{"a": "member", "b": "member"}) {
		t.Errorf("b sees %v", v.States)
	}

	code, stdout, stderr := runCmd(t, nil, "cluster", "leave", "--addr", addrB)
	if code != 0 || !strings.HasPrefix(stdout, "b is leaving") {
		t.Fatalf("leave: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	select {
	case code := <-b.code:
		b.code <- code
		if code != 0 {
			t.Fatalf("b exited %d after leaving; stderr:\n%s", code, lastLines(b.stderr.String(), 20))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("b still runs 60s after leave; stderr:\n%s", lastLines(b.stderr.String(), 20))
	}
	if logs := b.stderr.String(); !strings.Contains(logs, `msg="left the cluster"`) || !strings.Contains(logs, "msg=stopped") {
		t.Errorf("b did not log leaving and stopping:\n%s", lastLines(logs, 20))
	}
	// Only the membership change is checked here; that the handover lost
	// nothing is for the server's tests (a leave right after a join can
	// drop partitions the new owner never pulled: see the report to the
	// server package).
	a.waitFor(t, "a to see b removed", func() bool {
		return maps.Equal(getCluster(t, addrA).States, map[string]string{"a": "member", "b": "removed"})
	})
	if code := a.stop(t); code != 0 {
		t.Fatalf("a exited %d", code)
	}
}
