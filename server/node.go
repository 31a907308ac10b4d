// Package server is a quorumkv node's network face: the public HTTP API,
// the internal replica API, and the coordinator that fans client requests
// out to the replicas of a key.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// Node is one member of a cluster: it coordinates client requests and serves
// as a replica for the partitions it holds.
type Node struct {
	cfg       Config
	store     *storage.Store
	transport Transport
	table     atomic.Pointer[ring.Table]
	addrs     map[string]string // node id -> HTTP address; static for now
	cluster   string            // this cluster's parameters, as sent in clusterHeader
	forwarder *http.Client
	metrics   *metrics
	log       *slog.Logger
	ready     atomic.Bool

	// bg is the parent of work that outlives a request (straggler writes,
	// read repair); Close cancels it and waits for wg.
	bg     context.Context
	stopBg context.CancelFunc
	wg     sync.WaitGroup
}

// clusterParams names the parameters fixed at cluster creation.
func clusterParams(c ring.Config) string {
	return "n=" + strconv.Itoa(c.N) + ",partitions=" + strconv.Itoa(c.Partitions)
}

// NewNode builds a node over an open store. A nil transport means HTTP to
// the addresses in cfg.Peers. The cluster parameters (N, partitions) are
// persisted in the store on first start; a later start with different ones
// is refused, naming the mismatch.
func NewNode(cfg Config, store *storage.Store, tr Transport) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server: invalid config: %w", err)
	}
	table, err := ring.New(cfg.Ring, slices.Collect(maps.Keys(cfg.Peers)))
	if err != nil {
		return nil, fmt.Errorf("server: build ring: %w", err)
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
	n := &Node{
		cfg:       cfg,
		store:     store,
		transport: tr,
		addrs:     maps.Clone(cfg.Peers),
		cluster:   params,
		forwarder: &http.Client{Transport: newHTTPClientTransport()},
		metrics:   newMetrics(),
		log:       cfg.Logger.With("node", cfg.NodeID),
	}
	if n.transport == nil {
		n.transport = NewHTTPTransport(n.addr, params)
	}
	n.table.Store(table)
	n.bg, n.stopBg = context.WithCancel(context.Background())
	n.ready.Store(true)
	return n, nil
}

func (n *Node) addr(node string) (string, bool) {
	a, ok := n.addrs[node]
	return a, ok
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Table returns the current ring table.
func (n *Node) Table() *ring.Table { return n.table.Load() }

// Close stops background work (straggler writes, read repairs) and waits
// for it. It does not close the store.
func (n *Node) Close() {
	n.ready.Store(false)
	n.stopBg()
	n.wg.Wait()
	if t, ok := n.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	n.forwarder.CloseIdleConnections()
}

// goBackground runs fn in a goroutine owned by the node.
func (n *Node) goBackground(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

// keyFor locates a bucket and key on the ring.
func (n *Node) keyFor(bucket, key string) storage.Key {
	return storage.Key{Partition: uint32(n.Table().Partition(bucket, key)), Bucket: bucket, Key: key}
}
