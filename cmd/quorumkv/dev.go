package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/quorumkv/quorumkv/server"
)

// devHost is the only address dev listens on: it is for trying things out
// on one machine, never for serving others.
const devHost = "127.0.0.1"

// devGossipOffset is the distance from a node's HTTP port to its gossip
// port when the ports are fixed (8080 gossips on 8180).
const devGossipOffset = 100

// devSettleTimeout bounds the wait for a new dev cluster to settle.
const devSettleTimeout = 30 * time.Second

// devNode is one node of a dev cluster before it starts: its setup, its
// bound HTTP listener and the reservation of its gossip port.
type devNode struct {
	setup   serveSetup
	ln      net.Listener
	gossip  *portHold
	srv     *server.Server
	stopped bool
}

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
serving HTTP on 127.0.0.1:8080, 8081, 8082 and gossiping on 8180, 8181, 8182,
with their data in ./quorumkv-data/n1..n3. n1 creates the cluster; the others
join it through its gossip address, exactly as separate machines would. The
banner is printed once every node is a member and no transfer is pending.
Ctrl-C stops every node cleanly. The data survives a restart with the same
--data-dir.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodes < 1 || nodes > 64 {
				return usageErrorf(cmd, "--nodes %d: want 1 to 64", nodes)
			}
			if top := 65535 - (nodes - 1) - devGossipOffset; basePort < 0 || basePort > top {
				return usageErrorf(cmd, "--base-port %d: want 1 to %d for %d nodes (0 picks free ports)", basePort, top, nodes)
			}
			log, err := f.logger(cmd, a.stderr)
			if err != nil {
				return err
			}
			ids := make([]string, nodes)
			for i := range ids {
				ids[i] = "n" + strconv.Itoa(i+1)
			}
			// Check the configuration with placeholder addresses first, so
			// that a bad flag fails before any port is taken.
			placeholder := nodeAddrs{advertise: net.JoinHostPort(devHost, "1"), gossipBind: net.JoinHostPort(devHost, "0")}
			if _, err := f.config(cmd, ids[0], placeholder, ids, log); err != nil {
				return err
			}

			// Bind every port before starting anything: a busy port fails
			// fast, naming the port.
			dn := make([]*devNode, 0, nodes)
			release := func() {
				for _, d := range dn {
					d.ln.Close()
					d.gossip.release()
				}
			}
			for i, id := range ids {
				httpPort, gossipPort := 0, 0
				if basePort != 0 {
					httpPort, gossipPort = basePort+i, basePort+i+devGossipOffset
				}
				ln, err := net.Listen("tcp", net.JoinHostPort(devHost, strconv.Itoa(httpPort)))
				if err != nil {
					release()
					return fmt.Errorf("cannot listen on %s port %d for %s (%v); choose other ports with --base-port", devHost, httpPort, id, err)
				}
				g, err := holdPort(devHost, gossipPort)
				if err != nil {
					ln.Close()
					release()
					return fmt.Errorf("cannot gossip on %s port %d for %s (%v); choose other ports with --base-port", devHost, gossipPort, id, err)
				}
				dn = append(dn, &devNode{ln: ln, gossip: g})
			}
			for i, id := range ids {
				addrs := nodeAddrs{advertise: dn[i].ln.Addr().String(), gossipBind: dn[i].gossip.addr}
				if i > 0 {
					addrs.join = []string{dn[0].gossip.addr} // n1 creates the cluster, the others join it
				}
				cfg, err := f.config(cmd, id, addrs, ids, log)
				if err != nil {
					release()
					return err
				}
				dn[i].setup = serveSetup{Config: cfg, HTTPAddr: addrs.advertise, DataDir: filepath.Join(dataRoot, id), CacheSize: f.cacheSize}
			}
			return a.runDev(cmd.Context(), dn, dataRoot)
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.IntVar(&nodes, "nodes", 3, "number of nodes (n1..nK)")
	fs.IntVar(&basePort, "base-port", 8080, "HTTP port of n1; node i serves HTTP on base-port+i-1 and gossips on base-port+100+i-1 (0 picks free ports)")
	fs.StringVar(&dataRoot, "data-dir", defaultDataRoot, "data root: node nK keeps its data in <data-dir>/nK")
	f.register(fs)
	return cmd
}

