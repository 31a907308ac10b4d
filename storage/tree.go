package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
)

// Hash-tree leaves, kept by the store for anti-entropy.
//
// Every partition has TreeLeaves leaves. A key's leaf is fixed by its hash
// (Key.Leaf); a leaf's value is the XOR of the digests of the objects in
// it, and how many objects it holds (which lets an exchange choose between
// descending the tree and listing a subtree's keys). XOR makes an update incremental: a write XORs the old and the new
// digest into the leaf, with no scan. The update is a Pebble merge operand
// in the same batch as the object, so the leaves can never disagree with
// the objects after a crash; and merges commute, so concurrent writes to
// one leaf need no lock. A rebuild (RebuildTree) recomputes the leaves from
// the objects at a snapshot and merges in the correction, which commutes
// with the writes that raced it.
//
// Interior levels of the tree are derived from the leaves by the
// antientropy package; the store only keeps the leaves.

// TreeLeaves is the number of hash-tree leaves per partition. With 1024
// partitions, a node holding 1,000,000 objects on every partition has about
// 4 objects per leaf, so a single differing key costs an exchange a listing
// of about 4 keys.
const TreeLeaves = 1 << treeLeafBits

const treeLeafBits = 8

// Merger is the Pebble merge operator for tree leaves: an operand is a
// 64-bit hash XORed into the leaf and a 64-bit object count added to it
// (both little endian). Anything that opens a quorumkv data directory with Pebble
// directly must pass it in pebble.Options.
var Merger = &pebble.Merger{
	Name: "quorumkv.xor64",
	Merge: func(_, value []byte) (pebble.ValueMerger, error) {
		h, n := fold(value)
		return &xorMerger{hash: h, keys: n}, nil
	},
}

// xorMerger accumulates leaf operands. It is total: Pebble runs merges in
// compactions, where an error would stall the store.
type xorMerger struct {
	hash uint64
	keys int64
}

func (m *xorMerger) MergeNewer(v []byte) error { m.add(v); return nil }
func (m *xorMerger) MergeOlder(v []byte) error { m.add(v); return nil }
func (m *xorMerger) add(v []byte) {
	h, n := fold(v)
	m.hash ^= h
	m.keys += n
}
func (m *xorMerger) Finish(bool) ([]byte, io.Closer, error) {
	return leafOperand(m.hash, m.keys), nil, nil
}

// leafOperand encodes a leaf value or update.
func leafOperand(hash uint64, keys int64) []byte {
	return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, hash), uint64(keys))
}

// fold reads a leaf operand. Only the store writes them, always 16 bytes; a
// mangled one still reads as some value (which a rebuild corrects) rather
// than an error.
func fold(v []byte) (hash uint64, keys int64) {
	if len(v) == 16 {
		return binary.LittleEndian.Uint64(v), int64(binary.LittleEndian.Uint64(v[8:]))
	}
	return xxhash.Sum64(v), 0
}

// digest returns the digest of the stored bytes raw under the object key
// key: a hash of both, never 0. Absent (nil raw) is 0.
func digest(key, raw []byte) uint64 {
	if raw == nil {
		return 0
	}
	var d xxhash.Digest
	d.Reset()
	_, _ = d.Write(key)
	_, _ = d.Write(raw)
	if h := d.Sum64(); h != 0 {
		return h
	}
	return 1
}

// Digest identifies the version a replica holds for one key: equal digests
// mean equal objects. Hash is 0 for an absent key.
type Digest struct {
	Key  Key
	Hash uint64
	// DeletedAt is, for an object of tombstones only, the latest
	// LastModified of its tombstones (Unix nanoseconds); 0 otherwise.
	DeletedAt int64
}

// ObjectDigest returns the digest the store gives o stored under k.
func ObjectDigest(k Key, o *Object) uint64 {
	return digest(k.encode(), appendStored(nil, o))
}

