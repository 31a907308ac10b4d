package ring

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Shared pieces of the binary encodings of Membership and Holdings.
//
// Both are canonical: one value has exactly one encoding, and the decoders
// accept nothing else (varints must be minimal, entries sorted by id, no
// trailing bytes), so a digest over received bytes equals one over the
// re-encoding, and the fuzz targets can require Encode(Decode(b)) == b.

const (
	// encodingV1 is the leading format byte of both encodings. A later
	// format gets a new byte; decoders reject bytes they do not know.
	encodingV1 = 1
	// maxMembers bounds the entries a decoder accepts: far above any
	// cluster (New needs 8 partitions per ring member, at most 65536), small
	// enough that a hostile count cannot make a decoder allocate much.
	maxMembers = 1024
	// maxFieldLen bounds Addr, Gossip and Epoch (and a holding's Epoch).
	maxFieldLen = 255
)

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// uvarintLen is the length of the minimal uvarint encoding of v.
func uvarintLen(v uint64) int {
	return max(1, (bits.Len64(v)+6)/7)
}

// decoder reads a canonical encoding; every error wraps ErrCorrupt and names
// what was being read and where.
type decoder struct {
	what string // "membership" or "holdings"
	b    []byte
	off  int
}

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s (at byte %d of %d)",
		ErrCorrupt, d.what, fmt.Sprintf(format, args...), d.off, len(d.b))
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) byte(field string) (byte, error) {
	if d.off >= len(d.b) {
		return 0, d.errorf("truncated before %s", field)
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

func (d *decoder) uvarint(field string) (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		return 0, d.errorf("truncated in %s", field)
	case n < 0:
		return 0, d.errorf("%s overflows 64 bits", field)
	case n != uvarintLen(v):
		// A padded varint would give one value two encodings.
		return 0, d.errorf("%s is not minimally encoded", field)
	}
	d.off += n
	return v, nil
}

// count reads an entry count bounded by limit and by the bytes left, given
// that each entry takes at least minSize bytes, so that a hostile count
// cannot make the caller allocate more than the input justifies.
func (d *decoder) count(field string, limit, minSize int) (int, error) {
	v, err := d.uvarint(field)
	if err != nil {
		return 0, err
	}
	if v > uint64(limit) {
		return 0, d.errorf("%s %d exceeds %d", field, v, limit)
	}
	if v*uint64(minSize) > uint64(d.remaining()) {
		return 0, d.errorf("%s %d needs at least %d bytes, %d left", field, v, v*uint64(minSize), d.remaining())
	}
	return int(v), nil
}

func (d *decoder) string(field string, maxLen int) (string, error) {
	n, err := d.uvarint(field + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(maxLen) {
		return "", d.errorf("%s length %d exceeds %d", field, n, maxLen)
	}
	if n > uint64(d.remaining()) {
		return "", d.errorf("%s length %d exceeds the %d bytes left", field, n, d.remaining())
	}
	s := string(d.b[d.off : d.off+int(n)])
	d.off += int(n)
	return s, nil
}

func (d *decoder) uint64LE(field string) (uint64, error) {
	if d.remaining() < 8 {
		return 0, d.errorf("truncated in %s", field)
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v, nil
}

// header checks the format byte.
func (d *decoder) header() error {
	v, err := d.byte("format version")
	if err != nil {
		return err
	}
	if v != encodingV1 {
		return d.errorf("unknown format version %d (want %d)", v, encodingV1)
	}
	return nil
}

// end checks that nothing follows the value.
func (d *decoder) end() error {
	if d.remaining() != 0 {
		return d.errorf("%d trailing bytes", d.remaining())
	}
	return nil
}
