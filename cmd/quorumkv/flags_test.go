package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"slices"
	"strconv"
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
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(t *testing.T, s serveSetup)
	}{
		{
			name: "defaults",
			args: []string{"--node-id", "n1"},
			check: func(t *testing.T, s serveSetup) {
				c := s.Config
				if c.NodeID != "n1" || s.HTTPAddr != "127.0.0.1:8080" || s.DataDir != filepath.Join("quorumkv-data", "n1") ||
					c.Ring.N != 3 || c.R != 2 || c.W != 2 ||
					c.Ring.Partitions != 1024 || c.MaxBody != 1<<20 || c.Timeout != 3*time.Second || s.CacheSize != 128<<20 {
					t.Errorf("defaults: %+v", s)
				}
				if c.Advertise != "127.0.0.1:8080" || s.ResolvePort {
					t.Errorf("advertise %q (resolve %v): want the --http-addr", c.Advertise, s.ResolvePort)
				}
				if c.Gossip.BindAddr != "127.0.0.1:7946" || c.Gossip.Advertise != "" || len(c.Gossip.Join) != 0 {
					t.Errorf("gossip %+v: want bind 127.0.0.1:7946, no advertise, no join (a new cluster)", c.Gossip)
				}
			},
		},
		{
			name: "env sets flags",
			env: map[string]string{
				"QUORUMKV_NODE_ID": "n7", "QUORUMKV_HTTP_ADDR": "0.0.0.0:9000", "QUORUMKV_ADVERTISE": "10.0.0.7:9000",
				"QUORUMKV_GOSSIP_ADDR": "0.0.0.0:9100", "QUORUMKV_GOSSIP_ADVERTISE": "10.0.0.7:9100",
				"QUORUMKV_JOIN": "10.0.0.1:7946, 10.0.0.2:7946", "QUORUMKV_N": "3", "QUORUMKV_R": "1",
				"QUORUMKV_W": "3", "QUORUMKV_TIMEOUT": "250ms",
				"QUORUMKV_MAX_BODY": "4096", "QUORUMKV_CACHE_SIZE": "1000", "QUORUMKV_PARTITIONS": "64",
				"QUORUMKV_DATA_DIR": "/d", "QUORUMKV_LOG_LEVEL": "debug", "QUORUMKV_LOG_FORMAT": "json",
			},
			check: func(t *testing.T, s serveSetup) {
				c := s.Config
				if c.NodeID != "n7" || s.HTTPAddr != "0.0.0.0:9000" || c.Ring.N != 3 || c.R != 1 || c.W != 3 ||
					c.Timeout != 250*time.Millisecond || c.MaxBody != 4096 || s.CacheSize != 1000 ||
					c.Ring.Partitions != 64 || s.DataDir != "/d" {
					t.Errorf("env not applied: %+v", s)
				}
				if c.Advertise != "10.0.0.7:9000" || c.Gossip.BindAddr != "0.0.0.0:9100" || c.Gossip.Advertise != "10.0.0.7:9100" {
					t.Errorf("addresses from env not applied: advertise %q gossip %+v", c.Advertise, c.Gossip)
				}
				if want := []string{"10.0.0.1:7946", "10.0.0.2:7946"}; !slices.Equal(c.Gossip.Join, want) {
					t.Errorf("join %q, want %q", c.Gossip.Join, want)
				}
				if !c.Logger.Enabled(context.Background(), -4) {
					t.Errorf("QUORUMKV_LOG_LEVEL=debug not applied")
				}
			},
		},
		{
			name: "flag beats env",
			env:  map[string]string{"QUORUMKV_NODE_ID": "n7", "QUORUMKV_R": "2", "QUORUMKV_N": "1", "QUORUMKV_W": "1", "QUORUMKV_JOIN": "h1:1"},
			args: []string{"--node-id", "n1", "--r", "1", "--join", "h2:2"},
			check: func(t *testing.T, s serveSetup) {
				if s.Config.NodeID != "n1" || s.Config.R != 1 || s.Config.Ring.N != 1 {
					t.Errorf("got node %q r=%d n=%d, want n1, 1 (flags) and 1 (env)", s.Config.NodeID, s.Config.R, s.Config.Ring.N)
				}
				if !slices.Equal(s.Config.Gossip.Join, []string{"h2:2"}) {
					t.Errorf("join %q: want only the flag's h2:2", s.Config.Gossip.Join)
				}
			},
		},
		{
			name: "empty env is unset",
			env:  map[string]string{"QUORUMKV_HTTP_ADDR": "", "QUORUMKV_JOIN": ""},
			args: []string{"--node-id", "n1"},
			check: func(t *testing.T, s serveSetup) {
				if s.HTTPAddr != "127.0.0.1:8080" || len(s.Config.Gossip.Join) != 0 {
					t.Errorf("http addr %q join %q", s.HTTPAddr, s.Config.Gossip.Join)
				}
			},
		},
		{
			name: "join lists",
			args: []string{"--node-id", "n2", "--join", " 10.0.0.1:7946 ,,seed.example:7946", "--join", "[fd00::1]:7946,10.0.0.1:7946"},
			check: func(t *testing.T, s serveSetup) {
				want := []string{"10.0.0.1:7946", "seed.example:7946", "[fd00::1]:7946"}
				if !slices.Equal(s.Config.Gossip.Join, want) {
					t.Errorf("join %q, want %q (blanks and repeats dropped, order kept)", s.Config.Gossip.Join, want)
				}
			},
		},
		{
			name: "http port 0 is resolved at listen time",
			args: []string{"--node-id", "n1", "--http-addr", "localhost:0", "--gossip-addr", "127.0.0.1:0"},
			check: func(t *testing.T, s serveSetup) {
				if !s.ResolvePort || s.Config.Advertise != "localhost:0" || s.Config.Gossip.BindAddr != "127.0.0.1:0" {
					t.Fatalf("setup %+v: want the port resolved from the listener", s)
				}
				ln, err := s.listen()
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				port := ln.Addr().(*net.TCPAddr).Port
				if want := net.JoinHostPort("localhost", strconv.Itoa(port)); s.Config.Advertise != want || s.ResolvePort {
					t.Errorf("advertise %q after listen, want %q", s.Config.Advertise, want)
				}
			},
		},
		{
			name: "explicit advertise is kept with port 0",
			args: []string{"--node-id", "n1", "--http-addr", "0.0.0.0:0", "--advertise", "node1.example:8080"},
			check: func(t *testing.T, s serveSetup) {
				if s.ResolvePort || s.Config.Advertise != "node1.example:8080" {
					t.Errorf("advertise %q resolve %v", s.Config.Advertise, s.ResolvePort)
				}
			},
		},
		{
			name: "timeout above the default cap",
			args: []string{"--node-id", "n1", "--timeout", "2m"},
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
		code int
	}{
		{"missing node id", nil, []string{"--n", "1"}, "--node-id is required", 2},
		{"bad node id", nil, []string{"--node-id", "n/1"}, "--node-id", 2},
		{"peers is gone", nil, []string{"--node-id", "n1", "--peers", "n1=h:1"}, "unknown flag: --peers", 2},
		{"join without port", nil, []string{"--node-id", "n1", "--join", "seed"}, `--join entry "seed": want host:port`, 2},
		{"join without host", nil, []string{"--node-id", "n1", "--join", ":7946"}, `--join entry ":7946": missing host`, 2},
		{"join port 0", nil, []string{"--node-id", "n1", "--join", "h:0"}, "bad port", 2},
		{"join bad port", nil, []string{"--node-id", "n1", "--join", "a:1,h:99999"}, `--join entry "h:99999": bad port`, 2},
		{"bad join from env", map[string]string{"QUORUMKV_JOIN": "a:1,junk"}, []string{"--node-id", "n1"}, `--join entry "junk"`, 2},
		{"any-address without advertise", nil, []string{"--node-id", "n1", "--http-addr", ":8080"}, "set --advertise", 2},
		{"0.0.0.0 without advertise", nil, []string{"--node-id", "n1", "--http-addr", "0.0.0.0:8080"}, "set --advertise", 2},
		{"advertise any-address", nil, []string{"--node-id", "n1", "--advertise", "0.0.0.0:8080"}, "--advertise", 2},
		{"advertise port 0", nil, []string{"--node-id", "n1", "--advertise", "h:0"}, `--advertise "h:0": bad port`, 2},
		{"gossip addr without host", nil, []string{"--node-id", "n1", "--gossip-addr", ":7946"}, "--gossip-addr", 2},
		{"gossip addr bad", nil, []string{"--node-id", "n1", "--gossip-addr", "localhost"}, "--gossip-addr", 2},
		{"gossip advertise port 0", nil, []string{"--node-id", "n1", "--gossip-advertise", "h:0"}, "--gossip-advertise", 2},
		{"bad env value", map[string]string{"QUORUMKV_N": "three"}, []string{"--node-id", "n1"}, "QUORUMKV_N", 2},
		{"bad env duration", map[string]string{"QUORUMKV_TIMEOUT": "3"}, []string{"--node-id", "n1"}, "QUORUMKV_TIMEOUT", 2},
		{"unknown flag", nil, []string{"--node-id", "n1", "--nope"}, "unknown flag: --nope", 2},
		{"r above n", nil, []string{"--node-id", "n1", "--n", "1", "--r", "2", "--w", "1"}, "r=2 must be within 1..n=1", 2},
		{"partitions too few", nil, []string{"--node-id", "n1", "--partitions", "4"}, "partitions", 2},
		{"bad log level", nil, []string{"--node-id", "n1", "--log-level", "loud"}, "--log-level", 2},
		{"bad log format", nil, []string{"--node-id", "n1", "--log-format", "xml"}, "--log-format", 2},
		{"bad http addr", nil, []string{"--node-id", "n1", "--http-addr", "localhost"}, "--http-addr", 2},
		{"negative cache", nil, []string{"--node-id", "n1", "--cache-size", "-1"}, "--cache-size", 2},
		{"positional argument", nil, []string{"--node-id", "n1", "extra"}, "unknown command", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, code, stderr := parseServe(t, tt.env, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d with an error containing %q (stderr %q)", code, tt.code, tt.want, stderr)
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

func TestDevFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--nodes", "0"}, "--nodes 0"},
		{[]string{"--base-port", "65500"}, "--base-port 65500"},
		{[]string{"--base-port", "-1"}, "--base-port -1"},
		{[]string{"--partitions", "16"}, "partitions"}, // 3 nodes need at least 24
		{[]string{"--peers", "x"}, "unknown flag: --peers"},
	} {
		var stdout, stderr bytes.Buffer
		a := newApp(&stdout, &stderr)
		a.lookupEnv = func(string) (string, bool) { return "", false }
		code := run(context.Background(), append([]string{"dev", "--data-dir", t.TempDir()}, tt.args...), a)
		if code != 2 || !strings.Contains(stderr.String(), tt.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("dev %q: exit %d, stderr %q; want 2 and one line containing %q", tt.args, code, stderr.String(), tt.want)
		}
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
