package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/quorumkv/quorumkv/server"
)

// devHost is the only address dev listens on: it is for trying things out
// on one machine, never for serving others.
const devHost = "127.0.0.1"

func newDevCmd(a *app) *cobra.Command {
	var (
		f        nodeFlags
		nodes    int
		basePort int
		dataRoot string
	)
	cmd := &cobra.Command{
		Use:   "dev [flags]",
		Short: "Run a local 3-node cluster in one process",
		Long: `Run a local cluster in one process, for trying quorumkv out: nodes n1, n2, n3
on 127.0.0.1:8080, 8081, 8082, with their data in ./quorumkv-data/n1..n3.
Ctrl-C stops every node cleanly. The data survives a restart with the same
--data-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodes < 1 || nodes > 64 {
				return usageErrorf(cmd, "--nodes %d: want 1 to 64", nodes)
			}
			if basePort < 0 || basePort > 65535-(nodes-1) {
				return usageErrorf(cmd, "--base-port %d: want 1 to %d for %d nodes (0 picks free ports)", basePort, 65535-(nodes-1), nodes)
			}
			log, err := f.logger(cmd, a.stderr)
			if err != nil {
				return err
			}
			ids := make([]string, nodes)
			for i := range ids {
				ids[i] = "n" + strconv.Itoa(i+1)
			}
			// Check the configuration against a placeholder member list
			// first, so that a bad flag fails before any port is taken.
			placeholder := make(map[string]string, nodes)
			for i, id := range ids {
				placeholder[id] = net.JoinHostPort(devHost, strconv.Itoa(basePort+i+1))
			}
			if _, err := f.config(cmd, ids[0], placeholder, log); err != nil {
				return err
			}

			// Bind every listener before starting anything: a busy port
			// fails fast, naming the port.
			lns := make([]net.Listener, 0, nodes)
			closeListeners := func() {
				for _, ln := range lns {
					ln.Close()
				}
			}
			peers := make(map[string]string, nodes)
			for i, id := range ids {
				port := 0
				if basePort != 0 {
					port = basePort + i
				}
				ln, err := net.Listen("tcp", net.JoinHostPort(devHost, strconv.Itoa(port)))
				if err != nil {
					closeListeners()
					return fmt.Errorf("cannot listen on %s port %d for %s (%v); choose other ports with --base-port", devHost, port, id, err)
				}
				lns = append(lns, ln)
				peers[id] = ln.Addr().String()
			}

			setups := make([]serveSetup, nodes)
			for i, id := range ids {
				cfg, err := f.config(cmd, id, peers, log)
				if err != nil {
					closeListeners()
					return err
				}
				setups[i] = serveSetup{Config: cfg, HTTPAddr: peers[id], DataDir: filepath.Join(dataRoot, id), CacheSize: f.cacheSize}
			}
			return a.runDev(cmd.Context(), setups, lns, dataRoot)
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.IntVar(&nodes, "nodes", 3, "number of nodes (n1..nK)")
	fs.IntVar(&basePort, "base-port", 8080, "HTTP port of n1; node i listens on base-port+i-1 (0 picks free ports)")
	fs.StringVar(&dataRoot, "data-dir", defaultDataRoot, "data root: node nK keeps its data in <data-dir>/nK")
	f.register(fs)
	return cmd
}

// runDev starts one server per setup on its listener, prints the banner,
// and runs until ctx is done or SIGINT/SIGTERM arrives; then it shuts every
// node down.
func (a *app) runDev(ctx context.Context, setups []serveSetup, lns []net.Listener, dataRoot string) error {
	log := setups[0].Config.Logger
	servers := make([]*server.Server, 0, len(setups))
	var startErr error
	for i, s := range setups {
		if err := os.MkdirAll(s.DataDir, 0o750); err != nil {
			startErr = fmt.Errorf("data directory: %w", err)
			break
		}
		srv, err := server.Start(s.Config, s.DataDir, s.CacheSize, lns[i])
		if err != nil {
			startErr = fmt.Errorf("node %s (data directory %s): %w", s.Config.NodeID, s.DataDir, err)
			break
		}
		servers = append(servers, srv)
	}
	if startErr != nil {
		for _, ln := range lns[len(servers):] {
			ln.Close() // Start closed the one that failed; closing twice is harmless
		}
		if err := closeAll(context.WithoutCancel(ctx), servers); err != nil {
			startErr = errors.Join(startErr, err)
		}
		return startErr
	}

	printBanner(a.stdout, setups, dataRoot)
	log.Info("dev cluster started", "nodes", len(servers))

	sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	<-sig.Done()
	stop() // a second signal kills the process the default way
	log.Info("shutting down", "nodes", len(servers), "grace", shutdownTimeout)
	if err := closeAll(context.WithoutCancel(ctx), servers); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// closeAll shuts the servers down in parallel within shutdownTimeout.
func closeAll(ctx context.Context, servers []*server.Server) error {
	ctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
	defer cancel()
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() {
			if err := srv.Close(ctx); err != nil {
				errs[i] = fmt.Errorf("shutdown of %s: %w", srv.Node.ID(), err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func printBanner(w io.Writer, setups []serveSetup, dataRoot string) {
	cfg := setups[0].Config
	root, err := filepath.Abs(dataRoot)
	if err != nil {
		root = dataRoot
	}
	first := "http://" + setups[0].HTTPAddr
	last := "http://" + setups[len(setups)-1].HTTPAddr
	fmt.Fprintf(w, "\nquorumkv dev: %d nodes, N=%d R=%d W=%d, %d partitions\n\n",
		len(setups), cfg.Ring.N, cfg.R, cfg.W, cfg.Ring.Partitions)
	for _, s := range setups {
		fmt.Fprintf(w, "  %-4s http://%-22s data %s\n", s.Config.NodeID, s.HTTPAddr, s.DataDir)
	}
	fmt.Fprintf(w, "\n  data dir: %s\n\nTry (any node coordinates any key):\n\n", root)
	fmt.Fprintf(w, "  curl -i -X PUT -H 'Content-Type: application/json' -d '{\"hello\":\"world\"}' %s/v1/kv/demo/greeting\n", first)
	fmt.Fprintf(w, "  curl -i %s/v1/kv/demo/greeting\n\n", last)
	fmt.Fprintf(w, "Press Ctrl-C to stop.\n\n")
}
