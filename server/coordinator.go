package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// The coordinator fans each request out to the replicas of its key in
// parallel and answers as soon as enough have: R replies (a not-found
// counts, an error or timeout does not) for a read, W synced acks for a
// write. Who counts comes from the placement: the partition's counting
// replicas (its primaries, or during a transfer the nodes that still hold
// the data). With a sloppy quorum, a counting replica that is down or does
// not answer within ReplicaTimeout is stood in for by the next live
// fallback, which keeps the write as a durable hint for it and answers
// reads with the hints it holds. Replica calls run in goroutines owned by
// the node with the request's deadline but not its cancellation, so
// stragglers finish after the client has its answer.

// reply is one replica's answer. A nil obj with a nil err is a not-found.
type reply struct {
	node  string // who answered
	owner string // the counting replica it stands for: node itself, or the one a fallback stands in for
	obj   *storage.Object
	err   error
	// ctx is, for an apply that asked for it, the context of node's object
	// after the merge, if hasCtx.
	ctx    storage.Context
	hasCtx bool
}

func (r reply) ok() bool { return r.err == nil }

// fanOut calls fn for every node in parallel and returns a channel that
// receives exactly len(nodes) replies, each call bounded by deadline. The
// channel is buffered, so callers may stop receiving at any time.
func (n *Node) fanOut(deadline time.Time, nodes []string, fn func(ctx context.Context, node string) reply) <-chan reply {
	ch := make(chan reply, len(nodes))
	// One context for all the calls, released by the last to finish.
	ctx, cancel := context.WithDeadline(n.bg, deadline)
	finished := afterN(len(nodes), cancel)
	for _, node := range nodes {
		n.goBackground(func() {
			ch <- fn(ctx, node)
			finished()
		})
	}
	return ch
}

// afterN returns a function that runs f on its k-th call (f runs at once
// if k is 0).
func afterN(k int, f func()) func() {
	if k == 0 {
		f()
	}
	var left atomic.Int32
	left.Store(int32(k))
	return func() {
		if left.Add(-1) == 0 {
			f()
		}
	}
}

// fallbacks hands out a partition's live fallback nodes, each once, to the
// replicas that need a stand-in.
type fallbacks struct {
	mu    sync.Mutex
	nodes []string
}

func (f *fallbacks) next(n *Node) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.nodes) > 0 {
		node := f.nodes[0]
		f.nodes = f.nodes[1:]
		if n.alive(node) {
			return node, true
		}
	}
	return "", false
}

// replicaGet reads node's copy of k, merged with any hints node holds for
// the key: from the local store for this node, over the transport
// otherwise.
func (n *Node) replicaGet(ctx context.Context, node string, k storage.Key) reply {
	var o *storage.Object
	var err error
	if node == n.cfg.NodeID {
		o, err = n.localGet(k)
	} else {
		o, err = n.transport.Get(ctx, node, k)
	}
	if errors.Is(err, storage.ErrNotFound) {
		o, err = nil, nil
	}
	n.metrics.calls.get.count(err)
	if err != nil {
		n.log.Debug("replica read failed", "peer", node, "key", k, "err", err)
	}
	return reply{node: node, owner: node, obj: o, err: err}
}

// localGet is this node's answer to a read: its object merged with the
// hints it holds for the key (it may be a fallback for a down replica).
func (n *Node) localGet(k storage.Key) (*storage.Object, error) {
	o, err := n.store.Get(k)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if st := n.store.HintStats(); st.Durable+st.Slow == 0 {
		// The usual case: skip the hint range scan on the read path.
		return o, err
	}
	hints, herr := n.store.HintsForKey(k)
	if herr != nil {
		return nil, herr
	}
	for _, h := range hints {
		o = storage.Merge(o, h)
	}
	if o == nil {
		return nil, storage.ErrNotFound
	}
	return o, nil
}

// replicaApply merges o into node's copy of k.
func (n *Node) replicaApply(ctx context.Context, node string, k storage.Key, o *storage.Object) error {
	_, _, err := n.replicaApplyContext(ctx, node, k, o, false)
	return err
}

