package antientropy

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// Tombstone purging.
//
// A tombstone may go only when nothing can bring back what it deleted:
//
//   - it is older than TombstoneGrace, which exceeds the longest a slow hint
//     is kept;
//   - every member of the cluster is alive and answers that it holds no
//     hints for the partition and has no transfer of it pending (a durable
//     hint never expires, so its absence must be asked for, not waited
//     out), and this node's view has no transfer of it pending either;
//   - every other replica of the partition holds exactly this tombstone, or
//     nothing for the key (it purged it already, or never had anything).
//
// Each replica decides for itself. One that purged first answers "nothing"
// to the others' questions, so they follow; until they do, exchanges treat
// its absence and their old tombstone as equal (Diff), so nobody re-sends
// it. A purge deletes the key only if its digest is still the one
// confirmed (storage.Store.Purge), so a write that raced the decision
// survives.

// purge runs one purge pass over the partitions this node keeps and
// returns how many tombstones it removed.
func (r *Runner) purge(ctx context.Context) int {
	before := time.Now().Add(-r.cfg.TombstoneGrace).UnixNano()
	cands := map[uint32][]storage.Digest{}
	for _, p := range r.cluster.Partitions() {
		if !r.cluster.Settled(p) || r.store.Pending(p) {
			continue
		}
		ds, err := r.store.Tombstones(p, before, r.cfg.PurgeBatch)
		if err != nil {
			r.log.Warn("listing tombstones failed", "partition", p, "err", err)
			continue
		}
		if len(ds) > 0 {
			cands[p] = ds
		}
	}
	if len(cands) == 0 {
		return 0
	}
	parts := slices.Sorted(maps.Keys(cands))
	for _, node := range r.cluster.Members() {
		if !r.cluster.Alive(node) {
			r.log.Debug("tombstone purge waits: a member is down", "member", node)
			return 0
		}
		pending, err := r.remote(node).Pending(ctx, parts)
		if err != nil {
			r.log.Debug("tombstone purge waits: a member did not answer", "member", node, "err", err)
			return 0
		}
		for i, p := range parts {
			if pending[i] {
				delete(cands, p)
			}
		}
	}
	purged := 0
	for _, p := range parts {
		if ds, ok := cands[p]; ok && ctx.Err() == nil {
			purged += r.purgePartition(ctx, p, ds)
		}
	}
	return purged
}

// purgePartition purges the tombstones of p in ds that every other replica
// confirms.
func (r *Runner) purgePartition(ctx context.Context, p uint32, ds []storage.Digest) int {
	ok := make([]bool, len(ds))
	for i := range ok {
		ok[i] = true
	}
	for _, node := range r.cluster.Replicas(p) {
		held, err := r.remote(node).Confirm(ctx, p, ds)
		if err != nil {
			r.log.Debug("tombstone purge waits: a replica did not confirm", "partition", p, "replica", node, "err", err)
			return 0
		}
		for i := range ok {
			ok[i] = ok[i] && held[i]
		}
	}
	var confirmed []storage.Digest
	for i, d := range ds {
		if ok[i] {
			confirmed = append(confirmed, d)
		}
	}
	unlock := r.lock(p)
	defer unlock()
	n, err := r.store.Purge(confirmed)
	if err != nil {
		r.log.Warn("purging tombstones failed", "partition", p, "err", err)
		return 0
	}
	r.stats.purged.Add(uint64(n))
	return n
}
