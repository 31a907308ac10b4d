package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/antientropy"
	"github.com/quorumkv/quorumkv/server"
)

func TestReportRepairs(t *testing.T) {
	reps := []*nodeRepair{
		{node: "n1", asked: true, res: antientropy.Result{Exchanges: 2048, Differing: 3, Leaves: 4, Keys: 9, Pulled: 5, Pushed: 4}, ok: 2, ran: []uint32{1, 4}, took: 1234567 * time.Microsecond},
		{node: "n2", asked: true, ok: 1, ran: []uint32{1}, refused: []uint32{4}, res: antientropy.Result{Exchanges: 2}, took: 3 * time.Millisecond},
		{node: "n3", asked: true, refused: []uint32{1, 4}, took: time.Millisecond},
		{node: "n4", down: true},
		{node: "n5", asked: true, res: antientropy.Result{Exchanges: 7, Errors: 1}, err: errors.New("h:5 answered 500: antientropy: 1 of 8 exchanges failed (see the node's log)"), took: 2 * time.Second},
		{node: "n6", asked: true, err: errors.New("cannot reach h:6: connection refused"), took: 0},
		{node: "n7", asked: true, ok: 2, ran: []uint32{1, 4}, took: 4 * time.Millisecond},
	}
	var b bytes.Buffer
	err := reportRepairs(&b, reps, []uint32{1, 4})
	want := `NODE  EXCHANGES  DIFFERING  LEAVES  KEYS  PULLED  PUSHED  ERRORS  TOOK    RESULT
n1    2048       3          4       9     5       4       0       1.235s  ok
n2    2          0          0       0     0       0       0       3ms     ok; not a replica of 4
n3    -          -          -       -     -       -       -       1ms     not a replica of 1, 4
n4    -          -          -       -     -       -       -       -       skipped: down
n5    7          0          0       0     0       0       1       2s      failed: h:5 answered 500: antientropy: 1 of 8 exchanges failed (see the node's log)
n6    -          -          -       -     -       -       -       0s      failed: cannot reach h:6: connection refused
n7    0          0          0       0     0       0       0       4ms     ok

note: n4 is down: it was not repaired; run repair again once it is back
note: n7 compared nothing: it sees no peer replica alive
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	if err == nil || err.Error() != "repair failed on n5, n6 (2 of 6 live nodes)" {
		t.Errorf("error %v", err)
	}

	// Every partition ran somewhere, no node failed: success, even though
	// some nodes are not replicas and one is down.
	if err := reportRepairs(&bytes.Buffer{}, reps[:4], []uint32{1, 4}); err != nil {
		t.Errorf("all partitions ran: %v", err)
	}
	// A partition no node ran is a failure.
	if err := reportRepairs(&bytes.Buffer{}, reps[:4], []uint32{1, 4, 9}); err == nil || !strings.Contains(err.Error(), "no live node is a replica of partition 9") {
		t.Errorf("partition nobody ran: %v", err)
	}
	// Nobody to ask is a failure.
	if err := reportRepairs(&bytes.Buffer{}, reps[3:4], nil); err == nil || !strings.Contains(err.Error(), "no live member") {
		t.Errorf("every member down: %v", err)
	}
}

// fakeNode is a node's admin API double for the repair command: it keeps
// some partitions, and may fail.
type fakeNode struct {
	id    string
	keeps []uint32
	srv   *httptest.Server
	rec   stub

	mu   sync.Mutex
	fail string // answer 500 with this error
	junk bool   // answer 200 with something that is not a result
}

func (f *fakeNode) repair(w http.ResponseWriter, r *http.Request) {
	f.rec.mu.Lock()
	f.rec.reqs = append(f.rec.reqs, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	f.rec.mu.Unlock()
	f.mu.Lock()
	fail, junk := f.fail, f.junk
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if junk {
		w.Write([]byte("<html>proxy</html>"))
		return
	}
	out := server.RepairResult{Node: f.id, Took: "1ms"}
	var parts []uint32
	for _, s := range r.URL.Query()["partition"] {
		p, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"bad_request","message":"bad partition"}`))
			return
		}
		parts = append(parts, uint32(p))
	}
	if len(parts) == 0 {
		parts = f.keeps
	}
	for _, p := range parts {
		if !slices.Contains(f.keeps, p) {
			out.Error = fmt.Sprintf("antientropy: not a replica: partition %d", p)
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(out)
			return
		}
	}
	out.Exchanges = 2 * len(parts)
	if r.URL.Query().Get("rebuild") == "true" {
		out.Differing, out.Leaves, out.Keys, out.Pulled = 1, 1, 3, 3
	}
	if fail != "" {
		out.Errors, out.Error = 1, fail
		w.WriteHeader(http.StatusInternalServerError)
	}
	json.NewEncoder(w).Encode(out)
}

