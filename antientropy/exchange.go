package antientropy

import (
	"cmp"
	"context"
	"slices"

	"github.com/quorumkv/quorumkv/storage"
)

// shape holds the width of each level of every partition's tree: all trees
// have storage.TreeLeaves leaves.
var shape = func() []int {
	t := NewTree(make([]uint64, storage.TreeLeaves))
	w := make([]int, t.Depth()+1)
	for l := range w {
		w[l] = t.Width(l)
	}
	return w
}()

// KeyDiff is a key whose versions differ between two replicas, by digest
// (0: absent).
type KeyDiff struct {
	Key         storage.Key
	Local, Peer uint64
}

// DiffStats counts what a diff compared.
type DiffStats struct {
	Leaves    int // differing leaves
	Purgeable int // keys set aside: a purgeable tombstone on one side, nothing on the other
}

// Diff finds the keys of partition p whose versions differ between local
// and peer. It descends both trees from the root, comparing only the
// children of differing nodes, then compares the key digests of the
// differing leaves. Where the local replica knows its key counts
// (KeyCounter), a differing subtree holding few keys is listed whole
// instead of descended: its children's hashes would cost more than its
// keys. A key that one side lacks and the other holds as a tombstone
// deleted before purgeBefore (Unix nanoseconds) does not count: replicas
// purge at slightly different times, and re-sending such a tombstone would
// only bring it back where it was just purged.
func Diff(ctx context.Context, p uint32, local, peer Replica, purgeBefore int64) ([]KeyDiff, DiffStats, error) {
	var st DiffStats
	var counts []int64
	if kc, ok := local.(KeyCounter); ok {
		var err error
		if counts, err = kc.KeyCounts(ctx, p); err != nil {
			return nil, st, err
		}
	}
	depth := len(shape) - 1
	var leaves []int
	idx := []int{0}
	for level := 0; len(idx) > 0; level++ {
		if level == depth {
			leaves = append(leaves, idx...)
			break
		}
		var descend []int
		for _, x := range idx {
			lo, hi := leavesUnder(level, x)
			if level > 0 && counts != nil && sum(counts[lo:hi]) <= listBelow {
				for leaf := lo; leaf < hi; leaf++ {
					leaves = append(leaves, leaf)
				}
				continue
			}
			descend = append(descend, x)
		}
		if len(descend) == 0 {
			break
		}
		kids := children(descend, shape[level+1])
		lh, err := local.Hashes(ctx, p, level+1, kids)
		if err != nil {
			return nil, st, err
		}
		ph, err := peer.Hashes(ctx, p, level+1, kids)
		if err != nil {
			return nil, st, err
		}
		idx = differing(kids, lh, ph)
	}
	if len(leaves) == 0 {
		return nil, st, nil
	}
	slices.Sort(leaves)
	st.Leaves = len(leaves)
	ld, err := local.Digests(ctx, p, leaves)
	if err != nil {
		return nil, st, err
	}
	pd, err := peer.Digests(ctx, p, leaves)
	if err != nil {
		return nil, st, err
	}
	diffs, purgeable := diffDigests(ld, pd, purgeBefore)
	st.Purgeable = purgeable
	return diffs, st, nil
}

// KeyCounter is implemented by replicas that know how many keys each leaf
// of a partition holds (Local does).
type KeyCounter interface {
	KeyCounts(ctx context.Context, p uint32) ([]int64, error)
}

// listBelow is the key count up to which Diff lists a differing subtree's
// keys rather than descending into it: descending costs Fanout child hashes
// (about 150 bytes with their indexes), listing costs a key and a digest
// (about 30 bytes) per key, so below two keys per child listing wins even
// if most children turn out equal.
const listBelow = 2 * Fanout

// leavesUnder returns the range [lo, hi) of leaves under node x at level.
func leavesUnder(level, x int) (lo, hi int) {
	span := shape[len(shape)-1] / shape[level]
	return x * span, min((x+1)*span, shape[len(shape)-1])
}

func sum(xs []int64) int64 {
	var t int64
	for _, x := range xs {
		t += x
	}
	return t
}

