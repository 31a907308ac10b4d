package antientropy

import (
	"context"
	"fmt"

	"github.com/quorumkv/quorumkv/storage"
)

// Replica is one side of an exchange: this node's store (Local) or a peer
// reached over the network (Remote). Every method works on one partition
// the replica keeps, except Roots and Pending, which take several.
type Replica interface {
	// Roots returns the root hash of each partition's tree.
	Roots(ctx context.Context, parts []uint32) ([]uint64, error)
	// Hashes returns the hashes of nodes idx at level of p's tree.
	Hashes(ctx context.Context, p uint32, level int, idx []int) ([]uint64, error)
	// Digests lists the digests of every key in the given leaves of p.
	Digests(ctx context.Context, p uint32, leaves []int) ([]storage.Digest, error)
	// Read returns the objects held for keys (absent ones are left out).
	Read(ctx context.Context, p uint32, keys []storage.Key) ([]storage.PartitionEntry, error)
	// Apply merges objects into the replica's copies.
	Apply(ctx context.Context, p uint32, entries []storage.PartitionEntry) error
	// Confirm reports, for each digest, whether the replica holds exactly
	// that version of the key, or nothing for it.
	Confirm(ctx context.Context, p uint32, ds []storage.Digest) ([]bool, error)
	// Pending reports, for each partition, whether the replica holds hints
	// for it or a transfer of it is pending in the replica's view: then a
	// purged tombstone could be followed by an older version arriving.
	Pending(ctx context.Context, parts []uint32) ([]bool, error)
}

// Store is this node's data as anti-entropy sees it: a *storage.Store
// behind the server's ownership checks.
type Store interface {
	// Keeps reports whether this node keeps partition p's data. A replica
	// refuses exchanges of partitions it does not keep.
	Keeps(p uint32) bool
	// Pending reports whether hints for p are held here or a transfer of p
	// is pending.
	Pending(p uint32) bool
	// Apply merges entries of partition p through the normal storage
	// merge.
	Apply(p uint32, entries []storage.PartitionEntry) error

	Leaves(p uint32) ([]uint64, error)
	KeyCounts(p uint32) ([]int64, error)
	Digests(p uint32, leaves []int) ([]storage.Digest, error)
	Read(keys []storage.Key) ([]storage.PartitionEntry, error)
	RebuildTree(p uint32) (fixed int, err error)
	TreeStale() bool
	MarkTreeFresh() error
	Tombstones(p uint32, before int64, limit int) ([]storage.Digest, error)
	Purge(ds []storage.Digest) (int, error)
}

// Local is the Replica over this node's store.
type Local struct{ Store Store }

var _ Replica = Local{}

func (l Local) check(p uint32) error {
	if !l.Store.Keeps(p) {
		return fmt.Errorf("%w: partition %d", ErrNotReplica, p)
	}
	return nil
}

// Tree returns p's tree.
func (l Local) Tree(p uint32) (*Tree, error) {
	if err := l.check(p); err != nil {
		return nil, err
	}
	leaves, err := l.Store.Leaves(p)
	if err != nil {
		return nil, err
	}
	return NewTree(leaves), nil
}

// Roots implements Replica. A partition this node does not keep has no
// root: ErrNotReplica for the whole call would stop the exchange of the
// others, so its root is reported as NoRoot instead.
func (l Local) Roots(_ context.Context, parts []uint32) ([]uint64, error) {
	out := make([]uint64, len(parts))
	for i, p := range parts {
		if !l.Store.Keeps(p) {
			out[i] = NoRoot
			continue
		}
		leaves, err := l.Store.Leaves(p)
		if err != nil {
			return nil, err
		}
		out[i] = NewTree(leaves).Root()
	}
	return out, nil
}

// NoRoot is the root reported for a partition the replica does not keep.
// (A real root equal to it is as likely as any other hash collision.)
const NoRoot = ^uint64(0)

// KeyCounts implements KeyCounter.
func (l Local) KeyCounts(_ context.Context, p uint32) ([]int64, error) {
	if err := l.check(p); err != nil {
		return nil, err
	}
	return l.Store.KeyCounts(p)
}

// Hashes implements Replica.
func (l Local) Hashes(_ context.Context, p uint32, level int, idx []int) ([]uint64, error) {
	t, err := l.Tree(p)
	if err != nil {
		return nil, err
	}
	return t.Hashes(level, idx)
}

// Digests implements Replica.
func (l Local) Digests(_ context.Context, p uint32, leaves []int) ([]storage.Digest, error) {
	if err := l.check(p); err != nil {
		return nil, err
	}
	return l.Store.Digests(p, leaves)
}

// Read implements Replica.
func (l Local) Read(_ context.Context, p uint32, keys []storage.Key) ([]storage.PartitionEntry, error) {
	if err := l.checkKeys(p, keys); err != nil {
		return nil, err
	}
	return l.Store.Read(keys)
}

// Apply implements Replica.
func (l Local) Apply(_ context.Context, p uint32, entries []storage.PartitionEntry) error {
	keys := make([]storage.Key, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	if err := l.checkKeys(p, keys); err != nil {
		return err
	}
	return l.Store.Apply(p, entries)
}

func (l Local) checkKeys(p uint32, keys []storage.Key) error {
	if err := l.check(p); err != nil {
		return err
	}
	for _, k := range keys {
		if k.Partition != p {
			return fmt.Errorf("antientropy: key %s is not in partition %d", k, p)
		}
	}
	return nil
}

// Confirm implements Replica.
func (l Local) Confirm(_ context.Context, p uint32, ds []storage.Digest) ([]bool, error) {
	keys := make([]storage.Key, len(ds))
	leaves := make([]int, len(ds))
	for i, d := range ds {
		keys[i], leaves[i] = d.Key, d.Key.Leaf()
	}
	if err := l.checkKeys(p, keys); err != nil {
		return nil, err
	}
	held, err := l.Store.Digests(p, leaves)
	if err != nil {
		return nil, err
	}
	have := make(map[storage.Key]uint64, len(held))
	for _, h := range held {
		have[h.Key] = h.Hash
	}
	out := make([]bool, len(ds))
	for i, d := range ds {
		h, ok := have[d.Key]
		out[i] = !ok || h == d.Hash
	}
	return out, nil
}

// Pending implements Replica. Every node answers, replica of the
// partitions or not: hints for a partition can sit on any node.
func (l Local) Pending(_ context.Context, parts []uint32) ([]bool, error) {
	out := make([]bool, len(parts))
	for i, p := range parts {
		out[i] = l.Store.Pending(p)
	}
	return out, nil
}
