package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/server"
)

func TestPrintStatus(t *testing.T) {
	hints := int64(12)
	zero := int64(0)
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	st := server.ClusterStatus{
		Node: "n1", RingVersion: "abc123", Settled: false,
		Members: []server.MemberStatus{
			{Node: "n1", State: "member", Alive: true, Address: "10.0.0.1:8080", Ownership: 0.5, PendingHints: &hints, Transfers: 0, RingVersion: "abc123", LastRound: at(12*time.Second + 400*time.Millisecond)},
			{Node: "n2", State: "joining", Alive: true, Address: "10.0.0.2:8080", Ownership: 1.0 / 3, PendingHints: &zero, Transfers: 17, RingVersion: "old999"},
			{Node: "n3", State: "member", Alive: false, Address: "10.0.0.3:8080", Ownership: 1.0 / 6},
			{Node: "n4", State: "member", Alive: true, Address: "10.0.0.4:8080", Error: "context deadline exceeded"},
			{Node: "n5", State: "member", Alive: true, Address: "10.0.0.5:8080", PendingHints: &zero, RingVersion: "abc123", LastRound: at(3*time.Hour + 7*time.Minute + 5*time.Second)},
		},
	}
	var b bytes.Buffer
	printStatus(&b, st, now)
	want := `ring abc123 as seen by n1; transfers pending

NODE  STATE    LIVENESS  ADDRESS        OWNERSHIP  PENDING HINTS  TRANSFERS  LAST AAE ROUND
n1    member   alive     10.0.0.1:8080  50.0%      12             0          12s ago
n2    joining  alive     10.0.0.2:8080  33.3%      0              17         never
n3    member   down      10.0.0.3:8080  16.7%      -              0          -
n4    member   alive     10.0.0.4:8080  0.0%       -              0          -
n5    member   alive     10.0.0.5:8080  0.0%       0              0          3h7m ago

note: n2 is on ring old999 (gossip has not converged yet)
note: n4 did not report its own status: context deadline exceeded
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestAgo(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{-5 * time.Second, "0s ago"}, // the node's clock is ahead
		{0, "0s ago"},
		{999 * time.Millisecond, "0s ago"},
		{59 * time.Second, "59s ago"},
		{time.Minute, "1m0s ago"},
		{4*time.Minute + 5*time.Second, "4m5s ago"},
		{time.Hour + 59*time.Second, "1h0m ago"},
		{23*time.Hour + 59*time.Minute, "23h59m ago"},
		{50 * time.Hour, "2d2h ago"},
	} {
		if got := ago(tt.d); got != tt.want {
			t.Errorf("ago(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// stub is an admin API double that records the requests it got.
type stub struct {
	mu   sync.Mutex
	reqs []string
}

func (s *stub) record(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, r.Method+" "+r.URL.EscapedPath())
}

func (s *stub) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

func TestClusterCommands(t *testing.T) {
	rec := &stub{}
	block := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/admin/status", func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"node":"n1","ring_version":"v1","settled":true,"members":[{"node":"n1","state":"member","alive":true,"address":"h:1","ownership":1,"pending_hints":0,"transfers":0}]}` + "\n"))
	})
	mux.HandleFunc("POST /v1/admin/leave", func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"node":"n1","state":"leaving"}`))
	})
	mux.HandleFunc("POST /v1/admin/remove/{node}", func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		switch r.PathValue("node") {
		case "n2":
			w.Write([]byte(`{"node":"n2","state":"removed"}`))
		case "n3":
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error":"refused","message":"membership change refused: n3 is alive"}`))
		case "boom":
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("<html>upstream\nbroke</html>"))
		case "slow":
			<-block
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer close(block) // before srv.Close, so the slow handler returns
	addr := strings.TrimPrefix(srv.URL, "http://")

	tests := []struct {
		name           string
		env            map[string]string
		args           []string
		code           int
		stdout, stderr string // substrings; "" means empty
		req            string // the request the stub must have seen last
	}{
		{"status table", nil, []string{"cluster", "status", "--addr", addr}, 0, "ring v1 as seen by n1; transfers settled", "", "GET /v1/admin/status"},
		{"status json as returned", nil, []string{"cluster", "status", "-o", "json", "--addr", addr}, 0, `{"node":"n1","ring_version":"v1"`, "", "GET /v1/admin/status"},
		{"addr from env", map[string]string{"QUORUMKV_ADDR": addr}, []string{"cluster", "status"}, 0, "n1", "", "GET /v1/admin/status"},
		{"addr with scheme", nil, []string{"cluster", "status", "--addr", "http://" + addr + "/"}, 0, "n1", "", "GET /v1/admin/status"},
		{"leave", nil, []string{"cluster", "leave", "--addr", addr}, 0, "n1 is leaving", "", "POST /v1/admin/leave"},
		{"remove", nil, []string{"cluster", "remove", "n2", "--addr", addr}, 0, "n2 is removed", "", "POST /v1/admin/remove/n2"},
		{"remove refused", nil, []string{"cluster", "remove", "n3", "--addr", addr}, 1, "", "answered 409 refused: membership change refused: n3 is alive", "POST /v1/admin/remove/n3"},
		{"non-JSON error", nil, []string{"cluster", "remove", "boom", "--addr", addr}, 1, "", `answered 502 Bad Gateway: "<html>upstream\nbroke</html>"`, "POST /v1/admin/remove/boom"},
		{"timeout", nil, []string{"cluster", "remove", "slow", "--addr", addr}, 1, "", "cannot reach " + addr, "POST /v1/admin/remove/slow"},
		{"unreachable", nil, []string{"cluster", "status", "--addr", "127.0.0.1:1"}, 1, "", "cannot reach 127.0.0.1:1", ""},
		{"bad output", nil, []string{"cluster", "status", "-o", "yaml", "--addr", addr}, 2, "", `-o "yaml": want table or json`, ""},
		{"bad addr", nil, []string{"cluster", "status", "--addr", "localhost"}, 2, "", `--addr "localhost"`, ""},
		{"https addr", nil, []string{"cluster", "status", "--addr", "https://h:1"}, 2, "", `--addr "https://h:1"`, ""},
		{"remove without node", nil, []string{"cluster", "remove", "--addr", addr}, 2, "", "want exactly one node id", ""},
		{"remove bad node", nil, []string{"cluster", "remove", "n/2", "--addr", addr}, 2, "", `node "n/2"`, ""},
		{"no subcommand", nil, []string{"cluster"}, 2, "", "want a subcommand", ""},
		{"unknown subcommand", nil, []string{"cluster", "join"}, 2, "", `unknown command "join"`, ""},
		{"leave takes no node", nil, []string{"cluster", "leave", "n2"}, 2, "", "unknown command", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(rec.requests())
			var stdout, stderr bytes.Buffer
			a := newApp(&stdout, &stderr)
			a.lookupEnv = func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			a.adminTimeout = 300 * time.Millisecond
			code := run(context.Background(), tt.args, a)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tt.code, stdout.String(), stderr.String())
			}
			if (tt.stdout == "") != (stdout.Len() == 0) || !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tt.stdout)
			}
			if tt.stderr == "" && stderr.Len() != 0 {
				t.Errorf("stderr %q, want nothing", stderr.String())
			}
			if tt.stderr != "" && (!strings.Contains(stderr.String(), tt.stderr) || strings.Count(stderr.String(), "\n") != 1 || !strings.HasPrefix(stderr.String(), "quorumkv: ")) {
				t.Errorf("stderr %q, want one line starting with quorumkv: containing %q", stderr.String(), tt.stderr)
			}
			reqs := rec.requests()
			switch {
			case tt.req == "" && len(reqs) != before:
				t.Errorf("sent %q, want no request", reqs[before:])
			case tt.req != "" && (len(reqs) != before+1 || reqs[before] != tt.req):
				t.Errorf("sent %q, want %q", reqs[before:], tt.req)
			}
		})
	}
}
