package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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

func TestDev(t *testing.T) {
	base := freePorts(t, 3)
	dir := t.TempDir()
	s := start(t, "dev", "--base-port", strconv.Itoa(base), "--data-dir", dir, "--partitions", "64")
	var addrs []string
	for i := range 3 {
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
	}
	s.waitReady(t, addrs...)

	// Write through one node, read through another.
	key := "/v1/kv/demo/doc%2F1"
	resp, body := do(t, http.MethodPut, "http://"+addrs[0]+key, `{"hello":"world"}`, map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Context") == "" {
		t.Errorf("PUT answered no X-Context")
	}
	resp, body = do(t, http.MethodGet, "http://"+addrs[2]+key, "", nil)
	if resp.StatusCode != http.StatusOK || body != `{"hello":"world"}` || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = do(t, http.MethodGet, "http://"+addrs[1]+"/v1/cluster", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"n3"`) {
		t.Errorf("GET /v1/cluster: %d %s", resp.StatusCode, body)
	}

	if out := s.stdout.String(); !strings.Contains(out, "http://"+addrs[0]) || !strings.Contains(out, "curl") || !strings.Contains(out, dir) {
		t.Errorf("banner lacks the endpoints, the data dir or a curl line:\n%s", out)
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("dev exited %d; stderr:\n%s", code, s.stderr.String())
	}
	if logs := s.stderr.String(); !strings.Contains(logs, "msg=stopped") {
		t.Errorf("no 'stopped' log:\n%s", logs)
	}
	// Clean shutdown released every port and wrote every node's data.
	for i, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("port of n%d still busy after shutdown: %v", i+1, err)
			continue
		}
		ln.Close()
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("n%d", i+1))); err != nil {
			t.Errorf("data dir of n%d: %v", i+1, err)
		}
	}
}

func TestDevBusyPort(t *testing.T) {
	base := freePorts(t, 3)
	busy, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+1)))
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	defer busy.Close()
	s := start(t, "dev", "--base-port", strconv.Itoa(base), "--data-dir", t.TempDir(), "--partitions", "64")
	select {
	case code := <-s.code:
		s.code <- code
		if code == 0 {
			t.Fatalf("dev exited 0 with port %d busy", base+1)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not fail on a busy port")
	}
	if msg := s.stderr.String(); !strings.Contains(msg, "port "+strconv.Itoa(base+1)) || strings.Count(msg, "\n") != 1 {
		t.Errorf("want one line naming port %d, got %q", base+1, msg)
	}
	// It released the port it had bound.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)))
	if err != nil {
		t.Errorf("port %d still held: %v", base, err)
	} else {
		ln.Close()
	}
}

// TestServe runs a single-node serve in-process, then restarts its data
// directory under another node id and with other cluster parameters: both
// are refused with one clear line.
func TestServe(t *testing.T) {
	port := freePorts(t, 1)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir()
	args := []string{"serve", "--node-id", "solo", "--http-addr", addr, "--data-dir", dir, "--n", "1", "--r", "1", "--w", "1", "--partitions", "16"}
	s := start(t, args...)
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
		{"other node", []string{"serve", "--node-id", "other", "--http-addr", addr, "--data-dir", dir, "--n", "1", "--r", "1", "--w", "1", "--partitions", "16"}, "belongs to another node"},
		{"other partitions", []string{"serve", "--node-id", "solo", "--http-addr", addr, "--data-dir", dir, "--n", "1", "--r", "1", "--w", "1", "--partitions", "32"}, "cluster parameters mismatch"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			a := newApp(&stdout, &stderr)
			a.lookupEnv = func(string) (string, bool) { return "", false }
			code := run(context.Background(), append(tt.args, "--log-level", "error"), a)
			msg := stderr.String()
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
