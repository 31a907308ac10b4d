package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cespare/xxhash/v2"
)

func FuzzDecodeObject(f *testing.F) {
	f.Add(EncodeObject(&Object{}))
	f.Add(EncodeObject(&Object{
		Context:  Context{VV: []Entry{{"a.1", 2}}, Dots: []Dot{{"b.1", 5}}},
		Siblings: []Sibling{sibling(Dot{"a.1", 2}), {Dot: Dot{"b.1", 5}, Tombstone: true}},
	}))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := DecodeObject(b)
		if err != nil {
			return
		}
		// A decoded object is canonical: it re-encodes and decodes to itself,
		// its context covers its siblings, and merging it is idempotent.
		enc := EncodeObject(o)
		o2, err := DecodeObject(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if string(EncodeObject(o2)) != string(enc) {
			t.Fatalf("not canonical")
		}
		for _, s := range o.Siblings {
			if !o.Context.Covers(s.Dot) {
				t.Fatalf("context does not cover %v", s.Dot)
			}
		}
		if string(EncodeObject(Merge(o, o))) != string(enc) {
			t.Fatalf("merge not idempotent")
		}
	})
}

func FuzzDecodeContext(f *testing.F) {
	f.Add("")
	f.Add(EncodeContext(Context{VV: []Entry{{"a.1", 2}, {"b.1", 7}}, Dots: []Dot{{"c.1", 9}}}))
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := DecodeContext(tok)
		if err != nil {
			return
		}
		c2, err := DecodeContext(EncodeContext(c))
		if err != nil || !c2.Equal(c) {
			t.Fatalf("round trip: %v %+v %+v", err, c, c2)
		}
	})
}

func FuzzDecodeHintValue(f *testing.F) {
	f.Add(appendHintValue(nil, HintDurable, 0, &Object{}))
	f.Add(appendHintValue(nil, HintSlow, -1, &Object{
		Context:  Context{VV: []Entry{{"a.1", 2}}},
		Siblings: []Sibling{sibling(Dot{"a.1", 2})},
	}))
	f.Add([]byte{hintFormatV1, byte(HintDurable), 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, stored, o, err := decodeHintValue(b)
		if err != nil {
			return
		}
		// A decoded hint re-encodes to one that decodes to the same hint.
		enc := appendHintValue(nil, kind, stored.UnixNano(), o)
		kind2, stored2, o2, err := decodeHintValue(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if kind2 != kind || !stored2.Equal(stored) || !equalObjects(o2, o) {
			t.Fatalf("round trip changed the hint")
		}
	})
}

func FuzzDecodeStored(f *testing.F) {
	f.Add(appendStored(nil, &Object{}))
	f.Add(appendStored(nil, version(Dot{"a.1", 2}, Dot{"b.1", 5})))
	f.Add(appendStored(nil, &Object{
		Context:  Context{VV: []Entry{{"a.1", 3}}},
		Siblings: []Sibling{{Dot: Dot{"a.1", 3}, Tombstone: true, LastModified: -7}},
	}))
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		// b as stored bytes, and b as the encoding under a valid checksum,
		// so the fuzzer also reaches the decoder behind the checksum.
		summed := binary.BigEndian.AppendUint32(bytes.Clone(b), uint32(xxhash.Sum64(b)))
		for _, v := range [][]byte{b, summed} {
			o, err := decodeStored(v)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error %v does not wrap ErrCorrupt", err)
				}
				continue
			}
			// A decoded object stores in a form that decodes to itself.
			enc := appendStored(nil, o)
			o2, err := decodeStored(enc)
			if err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			if !bytes.Equal(appendStored(nil, o2), enc) {
				t.Fatalf("stored form does not round-trip")
			}
			if !bytes.Equal(enc[:len(enc)-4], EncodeObject(o)) {
				t.Fatalf("stored form is not the encoding plus a checksum")
			}
			// appendStored checksums only what it appends.
			if o3, err := decodeStored(appendStored([]byte("prefix"), o)[len("prefix"):]); err != nil || !equalObjects(o3, o) {
				t.Fatalf("appendStored after a prefix: %v", err)
			}
			// A changed checksum never decodes.
			bad := bytes.Clone(enc)
			bad[len(bad)-1-len(b)%4] ^= 1 << (len(b) % 8)
			if _, err := decodeStored(bad); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("checksum changed, decode: %v", err)
			}
		}
	})
}
