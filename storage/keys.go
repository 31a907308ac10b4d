package storage

import (
	"encoding/binary"
	"fmt"
)

// Key layout in Pebble. The first byte separates the key spaces:
//
//	'd' partition(uint32 big-endian) len(bucket)(byte) bucket key   object
//	'm' name                                                         node metadata
//
// Objects sort by partition first, so one ring partition is one contiguous
// key range (handoff and anti-entropy iterate it without touching others).
// The bucket is length-prefixed, so no bucket/key pair can alias another.
const (
	prefixData = 'd'
	prefixMeta = 'm'
)

// Key addresses one object.
type Key struct {
	Partition uint32
	Bucket    string
	Key       string
}

func (k Key) String() string { return fmt.Sprintf("%d/%s/%q", k.Partition, k.Bucket, k.Key) }

func (k Key) encode() []byte {
	b := make([]byte, 0, 6+len(k.Bucket)+len(k.Key))
	b = append(b, prefixData)
	b = binary.BigEndian.AppendUint32(b, k.Partition)
	b = append(b, byte(len(k.Bucket)))
	b = append(b, k.Bucket...)
	return append(b, k.Key...)
}

// decodeKey is the inverse of Key.encode.
func decodeKey(b []byte) (Key, error) {
	if len(b) < 6 || b[0] != prefixData {
		return Key{}, fmt.Errorf("%w: object key %x", ErrCorrupt, b)
	}
	n := int(b[5])
	if len(b) < 6+n {
		return Key{}, fmt.Errorf("%w: object key %x", ErrCorrupt, b)
	}
	return Key{
		Partition: binary.BigEndian.Uint32(b[1:5]),
		Bucket:    string(b[6 : 6+n]),
		Key:       string(b[6+n:]),
	}, nil
}

// partitionBounds returns the key range [lo, hi) holding partition p.
func partitionBounds(p uint32) (lo, hi []byte) {
	lo = binary.BigEndian.AppendUint32([]byte{prefixData}, p)
	if p == ^uint32(0) {
		return lo, []byte{prefixData + 1}
	}
	return lo, binary.BigEndian.AppendUint32([]byte{prefixData}, p+1)
}

func metaKey(name string) []byte { return append([]byte{prefixMeta}, name...) }
