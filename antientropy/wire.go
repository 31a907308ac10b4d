package antientropy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/quorumkv/quorumkv/storage"
)

// The exchange protocol between nodes: one request and one response per
// Replica method, in a compact binary form (uvarints, 64-bit hashes little
// endian, objects in storage's encoding). The server carries them on its
// internal API; Serve answers them, Remote sends them.

// Operation names, one per Replica method.
const (
	OpRoots   = "roots"
	OpHashes  = "hashes"
	OpDigests = "digests"
	OpRead    = "read"
	OpApply   = "apply"
	OpConfirm = "confirm"
	OpPending = "pending"
)

// Errors.
var (
	// ErrBadRequest is a protocol message that does not decode.
	ErrBadRequest = errors.New("antientropy: bad request")
	// ErrNotReplica refuses an exchange of a partition this node does not
	// keep.
	ErrNotReplica = errors.New("antientropy: not a replica")
)

// Call sends one protocol request to a peer and returns its response body.
// It must honour ctx's deadline.
type Call func(ctx context.Context, op string, body []byte) ([]byte, error)

// Remote is the Replica of a peer, reached through call.
type Remote struct{ call Call }

var _ Replica = Remote{}

// NewRemote returns the Replica reached through call.
func NewRemote(call Call) Remote { return Remote{call: call} }

func (r Remote) do(ctx context.Context, op string, req []byte) (*reader, error) {
	resp, err := r.call(ctx, op, req)
	if err != nil {
		return nil, err
	}
	return &reader{b: resp}, nil
}

// Roots implements Replica.
func (r Remote) Roots(ctx context.Context, parts []uint32) ([]uint64, error) {
	rd, err := r.do(ctx, OpRoots, appendParts(nil, parts))
	if err != nil {
		return nil, err
	}
	return rd.hashesOf(len(parts))
}

// Hashes implements Replica.
func (r Remote) Hashes(ctx context.Context, p uint32, level int, idx []int) ([]uint64, error) {
	b := binary.AppendUvarint(nil, uint64(p))
	b = binary.AppendUvarint(b, uint64(level))
	rd, err := r.do(ctx, OpHashes, appendInts(b, idx))
	if err != nil {
		return nil, err
	}
	return rd.hashesOf(len(idx))
}

// Digests implements Replica.
func (r Remote) Digests(ctx context.Context, p uint32, leaves []int) ([]storage.Digest, error) {
	rd, err := r.do(ctx, OpDigests, appendRuns(binary.AppendUvarint(nil, uint64(p)), leaves))
	if err != nil {
		return nil, err
	}
	ds := rd.digests(p)
	return ds, rd.end()
}

// Read implements Replica.
func (r Remote) Read(ctx context.Context, p uint32, keys []storage.Key) ([]storage.PartitionEntry, error) {
	b := binary.AppendUvarint(nil, uint64(p))
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendKey(b, k)
	}
	rd, err := r.do(ctx, OpRead, b)
	if err != nil {
		return nil, err
	}
	if got := rd.count(); rd.err == nil && got != len(keys) {
		rd.fail("%d answers for %d keys", got, len(keys))
	}
	var es []storage.PartitionEntry
	for _, k := range keys {
		if rd.err != nil || rd.byte() == 0 {
			continue
		}
		if o := rd.object(k); o != nil {
			es = append(es, storage.PartitionEntry{Key: k, Object: o})
		}
	}
	return es, rd.end()
}

// Apply implements Replica.
func (r Remote) Apply(ctx context.Context, p uint32, entries []storage.PartitionEntry) error {
	_, err := r.do(ctx, OpApply, appendEntries(binary.AppendUvarint(nil, uint64(p)), entries))
	return err
}

// Confirm implements Replica.
func (r Remote) Confirm(ctx context.Context, p uint32, ds []storage.Digest) ([]bool, error) {
	rd, err := r.do(ctx, OpConfirm, appendDigests(binary.AppendUvarint(nil, uint64(p)), ds))
	if err != nil {
		return nil, err
	}
	return rd.boolsOf(len(ds))
}

// Pending implements Replica.
func (r Remote) Pending(ctx context.Context, parts []uint32) ([]bool, error) {
	rd, err := r.do(ctx, OpPending, appendParts(nil, parts))
	if err != nil {
		return nil, err
	}
	return rd.boolsOf(len(parts))
}

