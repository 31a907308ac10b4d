// Package faultnet injects network faults between the nodes of a test
// cluster: it partitions links, isolates nodes and delays links, for both
// the nodes' HTTP traffic (through Dialer, plugged into an http.Transport)
// and their gossip traffic (through Transport, wrapped around a
// hashicorp/memberlist transport).
//
// A Network is shared by every node of one cluster. Nodes Register the
// addresses peers dial them at, so that an address can be mapped back to a
// node name. Faults are set between node names:
//
//   - A partitioned link hangs, as a real partition does: packets vanish,
//     dials wait until their deadline, and connections already established
//     across the link are cut (closed) when the partition starts, so that
//     keep-alive pools cannot bypass it. Nothing is ever refused.
//   - A delayed link adds latency to each dial, each Write on a dialed
//     connection and each gossip packet sent across it.
//   - Heal removes every fault; dials waiting on a blocked link proceed.
//
// Links are directional inside the Network (from the node that dials or
// sends to the node it reaches), but Partition and Delay always set both
// directions. Faults act on the side of the node that dials or sends, so
// every node of the cluster must use this package; see Transport for what
// the receiving side filters in addition.
//
// An address that was never registered maps to no node, and a link to or
// from no node is never blocked or delayed.
package faultnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrPartitioned is wrapped by the errors of reads and writes on a
// connection that a partition cut.
var ErrPartitioned = errors.New("faultnet: link partitioned")

// Network is a fault controller shared by the nodes of one test cluster.
// Its methods are safe for concurrent use. The zero value is not usable;
// call New.
type Network struct {
	mu       sync.RWMutex
	addrs    map[string]string // canonical address → node
	nodes    map[string]bool   // registered node names
	cut      map[link]bool     // blocked directional links
	isolated map[string]bool
	delay    map[link]time.Duration
	conns    map[*conn]struct{} // open connections made through the Network
	// changed is closed, and replaced, whenever faults change, to wake
	// the dials that wait for a blocked link to heal.
	changed chan struct{}
	waiters int // dials waiting on a blocked link (observed by tests)
}

// link is a directional link between two nodes.
type link struct{ from, to string }

// New returns a Network without faults and without nodes.
func New() *Network {
	return &Network{
		addrs:    make(map[string]string),
		nodes:    make(map[string]bool),
		cut:      make(map[link]bool),
		isolated: make(map[string]bool),
		delay:    make(map[link]time.Duration),
		conns:    make(map[*conn]struct{}),
		changed:  make(chan struct{}),
	}
}

// Register maps addresses (host:port, as peers dial them) to a node name.
// Nodes register both their HTTP and their gossip addresses. Registering
// an address again moves it to the new node.
func (n *Network) Register(node string, addrs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes[node] = true
	for _, a := range addrs {
		n.addrs[canonical(a)] = node
	}
}

// Partition blocks the links between a and b in both directions and cuts
// the connections open across them.
func (n *Network) Partition(a, b string) {
	if a == b {
		return
	}
	n.update(func() {
		n.cut[link{a, b}] = true
		n.cut[link{b, a}] = true
	})
}

// Isolate blocks every link between node and any other registered node,
// including nodes registered later, and cuts the connections open across
// them.
func (n *Network) Isolate(node string) {
	n.update(func() { n.isolated[node] = true })
}

// Delay sets the latency of the links between a and b, in both
// directions. A d of 0 (or less) removes it. Connections already open see
// the new delay from their next Write.
func (n *Network) Delay(a, b string, d time.Duration) {
	if a == b {
		return
	}
	n.update(func() {
		if d <= 0 {
			delete(n.delay, link{a, b})
			delete(n.delay, link{b, a})
			return
		}
		n.delay[link{a, b}] = d
		n.delay[link{b, a}] = d
	})
}

// Heal removes all partitions, isolations and delays. Dials waiting on a
// blocked link proceed.
func (n *Network) Heal() {
	n.update(func() {
		clear(n.cut)
		clear(n.isolated)
		clear(n.delay)
	})
}

// Blocked reports whether traffic from node from to node to is blocked.
// A node is never blocked from itself.
func (n *Network) Blocked(from, to string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.blockedLocked(from, to)
}

func (n *Network) blockedLocked(from, to string) bool {
	if from == "" || to == "" || from == to {
		return false
	}
	if n.cut[link{from, to}] {
		return true
	}
	return (n.isolated[from] && n.nodes[to]) || (n.isolated[to] && n.nodes[from])
}

// update applies change under the lock, wakes waiting dials, and then
// cuts the connections whose link is now blocked.
func (n *Network) update(change func()) {
	n.mu.Lock()
	change()
	close(n.changed)
	n.changed = make(chan struct{})
	var cut []*conn
	for c := range n.conns {
		if n.blockedLocked(c.from, c.to) {
			cut = append(cut, c)
		}
	}
	n.mu.Unlock()
	// Close outside the lock: Close unregisters the connection.
	for _, c := range cut {
		c.cut()
	}
}

// resolve returns the node registered for addr, or "".
func (n *Network) resolve(addr string) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.addrs[canonical(addr)]
}

// delayOf returns the latency of the link from → to.
func (n *Network) delayOf(from, to string) time.Duration {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.delay[link{from, to}]
}

// waitUnblocked returns nil at once if the link from → to is not blocked;
// otherwise it waits until the link heals or ctx is done, and then returns
// ctx's error wrapped in a *LinkError.
func (n *Network) waitUnblocked(ctx context.Context, from, to string) error {
	counted := false
	defer func() {
		if counted {
			n.mu.Lock()
			n.waiters--
			n.mu.Unlock()
		}
	}()
	for {
		n.mu.Lock()
		blocked, changed := n.blockedLocked(from, to), n.changed
		if blocked && !counted {
			n.waiters++
			counted = true
		}
		n.mu.Unlock()
		if !blocked {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return &LinkError{From: from, To: to, Err: ctx.Err()}
		}
	}
}

// waiting returns the number of dials waiting on a blocked link.
func (n *Network) waiting() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.waiters
}

// track registers c so that a partition can cut it. It fails, closing c,
// if the link was blocked while c was being dialed.
func (n *Network) track(c *conn) error {
	n.mu.Lock()
	blocked := n.blockedLocked(c.from, c.to)
	if !blocked {
		n.conns[c] = struct{}{}
	}
	n.mu.Unlock()
	if blocked {
		c.Conn.Close()
		return &LinkError{From: c.from, To: c.to, Err: ErrPartitioned}
	}
	return nil
}

func (n *Network) untrack(c *conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
}

// LinkError is the error of an operation that a fault on the link from
// From to To made fail. Err is ErrPartitioned, or the context error of a
// dial that waited on a blocked link.
type LinkError struct {
	From, To string
	Err      error
}

func (e *LinkError) Error() string {
	return fmt.Sprintf("faultnet: %s -> %s: %v", e.From, e.To, e.Err)
}

func (e *LinkError) Unwrap() error { return e.Err }

// Timeout reports whether the operation timed out waiting on the link, so
// that callers checking net.Error see a timeout, as after a real
// partition.
func (e *LinkError) Timeout() bool { return errors.Is(e.Err, context.DeadlineExceeded) }

// Temporary is part of net.Error; it is deprecated there and false here.
func (e *LinkError) Temporary() bool { return false }

// canonical normalizes an IP host:port, so that "127.0.0.1:80" and
// "[::ffff:127.0.0.1]:80" name the same address. Other strings are kept.
func canonical(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return net.JoinHostPort(host, port)
}

// sleep waits for d, or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
