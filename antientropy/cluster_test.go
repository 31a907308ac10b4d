package antientropy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/quorumkv/quorumkv/storage"
)

// fakeNet is an in-process cluster of Runners over testStores: a node's
// Call is answered by the other node's Serve over its Local, as the
// server's internal API would.
type fakeNet struct {
	names  []string
	parts  []uint32
	stores map[string]*testStore

	mu         sync.Mutex
	runners    map[string]*Runner
	down       map[string]bool // Alive reports false
	failing    map[string]bool // calls to the node fail
	failingOps map[string]bool // calls of the operation fail
	unsettled  map[uint32]bool
	busy       bool
	calls      map[string]int // by operation
}

// newFakeNet returns a cluster of the named nodes that all keep parts,
// with a Runner each over a fresh store.
func newFakeNet(t *testing.T, cfg Config, parts []uint32, names ...string) *fakeNet {
	t.Helper()
	n := &fakeNet{
		names: names, parts: parts, stores: map[string]*testStore{}, runners: map[string]*Runner{},
		down: map[string]bool{}, failing: map[string]bool{}, failingOps: map[string]bool{}, unsettled: map[uint32]bool{}, calls: map[string]int{},
	}
	if cfg.Logger == nil {
		cfg.Logger = discard
	}
	if cfg.ExchangeRate == 0 {
		cfg.ExchangeRate = 1000
	}
	for _, name := range names {
		s := newTestStore(t, name)
		s.keepOnly(parts...)
		n.stores[name] = s
		n.runners[name] = New(cfg, &fakeCluster{net: n, self: name}, s)
	}
	return n
}

func (n *fakeNet) runner(name string) *Runner {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runners[name]
}

func (n *fakeNet) set(m map[string]bool, node string, v bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m[node] = v
}

func (n *fakeNet) callsTo(op string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls[op]
}

// converged reports whether every node holds the same tree of every
// partition.
func (n *fakeNet) converged(t *testing.T) bool {
	t.Helper()
	for _, p := range n.parts {
		first := leavesOf(t, n.stores[n.names[0]], p)
		for _, name := range n.names[1:] {
			if !slices.Equal(leavesOf(t, n.stores[name], p), first) {
				return false
			}
		}
	}
	return true
}

// fakeCluster is one node's view of a fakeNet.
type fakeCluster struct {
	net  *fakeNet
	self string
}

var _ Cluster = (*fakeCluster)(nil)

func (c *fakeCluster) Partitions() []uint32 { return slices.Clone(c.net.parts) }

func (c *fakeCluster) others() []string {
	var out []string
	for _, name := range c.net.names {
		if name != c.self {
			out = append(out, name)
		}
	}
	return out
}

func (c *fakeCluster) Replicas(p uint32) []string {
	if !slices.Contains(c.net.parts, p) {
		return nil
	}
	return c.others()
}

func (c *fakeCluster) Members() []string { return c.others() }

func (c *fakeCluster) Alive(node string) bool {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return !c.net.down[node]
}

func (c *fakeCluster) Settled(p uint32) bool {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return !c.net.unsettled[p]
}

func (c *fakeCluster) Busy() bool {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return c.net.busy
}

var errUnreachable = errors.New("fake network: unreachable")

func (c *fakeCluster) Call(ctx context.Context, node, op string, body []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		return nil, fmt.Errorf("%s call to %s without a deadline", op, node)
	}
	c.net.mu.Lock()
	r, failing := c.net.runners[node], c.net.failing[node] || c.net.failingOps[op]
	c.net.calls[op]++
	c.net.mu.Unlock()
	if r == nil || failing {
		return nil, fmt.Errorf("%w: %s", errUnreachable, node)
	}
	return Serve(ctx, r.Local(), op, body)
}

// Data helpers.

func key(p uint32, name string) storage.Key { return storage.Key{Partition: p, Bucket: "b", Key: name} }

// seed applies v1 of each key to the store.
func seedKeys(t *testing.T, s *testStore, keys ...storage.Key) {
	t.Helper()
	var es []storage.PartitionEntry
	for _, k := range keys {
		es = append(es, entry(k, v1(k)))
	}
	apply(t, s, es...)
}
