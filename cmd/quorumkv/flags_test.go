package main

import (
	"bytes"
	"context"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// parseServe runs `quorumkv serve args...` with env as the whole
// environment and returns the setup serve would run with, or the exit code
// and stderr of a failure.
func parseServe(t *testing.T, env map[string]string, args ...string) (serveSetup, int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	a := newApp(&stdout, &stderr)
	a.lookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var got serveSetup
	called := false
	a.serve = func(_ context.Context, s serveSetup) error {
		got, called = s, true
		return nil
	}
	code := run(context.Background(), append([]string{"serve"}, args...), a)
	if code == 0 && !called {
		t.Fatalf("serve exited 0 without running")
	}
	return got, code, stderr.String()
}

func TestServeFlagsAndEnv(t *testing.T) {
	single := []string{"--n", "1", "--r", "1", "--w", "1"}
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(t *testing.T, s serveSetup)
	}{
		{
			name: "defaults",
			args: append([]string{"--node-id", "n1"}, single...),
			check: func(t *testing.T, s serveSetup) {
				c := s.Config
				if c.NodeID != "n1" || s.HTTPAddr != "127.0.0.1:8080" || s.DataDir != filepath.Join("quorumkv-data", "n1") ||
					c.Ring.Partitions != 1024 || c.MaxBody != 1<<20 || c.Timeout != 3*time.Second || s.CacheSize != 64<<20 {
					t.Errorf("defaults: %+v", s)
				}
				if !maps.Equal(c.Peers, map[string]string{"n1": "127.0.0.1:8080"}) {
					t.Errorf("peers %v: want this node added with its --http-addr", c.Peers)
				}
			},
		},
		{
			name: "env sets flags",
			env: map[string]string{
				"QUORUMKV_NODE_ID": "n7", "QUORUMKV_HTTP_ADDR": "127.0.0.1:9000", "QUORUMKV_N": "3", "QUORUMKV_R": "1",
				"QUORUMKV_W": "3", "QUORUMKV_PEERS": "n8=h8:1,n9=h9:2", "QUORUMKV_TIMEOUT": "250ms",
				"QUORUMKV_MAX_BODY": "4096", "QUORUMKV_CACHE_SIZE": "1000", "QUORUMKV_PARTITIONS": "64",
				"QUORUMKV_DATA_DIR": "/d", "QUORUMKV_LOG_LEVEL": "debug", "QUORUMKV_LOG_FORMAT": "json",
			},
			check: func(t *testing.T, s serveSetup) {
				c := s.Config
				if c.NodeID != "n7" || s.HTTPAddr != "127.0.0.1:9000" || c.Ring.N != 3 || c.R != 1 || c.W != 3 ||
					c.Timeout != 250*time.Millisecond || c.MaxBody != 4096 || s.CacheSize != 1000 ||
					c.Ring.Partitions != 64 || s.DataDir != "/d" {
					t.Errorf("env not applied: %+v", s)
				}
				want := map[string]string{"n7": "127.0.0.1:9000", "n8": "h8:1", "n9": "h9:2"}
				if !maps.Equal(c.Peers, want) {
					t.Errorf("peers %v, want %v", c.Peers, want)
				}
				if !c.Logger.Enabled(context.Background(), -4) {
					t.Errorf("QUORUMKV_LOG_LEVEL=debug not applied")
				}
			},
		},
		{
			name: "flag beats env",
			env:  map[string]string{"QUORUMKV_NODE_ID": "n7", "QUORUMKV_R": "2", "QUORUMKV_N": "1", "QUORUMKV_W": "1"},
			args: []string{"--node-id", "n1", "--r", "1"},
			check: func(t *testing.T, s serveSetup) {
				if s.Config.NodeID != "n1" || s.Config.R != 1 || s.Config.Ring.N != 1 {
					t.Errorf("got node %q r=%d n=%d, want n1, 1 (flags) and 1 (env)", s.Config.NodeID, s.Config.R, s.Config.Ring.N)
				}
			},
		},
		{
			name: "empty env is unset",
			env:  map[string]string{"QUORUMKV_HTTP_ADDR": ""},
			args: append([]string{"--node-id", "n1"}, single...),
			check: func(t *testing.T, s serveSetup) {
				if s.HTTPAddr != "127.0.0.1:8080" {
					t.Errorf("http addr %q", s.HTTPAddr)
				}
			},
		},
		{
			name: "own entry in peers is kept",
			args: []string{"--node-id", "n1", "--http-addr", ":8080", "--peers", " n1=10.0.0.1:8080 , n2=10.0.0.2:8080,n3=10.0.0.3:8080,"},
			check: func(t *testing.T, s serveSetup) {
				want := map[string]string{"n1": "10.0.0.1:8080", "n2": "10.0.0.2:8080", "n3": "10.0.0.3:8080"}
				if !maps.Equal(s.Config.Peers, want) || s.HTTPAddr != ":8080" {
					t.Errorf("peers %v addr %q", s.Config.Peers, s.HTTPAddr)
				}
			},
		},
		{
			name: "timeout above the default cap",
			args: append([]string{"--node-id", "n1", "--timeout", "2m"}, single...),
			check: func(t *testing.T, s serveSetup) {
				if s.Config.Timeout != 2*time.Minute || s.Config.MaxTimeout < 2*time.Minute {
					t.Errorf("timeout %v max %v", s.Config.Timeout, s.Config.MaxTimeout)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, code, stderr := parseServe(t, tt.env, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			tt.check(t, s)
		})
	}
}

func TestServeErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string // in the one error line
	}{
		{"missing node id", nil, []string{"--n", "1"}, "--node-id is required"},
		{"bad node id", nil, []string{"--node-id", "n/1"}, "--node-id"},
		{"peers without =", nil, []string{"--node-id", "n1", "--peers", "n2"}, `--peers entry "n2": want id=host:port`},
		{"peers without port", nil, []string{"--node-id", "n1", "--peers", "n2=host"}, `--peers entry "n2=host": bad address`},
		{"peers bad port", nil, []string{"--node-id", "n1", "--peers", "n2=host:99999"}, "bad port"},
		{"peers empty host", nil, []string{"--node-id", "n1", "--peers", "n2=:80"}, "missing host"},
		{"peers empty id", nil, []string{"--node-id", "n1", "--peers", "=host:80"}, "bad id"},
		{"peers bad id", nil, []string{"--node-id", "n1", "--peers", "n 2=host:80"}, "bad id"},
		{"peers duplicate id", nil, []string{"--node-id", "n1", "--peers", "n2=a:1,n2=b:2"}, "listed twice"},
		{"peers duplicate addr", nil, []string{"--node-id", "n1", "--peers", "n2=a:1,n3=a:1"}, "same address"},
		{"bad peers from env", map[string]string{"QUORUMKV_PEERS": "n2=a:1,junk"}, []string{"--node-id", "n1"}, `--peers entry "junk"`},
		{"bad env value", map[string]string{"QUORUMKV_N": "three"}, []string{"--node-id", "n1"}, "QUORUMKV_N"},
		{"bad env duration", map[string]string{"QUORUMKV_TIMEOUT": "3"}, []string{"--node-id", "n1"}, "QUORUMKV_TIMEOUT"},
		{"unknown flag", nil, []string{"--node-id", "n1", "--nope"}, "unknown flag: --nope"},
		{"too few members", nil, []string{"--node-id", "n1"}, "n=3 needs at least 3 members"},
		{"r above n", nil, []string{"--node-id", "n1", "--n", "1", "--r", "2", "--w", "1"}, "r=2 must be within 1..n=1"},
		{"partitions too few", nil, []string{"--node-id", "n1", "--n", "1", "--r", "1", "--w", "1", "--partitions", "2"}, "partitions"},
		{"bad log level", nil, []string{"--node-id", "n1", "--n", "1", "--r", "1", "--w", "1", "--log-level", "loud"}, "--log-level"},
		{"bad log format", nil, []string{"--node-id", "n1", "--n", "1", "--r", "1", "--w", "1", "--log-format", "xml"}, "--log-format"},
		{"bad http addr", nil, []string{"--node-id", "n1", "--http-addr", "localhost"}, "--http-addr"},
		{"negative cache", nil, []string{"--node-id", "n1", "--n", "1", "--r", "1", "--w", "1", "--cache-size", "-1"}, "--cache-size"},
		{"positional argument", nil, []string{"--node-id", "n1", "extra"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, code, stderr := parseServe(t, tt.env, tt.args...)
			if code == 0 {
				t.Fatalf("exit 0, want an error containing %q", tt.want)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.want)
			}
			if n := strings.Count(stderr, "\n"); n != 1 || !strings.HasPrefix(stderr, "quorumkv: ") {
				t.Errorf("want one line starting with quorumkv:, got %q", stderr)
			}
		})
	}
}

func TestEnvNames(t *testing.T) {
	for flag, want := range map[string]string{"node-id": "QUORUMKV_NODE_ID", "n": "QUORUMKV_N", "max-body": "QUORUMKV_MAX_BODY", "log-format": "QUORUMKV_LOG_FORMAT"} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
	// applyEnv leaves flags given on the command line alone, and reports
	// every bad variable.
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	a := fs.String("alpha-beta", "default", "")
	b := fs.Int("gamma", 1, "")
	fs.Int("delta", 1, "")
	if err := fs.Parse([]string{"--gamma", "5"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"QUORUMKV_ALPHA_BETA": "from-env", "QUORUMKV_GAMMA": "9", "QUORUMKV_DELTA": "x"}
	err := applyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err == nil || !strings.Contains(err.Error(), "QUORUMKV_DELTA") {
		t.Errorf("err = %v, want one naming QUORUMKV_DELTA", err)
	}
	if *a != "from-env" || *b != 5 {
		t.Errorf("alpha-beta=%q gamma=%d", *a, *b)
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"version"}, newApp(&stdout, &stderr)); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "quorumkv "+version+" ") {
		t.Errorf("version printed %q", stdout.String())
	}
}
