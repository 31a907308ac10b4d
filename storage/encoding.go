package storage

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Binary format of an object (format version 1), all integers uvarints
// unless noted:
//
//	version byte (1)
//	actors:   count, then each as length + bytes (sorted, unique)
//	vector:   count, then each as actor index + counter
//	dots:     count, then each as actor index + counter
//	siblings: count, then each as
//	          actor index + counter, flags byte (bit 0: tombstone,
//	          bit 1: a request id follows), [request id length + bytes],
//	          content type length + bytes, last-modified (zigzag varint),
//	          value length + bytes
//
// Actor names appear once per object; dots refer to them by index. A causal
// context token is the same layout without siblings, base64url-encoded.
const formatV1 = 1

// Sibling flags.
const (
	flagTombstone = 1 << iota
	flagRequestID
)

// Limits on decoded input, so that garbage cannot make the decoder allocate
// without bound. They are far above what valid objects reach.
const (
	maxActors      = 4096
	maxActorLen    = 256
	maxSiblings    = 1 << 16
	maxContentType = 256
	// MaxRequestID bounds a write's request id, in bytes.
	MaxRequestID = 64
	// MaxCounter bounds dot counters, so issuing the next dot never
	// overflows.
	MaxCounter = math.MaxUint64 >> 2
)

// ErrCorrupt is returned for bytes that do not decode as an object or
// context.
var ErrCorrupt = errors.New("storage: corrupt encoding")

type encoder struct {
	buf    []byte
	actors []string
}

func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) bytes(b []byte)   { e.uvarint(uint64(len(b))); e.buf = append(e.buf, b...) }

func (e *encoder) actor(a string) {
	i, _ := slices.BinarySearch(e.actors, a)
	e.uvarint(uint64(i))
}

func (e *encoder) context(c Context, extra []Sibling) {
	for _, v := range c.VV {
		e.actors = append(e.actors, v.Actor)
	}
	for _, d := range c.Dots {
		e.actors = append(e.actors, d.Actor)
	}
	for _, s := range extra {
		e.actors = append(e.actors, s.Dot.Actor)
	}
	slices.Sort(e.actors)
	e.actors = slices.Compact(e.actors)

	e.buf = append(e.buf, formatV1)
	e.uvarint(uint64(len(e.actors)))
	for _, a := range e.actors {
		e.bytes([]byte(a))
	}
	e.uvarint(uint64(len(c.VV)))
	for _, v := range c.VV {
		e.actor(v.Actor)
		e.uvarint(v.Counter)
	}
	e.uvarint(uint64(len(c.Dots)))
	for _, d := range c.Dots {
		e.actor(d.Actor)
		e.uvarint(d.Counter)
	}
}

// AppendObject appends the binary encoding of o to buf.
func AppendObject(buf []byte, o *Object) []byte {
	e := encoder{buf: slices.Grow(buf, sizeHint(o))}
	e.context(o.Context, o.Siblings)
	e.uvarint(uint64(len(o.Siblings)))
	for _, s := range o.Siblings {
		e.actor(s.Dot.Actor)
		e.uvarint(s.Dot.Counter)
		var flags byte
		if s.Tombstone {
			flags |= flagTombstone
		}
		if s.RequestID != "" {
			flags |= flagRequestID
		}
		e.buf = append(e.buf, flags)
		if s.RequestID != "" {
			e.bytes([]byte(s.RequestID))
		}
		e.bytes([]byte(s.ContentType))
		e.buf = binary.AppendVarint(e.buf, s.LastModified)
		e.bytes(s.Value)
	}
	return e.buf
}

// sizeHint is about the size of o's encoding, at least as large for
// common objects, so that encoding it allocates once.
func sizeHint(o *Object) int {
	n := 8 + 12*(len(o.Context.VV)+len(o.Context.Dots))
	for _, s := range o.Siblings {
		n += 24 + len(s.RequestID) + len(s.ContentType) + len(s.Value)
	}
	return n
}

// EncodeObject returns the binary encoding of o. Equal objects encode to
// equal bytes.
func EncodeObject(o *Object) []byte { return AppendObject(nil, o) }

type decoder struct {
	buf    []byte
	err    error
	actors []string
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
}

func (d *decoder) uvarint(what string, limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("truncated %s", what)
		return 0
	}
	d.buf = d.buf[n:]
	if v > limit {
		d.fail("%s %d exceeds %d", what, v, limit)
		return 0
	}
	return v
}

