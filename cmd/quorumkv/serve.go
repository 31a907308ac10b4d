package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/server"
)

// shutdownTimeout bounds a graceful shutdown: in-flight requests get this
// long to finish before their connections are closed.
const shutdownTimeout = 10 * time.Second

// defaultDataRoot is where node data lives unless --data-dir says otherwise:
// <root>/<node-id>.
const defaultDataRoot = "quorumkv-data"

// nodeFlags are the flags that serve and dev share: the cluster parameters,
// the per-node limits and the logging.
type nodeFlags struct {
	n, r, w    int
	partitions int
	maxBody    int64
	timeout    time.Duration
	cacheSize  int64
	logLevel   string
	logFormat  string
}

func (f *nodeFlags) register(fs *pflag.FlagSet) {
	d := server.DefaultConfig()
	fs.IntVar(&f.n, "n", d.Ring.N, "replicas per key (N); fixed at cluster creation")
	fs.IntVar(&f.r, "r", d.R, "default read quorum, 1..N (a request may override it with ?r=)")
	fs.IntVar(&f.w, "w", d.W, "default write quorum, 1..N (a request may override it with ?w=)")
	fs.IntVar(&f.partitions, "partitions", d.Ring.Partitions, "number of partitions; fixed at cluster creation")
	fs.Int64Var(&f.maxBody, "max-body", d.MaxBody, "largest value accepted, in bytes")
	fs.DurationVar(&f.timeout, "timeout", d.Timeout, "default request deadline, replica calls included (a request may ask for another with ?timeout=)")
	fs.Int64Var(&f.cacheSize, "cache-size", 64<<20, "storage block cache, in bytes")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
}

// logger builds the structured logger the flags ask for, writing to w.
func (f *nodeFlags) logger(cmd *cobra.Command, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, usageErrorf(cmd, "--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(f.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usageErrorf(cmd, "--log-format %q: want text or json", f.logFormat)
	}
}

// config builds and validates a node's server.Config. Besides the checks of
// server.Config.Validate it builds the ring once, so that a member set the
// ring cannot place fails before anything is opened or bound.
func (f *nodeFlags) config(cmd *cobra.Command, nodeID string, peers map[string]string, log *slog.Logger) (server.Config, error) {
	if f.cacheSize < 0 {
		return server.Config{}, usageErrorf(cmd, "--cache-size %d: must be at least 0 (0 takes the default)", f.cacheSize)
	}
	cfg := server.DefaultConfig()
	cfg.NodeID = nodeID
	cfg.Peers = peers
	cfg.Ring = ring.DefaultConfig()
	cfg.Ring.N = f.n
	cfg.Ring.Partitions = f.partitions
	cfg.R, cfg.W = f.r, f.w
	cfg.Timeout = f.timeout
	// ?timeout= may ask for up to MaxTimeout; never let the default exceed it.
	cfg.MaxTimeout = max(cfg.MaxTimeout, f.timeout)
	cfg.MaxBody = f.maxBody
	cfg.Logger = log
	if err := cfg.Validate(); err != nil {
		if len(peers) < f.n {
			err = fmt.Errorf("%w (list every member with --peers, or lower --n)", err)
		}
		return server.Config{}, &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("invalid configuration: %w", err)}
	}
	if _, err := ring.New(cfg.Ring, slices.Sorted(maps.Keys(peers))); err != nil {
		return server.Config{}, &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("invalid configuration: %w", err)}
	}
	return cfg, nil
}

// serveSetup is everything serve needs once its flags are resolved.
type serveSetup struct {
	Config    server.Config
	HTTPAddr  string // the address to listen on
	DataDir   string
	CacheSize int64
}