func TestRepairCommand(t *testing.T) {
	n1 := &fakeNode{id: "n1", keeps: []uint32{1, 2, 3}}
	n2 := &fakeNode{id: "n2", keeps: []uint32{2, 3, 4}}
	// n3 is down, n4 removed; neither may be asked. Their addresses are a
	// closed port.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()

	var (
		mu      sync.Mutex
		members []server.MemberStatus
	)
	for _, f := range []*fakeNode{n1, n2} {
		mux := http.NewServeMux()
		mux.HandleFunc("POST /v1/admin/repair", f.repair)
		mux.HandleFunc("GET /v1/admin/status", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			json.NewEncoder(w).Encode(server.ClusterStatus{Node: f.id, RingVersion: "v1", Settled: true, Partitions: 8, Members: members})
		})
		f.srv = httptest.NewServer(mux)
		defer f.srv.Close()
	}
	addr := strings.TrimPrefix(n1.srv.URL, "http://")
	healthy := []server.MemberStatus{
		{Node: "n1", State: "member", Alive: true, Address: addr},
		{Node: "n2", State: "member", Alive: true, Address: strings.TrimPrefix(n2.srv.URL, "http://")},
		{Node: "n3", State: "member", Alive: false, Address: deadAddr},
		{Node: "n4", State: "removed", Alive: false, Address: deadAddr},
	}
	unreachable := slices.Clone(healthy)
	unreachable[2].Alive = true // the failure detector has not noticed yet

	row := func(node, rest string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^` + node + `\s+` + rest + `$`)
	}
	tests := []struct {
		name         string
		members      []server.MemberStatus
		n2Fail       string
		n2Junk       bool
		args         []string
		code         int
		rows         []*regexp.Regexp // lines stdout must have
		stderr       string           // substring; "" means empty
		n1Req, n2Req []string         // the repair requests each must have seen
	}{
		{
			name: "every partition", members: healthy, args: []string{"repair", "--addr", addr}, code: 0,
			rows: []*regexp.Regexp{
				regexp.MustCompile(`(?m)^NODE\s+EXCHANGES\s+DIFFERING\s+LEAVES\s+KEYS\s+PULLED\s+PUSHED\s+ERRORS\s+TOOK\s+RESULT$`),
				row("n1", `6\s+0\s+0\s+0\s+0\s+0\s+0\s+\S+\s+ok`),
				row("n2", `6\s+0\s+0\s+0\s+0\s+0\s+0\s+\S+\s+ok`),
				row("n3", `(-\s+){8}skipped: down`),
				regexp.MustCompile(`(?m)^note: n3 is down: it was not repaired`),
			},
			n1Req: []string{"POST /v1/admin/repair?"}, n2Req: []string{"POST /v1/admin/repair?"},
		},
		{
			name: "one partition, one replica", members: healthy, args: []string{"repair", "--partition", "1", "--addr", addr}, code: 0,
			rows:  []*regexp.Regexp{row("n1", `2\s+0\s+0\s+0\s+0\s+0\s+0\s+\S+\s+ok`), row("n2", `(-\s+){7}\S+\s+not a replica`)},
			n1Req: []string{"POST /v1/admin/repair?partition=1"}, n2Req: []string{"POST /v1/admin/repair?partition=1"},
		},
		{
			name: "partitions asked one by one, with rebuild", members: healthy,
			args: []string{"repair", "--partition", "1,4", "--partition", "1", "--rebuild", "--addr", addr}, code: 0,
			rows: []*regexp.Regexp{
				row("n1", `2\s+1\s+1\s+3\s+3\s+0\s+0\s+\S+\s+ok; not a replica of 4`),
				row("n2", `2\s+1\s+1\s+3\s+3\s+0\s+0\s+\S+\s+ok; not a replica of 1`),
			},
			n1Req: []string{"POST /v1/admin/repair?partition=1&rebuild=true", "POST /v1/admin/repair?partition=4&rebuild=true"},
			n2Req: []string{"POST /v1/admin/repair?partition=1&rebuild=true", "POST /v1/admin/repair?partition=4&rebuild=true"},
		},
		{
			name: "partition of no live node", members: healthy, args: []string{"repair", "--partition", "7", "--addr", addr}, code: 1,
			rows:   []*regexp.Regexp{row("n1", `(-\s+){7}\S+\s+not a replica`), row("n2", `(-\s+){7}\S+\s+not a replica`)},
			stderr: "no live node is a replica of partition 7",
			n1Req:  []string{"POST /v1/admin/repair?partition=7"}, n2Req: []string{"POST /v1/admin/repair?partition=7"},
		},
		{
			name: "a node fails", members: healthy, n2Fail: "antientropy: 1 of 7 exchanges failed (see the node's log)",
			args: []string{"repair", "--addr", addr}, code: 1,
			rows: []*regexp.Regexp{
				row("n1", `6\s+(0\s+){6}\S+\s+ok`),
				row("n2", `6\s+(0\s+){5}1\s+\S+\s+failed: 127\.0\.0\.1:\d+ answered 500: antientropy: 1 of 7 exchanges failed \(see the node's log\)`),
			},
			stderr: "repair failed on n2 (1 of 2 live nodes)",
			n1Req:  []string{"POST /v1/admin/repair?"}, n2Req: []string{"POST /v1/admin/repair?"},
		},
		{
			name: "a node answers junk", members: healthy, n2Junk: true, args: []string{"repair", "--addr", addr}, code: 1,
			rows:   []*regexp.Regexp{row("n2", `(-\s+){7}\S+\s+failed: 127\.0\.0\.1:\d+ answered an unreadable repair result: "<html>proxy</html>"`)},
			stderr: "repair failed on n2 (1 of 2 live nodes)",
			n1Req:  []string{"POST /v1/admin/repair?"}, n2Req: []string{"POST /v1/admin/repair?"},
		},
		{
			name: "a live member cannot be reached", members: unreachable, args: []string{"repair", "--addr", addr}, code: 1,
			rows:   []*regexp.Regexp{row("n3", `(-\s+){7}\S+\s+failed: cannot reach `+regexp.QuoteMeta(deadAddr)+`: .*refused`)},
			stderr: "repair failed on n3 (1 of 3 live nodes)",
			n1Req:  []string{"POST /v1/admin/repair?"}, n2Req: []string{"POST /v1/admin/repair?"},
		},
		{name: "partition out of range", members: healthy, args: []string{"repair", "--partition", "8", "--addr", addr}, code: 2, stderr: "--partition 8: the cluster has 8 partitions, 0 to 7"},
		{name: "partition not a number", members: healthy, args: []string{"repair", "--partition", "abc", "--addr", addr}, code: 2, stderr: `--partition "abc": want a partition number`},
		{name: "negative partition", members: healthy, args: []string{"repair", "--partition=-1", "--addr", addr}, code: 2, stderr: `--partition "-1": want a partition number`},
		{name: "bad timeout", members: healthy, args: []string{"repair", "--timeout", "0s", "--addr", addr}, code: 2, stderr: "--timeout 0s: must be greater than 0"},
		{name: "bad addr", members: healthy, args: []string{"repair", "--addr", "localhost"}, code: 2, stderr: `--addr "localhost"`},
		{name: "no arguments", members: healthy, args: []string{"repair", "n1", "--addr", addr}, code: 2, stderr: "unknown command"},
		{name: "unreachable addr", members: healthy, args: []string{"repair", "--addr", deadAddr}, code: 1, stderr: "cannot reach " + deadAddr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			members = tt.members
			mu.Unlock()
			n2.mu.Lock()
			n2.fail, n2.junk = tt.n2Fail, tt.n2Junk
			n2.mu.Unlock()
			before1, before2 := len(n1.rec.requests()), len(n2.rec.requests())
			var stdout, stderr bytes.Buffer
			a := newApp(&stdout, &stderr)
			a.lookupEnv = func(string) (string, bool) { return "", false }
			a.adminTimeout = 2 * time.Second
			code := run(context.Background(), tt.args, a)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, re := range tt.rows {
				if !re.MatchString(stdout.String()) {
					t.Errorf("stdout lacks %s:\n%s", re, stdout.String())
				}
			}
			if tt.code == 2 && stdout.Len() != 0 {
				t.Errorf("a usage error printed %q", stdout.String())
			}
			if tt.stderr == "" && stderr.Len() != 0 {
				t.Errorf("stderr %q, want nothing", stderr.String())
			}
			if tt.stderr != "" && (!strings.Contains(stderr.String(), tt.stderr) || strings.Count(stderr.String(), "\n") != 1 || !strings.HasPrefix(stderr.String(), "quorumkv: ")) {
				t.Errorf("stderr %q, want one line starting with quorumkv: containing %q", stderr.String(), tt.stderr)
			}
			if got := n1.rec.requests()[before1:]; !slices.Equal(got, tt.n1Req) {
				t.Errorf("n1 got %q, want %q", got, tt.n1Req)
			}
			if got := n2.rec.requests()[before2:]; !slices.Equal(got, tt.n2Req) {
				t.Errorf("n2 got %q, want %q", got, tt.n2Req)
			}
		})
	}
}