// Serve answers one protocol request from the local replica. Errors wrap
// ErrBadRequest for a message that does not decode, ErrNotReplica for a
// partition this node does not keep, or come from the store.
func Serve(ctx context.Context, local Replica, op string, body []byte) ([]byte, error) {
	rd := &reader{b: body}
	switch op {
	case OpRoots, OpPending:
		parts := rd.parts()
		if err := rd.end(); err != nil {
			return nil, err
		}
		if op == OpPending {
			bs, err := local.Pending(ctx, parts)
			return appendBools(nil, bs), err
		}
		hs, err := local.Roots(ctx, parts)
		return appendHashes(nil, hs), err
	case OpHashes:
		p, level, idx := rd.partition(), rd.int(), rd.ints()
		if err := rd.end(); err != nil {
			return nil, err
		}
		hs, err := local.Hashes(ctx, p, level, idx)
		return appendHashes(nil, hs), err
	case OpDigests:
		p, leaves := rd.partition(), rd.runs()
		if err := rd.end(); err != nil {
			return nil, err
		}
		ds, err := local.Digests(ctx, p, leaves)
		return appendDigests(nil, ds), err
	case OpRead:
		p := rd.partition()
		keys := make([]storage.Key, rd.count())
		for i := range keys {
			keys[i] = rd.key(p)
		}
		if err := rd.end(); err != nil {
			return nil, err
		}
		es, err := local.Read(ctx, p, keys)
		if err != nil {
			return nil, err
		}
		// The answer follows the request's order, so it names no key.
		byKey := make(map[storage.Key]*storage.Object, len(es))
		for _, e := range es {
			byKey[e.Key] = e.Object
		}
		b := binary.AppendUvarint(nil, uint64(len(keys)))
		for _, k := range keys {
			if o, ok := byKey[k]; ok {
				b = appendObject(append(b, 1), o)
			} else {
				b = append(b, 0)
			}
		}
		return b, nil
	case OpApply:
		p := rd.partition()
		es := rd.entries(p)
		if err := rd.end(); err != nil {
			return nil, err
		}
		return nil, local.Apply(ctx, p, es)
	case OpConfirm:
		p := rd.partition()
		ds := rd.digests(p)
		if err := rd.end(); err != nil {
			return nil, err
		}
		bs, err := local.Confirm(ctx, p, ds)
		return appendBools(nil, bs), err
	}
	return nil, fmt.Errorf("%w: unknown operation %q", ErrBadRequest, op)
}

// Encoding.

func appendParts(b []byte, parts []uint32) []byte {
	b = binary.AppendUvarint(b, uint64(len(parts)))
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(p))
	}
	return b
}

func appendInts(b []byte, xs []int) []byte {
	b = binary.AppendUvarint(b, uint64(len(xs)))
	for _, x := range xs {
		b = binary.AppendUvarint(b, uint64(x))
	}
	return b
}

// appendRuns encodes leaf indexes, which come sorted and often
// contiguous (a listed subtree), as runs: the number of runs, then each
// run's gap from the previous run's end and its length.
func appendRuns(b []byte, xs []int) []byte {
	var runs [][2]int
	for _, x := range xs {
		if n := len(runs); n > 0 && runs[n-1][0]+runs[n-1][1] == x {
			runs[n-1][1]++
			continue
		}
		runs = append(runs, [2]int{x, 1})
	}
	b = binary.AppendUvarint(b, uint64(len(runs)))
	end := 0
	for _, r := range runs {
		b = binary.AppendUvarint(b, uint64(r[0]-end))
		b = binary.AppendUvarint(b, uint64(r[1]))
		end = r[0] + r[1]
	}
	return b
}

func appendHashes(b []byte, hs []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(hs)))
	for _, h := range hs {
		b = binary.LittleEndian.AppendUint64(b, h)
	}
	return b
}

func appendBools(b []byte, bs []bool) []byte {
	b = binary.AppendUvarint(b, uint64(len(bs)))
	for _, x := range bs {
		if x {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	return b
}

func appendKey(b []byte, k storage.Key) []byte {
	b = binary.AppendUvarint(b, uint64(len(k.Bucket)))
	b = append(b, k.Bucket...)
	b = binary.AppendUvarint(b, uint64(len(k.Key)))
	return append(b, k.Key...)
}

func appendDigests(b []byte, ds []storage.Digest) []byte {
	b = binary.AppendUvarint(b, uint64(len(ds)))
	for _, d := range ds {
		b = appendKey(b, d.Key)
		b = binary.LittleEndian.AppendUint64(b, d.Hash)
		b = binary.AppendVarint(b, d.DeletedAt)
	}
	return b
}

func appendEntries(b []byte, es []storage.PartitionEntry) []byte {
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = appendObject(appendKey(b, e.Key), e.Object)
	}
	return b
}

func appendObject(b []byte, o *storage.Object) []byte {
	obj := storage.EncodeObject(o)
	b = binary.AppendUvarint(b, uint64(len(obj)))
	return append(b, obj...)
}

// Decoding. A reader keeps the first error; every count is bounded by the
// bytes left, so garbage cannot make it allocate without bound.

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
	}
}