// portHold keeps a gossip port (TCP and UDP, as memberlist binds both)
// until the node that uses it starts.
type portHold struct {
	addr string
	tcp  net.Listener
	udp  net.PacketConn
}

// holdPort binds host:port on TCP and UDP; port 0 takes a port free on
// both.
func holdPort(host string, port int) (*portHold, error) {
	var err error
	for range 20 {
		var h portHold
		if h.tcp, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
			return nil, err
		}
		h.addr = h.tcp.Addr().String()
		if h.udp, err = net.ListenPacket("udp", h.addr); err == nil {
			return &h, nil
		}
		h.tcp.Close()
		if port != 0 {
			return nil, err
		}
	}
	return nil, err
}

// release frees the port for its node. It is idempotent.
func (h *portHold) release() {
	if h.tcp != nil {
		h.tcp.Close()
		h.udp.Close()
		h.tcp, h.udp = nil, nil
	}
}

// runDev starts the nodes (n1 first: it creates the cluster), waits until
// the cluster has settled, prints the banner, and runs until ctx is done or
// SIGINT/SIGTERM arrives; then it shuts every node down. A node that leaves
// the cluster (quorumkv cluster leave) is shut down on its own.
func (a *app) runDev(ctx context.Context, nodes []*devNode, dataRoot string) error {
	log := nodes[0].setup.Config.Logger
	sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	var caches []int64
	for _, d := range nodes {
		caches = append(caches, d.setup.CacheSize)
	}
	if limit := limitMemory(a.lookupEnv, caches...); limit > 0 {
		log.Info("memory limit", "bytes", limit, "nodes", len(nodes))
	}
	var startErr error
	started := 0
	for _, d := range nodes {
		s := d.setup
		if err := os.MkdirAll(s.DataDir, 0o750); err != nil {
			startErr = fmt.Errorf("data directory: %w", err)
			break
		}
		d.gossip.release() // the node binds it now
		srv, err := server.Start(s.Config, s.DataDir, s.CacheSize, d.ln)
		if err != nil {
			startErr = fmt.Errorf("node %s (data directory %s): %w", s.Config.NodeID, s.DataDir, err)
			break
		}
		d.srv = srv
		started++
	}
	if startErr == nil {
		startErr = waitSettled(sig, nodes, devSettleTimeout)
		if startErr != nil && sig.Err() != nil {
			startErr = nil // interrupted while waiting: a normal stop
			log.Info("interrupted before the cluster settled")
		}
	}
	if startErr != nil || sig.Err() != nil {
		for _, d := range nodes[started:] {
			d.ln.Close() // Start closed the one that failed; closing twice is harmless
			d.gossip.release()
		}
		if err := closeAll(context.WithoutCancel(ctx), nodes); err != nil {
			startErr = errors.Join(startErr, err)
		}
		return startErr
	}

	printBanner(a.stdout, nodes, dataRoot)
	log.Info("dev cluster started", "nodes", len(nodes))

	// Watch every node for a finished leave, or an HTTP server that died.
	type event struct {
		d    *devNode
		left bool
		err  error
	}
	events := make(chan event, len(nodes)) // each watcher sends at most once
	quit := make(chan struct{})
	defer close(quit)
	for _, d := range nodes {
		go func() {
			select {
			case <-d.srv.Node.LeaveDone():
				events <- event{d: d, left: true}
			case err := <-d.srv.Done():
				events <- event{d: d, err: err}
			case <-quit:
			}
		}()
	}
	var runErr error
	for running := len(nodes); running > 0 && runErr == nil; {
		select {
		case <-sig.Done():
			running = 0
			continue
		case ev := <-events:
			id := ev.d.setup.Config.NodeID
			if !ev.left {
				log.Error("HTTP server stopped", "node", id, "err", ev.err)
				runErr = fmt.Errorf("node %s stopped serving HTTP: %w", id, ev.err)
				continue
			}
			log.Info("left the cluster", "node", id)
			if err := closeAll(context.WithoutCancel(ctx), []*devNode{ev.d}); err != nil {
				log.Error("shutdown after leaving", "node", id, "err", err)
			}
			running--
		}
	}
	stop() // a second signal kills the process the default way
	log.Info("shutting down", "nodes", len(nodes), "grace", shutdownTimeout)
	if err := closeAll(context.WithoutCancel(ctx), nodes); err != nil {
		return errors.Join(runErr, err)
	}
	log.Info("stopped")
	return runErr
}