// replicaApplyContext merges o into node's copy of k and, withContext,
// returns the context of node's merged object, if node keeps k and (a peer
// of an older release does not) says so.
func (n *Node) replicaApplyContext(ctx context.Context, node string, k storage.Key, o *storage.Object, withContext bool) (c storage.Context, ok bool, err error) {
	switch {
	case node == n.cfg.NodeID:
		var merged *storage.Object
		if merged, err = n.localApply(k, o); merged != nil {
			c, ok = merged.Context, true
		}
	case withContext:
		c, ok, err = n.transport.ApplyContext(ctx, node, k, o)
	default:
		err = n.transport.Apply(ctx, node, k, o)
	}
	n.metrics.calls.apply.count(err)
	if err != nil {
		n.log.Debug("replica apply failed", "peer", node, "key", k, "err", err)
	}
	return c, ok && err == nil, err
}

// replicaHint asks node to keep o as a hint for owner.
func (n *Node) replicaHint(ctx context.Context, node, owner string, k storage.Key, o *storage.Object) error {
	var err error
	if node == n.cfg.NodeID {
		err = n.store.PutHint(owner, k, o, storage.HintDurable, time.Now())
	} else {
		err = n.transport.Hint(ctx, node, owner, k, o)
	}
	n.metrics.calls.hint.count(err)
	if err == nil {
		n.metrics.hints.WithLabelValues("stored").Inc()
	} else if errors.Is(err, storage.ErrHintsFull) {
		n.metrics.hints.WithLabelValues("refused").Inc()
	}
	return err
}

// localApply merges o into this node's copy of k. A node that no longer
// holds or receives k's partition (the ring moved on) keeps it as hints for
// the partition's current write targets instead, so a late write is
// forwarded, never stranded.
func (n *Node) localApply(k storage.Key, o *storage.Object) (merged *storage.Object, err error) {
	p := int(k.Partition)
	mu := &n.partLocks[p]
	mu.RLock()
	defer mu.RUnlock()
	pl := n.placement()
	if n.keeps(pl, p) {
		return n.store.Apply(k, o)
	}
	for _, owner := range pl.Writes(p) {
		if err := n.store.PutHint(owner, k, o, storage.HintDurable, time.Now()); err != nil {
			return nil, err
		}
	}
	n.metrics.hints.WithLabelValues("forwarded").Inc()
	return nil, nil
}

