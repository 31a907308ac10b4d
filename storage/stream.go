package storage

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Partition streaming, for ownership handoff: a node that gives a partition
// away reads it in resumable batches, and deletes it once the new owner has
// everything.

// ErrBadCursor refuses a cursor that does not belong to the range it is
// used on.
var ErrBadCursor = errors.New("storage: bad cursor")

// A PartitionEntry is one object of a partition, as ReadPartition returns
// it. (Entry already names a version vector component.)
type PartitionEntry struct {
	Key    Key
	Object *Object
}

// ReadPartition returns the objects of partition p whose keys sort after the
// cursor after (empty: from the start of the partition), in key order: at
// least one entry if any is left, and then entries until their keys and
// values add up to maxBytes. It returns the cursor to pass next and whether
// the partition is exhausted.
//
// A cursor is the encoded Pebble key of the last entry returned: opaque to
// callers, valid across restarts, and still meaningful if that key was
// deleted meanwhile. An empty cursor starts at the beginning; one from
// another partition is refused with ErrBadCursor. When done is true, next
// is still a valid cursor: a later call returns what was written after it
// since.
func (s *Store) ReadPartition(p uint32, after []byte, maxBytes int) (entries []PartitionEntry, next []byte, done bool, err error) {
	if s.closed.Load() {
		return nil, nil, false, ErrClosed
	}
	lo, hi := partitionBounds(p)
	if len(after) > 0 {
		if bytes.Compare(after, lo) < 0 || bytes.Compare(after, hi) >= 0 {
			return nil, nil, false, fmt.Errorf("%w: %x is not in partition %d", ErrBadCursor, after, p)
		}
		lo = append(bytes.Clone(after), 0) // the first key after the cursor
	}
	next = after
	size := 0
	full, more := false, false
	err = s.eachObject(s.db, lo, hi, func(k Key, key, raw []byte, o *Object) bool {
		if full {
			more = true
			return false
		}
		entries = append(entries, PartitionEntry{Key: k, Object: o})
		next = bytes.Clone(key)
		size += len(key) + len(raw)
		full = size >= maxBytes
		return true
	})
	if err != nil {
		return nil, nil, false, fmt.Errorf("storage: read partition %d: %w", p, err)
	}
	return entries, next, !more, nil
}

// DeletePartition removes every object of partition p, its tree and its
// tombstone index with one synced batch of range deletions; compactions
// reclaim the space later. Hints for p are kept: they
// are addressed to other nodes and delivered on their own. Callers stop
// writes to p first: a write that races the deletion may survive it.
func (s *Store) DeletePartition(p uint32) error {
	if s.closed.Load() {
		return ErrClosed
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, prefix := range []byte{prefixData, prefixTree, prefixTomb} {
		lo, hi := partitionRange(prefix, p)
		_ = b.DeleteRange(lo, hi, nil)
	}
	// Every key lock, held across the commit and the cache drop: a write
	// that committed just before the delete would otherwise cache its object
	// after the drop, and the cache would hold what the disk no longer does.
	// Writes wait for one synced commit; partitions are deleted only after
	// ring changes.
	unlock := s.lockEvery()
	err := b.Commit(pebble.Sync)
	s.objects.dropPartition(p) // whatever the outcome: ask Pebble
	unlock()
	if err != nil {
		return fmt.Errorf("storage: delete partition %d: %w", p, err)
	}
	return nil
}

// PartitionStats returns how many objects partition p holds and their size
// (keys and values as stored, before compression). It scans the partition,
// reading value lengths but not values.
func (s *Store) PartitionStats(p uint32) (keys int, nbytes int64, err error) {
	if s.closed.Load() {
		return 0, 0, ErrClosed
	}
	lo, hi := partitionBounds(p)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, 0, fmt.Errorf("storage: partition stats %d: %w", p, err)
	}
	defer closeIter(it, &err)
	for it.First(); it.Valid(); it.Next() {
		lv := it.LazyValue()
		keys++
		nbytes += int64(len(it.Key()) + lv.Len())
	}
	if err := it.Error(); err != nil {
		return 0, 0, fmt.Errorf("storage: partition stats %d: %w", p, err)
	}
	return keys, nbytes, nil
}

// ApplyMany merges a batch of incoming objects (a partition transfer) into
// the stored ones, like Apply for each, in one synced commit. Duplicate
// keys in the batch merge with each other.
func (s *Store) ApplyMany(entries []PartitionEntry) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if len(entries) == 0 {
		return nil
	}
	keys := make([]Key, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	unlock := s.lockAll(keys)
	defer unlock()
	b := s.db.NewBatch()
	defer b.Close()
	type pending struct {
		cur    current
		merged *Object
		raw    []byte // merged's stored form, if it changed anything
	}
	byKey := map[string]*pending{}
	for _, e := range entries {
		key := string(e.Key.encode())
		pe, ok := byKey[key]
		if !ok {
			cur, err := s.load([]byte(key))
			if err != nil {
				return err
			}
			pe = &pending{cur: cur, merged: cur.obj}
			byKey[key] = pe
		}
		pe.merged = Merge(pe.merged, e.Object)
	}
	changed := 0
	for key, pe := range byKey {
		raw := appendStored(nil, pe.merged)
		if pe.cur.obj != nil && bytes.Equal(raw, pe.cur.raw) {
			continue
		}
		s.stage(b, []byte(key), pe.cur, raw, pe.merged)
		pe.raw = raw
		changed++
	}
	if changed == 0 {
		return nil
	}
	err := b.Commit(pebble.Sync)
	for key, pe := range byKey {
		switch {
		case pe.raw == nil:
		case err != nil:
			s.objects.set([]byte(key), current{}) // the outcome is unknown: ask Pebble
		default:
			s.objects.set([]byte(key), current{raw: pe.raw, obj: pe.merged})
		}
	}
	if err != nil {
		return fmt.Errorf("storage: apply batch: %w", err)
	}
	return nil
}
