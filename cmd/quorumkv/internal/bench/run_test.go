package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quorumkv/quorumkv/server"
)

// TestMain checks that no goroutine outlives the tests: a run stops every
// worker, probe and reporter it starts.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startCluster starts n in-process nodes (N=3, 64 partitions, fast
// gossip) on loopback ports picked at run time, and waits until every node
// sees all of them as members with transfers settled.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Ring.Partitions = 64
	cfg.FastTiming()
	cfg.Logger = slog.New(slog.DiscardHandler)
	var addrs, gossip []string
	for i := 1; i <= n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.NodeID = fmt.Sprintf("n%d", i)
		c.Advertise = ln.Addr().String()
		c.Gossip.BindAddr = "127.0.0.1:0"
		c.Gossip.Join = append([]string(nil), gossip...)
		s, err := server.Start(c, filepath.Join(t.TempDir(), c.NodeID), 8<<20, ln)
		if err != nil {
			t.Fatalf("start %s: %v", c.NodeID, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s.Close(ctx)
		})
		addrs = append(addrs, c.Advertise)
		gossip = append(gossip, s.Node.GossipAddr())
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	settled := func() bool {
		for _, a := range addrs {
			var v struct {
				Settled bool              `json:"settled"`
				States  map[string]string `json:"states"`
			}
			resp, err := hc.Get("http://" + a + "/v1/cluster")
			if err != nil {
				return false
			}
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			members := 0
			for _, st := range v.States {
				if st == "member" {
					members++
				}
			}
			if err != nil || !v.Settled || members != n {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); !settled(); time.Sleep(25 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the %d-node cluster did not settle in 30s", n)
		}
	}
	return addrs
}

// lockedBuffer is a bytes.Buffer safe for the progress reporter and the
// test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRunAgainstCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	addrs := startCluster(t, 3)
	out := t.TempDir()
	cfg := DefaultConfig()
	cfg.Endpoints = []string{"http://" + addrs[0]}
	cfg.Records = 200
	cfg.Concurrency = 8
	cfg.Duration = time.Second
	cfg.Warmup = 100 * time.Millisecond
	cfg.Pairs = []Pair{{1, 1}, {2, 2}}
	cfg.Seed = testSeed
	cfg.ProbeRate = 50
	cfg.Interval = 500 * time.Millisecond
	cfg.Out = out
	var buf lockedBuffer
	results, err := Run(context.Background(), cfg, &buf, nil)
	t.Logf("output:\n%s", buf.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("%d results, want 2", len(results))
	}
	for _, r := range results {
		if r.N != 3 || r.Ops == 0 || r.Errors != 0 || r.OpsPerSec <= 0 || r.P50Ms <= 0 || r.P99Ms < r.P50Ms {
			t.Errorf("R=%d W=%d: N %d, %d ops, %d errors, %.0f ops/s, p50 %v p99 %v", r.R, r.W, r.N, r.Ops, r.Errors, r.OpsPerSec, r.P50Ms, r.P99Ms)
		}
		if r.StaleShare == nil || *r.StaleShare < 0 || *r.StaleShare > 1 {
			t.Errorf("R=%d W=%d: stale share %v (of %d reads checked)", r.R, r.W, r.StaleShare, r.ReadsChecked)
		}
		if r.NotFound != 0 {
			t.Errorf("R=%d W=%d: %d reads found nothing after the load", r.R, r.W, r.NotFound)
		}
		if r.PBSProbes == 0 || r.PBST999 == "" || r.PBSResolved {
			t.Errorf("R=%d W=%d: %d probes, t99.9 %q, resolved %v", r.R, r.W, r.PBSProbes, r.PBST999, r.PBSResolved)
		}
	}
	for _, want := range []string{"seed 20261126", "N=3 (from /v1/cluster)", "loaded 200 keys with W=3", " read ", " update "} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	f, err := os.Open(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows) != 3 || rows[1][1] != "1" || rows[2][1] != "2" {
		t.Errorf("results.csv: %v, %v", rows, err)
	}
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	var back []Result
	if err != nil || json.Unmarshal(b, &back) != nil || len(back) != 2 || back[1].W != 2 {
		t.Errorf("results.json: %v %s", err, b)
	}
	if svg, err := os.ReadFile(filepath.Join(out, "chart.svg")); err != nil || !bytes.Contains(svg, []byte("R=2 W=2")) {
		t.Errorf("chart.svg: %v", err)
	}
}

// Cancelling a run stops it and keeps what was measured.
func TestRunCancelled(t *testing.T) {
	srv := noopServer(t)
	cfg := DefaultConfig()
	cfg.Endpoints = []string{srv}
	cfg.RoundRobin, cfg.Load, cfg.Workload = true, false, WorkloadC
	cfg.Duration, cfg.Warmup, cfg.Concurrency = time.Minute, 0, 4
	cfg.Pairs = []Pair{{1, 1}, {2, 2}}
	ctx, cancel := context.WithCancel(context.Background())
	var buf lockedBuffer
	done := make(chan struct{})
	var results []Result
	var err error
	go func() {
		defer close(done)
		results, err = Run(ctx, cfg, &buf, nil)
	}()
	// Cancel once the run is measuring (its first progress line).
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(buf.String(), "ops/s (cum"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line in 10s:\n%s", buf.String())
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the run did not stop within 10s of the cancellation")
	}
	if err == nil || len(results) != 1 || !results[0].Interrupted || results[0].Ops == 0 || results[0].Seconds >= 60 {
		t.Errorf("err %v, results %+v", err, results)
	}
}

// noopServer answers 200 to everything: the reference server of the speed
// comparison. It serves no cluster view, so N is assumed.
func noopServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return "http://" + ln.Addr().String()
}

func TestRunAgainstNoopServer(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Endpoints = []string{noopServer(t)}
	cfg.RoundRobin, cfg.Load, cfg.Workload = true, false, WorkloadC
	cfg.Duration, cfg.Warmup, cfg.Concurrency = 300*time.Millisecond, 0, 4
	var buf lockedBuffer
	results, err := Run(context.Background(), cfg, &buf, nil)
	if err != nil || len(results) != 1 || results[0].Ops == 0 || results[0].Errors != 0 || results[0].N != 3 {
		t.Fatalf("err %v, results %+v\n%s", err, results, buf.String())
	}
	if !strings.Contains(buf.String(), "N=3 (assumed; /v1/cluster:") {
		t.Errorf("output does not say N was assumed:\n%s", buf.String())
	}
}
