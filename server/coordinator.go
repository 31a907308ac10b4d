package server

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// The coordinator fans each request out to the primaries of its key in
// parallel and answers as soon as enough have: R replies (a not-found
// counts, an error or timeout does not) for a read, W synced acks for a
// write. Replica calls run in goroutines owned by the node with the
// request's deadline but not its cancellation, so stragglers finish their
// work after the client has its answer, and a read can repair the replicas
// it found stale.

// reply is one replica's answer. A nil obj with a nil err is a not-found.
type reply struct {
	node string
	obj  *storage.Object
	err  error
}

func (r reply) ok() bool { return r.err == nil }

// fanOut calls fn for every node in parallel and returns a channel that
// receives exactly len(nodes) replies, each call bounded by deadline. The
// channel is buffered, so callers may stop receiving at any time.
func (n *Node) fanOut(deadline time.Time, nodes []string, fn func(ctx context.Context, node string) reply) <-chan reply {
	ch := make(chan reply, len(nodes))
	for _, node := range nodes {
		n.goBackground(func() {
			ctx, cancel := context.WithDeadline(n.bg, deadline)
			defer cancel()
			ch <- fn(ctx, node)
		})
	}
	return ch
}

// replicaGet reads node's copy of k: from the local store for this node,
// over the transport otherwise.
func (n *Node) replicaGet(ctx context.Context, node string, k storage.Key) reply {
	var o *storage.Object
	var err error
	if node == n.cfg.NodeID {
		o, err = n.store.Get(k)
	} else {
		o, err = n.transport.Get(ctx, node, k)
	}
	if errors.Is(err, storage.ErrNotFound) {
		o, err = nil, nil
	}
	n.metrics.replicaCalls.WithLabelValues("get", result(err)).Inc()
	if err != nil {
		n.log.Debug("replica read failed", "peer", node, "key", k, "err", err)
	}
	return reply{node: node, obj: o, err: err}
}

// replicaApply merges o into node's copy of k.
func (n *Node) replicaApply(ctx context.Context, node string, k storage.Key, o *storage.Object) reply {
	var err error
	if node == n.cfg.NodeID {
		_, err = n.store.Apply(k, o)
	} else {
		err = n.transport.Apply(ctx, node, k, o)
	}
	n.metrics.replicaCalls.WithLabelValues("apply", result(err)).Inc()
	if err != nil {
		n.log.Debug("replica apply failed", "peer", node, "key", k, "err", err)
	}
	return reply{node: node, err: err}
}

// read returns the merge of the first r replies from k's primaries (nil if
// none of them holds the key). The remaining replies are awaited in the
// background, and every replica that answered with less than the merge of
// all answers gets that merge (read repair).
func (n *Node) read(ctx context.Context, k storage.Key, r int, deadline time.Time) (*storage.Object, error) {
	nodes := n.Table().Primaries(int(k.Partition))
	ch := n.fanOut(deadline, nodes, func(ctx context.Context, node string) reply {
		return n.replicaGet(ctx, node, k)
	})
	var got []reply
	acked := 0
	for len(got) < len(nodes) {
		select {
		case rep := <-ch:
			got = append(got, rep)
			if !rep.ok() {
				continue
			}
			if acked++; acked < r {
				continue
			}
			var merged *storage.Object
			for _, g := range got {
				if g.ok() && g.obj != nil {
					merged = storage.Merge(merged, g.obj)
				}
			}
			seen := slices.Clone(got)
			n.goBackground(func() { n.readRepair(k, seen, ch, len(nodes)) })
			return merged, nil
		case <-ctx.Done():
			return nil, &QuorumError{Op: "read", Required: r, Acknowledged: acked, Timeout: true}
		}
	}
	return nil, &QuorumError{Op: "read", Required: r, Acknowledged: acked}
}

// readRepair waits for the rest of a read's replies (each call ends by the
// read's deadline), merges all answers, and sends the merge to every replica
// whose answer differed. Replicas that failed to answer are left to hinted
// handoff and anti-entropy: their state is unknown.
func (n *Node) readRepair(k storage.Key, got []reply, ch <-chan reply, total int) {
	for len(got) < total {
		got = append(got, <-ch)
	}
	var final *storage.Object
	for _, g := range got {
		if g.ok() && g.obj != nil {
			final = storage.Merge(final, g.obj)
		}
	}
	if final == nil {
		return
	}
	want := string(storage.EncodeObject(final))
	var stale []string
	for _, g := range got {
		if g.ok() && (g.obj == nil || string(storage.EncodeObject(g.obj)) != want) {
			stale = append(stale, g.node)
		}
	}
	if len(stale) == 0 {
		return
	}
	ch = n.fanOut(time.Now().Add(n.cfg.Timeout), stale, func(ctx context.Context, node string) reply {
		return n.replicaApply(ctx, node, k, final)
	})
	for range stale {
		if rep := <-ch; rep.ok() {
			n.metrics.readRepairs.Inc()
			n.log.Debug("read repair", "peer", rep.node, "key", k)
		}
	}
}

// write coordinates a client write at this node, which must be a primary of
// k: it issues the new version locally and answers once wq primaries, itself
// included, have it on disk. The other primaries get the object as soon as
// its dot is issued, so their fsyncs overlap the local one.
func (n *Node) write(ctx context.Context, k storage.Key, w storage.Write, wq int, deadline time.Time) (storage.Written, error) {
	others := slices.DeleteFunc(slices.Clone(n.Table().Primaries(int(k.Partition))), func(s string) bool { return s == n.cfg.NodeID })
	var ch <-chan reply
	w.Issued = func(o *storage.Object) {
		ch = n.fanOut(deadline, others, func(ctx context.Context, node string) reply {
			return n.replicaApply(ctx, node, k, o)
		})
	}
	written, err := n.store.Put(k, w)
	n.metrics.replicaCalls.WithLabelValues("put", result(err)).Inc()
	if err != nil {
		return storage.Written{}, err
	}
	acked := 1
	for i := 0; acked < wq && i < len(others); i++ {
		select {
		case rep := <-ch:
			if rep.ok() {
				acked++
			}
		case <-ctx.Done():
			return storage.Written{}, &QuorumError{Op: "write", Required: wq, Acknowledged: acked, Timeout: true}
		}
	}
	if acked < wq {
		return storage.Written{}, &QuorumError{Op: "write", Required: wq, Acknowledged: acked}
	}
	return written, nil
}