// closeAll shuts the started, not yet stopped nodes down in parallel within
// shutdownTimeout.
func closeAll(ctx context.Context, nodes []*devNode) error {
	ctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
	defer cancel()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, d := range nodes {
		if d.srv == nil || d.stopped {
			continue
		}
		d.stopped = true
		wg.Go(func() {
			if err := d.srv.Close(ctx); err != nil {
				errs[i] = fmt.Errorf("shutdown of %s: %w", d.srv.Node.ID(), err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// clusterSettled is the part of GET /v1/cluster that tells whether a node
// sees the cluster settled.
type clusterSettled struct {
	Settled bool              `json:"settled"`
	States  map[string]string `json:"states"`
}

// waitSettled polls every node until each reports "settled" and lists
// every node as a member (GET /v1/cluster) and alive (GET
// /v1/admin/status), or the timeout passes, or ctx is done.
func waitSettled(ctx context.Context, nodes []*devNode, timeout time.Duration) error {
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	ids := make([]string, len(nodes))
	for i, d := range nodes {
		ids[i] = d.setup.Config.NodeID
	}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		waiting := ""
		for _, d := range nodes {
			if why := settledAt(ctx, client, d.setup.Config.Advertise, ids); why != "" {
				waiting = d.setup.Config.NodeID + " " + why
				break
			}
		}
		if waiting == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster did not settle within %v: %s", timeout, waiting)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// settledAt returns "" if the node at addr sees the cluster settled with
// every id a member and alive, else what it sees instead.
func settledAt(ctx context.Context, client *http.Client, addr string, ids []string) string {
	var v clusterSettled
	if why := getJSON(ctx, client, "http://"+addr+"/v1/cluster", &v); why != "" {
		return why
	}
	var notMember []string
	for _, id := range ids {
		if st := v.States[id]; st != "member" {
			notMember = append(notMember, id+"="+cmp.Or(st, "unknown"))
		}
	}
	switch {
	case len(notMember) > 0:
		slices.Sort(notMember)
		return "sees " + strings.Join(notMember, " ")
	case !v.Settled:
		return "has partition transfers pending"
	}
	// Membership settles from persisted state on a restart; wait for the
	// failure detector to see every node too.
	var st server.ClusterStatus
	if why := getJSON(ctx, client, "http://"+addr+"/v1/admin/status", &st); why != "" {
		return why
	}
	for _, m := range st.Members {
		if slices.Contains(ids, m.Node) && !m.Alive {
			return "does not see " + m.Node + " alive yet"
		}
	}
	return ""
}

// getJSON decodes the JSON answer of a GET into v; it returns "" on
// success, else what went wrong.
func getJSON(ctx context.Context, client *http.Client, url string, v any) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return "does not answer: " + err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "answers " + resp.Status
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		return "answers unreadable JSON: " + err.Error()
	}
	return ""
}

func printBanner(w io.Writer, nodes []*devNode, dataRoot string) {
	cfg := nodes[0].setup.Config
	root, err := filepath.Abs(dataRoot)
	if err != nil {
		root = dataRoot
	}
	first := "http://" + cfg.Advertise
	last := "http://" + nodes[len(nodes)-1].setup.Config.Advertise
	fmt.Fprintf(w, "\nquorumkv dev: %d nodes, N=%d R=%d W=%d, %d partitions\n\n",
		len(nodes), cfg.Ring.N, cfg.R, cfg.W, cfg.Ring.Partitions)
	for _, d := range nodes {
		c := d.setup.Config
		fmt.Fprintf(w, "  %-4s http://%-21s gossip %-21s data %s\n", c.NodeID, c.Advertise, c.Gossip.BindAddr, d.setup.DataDir)
	}
	fmt.Fprintf(w, "\n  data dir: %s\n\nTry (any node coordinates any key):\n\n", root)
	fmt.Fprintf(w, "  curl -i -X PUT -H 'Content-Type: application/json' -d '{\"hello\":\"world\"}' %s/v1/kv/demo/greeting\n", first)
	fmt.Fprintf(w, "  curl -i %s/v1/kv/demo/greeting\n", last)
	fmt.Fprintf(w, "  quorumkv cluster status --addr %s\n\n", cfg.Advertise)
	fmt.Fprintf(w, "Press Ctrl-C to stop.\n\n")
}
