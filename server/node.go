// Package server is a quorumkv node's network face: the public HTTP API,
// the internal replica API, and the coordinator that fans client requests
// out to the replicas of a key.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quorumkv/quorumkv/antientropy"
	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// Node is one member of a cluster: it coordinates client requests and serves
// as a replica for the partitions it holds.
type Node struct {
	cfg       Config
	store     *storage.Store
	transport Transport
	gossip    *gossip
	cluster   string // this cluster's parameters, as sent in clusterHeader
	forwarder *http.Client
	metrics   *metrics
	log       *slog.Logger
	ready     atomic.Bool
	aae       *antientropy.Runner
	inflight  atomic.Int64 // client requests being served

	// bg is the parent of work that outlives a request (straggler writes,
	// read repair, hint delivery, transfers); Close cancels it and waits
	// for wg.
	bg      context.Context
	stopBg  context.CancelFunc
	wg      sync.WaitGroup
	workers *workers     // run goBackground's tasks
	bgMu    sync.RWMutex // orders goBackground against Close
	closed  bool

	// partLocks order writes into a partition against dropping it: a write
	// checks under the read lock that this node still keeps the partition,
	// a drop deletes it under the write lock. Without them a write could
	// land just after the check and just before the drop, or just after the
	// drop, and stay on a node that no longer owns it.
	partLocks []sync.RWMutex

	// leaveDone is closed when a leave finished: the node handed over its
	// data and marked itself removed.
	leaveDone chan struct{}
	leaveOnce sync.Once
}

// clusterParams names the parameters fixed at cluster creation.
func clusterParams(c ring.Config) string {
	return "n=" + strconv.Itoa(c.N) + ",partitions=" + strconv.Itoa(c.Partitions)
}

// NewNode builds a node over an open store. A nil transport means HTTP to
// the members' advertised addresses. The cluster parameters (N, partitions)
// are persisted in the store on first start; a later start with different
// ones is refused, naming the mismatch. Gossip and background loops start
// with Start.
func NewNode(cfg Config, store *storage.Store, tr Transport) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server: invalid config: %w", err)
	}
	params := clusterParams(cfg.Ring)
	stored, err := store.GetMeta("cluster")
	switch {
	case errors.Is(err, storage.ErrNotFound):
		if err := store.SetMeta("cluster", []byte(params)); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case string(stored) != params:
		return nil, fmt.Errorf("server: cluster parameters mismatch: the data directory was created with %s, this node is configured with %s; N and the partition count are fixed at cluster creation", stored, params)
	}
	if f := cfg.Faults; f != nil {
		if cfg.Dial == nil {
			cfg.Dial = f.DialerWith(cfg.NodeID, newDialer())
		}
		if cfg.Gossip.WrapTransport == nil {
			id := cfg.NodeID
			cfg.Gossip.WrapTransport = func(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport { return f.Transport(id, t) }
		}
	}
	dial := cfg.Dial
	if dial == nil {
		dial = newDialer().DialContext
	}
	n := &Node{
		cfg:       cfg,
		store:     store,
		transport: tr,
		cluster:   params,
		forwarder: &http.Client{Transport: newHTTPClientTransport(dial)},
		metrics:   newMetrics(),
		log:       cfg.Logger.With("node", cfg.NodeID),
		leaveDone: make(chan struct{}),
		partLocks: make([]sync.RWMutex, cfg.Ring.Partitions),
	}
	n.bg, n.stopBg = context.WithCancel(context.Background())
	n.workers = newWorkers(maxIdleWorkers, n.bg.Done(), &n.wg)
	n.metrics.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "quorumkv_hints_dropped_total",
			Help: "Slow hints (for replicas merely slower than W) dropped because the bounded slow-hint store was full or they aged out; anti-entropy repairs what they carried.",
		}, func() float64 { return float64(store.HintStats().DroppedSlow) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "quorumkv_hints_refused_total",
			Help: "Durable hints refused because this node's hint store was full (the coordinator tried another fallback).",
		}, func() float64 { return float64(store.HintStats().Refused) }),
		store.Collector(),
	)
	if n.gossip, err = openGossip(n); err != nil {
		return nil, err
	}
	if n.transport == nil {
		n.transport = NewHTTPTransport(n.addr, params, dial)
	}
	aaeCfg := cfg.AntiEntropy
	aaeCfg.Logger = n.log
	n.aae = antientropy.New(aaeCfg, aaeCluster{n}, aaeStore{Store: store, n: n})
	if err := n.aae.Register(n.metrics.reg); err != nil {
		return nil, err
	}
	return n, nil
}

// newDialer bounds node-to-node dials: since Go 1.23 http.Transport dials
// with a context that outlives the request, so the dialer's own timeout is
// what ends a dial to an unreachable peer.
func newDialer() *net.Dialer {
	return &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
}

// epoch is this incarnation's data directory epoch.
func (n *Node) epoch() string { return strings.TrimPrefix(n.store.Actor(), n.cfg.NodeID+".") }

// addr returns a member's advertised HTTP address.
func (n *Node) addr(node string) (string, bool) {
	m, ok := n.placement().Membership().Get(node)
	if !ok || m.State == ring.StateRemoved || m.Addr == "" {
		return "", false
	}
	return m.Addr, true
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// GossipAddr returns the address memberlist listens on (host:port), which
// other nodes join through: the bound port when the configured one was 0.
func (n *Node) GossipAddr() string { return *n.gossip.addr.Load() }

// placement returns the current placement.
func (n *Node) placement() *ring.Placement { return n.gossip.placement.Load() }

// Table returns the current target ring table.
func (n *Node) Table() *ring.Table { return n.placement().Target() }

// alive reports whether the failure detector considers node alive.
func (n *Node) alive(node string) bool { return n.gossip.isAlive(node) }

// start starts gossip and the background loops; the HTTP server must be
// serving already, so that peers who learn of this node can reach it.
func (n *Node) start() error {
	if err := n.gossip.start(); err != nil {
		return err
	}
	n.goBackground(n.hintLoop)
	n.goBackground(n.transferLoop)
	if !n.cfg.PauseAntiEntropy {
		n.goBackground(func() { n.aae.Run(n.bg) })
	}
	n.ready.Store(true)
	return nil
}

// LeaveDone is closed once a leave completed.
func (n *Node) LeaveDone() <-chan struct{} { return n.leaveDone }

// Close stops gossip and background work (straggler writes, read repairs,
// hint delivery, transfers, anti-entropy) and waits for it. It does not close the store.
func (n *Node) Close(ctx context.Context) {
	n.ready.Store(false)
	n.gossip.stop(ctx)
	n.bgMu.Lock()
	n.closed = true
	n.bgMu.Unlock()
	n.stopBg()
	n.wg.Wait()
	if t, ok := n.transport.(interface{ Close() }); ok {
		t.Close()
	}
	n.forwarder.CloseIdleConnections()
}

// maxIdleWorkers bounds the node's idle workers: enough for the replica
// calls of a few hundred requests in flight, at a few KiB of stack each.
const maxIdleWorkers = 256

// goBackground runs fn in a goroutine owned by the node (one of its
// workers), and reports whether it did: after Close it does nothing.
func (n *Node) goBackground(fn func()) bool {
	n.bgMu.RLock()
	defer n.bgMu.RUnlock()
	if n.closed {
		return false
	}
	n.workers.run(fn)
	return true
}

// keyFor locates a bucket and key on the ring.
func (n *Node) keyFor(bucket, key string) storage.Key {
	return storage.Key{Partition: uint32(n.Table().Partition(bucket, key)), Bucket: bucket, Key: key}
}