// deletedAt returns when o was deleted, or 0 if it holds a live version or
// nothing.
func deletedAt(o *Object) int64 {
	if o == nil || len(o.Siblings) == 0 {
		return 0
	}
	var at int64
	for _, s := range o.Siblings {
		if !s.Tombstone {
			return 0
		}
		at = max(at, s.LastModified)
	}
	return max(at, 1)
}

// The "tree" metadata records whether the leaves may disagree with the
// data everywhere: a store opened with DisableTree marks them stale, and
// only MarkTreeFresh, after every partition was rebuilt, clears the mark.
// Crashes never make leaves stale: they change in the objects' batches.
const (
	treeMeta  = "tree"
	treeStale = "stale"
	treeFresh = "fresh"
)

func (s *Store) loadTreeState() error {
	if s.cfg.DisableTree {
		s.treeStale.Store(true)
		return s.SetMeta(treeMeta, []byte(treeStale))
	}
	v, err := s.getMeta(treeMeta)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	s.treeStale.Store(string(v) == treeStale)
	return nil
}

// TreeStale reports whether the tree leaves may disagree with the data (the
// store was opened with DisableTree since the last MarkTreeFresh): every
// partition must be rebuilt before its tree is compared.
func (s *Store) TreeStale() bool { return s.treeStale.Load() }

// MarkTreeFresh records that every partition's tree was rebuilt since the
// store was last opened with DisableTree.
func (s *Store) MarkTreeFresh() error {
	if s.cfg.DisableTree {
		return errors.New("storage: the tree is disabled")
	}
	if err := s.SetMeta(treeMeta, []byte(treeFresh)); err != nil {
		return err
	}
	s.treeStale.Store(false)
	return nil
}

// Leaves returns partition p's tree leaves.
func (s *Store) Leaves(p uint32) ([]uint64, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	leaves, _, err := readLeaves(s.db, p)
	return leaves, err
}

// KeyCounts returns how many objects each leaf of partition p holds.
func (s *Store) KeyCounts(p uint32) ([]int64, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	_, counts, err := readLeaves(s.db, p)
	return counts, err
}

func readLeaves(r pebble.Reader, p uint32) (leaves []uint64, counts []int64, err error) {
	lo, hi := partitionRange(prefixTree, p)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, nil, fmt.Errorf("storage: tree %d: %w", p, err)
	}
	defer closeIter(it, &err)
	leaves, counts = make([]uint64, TreeLeaves), make([]int64, TreeLeaves)
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 7 || int(binary.BigEndian.Uint16(k[5:])) >= TreeLeaves {
			continue // not a key this store writes; a rebuild ignores it too
		}
		leaf := int(binary.BigEndian.Uint16(k[5:]))
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, nil, fmt.Errorf("storage: tree %d: %w", p, err)
		}
		leaves[leaf], counts[leaf] = fold(v)
	}
	if err := it.Error(); err != nil {
		return nil, nil, fmt.Errorf("storage: tree %d: %w", p, err)
	}
	return leaves, counts, nil
}

