package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// Key layout in Pebble. The first byte separates the key spaces:
//
//	'd' partition(uint32 BE) leaf(uint16 BE) len(bucket)(byte) bucket key    object
//	't' partition(uint32 BE) leaf(uint16 BE)                                 tree leaf
//	'x' partition(uint32 BE) leaf(uint16 BE) len(bucket)(byte) bucket key    tombstone index
//	'h' partition(uint32 BE) len(bucket)(byte) bucket len(key)(uint16 BE) key
//	    kind(byte) owner                                                      hint
//	'm' name                                                                   node metadata
//
// Objects sort by partition first, so one ring partition is one contiguous
// key range (handoff and anti-entropy iterate it without touching others),
// and then by hash-tree leaf, so one leaf of a partition is a contiguous
// range too: an anti-entropy exchange lists the keys of a differing leaf
// without scanning the rest of the partition. The bucket is length-prefixed,
// so no bucket/key pair can alias another.
//
// An object value is its encoding (EncodeObject) followed by a 32-bit
// checksum of it (see appendStored). A tree leaf is a 64-bit XOR
// accumulator updated with Pebble merges (see tree.go). A tombstone index
// entry exists while the object is tombstones only; its value is
// deletedAt(uint64 BE, Unix nanoseconds) digest(uint64 BE).
//
// Hints live in their own range, so no scan of objects ever sees one. Their
// key is length-prefixed too, which makes every hint of one key (all owners,
// both kinds) share a prefix that no other key extends: HintsForKey is a
// single prefix scan. The owner comes last, so filtering by owner reads keys
// only; a hint value is read only when it is wanted. A hint value is
//
//	version(byte, 1) kind(byte) stored(Unix nanoseconds, zigzag varint) object
//
// where object is EncodeObject's format and stored is when the hint's oldest
// version arrived (merges keep it; slow hints expire by it).
const (
	prefixData = 'd'
	prefixTree = 't'
	prefixTomb = 'x'
	prefixHint = 'h'
	prefixMeta = 'm'
)

// Key addresses one object.
type Key struct {
	Partition uint32
	Bucket    string
	Key       string
}

func (k Key) String() string { return fmt.Sprintf("%d/%s/%q", k.Partition, k.Bucket, k.Key) }

// Leaf returns the hash-tree leaf of k within its partition. It uses the
// top bits of a hash of bucket and key, so it is independent of the
// partition (which the ring takes from the same hash modulo the partition
// count).
func (k Key) Leaf() int {
	var buf [128]byte
	b := append(buf[:0], k.Bucket...)
	b = append(b, 0)
	b = append(b, k.Key...)
	return int(xxhash.Sum64(b) >> (64 - treeLeafBits))
}

func (k Key) encode() []byte {
	b := make([]byte, 0, dataKeyHeader+len(k.Bucket)+len(k.Key))
	b = append(b, prefixData)
	b = binary.BigEndian.AppendUint32(b, k.Partition)
	b = binary.BigEndian.AppendUint16(b, uint16(k.Leaf()))
	b = append(b, byte(len(k.Bucket)))
	b = append(b, k.Bucket...)
	return append(b, k.Key...)
}

// dataKeyHeader is the length of an object key before its bucket.
const dataKeyHeader = 8

// decodeKey is the inverse of Key.encode. It checks that the stored leaf is
// the key's leaf, so a mangled key cannot land in the wrong leaf's range.
func decodeKey(b []byte) (Key, error) {
	if len(b) < dataKeyHeader || b[0] != prefixData {
		return Key{}, fmt.Errorf("%w: object key %x", ErrCorrupt, b)
	}
	n := int(b[7])
	if len(b) < dataKeyHeader+n {
		return Key{}, fmt.Errorf("%w: object key %x", ErrCorrupt, b)
	}
	k := Key{
		Partition: binary.BigEndian.Uint32(b[1:5]),
		Bucket:    string(b[dataKeyHeader : dataKeyHeader+n]),
		Key:       string(b[dataKeyHeader+n:]),
	}
	if int(binary.BigEndian.Uint16(b[5:7])) != k.Leaf() {
		return Key{}, fmt.Errorf("%w: object key %x is in the wrong leaf", ErrCorrupt, b)
	}
	return k, nil
}

