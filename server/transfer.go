package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// Ownership transfer. When the ring changes, every node that became a
// primary of a partition pulls it from the nodes that held it (those losing
// it, so their data is not lost when they drop it; or, when those are gone,
// the surviving holders), in rate-limited batches with a persisted cursor,
// merging each object through the normal storage merge. Meanwhile writes
// reach both old holders and new primaries, and only the old holders count
// toward R and W (see ring.Placement). When a pull finishes, the node
// gossips that it holds the partition; once every new primary holds it,
// the old holders drop their copies.
//
// The same loop moves this node through its own states: joining → member
// when it holds every partition it should, leaving → removed when no
// partition counts on it any more.

// transferLoop runs until the node closes.
func (n *Node) transferLoop() {
	lim := newLimiter(float64(n.cfg.Handoff.TransferRate))
	tick := time.NewTicker(n.cfg.Handoff.Interval)
	defer tick.Stop()
	for {
		if !n.cfg.Handoff.PauseTransfers {
			n.transferPass(lim)
		}
		select {
		case <-n.bg.Done():
			return
		case <-tick.C:
		case <-n.gossip.changed:
		}
	}
}

func (n *Node) transferPass(lim limiter) {
	id := n.cfg.NodeID
	pl := n.placement()
	pulls := pl.Pulls(id)
	n.metrics.transfers.Set(float64(len(pulls)))
	// Received partitions are recorded in groups: each record is a synced
	// metadata write, a new placement and a gossip round.
	var received []int
	record := func() bool {
		if len(received) == 0 {
			return true
		}
		err := n.gossip.update(func() error {
			parts := n.gossip.holdings[id].Parts
			for _, p := range received {
				parts = parts.With(p)
			}
			n.gossip.setHolding(parts)
			return nil
		})
		if err != nil {
			n.log.Error("recording received partitions", "partitions", received, "err", err)
			return false
		}
		n.metrics.transfersDone.Add(float64(len(received)))
		n.log.Info("received partitions", "count", len(received))
		received = received[:0]
		return true
	}
	last := time.Now()
	for _, p := range pulls {
		if n.bg.Err() != nil {
			return
		}
		if err := n.pull(p, pl.Sources(p, id), lim); err != nil {
			n.log.Debug("partition transfer incomplete", "partition", p, "err", err)
			continue
		}
		received = append(received, p)
		if time.Since(last) > 200*time.Millisecond {
			if !record() {
				return
			}
			last = time.Now()
		}
	}
	if !record() {
		return
	}
	for _, p := range n.placement().Drops(id) {
		if err := n.drop(p); err != nil {
			n.log.Debug("not dropping a partition that moved away yet", "partition", p, "err", err)
		}
	}
	n.advanceState()
}

// drop deletes this node's copy of partition p, which every new primary
// holds. Under the partition's write lock, so that no local write lands in
// between; writes that arrive later become hints for the new owners.
func (n *Node) drop(p int) error {
	// Gossiped holdings may be stale (a new primary may have dropped the
	// partition since, in an earlier ring change): ask every new primary
	// whether it holds p and keeps it.
	confirmed := n.placement().Target().Primaries(p)
	for _, t := range confirmed {
		if t == n.cfg.NodeID {
			continue
		}
		ctx, cancel := context.WithTimeout(n.bg, n.cfg.ReplicaTimeout)
		holds, err := n.transport.Holds(ctx, t, uint32(p))
		cancel()
		if err != nil {
			return fmt.Errorf("confirming %s holds partition %d: %w", t, p, err)
		}
		if !holds {
			return fmt.Errorf("%s does not hold partition %d yet", t, p)
		}
	}
	mu := &n.partLocks[p]
	mu.Lock()
	defer mu.Unlock()
	// Re-check under the lock, which Holds answers also take: the ring may
	// have changed since the list of drops was made or since the
	// confirmations (this node may be a primary of p again, and may have
	// promised a peer to keep it).
	pl := n.placement()
	if !slices.Contains(pl.Drops(n.cfg.NodeID), p) || !slices.Equal(pl.Target().Primaries(p), confirmed) {
		return fmt.Errorf("partition %d: the ring changed while dropping it", p)
	}
	// Stop keeping p first (publish the holdings), then delete: a write
	// checking keeps() after this sees the new placement.
	if err := n.gossip.update(func() error {
		h := n.gossip.holdings[n.cfg.NodeID]
		n.gossip.setHolding(h.Parts.Without(p))
		return nil
	}); err != nil {
		return err
	}
	if err := n.store.DeletePartition(uint32(p)); err != nil {
		return err
	}
	n.log.Info("dropped partition that moved away", "partition", p)
	return nil
}

// advanceState moves this node from joining to member, and from leaving to
// removed, when its transfers are done.
func (n *Node) advanceState() {
	id := n.cfg.NodeID
	pl := n.placement()
	self, ok := pl.Membership().Get(id)
	if !ok {
		return
	}
	switch self.State {
	case ring.StateJoining:
		if len(pl.Pulls(id)) > 0 {
			return
		}
		self.State = ring.StateMember
	case ring.StateLeaving:
		// Done when every partition was dropped, each after its new
		// primaries confirmed they hold it.
		if pl.Holdings()[id].Parts.Count() > 0 {
			return
		}
		if st := n.store.HintStats(); st.Durable > 0 {
			return // hints this node holds must reach their owners first
		}
		self.State = ring.StateRemoved
	default:
		return
	}
	if err := n.gossip.update(func() error {
		n.gossip.table = n.gossip.table.Set(self)
		return nil
	}); err != nil {
		n.log.Error("changing state", "state", self.State, "err", err)
		return
	}
	n.log.Info("membership state changed", "state", self.State)
	if self.State == ring.StateRemoved {
		// Tell every live peer now: the process exits next.
		n.gossip.exchange(true)
		n.leaveOnce.Do(func() { close(n.leaveDone) })
	}
}

// pull copies partition p from every source into the local store. The
// cursor per source is persisted, so a restart resumes where it stopped.
func (n *Node) pull(p int, sources []string, lim limiter) error {
	if len(sources) == 0 {
		return errors.New("no source holds the partition")
	}
	for _, src := range sources {
		if !n.alive(src) {
			return fmt.Errorf("source %s is down", src)
		}
		cursorKey := "transfer/" + strconv.Itoa(p) + "/" + src
		after, err := n.store.GetMeta(cursorKey)
		if errors.Is(err, storage.ErrNotFound) {
			after = nil
		} else if err != nil {
			return err
		}
		for {
			ctx, cancel := context.WithTimeout(n.bg, n.cfg.Timeout)
			batch, err := n.transport.Stream(ctx, src, uint32(p), after, n.cfg.Handoff.TransferBatch)
			cancel()
			if err != nil {
				return fmt.Errorf("from %s: %w", src, err)
			}
			if err := n.store.ApplyMany(batch.Entries); err != nil {
				return err
			}
			size := 0
			for _, e := range batch.Entries {
				size += len(e.Key.Key) + 64
				for _, s := range e.Object.Siblings {
					size += len(s.Value)
				}
			}
			n.metrics.transferBytes.Add(float64(size))
			if !lim.wait(n.bg, size) {
				return n.bg.Err()
			}
			if batch.Done {
				break
			}
			after = batch.Next
			if err := n.store.SetMeta(cursorKey, after); err != nil {
				return err
			}
		}
		// An empty cursor means "from the start" next time.
		if err := n.store.SetMeta(cursorKey, nil); err != nil {
			return err
		}
	}
	return nil
}
