package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/quorumkv/quorumkv/server/faultnet"
	"github.com/quorumkv/quorumkv/storage"
)

// shutdownTimeout bounds a graceful shutdown: in-flight requests get this
// long to finish before their connections are closed.
const shutdownTimeout = 10 * time.Second

// defaultDataRoot is where node data lives unless --data-dir says otherwise:
// <root>/<node-id>.
const defaultDataRoot = "quorumkv-data"

// defaultGossipAddr is memberlist's usual port, on loopback: a node that
// should gossip with other machines must say where (--gossip-addr).
const defaultGossipAddr = "127.0.0.1:7946"

// nodeFlags are the flags that serve and dev share: the cluster parameters,
// the per-node limits and the logging.
type nodeFlags struct {
	n, r, w    int
	partitions int
	maxBody    int64
	pprof      bool
	readRepair float64
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
	fs.Int64Var(&f.cacheSize, "cache-size", storage.DefaultConfig().CacheSize, "storage memory: a quarter caches decoded objects, the rest is Pebble's block cache, which also holds the memtables (an eighth of the whole), in bytes")
	fs.Float64Var(&f.readRepair, "read-repair-chance", d.ReadRepairChance, "share of reads that ask every replica (for read repair) rather than R of them, 0..1")
	fs.BoolVar(&f.pprof, "enable-pprof", false, "serve Go's profiler at /debug/pprof/ on the HTTP port")
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

// nodeAddrs are a node's addresses: where it serves HTTP and gossips, and
// which gossip addresses it joins through.
type nodeAddrs struct {
	advertise       string   // HTTP address others reach this node at
	gossipBind      string   // memberlist listens here
	gossipAdvertise string   // "" for the bind address
	join            []string // gossip addresses of existing members
}

// config builds and validates a node's server.Config. Besides the checks of
// server.Config.Validate it builds a trial ring of ringMembers (the node ids
// the ring is expected to hold; at least the node itself), so that
// parameters the ring cannot place fail before anything is opened or bound.
func (f *nodeFlags) config(cmd *cobra.Command, nodeID string, addrs nodeAddrs, ringMembers []string, log *slog.Logger) (server.Config, error) {
	if f.cacheSize < 0 {
		return server.Config{}, usageErrorf(cmd, "--cache-size %d: must be at least 0 (0 takes the default)", f.cacheSize)
	}
	cfg := server.DefaultConfig()
	cfg.NodeID = nodeID
	cfg.Advertise = addrs.advertise
	cfg.Gossip.BindAddr = addrs.gossipBind
	cfg.Gossip.Advertise = addrs.gossipAdvertise
	cfg.Gossip.Join = addrs.join
	cfg.Ring = ring.DefaultConfig()
	cfg.Ring.N = f.n
	cfg.Ring.Partitions = f.partitions
	cfg.R, cfg.W = f.r, f.w
	cfg.Timeout = f.timeout
	// ?timeout= may ask for up to MaxTimeout; never let the default exceed it.
	cfg.MaxTimeout = max(cfg.MaxTimeout, f.timeout)
	cfg.MaxBody = f.maxBody
	cfg.Pprof = f.pprof
	cfg.ReadRepairChance = f.readRepair
	cfg.Logger = log
	if err := cfg.Validate(); err != nil {
		return server.Config{}, &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("invalid configuration: %w", err)}
	}
	if !slices.Contains(ringMembers, nodeID) {
		ringMembers = append(slices.Clone(ringMembers), nodeID)
	}
	if _, err := ring.New(cfg.Ring, ringMembers); err != nil {
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
	// ResolvePort: Config.Advertise was defaulted from an --http-addr with
	// port 0; its port is replaced by the one the listener got.
	ResolvePort bool
}

func newServeCmd(a *app) *cobra.Command {
	var (
		f               nodeFlags
		nodeID          string
		httpAddr        string
		advertise       string
		gossipAddr      string
		gossipAdvertise string
		join            []string
		dataDir         string
		debugFaults     bool
		testTiming      bool
	)
	cmd := &cobra.Command{
		Use:   "serve --node-id ID [--gossip-addr HOST:PORT] [--join HOST:PORT,...] [flags]",
		Short: "Run one node of a cluster",
		Long: `Run one node of a cluster until SIGINT or SIGTERM, or until it has left the
cluster (quorumkv cluster leave).

Nodes find each other by gossip. The first node of a new cluster starts
without --join: it creates the cluster, with the --n and --partitions it was
given. Every other node starts with --join, the gossip address of one or more
existing members (it retries until one answers), receives its share of the
partitions and then serves as a member. A node that already belongs to a
cluster finds it again through the members it knows, so --join matters only
for the first start (keeping it is harmless).

N and the partition count are fixed at cluster creation: they are stored in
the data directory, and a node whose values differ from the cluster's is
refused. Every flag can also be set by its QUORUMKV_* environment variable
(--node-id is QUORUMKV_NODE_ID, --join is QUORUMKV_JOIN); the flag wins.`,
		Example: `  # the first node creates the cluster
  quorumkv serve --node-id n1 --http-addr 10.0.0.1:8080 --gossip-addr 10.0.0.1:7946
  # the others join it
  quorumkv serve --node-id n2 --http-addr 10.0.0.2:8080 --gossip-addr 10.0.0.2:7946 --join 10.0.0.1:7946`,
		Args: noArgs,
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
			adv, resolve, err := httpAdvertise(httpAddr, advertise)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			if err := checkGossipBind(gossipAddr); err != nil {
				return usageErrorf(cmd, "--gossip-addr %q: %v", gossipAddr, err)
			}
			if gossipAdvertise != "" {
				if err := checkAdvertise(gossipAdvertise); err != nil {
					return usageErrorf(cmd, "--gossip-advertise %q: %v", gossipAdvertise, err)
				}
			}
			seeds, err := parseJoin(join)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			log, err := f.logger(cmd, a.stderr)
			if err != nil {
				return err
			}
			addrs := nodeAddrs{advertise: adv, gossipBind: gossipAddr, gossipAdvertise: gossipAdvertise, join: seeds}
			cfg, err := f.config(cmd, nodeID, addrs, nil, log)
			if err != nil {
				return err
			}
			// Test seams for process-level fault tests (hidden flags).
			if debugFaults {
				cfg.Faults = faultnet.New()
			}
			if testTiming {
				cfg.FastTiming()
			}
			if dataDir == "" {
				dataDir = filepath.Join(defaultDataRoot, nodeID)
			}
			return a.serve(cmd.Context(), serveSetup{Config: cfg, HTTPAddr: httpAddr, DataDir: dataDir, CacheSize: f.cacheSize, ResolvePort: resolve})
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.BoolVar(&debugFaults, "debug-faults", false, "tests only: route peer traffic through a fault layer controlled by POST /v1/debug/partition and /v1/debug/heal")
	fs.BoolVar(&testTiming, "test-timing", false, "tests only: fast failure detection and background intervals")
	_ = fs.MarkHidden("debug-faults")
	_ = fs.MarkHidden("test-timing")
	fs.StringVar(&nodeID, "node-id", "", "this node's id, 1 to 64 characters from [A-Za-z0-9._-] (required)")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:8080", "address to serve HTTP on (the public, internal and admin API); port 0 picks a free port")
	fs.StringVar(&advertise, "advertise", "", "HTTP address (host:port) other nodes and clients reach this node at (default the --http-addr, with the real port if it is 0)")
	fs.StringVar(&gossipAddr, "gossip-addr", defaultGossipAddr, "address (host:port) to gossip on, UDP and TCP; port 0 picks a free port")
	fs.StringVar(&gossipAdvertise, "gossip-advertise", "", "gossip address other nodes reach this node at (default the --gossip-addr)")
	fs.StringSliceVar(&join, "join", nil, "gossip addresses (host:port,...) of existing members to join through; leave empty on the first node of a new cluster")
	fs.StringVar(&dataDir, "data-dir", "", "data directory (default ./"+defaultDataRoot+"/<node-id>)")
	f.register(fs)
	return cmd
}

// httpAdvertise returns the HTTP address to advertise: --advertise if set,
// else the listen address, which must then name a host. resolve reports
// that the port is 0 and must be taken from the listener.
func httpAdvertise(httpAddr, advertise string) (adv string, resolve bool, err error) {
	if advertise != "" {
		if err := checkAdvertise(advertise); err != nil {
			return "", false, fmt.Errorf("--advertise %q: %v", advertise, err)
		}
		return advertise, false, nil
	}
	host, port, _ := net.SplitHostPort(httpAddr)
	if unspecified(host) {
		return "", false, fmt.Errorf("--http-addr %q listens on every interface: set --advertise to the address other nodes and clients reach this node at", httpAddr)
	}
	return httpAddr, port == "0", nil
}

// unspecified reports whether host is empty or an any-address (0.0.0.0, ::).
func unspecified(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// checkAdvertise checks an address others use: a specific host and a
// non-zero port.
func checkAdvertise(addr string) error {
	if _, err := parseAddr(addr, false); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	if unspecified(host) {
		return errors.New("want the address others reach this node at, not an any-address")
	}
	return nil
}

// checkGossipBind checks the gossip bind address: memberlist needs a host
// (0.0.0.0 for every interface); port 0 picks a free port.
func checkGossipBind(addr string) error {
	if _, err := parseAddr(addr, true); err != nil {
		return err
	}
	if host, _, _ := net.SplitHostPort(addr); host == "" {
		return errors.New("missing host (use 0.0.0.0 for every interface)")
	}
	return nil
}

// parseJoin parses the --join values (each may itself be a comma-separated
// list) into gossip addresses. Blanks and empty entries are ignored, and a
// repeated address is kept once; anything that is not a host:port with a
// host and a non-zero port is an error.
func parseJoin(values []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, v := range values {
		for entry := range strings.SplitSeq(v, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			norm, err := parseAddr(entry, false)
			if err != nil {
				return nil, fmt.Errorf("--join entry %q: %v", entry, err)
			}
			if !seen[norm] {
				seen[norm] = true
				out = append(out, entry)
			}
		}
	}
	return out, nil
}

// parseAddr checks a host:port and returns it normalized. A listen address
// may leave the host empty (all interfaces) and take port 0 (any free
// port); an address to reach may not.
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

// listen binds s's HTTP address and, if the advertised address waits for
// the listener's port, fills it in.
func (s *serveSetup) listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", s.HTTPAddr, err)
	}
	if s.ResolvePort {
		host, _, _ := net.SplitHostPort(s.Config.Advertise)
		s.Config.Advertise = net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		s.ResolvePort = false
	}
	return ln, nil
}

// runServe runs one node until ctx is done, SIGINT/SIGTERM arrives or the
// node has left the cluster, then shuts it down gracefully.
func (a *app) runServe(ctx context.Context, s serveSetup) error {
	log := s.Config.Logger
	if err := os.MkdirAll(s.DataDir, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	ln, err := s.listen()
	if err != nil {
		return err
	}
	if limit := limitMemory(a.lookupEnv, s.CacheSize); limit > 0 {
		log.Info("memory limit", "bytes", limit, "cache_size", s.CacheSize, "why", "the block cache lives in the Go heap; set GOMEMLIMIT to override")
	}
	srv, err := server.Start(s.Config, s.DataDir, s.CacheSize, ln) // owns ln from here
	if err != nil {
		return fmt.Errorf("node %s (data directory %s): %w", s.Config.NodeID, s.DataDir, err)
	}
	g := s.Config.Gossip
	log.Info("node started", "node", s.Config.NodeID, "addr", ln.Addr().String(), "advertise", s.Config.Advertise,
		"gossip_bind", g.BindAddr, "join", strings.Join(g.Join, ","), "data_dir", s.DataDir,
		"n", s.Config.Ring.N, "r", s.Config.R, "w", s.Config.W, "partitions", s.Config.Ring.Partitions)

	sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	var serveErr error
	select {
	case <-sig.Done():
	case <-srv.Node.LeaveDone():
		log.Info("left the cluster", "node", s.Config.NodeID)
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