// TestRepairTimeout: --timeout bounds each node's call, and a node that
// does not answer in time is a failure of that node alone.
func TestRepairTimeout(t *testing.T) {
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(block)
	fast := &fakeNode{id: "n1", keeps: []uint32{0}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/admin/repair", fast.repair)
	var status string
	mux.HandleFunc("GET /v1/admin/status", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(status)) })
	fast.srv = httptest.NewServer(mux)
	defer fast.srv.Close()
	addr := strings.TrimPrefix(fast.srv.URL, "http://")
	status = fmt.Sprintf(`{"node":"n1","partitions":8,"members":[{"node":"n1","state":"member","alive":true,"address":%q},{"node":"n2","state":"member","alive":true,"address":%q}]}`,
		addr, strings.TrimPrefix(slow.URL, "http://"))

	start := time.Now()
	code, stdout, stderr := runCmd(t, nil, "repair", "--addr", addr, "--timeout", "300ms")
	if code != 1 || !strings.Contains(stderr, "repair failed on n2 (1 of 2 live nodes)") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !regexp.MustCompile(`(?m)^n1\s+2\s.*ok$`).MatchString(stdout) || !regexp.MustCompile(`(?m)^n2\s.*failed: cannot reach .*deadline exceeded`).MatchString(stdout) {
		t.Errorf("stdout:\n%s", stdout)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v with --timeout 300ms", took)
	}
}
