package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBenchFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--routing", "random"}, `--routing "random"`},
		{[]string{"--workload", "e"}, `workload "e"`},
		{[]string{"--distribution", "hot"}, `distribution "hot"`},
		{[]string{"--rw", "2-2"}, `--rw "2-2"`},
		{[]string{"--value-size", "10"}, "value size 10"},
		{[]string{"--concurrency", "0"}, "concurrency 0"},
		{[]string{"--update-context", "all"}, `--update-context "all"`},
		{[]string{"--duration", "0s"}, "duration 0s"},
		{[]string{"extra"}, "unknown command"},
	} {
		code, _, stderr := runCmd(t, nil, append([]string{"bench"}, tt.args...)...)
		if code != 2 || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "quorumkv bench --help") {
			t.Errorf("bench %v: exit %d, stderr %q; want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
}

// The bench drives a server that answers 200 to anything (the reference
// of the speed comparison) with round-robin routing, no load, reads only.
func TestBenchNoopServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	out := t.TempDir()
	code, stdout, stderr := runCmd(t, map[string]string{"QUORUMKV_CONCURRENCY": "4"}, "bench", "--endpoints", srv.URL,
		"--routing", "round-robin", "--load=false", "--workload", "c", "--duration", "500ms", "--warmup", "0s",
		"--rw", "1/1,2/2", "--seed", "7", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"seed 7", "4 workers", "N=3 (assumed", "N  R  W  WORKLOAD  OPS/S"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	for _, f := range []string{"results.csv", "results.json", "chart.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}
