package ring

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strconv"
)

// Bitmap is an immutable set of partitions in [0, Len()). With and Without
// return copies, so a Bitmap may be shared freely. The zero value is the
// empty bitmap of zero partitions.
type Bitmap struct {
	words []uint64 // bit p%64 of words[p/64]; bits at and above n are zero
	n     int
}

// NewBitmap returns the empty bitmap of partitions partitions.
func NewBitmap(partitions int) Bitmap {
	if partitions < 0 {
		panic("ring: NewBitmap: negative partitions " + strconv.Itoa(partitions))
	}
	return Bitmap{words: make([]uint64, (partitions+63)/64), n: partitions}
}

// FullBitmap returns the bitmap holding every one of partitions partitions.
func FullBitmap(partitions int) Bitmap {
	b := NewBitmap(partitions)
	for i := range b.words {
		b.words[i] = ^uint64(0)
	}
	if r := partitions % 64; r != 0 {
		b.words[len(b.words)-1] = 1<<r - 1
	}
	return b
}

// Len returns the number of partitions the bitmap covers.
func (b Bitmap) Len() int { return b.n }

// Has reports whether p is set; false for p outside [0, Len()).
func (b Bitmap) Has(p int) bool {
	return p >= 0 && p < b.n && b.words[p/64]&(1<<(p%64)) != 0
}

// With returns a copy of b with p set. It panics if p is out of range.
func (b Bitmap) With(p int) Bitmap {
	b.check(p)
	c := b.clone()
	c.words[p/64] |= 1 << (p % 64)
	return c
}

// Without returns a copy of b with p clear. It panics if p is out of range.
func (b Bitmap) Without(p int) Bitmap {
	b.check(p)
	c := b.clone()
	c.words[p/64] &^= 1 << (p % 64)
	return c
}

func (b Bitmap) check(p int) {
	if p < 0 || p >= b.n {
		panic(fmt.Sprintf("ring: partition %d out of range [0, %d)", p, b.n))
	}
}

func (b Bitmap) clone() Bitmap { return Bitmap{words: slices.Clone(b.words), n: b.n} }

// Count returns the number of partitions set.
func (b Bitmap) Count() int {
	c := 0
	for _, w := range b.words {
		c += bits.OnesCount64(w)
	}
	return c
}

// Equal reports whether b and o cover the same partitions and set the same.
func (b Bitmap) Equal(o Bitmap) bool { return b.n == o.n && slices.Equal(b.words, o.words) }

// compare totally orders bitmaps (by Len, then by words) for tie-breaks.
func (b Bitmap) compare(o Bitmap) int {
	return cmp.Or(cmp.Compare(b.n, o.n), slices.Compare(b.words, o.words))
}

// Holding is one node's gossiped claim of the partitions it holds
// completely. It is valid only for the epoch it names: a node that lost its
// data has a new epoch, so its old claims stop counting at once.
type Holding struct {
	Epoch string
	// Version orders one node's holdings; the node raises it on every
	// change (see Holdings.Set). A node starting under a new epoch should
	// publish above any version it has seen for its id; until it does, its
	// stale-epoch holding may win the merge but counts for nothing.
	Version uint64
	Parts   Bitmap
}

// compareHoldings totally orders two holdings of one node: Version, then
// Epoch, then Parts. A total order makes Merge a semilattice join.
// (A union of bitmaps on a tie would not do: it could claim partitions that
// neither holding claims together with the other's epoch and version.)
func compareHoldings(a, b Holding) int {
	return cmp.Or(
		cmp.Compare(a.Version, b.Version),
		cmp.Compare(a.Epoch, b.Epoch),
		a.Parts.compare(b.Parts),
	)
}

// Holdings maps node id to that node's holding. Treat a Holdings as
// immutable: Merge and Set return new maps and leave their inputs alone.
type Holdings map[string]Holding

// Merge returns a new map with, per node, the greater holding of h and o:
// the higher Version, then the greater Epoch, then a deterministic order of
// the bitmaps. It is commutative, associative and idempotent.
func (h Holdings) Merge(o Holdings) Holdings {
	out := make(Holdings, max(len(h), len(o)))
	maps.Copy(out, h)
	for id, b := range o {
		if a, ok := out[id]; !ok || compareHoldings(b, a) > 0 {
			out[id] = b
		}
	}
	return out
}

// Set returns a new map where node id holds parts under epoch, with Version
// one above id's current holding (or 1): a local change.
func (h Holdings) Set(id, epoch string, parts Bitmap) Holdings {
	out := maps.Clone(h)
	if out == nil {
		out = make(Holdings, 1)
	}
	out[id] = Holding{Epoch: epoch, Version: h[id].Version + 1, Parts: parts}
	return out
}