// Digests returns the digest of every object in the given leaves of
// partition p, in key order. An object whose stored bytes fail their
// checksum is left out: it counts as absent, so anti-entropy fetches it
// from a peer.
func (s *Store) Digests(p uint32, leaves []int) (out []Digest, err error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	leaves = slices.Sorted(slices.Values(leaves))
	for _, leaf := range slices.Compact(leaves) {
		if leaf < 0 || leaf >= TreeLeaves {
			return nil, fmt.Errorf("storage: leaf %d out of range", leaf)
		}
		lo, hi := leafRange(p, leaf)
		if out, err = s.appendDigests(out, lo, hi); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Store) appendDigests(out []Digest, lo, hi []byte) ([]Digest, error) {
	err := s.eachObject(s.db, lo, hi, func(k Key, key, raw []byte, o *Object) bool {
		out = append(out, Digest{Key: k, Hash: digest(key, raw), DeletedAt: deletedAt(o)})
		return true
	})
	return out, err
}

// eachObject calls fn for every object in [lo, hi) of r, in key order,
// until fn returns false. Entries whose key or stored bytes do not decode
// are logged, counted and skipped: everywhere but Get they count as absent.
// key and raw are valid only during the call.
func (s *Store) eachObject(r pebble.Reader, lo, hi []byte, fn func(k Key, key, raw []byte, o *Object) bool) (err error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("storage: scan: %w", err)
	}
	defer closeIter(it, &err)
	for it.First(); it.Valid(); it.Next() {
		k, err := decodeKey(it.Key())
		if err != nil {
			s.noteCorrupt(it.Key(), err)
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("storage: scan %s: %w", k, err)
		}
		o, err := decodeStored(v)
		if err != nil {
			s.noteCorrupt(it.Key(), err)
			continue
		}
		if !fn(k, it.Key(), v, o) {
			break
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("storage: scan: %w", err)
	}
	return nil
}

// Read returns the stored objects of keys, skipping absent and corrupt
// ones.
func (s *Store) Read(keys []Key) ([]PartitionEntry, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	out := make([]PartitionEntry, 0, len(keys))
	for _, k := range keys {
		cur, err := s.load(k.encode())
		if err != nil {
			return nil, err
		}
		if cur.obj != nil {
			out = append(out, PartitionEntry{Key: k, Object: cur.obj})
		}
	}
	return out, nil
}

// RebuildTree recomputes partition p's leaves from its objects and corrects
// the stored ones. It reads both at one snapshot and merges the difference,
// so writes that race the rebuild keep their own updates. (Rebuilds are
// serialized: two overlapping ones would apply the same correction twice.)
// It also checks the tombstone index against the objects. It returns how
// many leaves were wrong: anything but 0 means the objects changed without
// the tree (corruption, or bytes changed under the store).
func (s *Store) RebuildTree(p uint32) (fixed int, err error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	stored, storedKeys, err := readLeaves(snap, p)
	if err != nil {
		return 0, err
	}
	computed, keys := make([]uint64, TreeLeaves), make([]int64, TreeLeaves)
	var tombs []Key // tombstone-only objects, by the snapshot
	lo, hi := partitionBounds(p)
	err = s.eachObject(snap, lo, hi, func(k Key, key, raw []byte, o *Object) bool {
		computed[keyLeaf(key)] ^= digest(key, raw)
		keys[keyLeaf(key)]++
		if deletedAt(o) != 0 {
			tombs = append(tombs, k)
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("storage: rebuild %d: %w", p, err)
	}
	if err := s.checkTombIndex(snap, p, tombs); err != nil {
		return 0, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	for leaf := range TreeLeaves {
		if d, n := computed[leaf]^stored[leaf], keys[leaf]-storedKeys[leaf]; d != 0 || n != 0 {
			fixed++
			_ = b.Merge(treeKey(p, leaf), leafOperand(d, n), nil)
		}
	}
	if fixed == 0 {
		return 0, nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("storage: rebuild %d: %w", p, err)
	}
	return fixed, nil
}

// checkTombIndex compares partition p's tombstone index at snap with the
// tombstone-only objects found there, and re-derives the index entry of
// every key on which they disagree from the key's current object, under its
// lock (unlike leaf corrections, index entries do not commute with writes).
func (s *Store) checkTombIndex(snap *pebble.Snapshot, p uint32, tombs []Key) (err error) {
	want := make(map[string]bool, len(tombs))
	for _, k := range tombs {
		want[string(k.encode())] = true
	}
	var suspect [][]byte
	lo, hi := partitionRange(prefixTomb, p)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("storage: rebuild %d: %w", p, err)
	}
	defer closeIter(it, &err)
	for it.First(); it.Valid(); it.Next() {
		key := bytes.Clone(it.Key())
		key[0] = prefixData
		if !want[string(key)] {
			suspect = append(suspect, key)
		}
		delete(want, string(key))
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("storage: rebuild %d: %w", p, err)
	}
	for key := range want {
		suspect = append(suspect, []byte(key))
	}
	for _, key := range suspect {
		if err := s.fixTombIndex(key); err != nil {
			return err
		}
	}
	return nil
}

// fixTombIndex sets or removes the tombstone index entry of the object key
// key to match its current object.
func (s *Store) fixTombIndex(key []byte) error {
	k, err := decodeKey(key)
	if err != nil {
		// A key that does not decode is not an object of this store; its
		// index entry goes.
		return s.db.Delete(tombKey(key), pebble.Sync)
	}
	mu := s.lock(k)
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.load(key)
	if err != nil {
		return err
	}
	if at := deletedAt(cur.obj); at != 0 {
		return s.db.Set(tombKey(key), tombValue(at, digest(key, cur.raw)), pebble.Sync)
	}
	return s.db.Delete(tombKey(key), pebble.Sync)
}

// Tombstones returns up to limit objects of partition p that hold only
// tombstones deleted before the given time (Unix nanoseconds): the
// candidates for purging. Only the tombstone index is read.
func (s *Store) Tombstones(p uint32, before int64, limit int) (out []Digest, err error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	lo, hi := partitionRange(prefixTomb, p)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("storage: tombstones %d: %w", p, err)
	}
	defer closeIter(it, &err)
	for it.First(); it.Valid() && len(out) < limit; it.Next() {
		key := bytes.Clone(it.Key())
		key[0] = prefixData
		k, err := decodeKey(key)
		v := it.Value()
		if err != nil || len(v) != 16 {
			s.noteCorrupt(it.Key(), fmt.Errorf("%w: tombstone index entry", ErrCorrupt))
			continue
		}
		at := int64(binary.BigEndian.Uint64(v))
		if at < before {
			out = append(out, Digest{Key: k, DeletedAt: at, Hash: binary.BigEndian.Uint64(v[8:])})
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("storage: tombstones %d: %w", p, err)
	}
	return out, nil
}

// Purge removes the objects named by ds, each only if it still has the
// given digest and holds only tombstones, in one synced commit. Deciding
// that a tombstone may go (every replica holds it, nothing that could
// resurrect what it deleted is pending) is the caller's job. It returns
// how many it removed.
func (s *Store) Purge(ds []Digest) (int, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	if len(ds) == 0 {
		return 0, nil
	}
	keys := make([]Key, len(ds))
	for i, d := range ds {
		keys[i] = d.Key
	}
	unlock := s.lockAll(keys)
	defer unlock()
	b := s.db.NewBatch()
	defer b.Close()
	seen := make(map[Key]bool, len(ds))
	var gone [][]byte // keys purged
	for _, d := range ds {
		if seen[d.Key] {
			continue // staged once: its load below would not see the batch
		}
		seen[d.Key] = true
		key := d.Key.encode()
		cur, err := s.load(key)
		if err != nil {
			return 0, err
		}
		if deletedAt(cur.obj) == 0 {
			// Overwritten by a live version, or gone: drop a stale index
			// entry if there is one.
			_ = b.Delete(tombKey(key), nil)
			continue
		}
		if digest(key, cur.raw) != d.Hash {
			continue // changed since the caller looked; a later pass decides
		}
		s.stage(b, key, cur, nil, nil)
		gone = append(gone, key)
	}
	err := b.Commit(pebble.Sync)
	for _, key := range gone {
		s.objects.set(key, current{}) // gone, or unknown on error
	}
	if err != nil {
		return 0, fmt.Errorf("storage: purge: %w", err)
	}
	return len(gone), nil
}

// current is what the store holds under one object key, read under the
// key's lock.
type current struct {
	raw []byte  // the stored bytes; nil if absent or corrupt
	obj *Object // raw decoded; nil if absent or corrupt
}

// load reads an object key for a write, from the object cache if it holds
// the key. Bytes that fail their checksum or do not decode count as absent,
// so that the write (or a repair from a peer) replaces them; they are
// logged and counted.
func (s *Store) load(key []byte) (current, error) {
	if cur, ok := s.objects.get(key); ok {
		return cur, nil
	}
	raw, err := s.getRaw(key)
	if err != nil || raw == nil {
		return current{}, err
	}
	o, err := decodeOwned(raw)
	if err != nil {
		s.noteCorrupt(key, err)
		return current{}, nil
	}
	return current{raw: raw, obj: o}, nil
}

// stage adds to b the replacement of cur, stored under key, by o, whose
// stored form is raw (both nil: remove the key), with the matching tree
// leaf update and tombstone index change. The caller holds key's lock until
// b is committed.
func (s *Store) stage(b *pebble.Batch, key []byte, cur current, raw []byte, o *Object) {
	if o == nil {
		_ = b.Delete(key, nil)
	} else {
		_ = b.Set(key, raw, nil)
	}
	if !s.cfg.DisableTree {
		s.stageLeaf(b, key, cur.raw, raw)
	}
	if at := deletedAt(o); at != 0 {
		_ = b.Set(tombKey(key), tombValue(at, digest(key, raw)), nil)
	} else if deletedAt(cur.obj) != 0 {
		_ = b.Delete(tombKey(key), nil)
	}
}

// stageLeaf adds to b the update of key's tree leaf for its stored bytes
// going from old to new (nil: absent, or corrupt).
func (s *Store) stageLeaf(b *pebble.Batch, key, old, new []byte) {
	d := digest(key, old) ^ digest(key, new)
	if d == 0 {
		return
	}
	var n int64 // objects added
	if new != nil {
		n++
	}
	if old != nil {
		n--
	}
	_ = b.Merge(treeKey(binary.BigEndian.Uint32(key[1:5]), keyLeaf(key)), leafOperand(d, n), nil)
}

// tombValue is a tombstone index entry's value.
func tombValue(deletedAt int64, digest uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(deletedAt)), digest)
}

// noteCorrupt logs and counts stored bytes that failed to decode.
func (s *Store) noteCorrupt(key []byte, err error) {
	s.corrupt.Add(1)
	s.cfg.Logger.Error("corrupt object in store; anti-entropy will replace it from a replica", "key", fmt.Sprintf("%x", key), "err", err)
}

// Corrupt returns how many times the store met stored bytes that failed
// their checksum or did not decode since it opened.
func (s *Store) Corrupt() uint64 { return s.corrupt.Load() }

// appendStored appends o's stored form: its encoding and a 32-bit checksum
// of it, which turns bytes changed on disk into a clear error instead of a
// different, valid-looking version.
func appendStored(buf []byte, o *Object) []byte {
	start := len(buf)
	buf = AppendObject(slices.Grow(buf, sizeHint(o)+4), o)
	return binary.BigEndian.AppendUint32(buf, uint32(xxhash.Sum64(buf[start:])))
}

// decodeStored is the inverse of appendStored. The object does not alias v.
func decodeStored(v []byte) (*Object, error) {
	return decodeOwned(slices.Clone(v))
}

// decodeOwned is decodeStored for bytes the caller hands over: the object's
// values alias raw, which must not change afterwards.
func decodeOwned(v []byte) (*Object, error) {
	if len(v) < 4 {
		return nil, fmt.Errorf("%w: stored object of %d bytes", ErrCorrupt, len(v))
	}
	body, sum := v[:len(v)-4], v[len(v)-4:]
	if binary.BigEndian.Uint32(sum) != uint32(xxhash.Sum64(body)) {
		return nil, fmt.Errorf("%w: stored object checksum mismatch", ErrCorrupt)
	}
	return DecodeObjectFrom(body)
}