func newServeCmd(a *app) *cobra.Command {
	var (
		f        nodeFlags
		nodeID   string
		httpAddr string
		dataDir  string
		peers    string
	)
	cmd := &cobra.Command{
		Use:   "serve --node-id ID [--peers ID=HOST:PORT,...] [flags]",
		Short: "Run one node of a cluster",
		Long: `Run one node of a cluster until SIGINT or SIGTERM.

Every member must be started with the same member list (--peers) and the same
--n and --partitions. N and the partition count are fixed at cluster creation:
they are stored in the data directory, and a later start with other values is
refused. Every flag can also be set by its QUORUMKV_* environment variable
(--node-id is QUORUMKV_NODE_ID); the flag wins.`,
		Example: `  quorumkv serve --node-id n1 --http-addr 10.0.0.1:8080 \
      --peers n1=10.0.0.1:8080,n2=10.0.0.2:8080,n3=10.0.0.3:8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodeID == "" {
				return usageErrorf(cmd, "--node-id is required (or set %s)", envName("node-id"))
			}
			if err := ring.ValidateNodeID(nodeID); err != nil {
				return usageErrorf(cmd, "--node-id: %v", err)
			}
			if _, err := parseAddr(httpAddr, true); err != nil {
				return usageErrorf(cmd, "--http-addr %q: %v", httpAddr, err)
			}
			members, err := parsePeers(peers)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			if _, ok := members[nodeID]; !ok {
				// This node's entry is the address the others reach it at;
				// when absent, the listen address stands in for it.
				members[nodeID] = httpAddr
			}
			log, err := f.logger(cmd, a.stderr)
			if err != nil {
				return err
			}
			cfg, err := f.config(cmd, nodeID, members, log)
			if err != nil {
				return err
			}
			if dataDir == "" {
				dataDir = filepath.Join(defaultDataRoot, nodeID)
			}
			return a.serve(cmd.Context(), serveSetup{Config: cfg, HTTPAddr: httpAddr, DataDir: dataDir, CacheSize: f.cacheSize})
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVar(&nodeID, "node-id", "", "this node's id, 1 to 64 characters from [A-Za-z0-9._-] (required)")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:8080", "address to serve HTTP on (the public and the internal API)")
	fs.StringVar(&dataDir, "data-dir", "", "data directory (default ./"+defaultDataRoot+"/<node-id>)")
	fs.StringVar(&peers, "peers", "", "the cluster's members as id=host:port,... (this node is added with --http-addr if absent)")
	f.register(fs)
	return cmd
}

// parsePeers parses a static member list "id=host:port,id=host:port".
// Blanks around entries and empty entries are ignored; anything else that
// is not a valid id=host:port, or a repeated id or address, is an error.
func parsePeers(s string) (map[string]string, error) {
	peers := make(map[string]string)
	byAddr := make(map[string]string)
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		id, addr, ok := strings.Cut(entry, "=")
		id, addr = strings.TrimSpace(id), strings.TrimSpace(addr)
		if !ok {
			return nil, fmt.Errorf("--peers entry %q: want id=host:port", entry)
		}
		if err := ring.ValidateNodeID(id); err != nil {
			return nil, fmt.Errorf("--peers entry %q: bad id: %v", entry, err)
		}
		norm, err := parseAddr(addr, false)
		if err != nil {
			return nil, fmt.Errorf("--peers entry %q: bad address: %v", entry, err)
		}
		if prev, dup := peers[id]; dup {
			return nil, fmt.Errorf("--peers: node %q is listed twice (%s and %s)", id, prev, addr)
		}
		if other, dup := byAddr[norm]; dup {
			return nil, fmt.Errorf("--peers: nodes %q and %q have the same address %s", other, id, addr)
		}
		peers[id] = addr
		byAddr[norm] = id
	}
	return peers, nil
}

// parseAddr checks a host:port and returns it normalized. A listen address
// may leave the host empty (all interfaces); a peer address may not.
func parseAddr(addr string, listen bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", errors.New("want host:port")
	}
	if host == "" && !listen {
		return "", errors.New("missing host")
	}
	if strings.ContainsAny(host, " /@?#") {
		return "", fmt.Errorf("bad host %q", host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (p == 0 && !listen) {
		return "", fmt.Errorf("bad port %q", port)
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.Itoa(p)), nil
}

// runServe runs one node until ctx is done or SIGINT/SIGTERM arrives, then
// shuts it down gracefully.
func (a *app) runServe(ctx context.Context, s serveSetup) error {
	log := s.Config.Logger
	if err := os.MkdirAll(s.DataDir, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	ln, err := net.Listen("tcp", s.HTTPAddr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", s.HTTPAddr, err)
	}
	srv, err := server.Start(s.Config, s.DataDir, s.CacheSize, ln) // owns ln from here
	if err != nil {
		return fmt.Errorf("node %s (data directory %s): %w", s.Config.NodeID, s.DataDir, err)
	}
	log.Info("node started", "node", s.Config.NodeID, "addr", ln.Addr().String(), "data_dir", s.DataDir,
		"members", len(s.Config.Peers), "n", s.Config.Ring.N, "r", s.Config.R, "w", s.Config.W, "partitions", s.Config.Ring.Partitions)

	sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	var serveErr error
	select {
	case <-sig.Done():
	case serveErr = <-srv.Done():
		log.Error("HTTP server stopped", "err", serveErr)
	}
	stop() // a second signal kills the process the default way
	log.Info("shutting down", "node", s.Config.NodeID, "grace", shutdownTimeout)
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Close(closeCtx); err != nil {
		return fmt.Errorf("shutdown of %s: %w", s.Config.NodeID, err)
	}
	log.Info("stopped", "node", s.Config.NodeID)
	if serveErr != nil {
		return fmt.Errorf("serving HTTP: %w", serveErr)
	}
	return nil
}