// Equal reports whether h and o hold identical holdings.
func (h Holdings) Equal(o Holdings) bool {
	return maps.EqualFunc(h, o, func(a, b Holding) bool { return compareHoldings(a, b) == 0 })
}

// Validate checks what DecodeHoldings checks: valid ids, epochs of at most
// 255 bytes, and bitmaps of at most 65536 partitions.
func (h Holdings) Validate() error {
	for _, id := range slices.Sorted(maps.Keys(h)) {
		if err := ValidateNodeID(id); err != nil {
			return err
		}
		hd := h[id]
		if len(hd.Epoch) > maxFieldLen {
			return fmt.Errorf("%w: holding of %q has a %d-byte epoch; at most %d", ErrInvalidMember, id, len(hd.Epoch), maxFieldLen)
		}
		if hd.Parts.n > maxPartitions {
			return fmt.Errorf("%w: holding of %q covers %d partitions; at most %d", ErrInvalidMember, id, hd.Parts.n, maxPartitions)
		}
	}
	return nil
}

// Encode returns the canonical binary form:
//
//	format byte (1)
//	uvarint count
//	count × { id, epoch: uvarint length + bytes; version: uvarint;
//	          partitions: uvarint; ceil(partitions/64) × uint64 LE words }
//	sorted by id
//
// 1024 partitions take 128 bytes per node.
func (h Holdings) Encode() []byte {
	ids := slices.Sorted(maps.Keys(h))
	size := 1 + 10
	for _, id := range ids {
		hd := h[id]
		size += 2 + len(id) + 2 + len(hd.Epoch) + 10 + 3 + 8*len(hd.Parts.words)
	}
	b := make([]byte, 0, size)
	b = append(b, encodingV1)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		hd := h[id]
		b = appendString(b, id)
		b = appendString(b, hd.Epoch)
		b = binary.AppendUvarint(b, hd.Version)
		b = binary.AppendUvarint(b, uint64(hd.Parts.n))
		for _, w := range hd.Parts.words {
			b = binary.LittleEndian.AppendUint64(b, w)
		}
	}
	return b
}

// minHoldingSize is the smallest encoded holding: a 1-byte id with its
// length, an empty epoch, a 1-byte version, zero partitions.
const minHoldingSize = 2 + 1 + 1 + 1

// DecodeHoldings decodes the output of Encode. It accepts only canonical
// input: at most 1024 nodes with valid ids in increasing order, epochs of at
// most 255 bytes, at most 65536 partitions per bitmap and no bits set past
// them. Every error wraps ErrCorrupt; allocations are bounded by the input
// length.
func DecodeHoldings(b []byte) (Holdings, error) {
	d := &decoder{what: "holdings", b: b}
	if err := d.header(); err != nil {
		return nil, err
	}
	n, err := d.count("node count", maxMembers, minHoldingSize)
	if err != nil {
		return nil, err
	}
	h := make(Holdings, n)
	prev := ""
	for i := range n {
		field := func(name string) string { return "holding " + strconv.Itoa(i) + " " + name }
		id, err := d.string(field("id"), maxNodeIDLen)
		if err != nil {
			return nil, err
		}
		if err := ValidateNodeID(id); err != nil {
			return nil, d.errorf("holding %d: %v", i, err)
		}
		if i > 0 && prev >= id {
			return nil, d.errorf("holding %d: id %q not after %q", i, id, prev)
		}
		prev = id
		var hd Holding
		if hd.Epoch, err = d.string(field("epoch"), maxFieldLen); err != nil {
			return nil, err
		}
		if hd.Version, err = d.uvarint(field("version")); err != nil {
			return nil, err
		}
		parts, err := d.uvarint(field("partitions"))
		if err != nil {
			return nil, err
		}
		if parts > maxPartitions {
			return nil, d.errorf("holding %d: %d partitions exceed %d", i, parts, maxPartitions)
		}
		words := (int(parts) + 63) / 64
		if 8*words > d.remaining() {
			return nil, d.errorf("holding %d: %d partitions need %d bytes, %d left", i, parts, 8*words, d.remaining())
		}
		hd.Parts = Bitmap{words: make([]uint64, words), n: int(parts)}
		for j := range hd.Parts.words {
			if hd.Parts.words[j], err = d.uint64LE(field("bitmap")); err != nil {
				return nil, err
			}
		}
		if r := parts % 64; r != 0 && hd.Parts.words[words-1]>>r != 0 {
			return nil, d.errorf("holding %d: bits set past partition %d", i, parts)
		}
		h[id] = hd
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return h, nil
}