// diffDigests returns the keys whose digests differ between two listings,
// sorted by key, and how many were set aside as purgeable tombstones.
func diffDigests(local, peer []storage.Digest, purgeBefore int64) ([]KeyDiff, int) {
	type pair struct{ l, p storage.Digest }
	byKey := make(map[storage.Key]*pair, len(local)+len(peer))
	for _, d := range local {
		byKey[d.Key] = &pair{l: d}
	}
	for _, d := range peer {
		if x, ok := byKey[d.Key]; ok {
			x.p = d
		} else {
			byKey[d.Key] = &pair{p: d}
		}
	}
	purgeable := func(d storage.Digest) bool { return d.DeletedAt != 0 && d.DeletedAt < purgeBefore }
	var out []KeyDiff
	skipped := 0
	for k, x := range byKey {
		switch {
		case x.l.Hash == x.p.Hash:
		case x.l.Hash == 0 && purgeable(x.p), x.p.Hash == 0 && purgeable(x.l):
			skipped++
		default:
			out = append(out, KeyDiff{Key: k, Local: x.l.Hash, Peer: x.p.Hash})
		}
	}
	slices.SortFunc(out, func(a, b KeyDiff) int {
		return cmp.Or(cmp.Compare(a.Key.Bucket, b.Key.Bucket), cmp.Compare(a.Key.Key, b.Key.Key))
	})
	return out, skipped
}

// Result counts what exchanges did.
type Result struct {
	Exchanges int `json:"exchanges"` // partitions compared (roots)
	Differing int `json:"differing"` // partitions whose roots differed
	Leaves    int `json:"leaves"`    // differing leaves
	Keys      int `json:"keys"`      // differing keys
	Pulled    int `json:"pulled"`    // keys changed here
	Pushed    int `json:"pushed"`    // keys changed at the peer
	Errors    int `json:"errors"`    // partitions whose exchange failed
}

// Add adds o's counts to r.
func (r *Result) Add(o Result) {
	r.Exchanges += o.Exchanges
	r.Differing += o.Differing
	r.Leaves += o.Leaves
	r.Keys += o.Keys
	r.Pulled += o.Pulled
	r.Pushed += o.Pushed
	r.Errors += o.Errors
}

// Exchange repairs partition p between local and peer: it finds the
// differing keys (Diff), merges the peer's versions into local's, and sends
// the result back to the peer where it differs from what the peer held.
// Afterwards each side holds the merge of both (plus whatever was written
// meanwhile). Repairs go through each side's storage merge, so a repair
// never overwrites a newer version or drops a sibling, and a concurrent
// client write is merged, not replaced. batch bounds the keys per Read or
// Apply call.
func Exchange(ctx context.Context, p uint32, local, peer Replica, purgeBefore int64, batch int) (Result, error) {
	var res Result
	diffs, st, err := Diff(ctx, p, local, peer, purgeBefore)
	res.Leaves = st.Leaves
	if err != nil {
		return res, err
	}
	res.Keys = len(diffs)
	for chunk := range slices.Chunk(diffs, max(1, batch)) {
		pulled, pushed, err := repair(ctx, p, local, peer, chunk)
		res.Pulled += pulled
		res.Pushed += pushed
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// repair makes both sides hold the merge of both for diffs.
func repair(ctx context.Context, p uint32, local, peer Replica, diffs []KeyDiff) (pulled, pushed int, err error) {
	var fetch []storage.Key
	keys := make([]storage.Key, len(diffs))
	for i, d := range diffs {
		keys[i] = d.Key
		if d.Peer != 0 {
			fetch = append(fetch, d.Key)
		}
	}
	if len(fetch) > 0 {
		theirs, err := peer.Read(ctx, p, fetch)
		if err != nil {
			return 0, 0, err
		}
		if err := local.Apply(ctx, p, theirs); err != nil {
			return 0, 0, err
		}
	}
	merged, err := local.Read(ctx, p, keys)
	if err != nil {
		return 0, 0, err
	}
	byKey := make(map[storage.Key]KeyDiff, len(diffs))
	for _, d := range diffs {
		byKey[d.Key] = d
	}
	var send []storage.PartitionEntry
	for _, e := range merged {
		d := byKey[e.Key]
		h := storage.ObjectDigest(e.Key, e.Object)
		if h != d.Local {
			pulled++
		}
		if h != d.Peer {
			send = append(send, e)
		}
	}
	if len(send) > 0 {
		if err := peer.Apply(ctx, p, send); err != nil {
			return pulled, 0, err
		}
	}
	return pulled, len(send), nil
}