// keyLeaf returns the leaf field of an encoded object key.
func keyLeaf(b []byte) int { return int(binary.BigEndian.Uint16(b[5:7])) }

// treeKey addresses leaf of partition p's hash tree.
func treeKey(p uint32, leaf int) []byte {
	b := binary.BigEndian.AppendUint32([]byte{prefixTree}, p)
	return binary.BigEndian.AppendUint16(b, uint16(leaf))
}

// tombKey returns the tombstone index key of the object key b.
func tombKey(b []byte) []byte {
	t := bytes.Clone(b)
	t[0] = prefixTomb
	return t
}

// leafRange returns the key range [lo, hi) of objects in leaf of p.
func leafRange(p uint32, leaf int) (lo, hi []byte) {
	lo = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint32([]byte{prefixData}, p), uint16(leaf))
	return lo, prefixEnd(lo)
}

// partitionBounds returns the key range [lo, hi) holding partition p.
func partitionBounds(p uint32) (lo, hi []byte) { return partitionRange(prefixData, p) }

// partitionRange returns the key range [lo, hi) of partition p in the key
// space that starts with prefix.
func partitionRange(prefix byte, p uint32) (lo, hi []byte) {
	lo = binary.BigEndian.AppendUint32([]byte{prefix}, p)
	if p == ^uint32(0) {
		return lo, []byte{prefix + 1}
	}
	return lo, binary.BigEndian.AppendUint32([]byte{prefix}, p+1)
}

func metaKey(name string) []byte { return append([]byte{prefixMeta}, name...) }

// maxHintKeyLen bounds a hinted key: its length is stored in 16 bits.
const maxHintKeyLen = 1<<16 - 1

// hintPrefix returns the prefix shared by every hint of k. It fails for a
// bucket or key too long for their length fields rather than truncating
// them into another key's range.
func hintPrefix(k Key) ([]byte, error) {
	if len(k.Bucket) > 255 || len(k.Key) > maxHintKeyLen {
		return nil, fmt.Errorf("%w: bucket of %d or key of %d bytes is too long", ErrBadHint, len(k.Bucket), len(k.Key))
	}
	b := make([]byte, 0, 8+len(k.Bucket)+len(k.Key)+32)
	b = append(b, prefixHint)
	b = binary.BigEndian.AppendUint32(b, k.Partition)
	b = append(b, byte(len(k.Bucket)))
	b = append(b, k.Bucket...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(k.Key)))
	return append(b, k.Key...), nil
}

// hintKey addresses the hint of kind for owner of key k.
func hintKey(k Key, kind HintKind, owner string) ([]byte, error) {
	b, err := hintPrefix(k)
	if err != nil {
		return nil, err
	}
	b = append(b, byte(kind))
	return append(b, owner...), nil
}

// decodeHintKey is the inverse of hintKey.
func decodeHintKey(b []byte) (k Key, kind HintKind, owner string, err error) {
	bad := func() (Key, HintKind, string, error) {
		return Key{}, 0, "", fmt.Errorf("%w: hint key %x", ErrCorrupt, b)
	}
	if len(b) < 6 || b[0] != prefixHint {
		return bad()
	}
	k.Partition = binary.BigEndian.Uint32(b[1:5])
	rest := b[5:]
	nb := int(rest[0])
	if len(rest) < 1+nb+2 {
		return bad()
	}
	k.Bucket = string(rest[1 : 1+nb])
	rest = rest[1+nb:]
	nk := int(binary.BigEndian.Uint16(rest))
	if len(rest) < 2+nk+1 {
		return bad()
	}
	k.Key = string(rest[2 : 2+nk])
	rest = rest[2+nk:]
	kind = HintKind(rest[0])
	if !kind.valid() || len(rest) == 1 {
		return bad()
	}
	return k, kind, string(rest[1:]), nil
}

// hintOwner returns the owner part of the hint key b without decoding the
// rest, for scans that filter by owner. The result aliases b.
func hintOwner(b []byte) ([]byte, bool) {
	if len(b) < 6 {
		return nil, false
	}
	i := 6 + int(b[5])
	if len(b) < i+2 {
		return nil, false
	}
	i += 2 + int(binary.BigEndian.Uint16(b[i:]))
	if len(b) < i+2 {
		return nil, false
	}
	return b[i+1:], true
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil if there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