func (r *reader) uvarint(what string, limit uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("truncated %s", what)
		return 0
	}
	r.b = r.b[n:]
	if v > limit {
		r.fail("%s %d exceeds %d", what, v, limit)
		return 0
	}
	return v
}

// count reads an element count: each element takes at least one byte.
func (r *reader) count() int {
	n := r.uvarint("count", math.MaxUint64)
	if r.err == nil && n > uint64(len(r.b)) {
		r.fail("count %d exceeds the %d bytes left", n, len(r.b))
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

func (r *reader) int() int          { return int(r.uvarint("index", math.MaxInt32)) }
func (r *reader) partition() uint32 { return uint32(r.uvarint("partition", math.MaxUint32)) }
func (r *reader) bytes(what string) []byte {
	n := r.uvarint(what+" length", math.MaxUint64)
	if r.err == nil && n > uint64(len(r.b)) {
		r.fail("%s of %d bytes exceeds the %d left", what, n, len(r.b))
	}
	if r.err != nil {
		return nil
	}
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b
}

func (r *reader) u64() uint64 {
	if r.err == nil && len(r.b) < 8 {
		r.fail("truncated hash")
	}
	if r.err != nil {
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) parts() []uint32 {
	out := make([]uint32, r.count())
	for i := range out {
		out[i] = r.partition()
	}
	return out
}

func (r *reader) ints() []int {
	out := make([]int, r.count())
	for i := range out {
		out[i] = r.int()
	}
	return out
}

// runs decodes appendRuns. A request never needs more leaves than a
// partition has, which bounds what garbage can make it allocate.
func (r *reader) runs() []int {
	var out []int
	n := r.count()
	end := 0
	for range n {
		start := end + int(r.uvarint("gap", storage.TreeLeaves))
		length := int(r.uvarint("run", storage.TreeLeaves))
		if r.err == nil && len(out)+length > storage.TreeLeaves {
			r.fail("more than %d leaves", storage.TreeLeaves)
		}
		if r.err != nil {
			return nil
		}
		for x := start; x < start+length; x++ {
			out = append(out, x)
		}
		end = start + length
	}
	return out
}

func (r *reader) key(p uint32) storage.Key {
	bucket := r.bytes("bucket")
	if len(bucket) > 255 {
		r.fail("bucket of %d bytes", len(bucket)) // storage length-prefixes it in one byte
	}
	key := r.bytes("key")
	return storage.Key{Partition: p, Bucket: string(bucket), Key: string(key)}
}

func (r *reader) digests(p uint32) []storage.Digest {
	out := make([]storage.Digest, r.count())
	for i := range out {
		out[i].Key = r.key(p)
		out[i].Hash = r.u64()
		if r.err == nil {
			v, n := binary.Varint(r.b)
			if n <= 0 {
				r.fail("truncated deletion time")
			} else {
				out[i].DeletedAt = v
				r.b = r.b[n:]
			}
		}
	}
	return out
}

func (r *reader) entries(p uint32) []storage.PartitionEntry {
	out := make([]storage.PartitionEntry, r.count())
	for i := range out {
		out[i].Key = r.key(p)
		if out[i].Object = r.object(out[i].Key); r.err != nil {
			break
		}
	}
	return out
}

func (r *reader) object(k storage.Key) *storage.Object {
	enc := r.bytes("object")
	if r.err != nil {
		return nil
	}
	o, err := storage.DecodeObject(enc)
	if err != nil {
		r.fail("object of %s: %v", k, err)
		return nil
	}
	return o
}

func (r *reader) hashesOf(n int) ([]uint64, error) {
	if got := r.count(); r.err == nil && got != n {
		r.fail("%d hashes for %d requested", got, n)
	}
	out := make([]uint64, 0, n)
	for r.err == nil && len(out) < n {
		out = append(out, r.u64())
	}
	return out, r.end()
}

func (r *reader) boolsOf(n int) ([]bool, error) {
	if got := r.count(); r.err == nil && got != n {
		r.fail("%d answers for %d requested", got, n)
	}
	out := make([]bool, 0, n)
	for r.err == nil && len(out) < n {
		b := r.byte()
		out = append(out, b == 1)
	}
	return out, r.end()
}

func (r *reader) byte() byte {
	if r.err == nil && len(r.b) == 0 {
		r.fail("truncated")
	}
	if r.err != nil {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	if v > 1 {
		r.fail("bad boolean %d", v)
	}
	return v
}

// end returns the first error, or an error for trailing bytes.
func (r *reader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}