func (d *decoder) bytes(what string, limit uint64) []byte {
	n := d.uvarint(what+" length", limit)
	if d.err != nil {
		return nil
	}
	if uint64(len(d.buf)) < n {
		d.fail("truncated %s", what)
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}

func (d *decoder) actor() string {
	i := d.uvarint("actor index", uint64(len(d.actors)))
	if d.err == nil && i >= uint64(len(d.actors)) {
		d.fail("actor index %d out of range", i)
	}
	if d.err != nil {
		return ""
	}
	return d.actors[i]
}

func (d *decoder) context() Context {
	if len(d.buf) == 0 {
		d.fail("empty input")
		return Context{}
	}
	if d.buf[0] != formatV1 {
		d.fail("unknown format version %d", d.buf[0])
		return Context{}
	}
	d.buf = d.buf[1:]
	n := d.uvarint("actor count", maxActors)
	for range n {
		a := d.bytes("actor", maxActorLen)
		if d.err != nil {
			return Context{}
		}
		d.actors = append(d.actors, string(a))
	}
	var c Context
	n = d.uvarint("vector length", maxActors)
	for range n {
		c.VV = append(c.VV, Entry{d.actor(), d.uvarint("counter", MaxCounter)})
	}
	n = d.uvarint("dot count", maxActors)
	for range n {
		c.Dots = append(c.Dots, Dot{d.actor(), d.uvarint("counter", MaxCounter)})
	}
	return c.normalize()
}

// DecodeObject decodes an object. The result shares no memory with buf, so
// buf may be reused (as Pebble reuses a value after its closer is closed).
// Input that is valid but not canonical (unsorted, duplicated) is
// normalized; a context that does not cover a sibling is widened to cover
// it.
func DecodeObject(buf []byte) (*Object, error) {
	return DecodeObjectFrom(slices.Clone(buf))
}

// DecodeObjectFrom is DecodeObject for a buffer that the caller hands over
// (a message just read): it saves the copy, and the object's values alias
// buf, which must not change afterwards.
func DecodeObjectFrom(buf []byte) (*Object, error) {
	d := decoder{buf: buf}
	o := &Object{Context: d.context()}
	n := d.uvarint("sibling count", maxSiblings)
	if d.err == nil && n > uint64(len(d.buf)) {
		d.fail("sibling count %d exceeds input", n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		var s Sibling
		s.Dot = Dot{d.actor(), d.uvarint("counter", MaxCounter)}
		if d.err == nil && s.Dot.Counter == 0 {
			d.fail("zero dot counter")
		}
		if d.err == nil && len(d.buf) == 0 {
			d.fail("truncated flags")
		}
		if d.err != nil {
			break
		}
		flags := d.buf[0]
		d.buf = d.buf[1:]
		if flags&^(flagTombstone|flagRequestID) != 0 {
			d.fail("unknown flags %#x", flags)
		}
		s.Tombstone = flags&flagTombstone != 0
		if flags&flagRequestID != 0 {
			if s.RequestID = string(d.bytes("request id", MaxRequestID)); d.err == nil && s.RequestID == "" {
				d.fail("empty request id")
			}
		}
		s.ContentType = string(d.bytes("content type", maxContentType))
		if d.err == nil {
			v, k := binary.Varint(d.buf)
			if k <= 0 {
				d.fail("truncated last-modified")
			} else {
				s.LastModified = v
				d.buf = d.buf[k:]
			}
		}
		s.Value = d.bytes("value", math.MaxUint32)
		o.Siblings = append(o.Siblings, s)
	}
	if d.err == nil && len(d.buf) != 0 {
		d.fail("%d trailing bytes", len(d.buf))
	}
	if d.err != nil {
		return nil, d.err
	}
	// Canonicalize: sorted siblings, one per dot (deterministically chosen),
	// and a context that covers them all.
	slices.SortStableFunc(o.Siblings, func(a, b Sibling) int { return compareDots(a.Dot, b.Dot) })
	sibs := o.Siblings[:0]
	var dots []Dot
	for _, s := range o.Siblings {
		if k := len(sibs); k > 0 && sibs[k-1].Dot == s.Dot {
			sibs[k-1] = minSibling(sibs[k-1], s)
			continue
		}
		sibs = append(sibs, s)
		if !o.Context.Covers(s.Dot) {
			dots = append(dots, s.Dot)
		}
	}
	o.Siblings = sibs
	if len(dots) > 0 {
		o.Context = o.Context.Join(Context{Dots: dots})
	}
	if len(o.Siblings) == 0 {
		o.Siblings = nil
	}
	return o, nil
}

// EncodeContext returns the opaque token form of a causal context, as sent
// to clients in the X-Context header: the context's binary form and a 32-bit
// checksum, base64url-encoded. The checksum turns a mangled token into a
// clear error rather than a context that covers versions nobody saw.
func EncodeContext(c Context) string {
	e := encoder{}
	e.context(c, nil)
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(xxhash.Sum64(e.buf)))
	return base64.RawURLEncoding.EncodeToString(e.buf)
}

// MaxContextToken bounds the length of a context token accepted from a
// client.
const MaxContextToken = 64 << 10

// DecodeContext parses a context token. The empty string is the empty
// context.
func DecodeContext(token string) (Context, error) {
	if token == "" {
		return Context{}, nil
	}
	if len(token) > MaxContextToken {
		return Context{}, fmt.Errorf("%w: context token longer than %d bytes", ErrCorrupt, MaxContextToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return Context{}, fmt.Errorf("%w: context token is not base64url: %v", ErrCorrupt, err)
	}
	if len(raw) < 4 {
		return Context{}, fmt.Errorf("%w: context token too short", ErrCorrupt)
	}
	body, sum := raw[:len(raw)-4], raw[len(raw)-4:]
	if binary.BigEndian.Uint32(sum) != uint32(xxhash.Sum64(body)) {
		return Context{}, fmt.Errorf("%w: context token checksum mismatch", ErrCorrupt)
	}
	d := decoder{buf: body}
	c := d.context()
	if d.err == nil && len(d.buf) != 0 {
		d.fail("%d trailing bytes", len(d.buf))
	}
	if d.err != nil {
		return Context{}, d.err
	}
	return c, nil
}