// localApplyMany is localApply for a batch: the entries of partitions this
// node keeps are merged in one synced commit; the others become hints.
func (n *Node) localApplyMany(entries []storage.PartitionEntry) error {
	byPart := map[uint32][]storage.PartitionEntry{}
	for _, e := range entries {
		byPart[e.Key.Partition] = append(byPart[e.Key.Partition], e)
	}
	for p, es := range byPart {
		applied, err := n.applyIfKept(p, es)
		if err != nil {
			return err
		}
		if applied {
			continue
		}
		for _, e := range es {
			if _, err := n.localApply(e.Key, e.Object); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyIfKept merges a batch of partition p's objects in one commit if this
// node keeps p, and reports whether it did.
func (n *Node) applyIfKept(p uint32, es []storage.PartitionEntry) (bool, error) {
	mu := &n.partLocks[p]
	mu.RLock()
	defer mu.RUnlock()
	if !n.keeps(n.placement(), int(p)) {
		return false, nil
	}
	return true, n.store.ApplyMany(es)
}

// keeps reports whether this node stores partition p's data: it holds it
// or receives its writes. Callers hold partLocks[p].
func (n *Node) keeps(pl *ring.Placement, p int) bool {
	return pl.IsWriteTarget(p, n.cfg.NodeID) || pl.Holds(p, n.cfg.NodeID)
}

// readTargets picks who to ask for partition p: the counting replicas,
// with live fallbacks standing in for down ones when sloppy.
func (n *Node) readTargets(pl *ring.Placement, p int, sloppy bool) []reply {
	var out []reply
	fb := &fallbacks{nodes: slices.Clone(pl.Fallbacks(p))}
	for _, node := range pl.Counting(p) {
		if n.alive(node) || !sloppy {
			out = append(out, reply{node: node, owner: node})
			continue
		}
		if f, ok := fb.next(n); ok {
			out = append(out, reply{node: f, owner: node})
		}
	}
	return out
}

// read returns the merge of r replies for k (nil if none of them holds the
// key). It asks r counting replicas, this node first, and, with probability
// ReadRepairChance, all of them (see gather). Every replica that answered
// for itself with less than the merge of the answers gets that merge (read
// repair); answers that arrive after the quorum are awaited and repaired in
// the background.
func (n *Node) read(ctx context.Context, k storage.Key, r int, sloppy bool, deadline time.Time) (*storage.Object, error) {
	all := n.cfg.ReadRepairChance > 0 && rand.Float64() < n.cfg.ReadRepairChance
	g, err := n.gather(ctx, k, n.readOrder(k, sloppy), r, all, deadline)
	if err != nil {
		return nil, err
	}
	var merged *storage.Object
	for _, rep := range g.got {
		if rep.ok() && rep.obj != nil {
			merged = storage.Merge(merged, rep.obj)
		}
	}
	switch {
	case g.pending == 0 && len(g.got) < 2:
		g.release() // one answer, the merge itself: nothing to repair
	case !n.goBackground(func() { n.readRepair(k, g, merged) }):
		g.release()
	}
	return merged, nil
}

// readContext returns the causal context of what r replicas of k hold,
// for a write without a context coordinated here: it asks r-1 of the
// others, since the local store adds its own under the key's lock
// (storage.Write.Plain). It does no read repair: the write that follows
// supersedes what it saw on every replica anyway.
func (n *Node) readContext(ctx context.Context, k storage.Key, r int, sloppy bool, deadline time.Time) (storage.Context, error) {
	targets := n.readOrder(k, sloppy)
	if len(targets) > 0 && targets[0].node == n.cfg.NodeID {
		targets, r = targets[1:], r-1
	}
	if r <= 0 {
		return storage.Context{}, nil
	}
	g, err := n.gather(ctx, k, targets, r, false, deadline)
	if err != nil {
		var qe *QuorumError
		if errors.As(err, &qe) {
			qe.Required++ // this node's own read, which cannot fail
			qe.Acknowledged++
		}
		return storage.Context{}, err
	}
	g.release()
	var seen storage.Context
	for _, rep := range g.got {
		if rep.ok() && rep.obj != nil {
			seen = seen.Join(rep.obj.Context)
		}
	}
	return seen, nil
}

// readOrder is the order in which reads ask k's replicas: readTargets,
// this node first.
func (n *Node) readOrder(k storage.Key, sloppy bool) []reply {
	targets := n.readTargets(n.placement(), int(k.Partition), sloppy)
	if i := slices.IndexFunc(targets, func(t reply) bool { return t.node == n.cfg.NodeID }); i > 0 {
		targets[0], targets[i] = targets[i], targets[0]
	}
	return targets
}

// gathered is what gather collected: the replies so far, and the calls
// still running, whose replies arrive on rest.
type gathered struct {
	got     []reply
	rest    <-chan reply
	pending int
	release context.CancelFunc // ends the calls still running
}

// gather asks targets, k's counting replicas (or, when sloppy, fallbacks
// for down ones) in readOrder, until r have answered. It asks the first r,
// and another whenever one fails or has not answered within
// ReplicaTimeout; with all, it asks every one at once. A not-found counts
// toward r, an error does not. It gives up at deadline, or when ctx is
// done. The calls run with deadline but not ctx's cancellation, so that
// read repair can use the late answers; the caller ends them with release
// once it needs them no more.
func (n *Node) gather(ctx context.Context, k storage.Key, targets []reply, r int, all bool, deadline time.Time) (gathered, error) {
	ch := make(chan reply, len(targets))
	g := gathered{rest: ch, release: func() {}}
	var callCtx context.Context // for remote calls; made with the first
	next := 0
	launch := func() {
		if next == len(targets) {
			return
		}
		t := targets[next]
		next++
		if t.node == n.cfg.NodeID {
			// A local read takes microseconds: no goroutine, no deadline.
			rep := n.replicaGet(n.bg, t.node, k)
			rep.owner = t.owner
			ch <- rep
			g.pending++
			return
		}
		if callCtx == nil {
			callCtx, g.release = context.WithDeadline(n.bg, deadline)
		}
		if n.goBackground(func() {
			rep := n.replicaGet(callCtx, t.node, k)
			rep.owner = t.owner
			ch <- rep
		}) {
			g.pending++
		}
	}
	first := min(r, len(targets))
	if all {
		first = len(targets)
	}
	for range first {
		launch()
	}
	// slow fires after ReplicaTimeout, or at the deadline if that is
	// sooner; it is started once a reply has to be waited for.
	var slow *time.Timer
	wait := func() time.Duration { return min(n.cfg.ReplicaTimeout, time.Until(deadline)) }
	defer func() {
		if slow != nil {
			slow.Stop()
		}
	}()
	acked := 0
	for acked < r {
		if g.pending == 0 {
			g.release()
			return g, &QuorumError{Op: "read", Required: r, Acknowledged: acked}
		}
		var rep reply
		select {
		case rep = <-ch:
		default:
			if slow == nil {
				slow = time.NewTimer(wait())
			}
			select {
			case rep = <-ch:
			case <-slow.C:
				if time.Now().Before(deadline) {
					launch()
					slow.Reset(wait())
					continue
				}
				g.release()
				return g, &QuorumError{Op: "read", Required: r, Acknowledged: acked, Timeout: true}
			case <-ctx.Done():
				g.release()
				return g, &QuorumError{Op: "read", Required: r, Acknowledged: acked, Timeout: true}
			}
		}
		g.pending--
		g.got = append(g.got, rep)
		if rep.ok() {
			acked++
		} else {
			launch()
		}
	}
	return g, nil
}

// readRepair waits for the rest of a read's replies (each call ends by the
// read's deadline), merges them into merged (the merge of the replies the
// read answered with), and sends the result to every replica that answered
// for itself with less. Fallbacks are not repaired
// (their hints will be delivered), nor replicas whose state is unknown
// because they failed to answer: hints and anti-entropy cover those.
func (n *Node) readRepair(k storage.Key, g gathered, merged *storage.Object) {
	got, final := g.got, merged
	for range g.pending {
		rep := <-g.rest
		got = append(got, rep)
		if rep.ok() && rep.obj != nil {
			final = storage.Merge(final, rep.obj)
		}
	}
	g.release()
	if final == nil {
		return
	}
	var stale []string
	for _, rep := range got {
		if rep.ok() && rep.node == rep.owner && !rep.obj.Holds(final) {
			stale = append(stale, rep.node)
		}
	}
	if len(stale) == 0 {
		return
	}
	ch := n.fanOut(time.Now().Add(n.cfg.Timeout), stale, func(ctx context.Context, node string) reply {
		return reply{node: node, err: n.replicaApply(ctx, node, k, final)}
	})
	for range stale {
		if rep := <-ch; rep.ok() {
			n.metrics.readRepairs.Inc()
			n.log.Debug("read repair", "peer", rep.node, "key", k)
		}
	}
}

// write coordinates a client write at this node, which must be a counting
// replica of k: it issues the new version locally and answers once wq
// counting replicas (or their stand-ins), itself included, have it on disk.
// The other write targets get the object as soon as its dot is issued, so
// their fsyncs overlap the local one.
//
// A plain write (w.Plain) replaces what rq replicas hold. The local store
// covers this replica's own object as it issues the version. The other
// rq-1 answer their applies with the context of their merged object: if
// one held a version the local one did not, the write is issued once more
// with every context seen, superseding that version and the first issue.
// Replicas that do not agree therefore cost a second round, and those that
// do (nearly always) no read before the write. A version that reaches a
// replica after the write survives as a sibling, as it would have after a
// read.
func (n *Node) write(ctx context.Context, k storage.Key, w storage.Write, wq, rq int, sloppy bool, deadline time.Time) (storage.Written, error) {
	need := 0 // remote contexts to see
	if w.Plain {
		need = rq - 1
	}
	pl := n.placement()
	p := int(k.Partition)
	var counting, extra []string
	for _, node := range pl.Writes(p) {
		switch {
		case node == n.cfg.NodeID:
		case pl.IsCounting(p, node):
			counting = append(counting, node)
		default:
			extra = append(extra, node)
		}
	}
	fb := &fallbacks{nodes: slices.Clone(pl.Fallbacks(p))}
	var ch <-chan reply
	w.Issued = func(o *storage.Object) {
		// One context bounds the first attempt at every replica.
		ch = n.fanOut(n.attemptDeadline(deadline), counting, func(ctx context.Context, node string) reply {
			return n.replicate(ctx, node, k, o, fb, sloppy, deadline, need > 0)
		})
		if len(extra) == 0 {
			return
		}
		// New owners still receiving the partition get every write but do
		// not count toward W.
		n.fanOut(deadline, extra, func(ctx context.Context, node string) reply {
			if err := n.replicaApply(ctx, node, k, o); err != nil {
				n.storeSlowHint(node, k, o)
			}
			return reply{}
		})
	}
	written, err := n.localPut(k, w)
	n.metrics.calls.put.count(err)
	if err != nil {
		return storage.Written{}, err
	}
	if written.Retry {
		n.metrics.retries.Inc()
	}
	acked, contexts := 1, 0
	var seen storage.Context // what the other replicas hold, after the write
	for i := 0; (acked < wq || contexts < need) && i < len(counting); i++ {
		select {
		case rep := <-ch:
			if rep.ok() {
				acked++
			}
			if rep.hasCtx {
				contexts++
				seen = seen.Join(rep.ctx)
			}
		case <-ctx.Done():
			if acked >= wq { // written, but not known to replace what rq replicas hold
				return storage.Written{}, &QuorumError{Op: "read", Required: rq, Acknowledged: contexts + 1, Timeout: true}
			}
			return storage.Written{}, &QuorumError{Op: "write", Required: wq, Acknowledged: acked, Timeout: true}
		}
	}
	if acked < wq {
		return storage.Written{}, &QuorumError{Op: "write", Required: wq, Acknowledged: acked}
	}
	if contexts < need {
		// Fallbacks stood in, or replicas of an older release answered
		// without their context: read it.
		c, err := n.readContext(ctx, k, rq, sloppy, deadline)
		if err != nil {
			return storage.Written{}, err
		}
		seen = seen.Join(c)
	}
	if need > 0 && !written.Object.Context.Descends(seen) {
		n.metrics.plainRewrites.Inc()
		w.Context = written.Context.Join(seen)
		return n.write(ctx, k, w, wq, 0, sloppy, deadline)
	}
	return written, nil
}

// localPut issues a client write in the local store, unless the partition
// moved away since the request was routed here.
func (n *Node) localPut(k storage.Key, w storage.Write) (storage.Written, error) {
	mu := &n.partLocks[k.Partition]
	mu.RLock()
	defer mu.RUnlock()
	if !n.keeps(n.placement(), int(k.Partition)) {
		return storage.Written{}, fmt.Errorf("%w: partition %d moved away from this node while the write was routed; retry", ErrUnavailable, k.Partition)
	}
	return n.store.Put(k, w)
}

// attemptDeadline is the deadline of one replica call of a request with
// the given deadline: ReplicaTimeout from now, or the request's if sooner.
func (n *Node) attemptDeadline(deadline time.Time) time.Time {
	if d := time.Now().Add(n.cfg.ReplicaTimeout); d.Before(deadline) {
		return d
	}
	return deadline
}

// replicate brings o to one counting replica: directly when it is alive
// and answers within ReplicaTimeout (ctx's deadline), else (sloppy) as a
// durable hint on the next live fallback that accepts it, each asked with
// ReplicaTimeout of its own within deadline. If neither works, the version
// is kept as a best-effort hint here, and the reply is a failure.
func (n *Node) replicate(ctx context.Context, owner string, k storage.Key, o *storage.Object, fb *fallbacks, sloppy bool, deadline time.Time, withContext bool) reply {
	var err error
	if n.alive(owner) {
		var c storage.Context
		var ok bool
		c, ok, err = n.replicaApplyContext(ctx, owner, k, o, withContext)
		if err == nil {
			return reply{node: owner, owner: owner, ctx: c, hasCtx: ok}
		}
	} else {
		err = errors.New("down")
	}
	if sloppy {
		for {
			f, ok := fb.next(n)
			if !ok {
				break
			}
			rctx, cancel := context.WithDeadline(n.bg, n.attemptDeadline(deadline))
			herr := n.replicaHint(rctx, f, owner, k, o)
			cancel()
			if herr == nil {
				return reply{node: f, owner: owner}
			}
			err = herr
		}
	}
	n.storeSlowHint(owner, k, o)
	return reply{node: owner, owner: owner, err: err}
}

// storeSlowHint keeps a version for a replica that did not get it, as a
// bounded best-effort hint on this node: if the hint store drops it,
// anti-entropy repairs the replica.
func (n *Node) storeSlowHint(owner string, k storage.Key, o *storage.Object) {
	if err := n.store.PutHint(owner, k, o, storage.HintSlow, time.Now()); err != nil {
		n.log.Warn("cannot keep a hint for a slow replica", "owner", owner, "key", k, "err", err)
		return
	}
	n.metrics.hints.WithLabelValues("slow").Inc()
}
