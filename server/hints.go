package server

import (
	"context"
	"time"

	"golang.org/x/time/rate"

	"github.com/quorumkv/quorumkv/storage"
)

// Hinted handoff. A fallback keeps a version it took for a down replica as
// a durable hint; this loop delivers hints once their owner is alive again,
// in rate-limited batches, and deletes each only after its recipients
// acknowledged it (and only if it did not change meanwhile). If the ring
// moved on and the owner no longer receives the partition, the hint goes to
// the partition's current write targets instead.

// hintLoop runs until the node closes.
func (n *Node) hintLoop() {
	lim := newLimiter(float64(n.cfg.Handoff.HintRate))
	tick := time.NewTicker(n.cfg.Handoff.Interval)
	defer tick.Stop()
	for {
		if !n.cfg.Handoff.PauseHints {
			n.deliverHints(lim)
		}
		if _, err := n.store.ExpireHints(time.Now()); err != nil {
			n.log.Warn("expiring slow hints", "err", err)
		}
		n.updateHintGauges()
		select {
		case <-n.bg.Done():
			return
		case <-tick.C:
		case <-n.gossip.aliveChanged:
		}
	}
}

func (n *Node) updateHintGauges() {
	st := n.store.HintStats()
	n.metrics.pendingHints.WithLabelValues("durable").Set(float64(st.Durable))
	n.metrics.pendingHints.WithLabelValues("slow").Set(float64(st.Slow))
}

// deliverHints makes one pass over the hints of live owners.
func (n *Node) deliverHints(lim limiter) {
	owners, err := n.store.HintOwners()
	if err != nil {
		n.log.Warn("listing hints", "err", err)
		return
	}
	for owner := range owners {
		if owner != n.cfg.NodeID && !n.alive(owner) {
			continue
		}
		var after []byte
		for {
			hints, next, err := n.store.ScanHints(owner, after, n.cfg.Handoff.HintBatch)
			if err != nil {
				n.log.Warn("reading hints", "owner", owner, "err", err)
				break
			}
			if !lim.wait(n.bg, len(hints)) {
				return
			}
			n.deliverBatch(owner, hints)
			if len(next) == 0 || len(hints) == 0 {
				break
			}
			after = next
		}
	}
}

// deliverBatch sends the hints that still go to their owner in one batch,
// and the others (the ring moved on) one by one.
func (n *Node) deliverBatch(owner string, hints []storage.Hint) {
	pl := n.placement()
	var direct []storage.Hint
	var entries []storage.PartitionEntry
	for _, h := range hints {
		if h.Owner == owner && owner != n.cfg.NodeID && pl.IsWriteTarget(int(h.Key.Partition), owner) {
			direct = append(direct, h)
			entries = append(entries, storage.PartitionEntry{Key: h.Key, Object: h.Object})
			continue
		}
		n.deliverHint(h)
	}
	if len(direct) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(n.bg, n.cfg.Timeout)
	defer cancel()
	if err := n.transport.ApplyMany(ctx, owner, entries); err != nil {
		n.log.Debug("hint delivery failed", "owner", owner, "hints", len(direct), "err", err)
		return
	}
	deleted, err := n.store.DeleteHints(direct)
	if err != nil {
		n.log.Warn("deleting delivered hints", "owner", owner, "err", err)
	}
	n.metrics.hints.WithLabelValues("delivered").Add(float64(deleted))
}

// deliverHint sends one hint to its recipients and deletes it when all of
// them acknowledged.
func (n *Node) deliverHint(h storage.Hint) {
	pl := n.placement()
	p := int(h.Key.Partition)
	targets := []string{h.Owner}
	if !pl.IsWriteTarget(p, h.Owner) {
		targets = pl.Writes(p)
	}
	ctx, cancel := context.WithTimeout(n.bg, n.cfg.Timeout)
	defer cancel()
	for _, t := range targets {
		if t == n.cfg.NodeID {
			if _, err := n.localApply(h.Key, h.Object); err != nil {
				n.log.Warn("applying own hint", "key", h.Key, "err", err)
				return
			}
			continue
		}
		if err := n.transport.Apply(ctx, t, h.Key, h.Object); err != nil {
			n.log.Debug("hint delivery failed", "owner", h.Owner, "to", t, "key", h.Key, "err", err)
			return
		}
	}
	if _, err := n.store.DeleteHint(h); err != nil {
		n.log.Warn("deleting a delivered hint", "key", h.Key, "err", err)
		return
	}
	n.metrics.hints.WithLabelValues("delivered").Inc()
}

// limiter paces background work: rate tokens per second, in bursts of up
// to one second's worth.
type limiter struct{ *rate.Limiter }

func newLimiter(r float64) limiter {
	return limiter{rate.NewLimiter(rate.Limit(r), max(1, int(r)))}
}

// wait takes n tokens, sleeping as needed; false if ctx ended first. A
// batch larger than a burst pays for one burst: it is let through, not
// refused.
func (l limiter) wait(ctx context.Context, n int) bool {
	return l.WaitN(ctx, min(n, l.Burst())) == nil
}
