package antientropy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// wireFixture is a store keeping partitions 3 and 4 only, with data in 3,
// and the requests a Remote sent to it, by operation.
type wireFixture struct {
	s        *testStore
	keys     []storage.Key // in partition 3, the last one absent
	requests map[string][][]byte
}

func newWireFixture(t testing.TB) *wireFixture {
	s := newTestStore(t, "w")
	s.keepOnly(3, 4)
	s.setPending(4, true)
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC).UnixNano()
	var keys []storage.Key
	var es []storage.PartitionEntry
	for i, name := range []string{"a", "b", "c/d", "é", strings.Repeat("k", 300), ""} {
		k := storage.Key{Partition: 3, Bucket: []string{"docs", "", strings.Repeat("B", 255)}[i%3], Key: name}
		keys = append(keys, k)
		switch i % 3 {
		case 0:
			es = append(es, entry(k, v1(k)))
		case 1:
			es = append(es, entry(k, withSibling(k, "x.1")))
		default:
			es = append(es, entry(k, deleted(at)))
		}
	}
	apply(t, s, es...)
	keys = append(keys, storage.Key{Partition: 3, Bucket: "docs", Key: "absent"})
	return &wireFixture{s: s, keys: keys, requests: map[string][][]byte{}}
}

// remote returns the Replica of the fixture's store through the wire,
// recording every request.
func (f *wireFixture) remote() Replica {
	return NewRemote(func(ctx context.Context, op string, body []byte) ([]byte, error) {
		f.requests[op] = append(f.requests[op], slices.Clone(body))
		return Serve(ctx, Local{Store: f.s}, op, body)
	})
}

// exercise calls every operation of r and returns the answers.
func (f *wireFixture) exercise(t tb, r Replica) []any {
	ctx := context.Background()
	var out []any
	must := func(v any, err error) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	must(r.Roots(ctx, []uint32{3, 4, 9, math.MaxUint32}))
	must(r.Roots(ctx, nil))
	must(r.Hashes(ctx, 3, 0, []int{0}))
	must(r.Hashes(ctx, 3, 1, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}))
	must(r.Hashes(ctx, 3, 2, []int{255, 0, 128, 0}))
	must(r.Hashes(ctx, 4, 2, nil))
	all := make([]int, storage.TreeLeaves)
	for i := range all {
		all[i] = i
	}
	must(r.Digests(ctx, 3, all))
	must(r.Digests(ctx, 3, nil))
	must(r.Digests(ctx, 4, all))
	must(r.Read(ctx, 3, f.keys))
	must(r.Read(ctx, 3, nil))
	ds, err := Local{Store: f.s}.Digests(ctx, 3, all)
	if err != nil {
		t.Fatal(err)
	}
	ds[0].Hash ^= 1 // another version
	ds = append(ds, storage.Digest{Key: f.keys[len(f.keys)-1], Hash: 12345})
	must(r.Confirm(ctx, 3, ds))
	must(r.Confirm(ctx, 3, nil))
	must(r.Pending(ctx, []uint32{3, 4, 9}))
	must(r.Pending(ctx, nil))
	// Applying what the store holds changes nothing, and is answered.
	held, err := f.s.Read(f.keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx, 3, held); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx, 3, nil); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameAnswer compares answers, with nil and empty slices equal and objects by
// their encoding.
func sameAnswer(x, y any) bool {
	switch x := x.(type) {
	case []uint64:
		return slices.Equal(x, y.([]uint64))
	case []bool:
		return slices.Equal(x, y.([]bool))
	case []storage.Digest:
		return slices.Equal(x, y.([]storage.Digest))
	case []storage.PartitionEntry:
		return slices.EqualFunc(x, y.([]storage.PartitionEntry), func(a, b storage.PartitionEntry) bool {
			return a.Key == b.Key && enc(a.Object) == enc(b.Object)
		})
	}
	panic("unexpected answer type")
}

func TestWireRoundTrip(t *testing.T) {
	noLeaks(t)
	f := newWireFixture(t)
	leavesBefore := leavesOf(t, f.s, 3)
	direct := f.exercise(t, Local{Store: f.s})
	wired := f.exercise(t, f.remote())
	for i := range direct {
		if !sameAnswer(direct[i], wired[i]) {
			t.Errorf("answer %d: direct %v, through the wire %v", i, direct[i], wired[i])
		}
	}
	// Spot checks of the answers themselves.
	if roots := direct[0].([]uint64); roots[0] == 0 || roots[1] != 0 || roots[2] != NoRoot || roots[3] != NoRoot {
		t.Errorf("roots %x: want data, empty, not kept, not kept", roots)
	}
	if ds := direct[6].([]storage.Digest); len(ds) != len(f.keys)-1 {
		t.Errorf("%d digests, want %d", len(ds), len(f.keys)-1)
	}
	if es := direct[9].([]storage.PartitionEntry); len(es) != len(f.keys)-1 {
		t.Errorf("read %d objects, want %d (the absent key left out)", len(es), len(f.keys)-1)
	}
	confirm := direct[11].([]bool)
	if confirm[0] || !confirm[1] || !confirm[len(confirm)-1] {
		t.Errorf("confirm %v: want false for another version, true for the same one and for a key held nowhere", confirm)
	}
	if pending := direct[13].([]bool); !slices.Equal(pending, []bool{false, true, false}) {
		t.Errorf("pending %v", pending)
	}
	if !slices.Equal(leavesOf(t, f.s, 3), leavesBefore) {
		t.Error("re-applying held objects changed the tree")
	}
	for _, op := range []string{OpRoots, OpHashes, OpDigests, OpRead, OpApply, OpConfirm, OpPending} {
		if len(f.requests[op]) == 0 {
			t.Errorf("no %s request was sent", op)
		}
	}
}

// TestWireApply: objects applied through the wire merge into the store's.
func TestWireApply(t *testing.T) {
	noLeaks(t)
	f := newWireFixture(t)
	ctx := context.Background()
	k0, k1 := f.keys[0], f.keys[len(f.keys)-1]
	in := []storage.PartitionEntry{entry(k0, withSibling(k0, "z.1")), entry(k1, v2(k1))}
	if err := f.remote().Apply(ctx, 3, in); err != nil {
		t.Fatal(err)
	}
	if got, want := held(t, f.s, k0), storage.Merge(v1(k0), withSibling(k0, "z.1")); enc(got) != enc(want) {
		t.Errorf("%s: %+v, want %+v", k0, got, want)
	}
	if got := held(t, f.s, k1); enc(got) != enc(v2(k1)) {
		t.Errorf("%s: %+v, want %+v", k1, got, v2(k1))
	}
	// A key of another partition is refused whole.
	other := storage.Key{Partition: 4, Bucket: "b", Key: "k"}
	if err := (Local{Store: f.s}).Apply(ctx, 3, []storage.PartitionEntry{entry(other, v1(other))}); err == nil {
		t.Error("Local.Apply took a key of another partition")
	}
	if _, err := (Local{Store: f.s}).Read(ctx, 3, []storage.Key{other}); err == nil {
		t.Error("Local.Read took a key of another partition")
	}
	if _, err := (Local{Store: f.s}).Confirm(ctx, 3, []storage.Digest{{Key: other}}); err == nil {
		t.Error("Local.Confirm took a key of another partition")
	}
	if held(t, f.s, other) != nil {
		t.Error("refused apply wrote")
	}
}

func TestServeRejectsBadRequests(t *testing.T) {
	noLeaks(t)
	f := newWireFixture(t)
	f.exercise(t, f.remote())
	ctx := context.Background()
	local := Local{Store: f.s}
	// check returns why Serve's answer to a bad request is wrong, or "".
	check := func(op string, body []byte) string {
		leaves := leavesOf(t, f.s, 3)
		resp, err := safeServe(ctx, local, op, body)
		if !slices.Equal(leavesOf(t, f.s, 3), leaves) {
			return "changed the store"
		}
		if !errors.Is(err, ErrBadRequest) {
			return fmt.Sprintf("%v, %x; want ErrBadRequest", err, short(resp))
		}
		return ""
	}
	bad := func(what, op string, body []byte) {
		t.Helper()
		if why := check(op, body); why != "" {
			t.Errorf("%s (%s %x): %s", what, op, short(body), why)
		}
	}
	bad("unknown op", "nope", nil)
	bad("empty op", "", []byte{0})
	// Every strict prefix of every valid request, and every valid request
	// with a byte more.
	for _, op := range slices.Sorted(maps.Keys(f.requests)) {
		failed, first := 0, ""
		for _, body := range f.requests[op] {
			for n := range len(body) {
				if why := check(op, body[:n]); why != "" {
					if failed++; first == "" {
						first = fmt.Sprintf("%x (%d of %d bytes): %s", short(body[:n]), n, len(body), why)
					}
				}
			}
			bad("trailing bytes", op, append(slices.Clone(body), 0))
		}
		if failed > 0 {
			t.Errorf("%s: %d truncated requests not refused as bad requests, the first %s", op, failed, first)
		}
	}
	uv := func(xs ...uint64) []byte {
		var b []byte
		for _, x := range xs {
			b = binary.AppendUvarint(b, x)
		}
		return b
	}
	bad("count beyond the body", OpRoots, uv(3, 1))
	bad("count beyond the body", OpPending, uv(1<<40))
	bad("count beyond the body", OpHashes, uv(3, 2, 2, 0))
	bad("count beyond the body", OpDigests, uv(3, 5, 1, 2))
	bad("count beyond the body", OpRead, append(uv(3, 100), uv(1, 'b', 1, 'k')...))
	bad("count beyond the body", OpApply, uv(3, 9))
	bad("count beyond the body", OpConfirm, uv(3, 2))
	bad("length beyond the body", OpRead, append(uv(3, 1, 1, 'b', 50), 'k'))
	bad("partition beyond uint32", OpHashes, uv(1<<32, 2, 1, 0))
	bad("index beyond int32", OpHashes, uv(3, 2, 1, 1<<31))
	bad("level beyond int32", OpHashes, uv(3, 1<<31, 1, 0))
	bad("overlong uvarint", OpRoots, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	bucket := strings.Repeat("b", 256)
	key := append(uv(256), bucket...)
	key = append(key, uv(1, 'k')...)
	bad("bucket of 256 bytes", OpRead, append(uv(3, 1), key...))
	bad("bucket of 256 bytes", OpConfirm, append(append(uv(3, 1), key...), make([]byte, 9)...))
	bad("bucket of 256 bytes", OpDigests, append(uv(3, 1), key...)) // not even a digest request: still refused
	obj := storage.EncodeObject(v1(storage.Key{}))
	bad("bucket of 256 bytes", OpApply, append(append(append(uv(3, 1), key...), uv(uint64(len(obj)))...), obj...))
	bad("object that does not decode", OpApply, append(uv(3, 1, 1, 'b', 1, 'k', 3), 0xff, 0xff, 0xff))

	// The longest bucket storage takes is fine.
	ok := append(uv(255), strings.Repeat("b", 255)...)
	ok = append(ok, uv(1, 'k')...)
	if _, err := Serve(ctx, local, OpRead, append(uv(3, 1), ok...)); err != nil {
		t.Errorf("bucket of 255 bytes: %v", err)
	}
}

// short abbreviates a message for a failure report.
func short(b []byte) []byte {
	if len(b) > 24 {
		return b[:24]
	}
	return b
}

// safeServe is Serve with a panic turned into an error, so that one bad
// input fails its check rather than the whole test binary.
func safeServe(ctx context.Context, local Replica, op string, body []byte) (resp []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("Serve panicked: %v", p)
		}
	}()
	return Serve(ctx, local, op, body)
}

// TestWireLengthBeyondBody: a length prefix that claims more bytes than
// the message has left must be a bad request, not a panic. reader.bytes
// bounds the length by the bytes left *before* the length's own varint was
// consumed, so a length up to that varint's size too large passes the
// check and slicing r.b[:n:n] panics. A peer (or anything that can reach
// the internal API) crashes the handler with a 3-byte body, and a peer's
// crafted answer to Digests or Read panics the exchanging node.
func TestWireLengthBeyondBody(t *testing.T) {
	noLeaks(t)
	f := newWireFixture(t)
	ctx := context.Background()
	for _, c := range []struct {
		op    string
		body  []byte
		valid bool
	}{
		{OpRead, []byte{3, 1, 1}, false},                 // partition 3, one key, bucket of 1 byte: missing
		{OpRead, []byte{3, 1, 0, 1}, false},              // empty bucket, key of 1 byte: missing
		{OpConfirm, []byte{3, 1, 1}, false},              // a digest whose bucket is missing
		{OpApply, []byte{3, 1, 0, 0, 1}, false},          // object of 1 byte: missing
		{OpApply, []byte{3, 1, 0, 0, 0x81, 0x01}, false}, // object of 129 bytes: refused (beyond even the lax bound)
		{OpDigests, []byte{3, 0}, true},                  // no leaves
		{OpRead, []byte{3, 1, 1, 'b', 1, 'k'}, true},     // one key, complete
		{OpApply, []byte{3, 1, 0, 0, 1, 0xff}, false},    // complete, but the object does not decode
	} {
		_, err := safeServe(ctx, Local{Store: f.s}, c.op, c.body)
		if c.valid {
			if err != nil {
				t.Errorf("%s %x: %v", c.op, c.body, err)
			}
			continue
		}
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s %x: %v; want ErrBadRequest", c.op, c.body, err)
		}
	}
	// The same decoder reads a peer's answers.
	r := NewRemote(func(context.Context, string, []byte) ([]byte, error) { return []byte{1, 1}, nil })
	for what, call := range map[string]func() error{
		"digests": func() error { _, err := r.Digests(ctx, 3, []int{0}); return err },
		"read":    func() error { _, err := r.Read(ctx, 3, nil); return err },
	} {
		err := func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("Remote panicked: %v", p)
				}
			}()
			return call()
		}()
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s answered with a length beyond the body: %v; want ErrBadRequest", what, err)
		}
	}
}

func TestServeNotReplica(t *testing.T) {
	noLeaks(t)
	f := newWireFixture(t)
	ctx := context.Background()
	k := storage.Key{Partition: 9, Bucket: "b", Key: "k"}
	for _, r := range []Replica{Local{Store: f.s}, f.remote()} {
		errs := map[string]error{}
		_, errs[OpHashes] = r.Hashes(ctx, 9, 1, []int{0})
		_, errs[OpDigests] = r.Digests(ctx, 9, []int{0})
		_, errs[OpRead] = r.Read(ctx, 9, []storage.Key{k})
		errs[OpApply] = r.Apply(ctx, 9, []storage.PartitionEntry{entry(k, v1(k))})
		_, errs[OpConfirm] = r.Confirm(ctx, 9, []storage.Digest{{Key: k}})
		for op, err := range errs {
			if !errors.Is(err, ErrNotReplica) {
				t.Errorf("%T %s of a partition the store does not keep: %v, want ErrNotReplica", r, op, err)
			}
		}
		// Roots and Pending answer for any partition.
		if roots, err := r.Roots(ctx, []uint32{9}); err != nil || roots[0] != NoRoot {
			t.Errorf("%T roots of a partition not kept: %x, %v", r, roots, err)
		}
		if pending, err := r.Pending(ctx, []uint32{9}); err != nil || pending[0] {
			t.Errorf("%T pending of a partition not kept: %v, %v", r, pending, err)
		}
	}
	if held(t, f.s, k) != nil {
		t.Error("an apply to a partition not kept was stored")
	}
	// Errors other than protocol ones pass through as they are.
	if _, err := (Local{Store: f.s}).Hashes(ctx, 3, 5, []int{0}); err == nil || errors.Is(err, ErrBadRequest) {
		t.Errorf("level out of the tree: %v", err)
	}
	if _, err := f.remote().Digests(ctx, 3, []int{storage.TreeLeaves}); err == nil {
		t.Error("leaf out of range: no error")
	}
}

// TestRemoteRejectsBadResponses: a peer's answer that does not match the
// request is an error, never a short or padded result.
func TestRemoteRejectsBadResponses(t *testing.T) {
	ctx := context.Background()
	respond := func(resp []byte, err error) Remote {
		return NewRemote(func(context.Context, string, []byte) ([]byte, error) { return resp, err })
	}
	h := binary.LittleEndian.AppendUint64(nil, 7)
	for _, c := range []struct {
		what string
		resp []byte
		call func(Remote) error
	}{
		{"one hash for two roots", append([]byte{1}, h...), func(r Remote) error { _, err := r.Roots(ctx, []uint32{1, 2}); return err }},
		{"two hashes for one node", append(append([]byte{2}, h...), h...), func(r Remote) error { _, err := r.Hashes(ctx, 1, 1, []int{0}); return err }},
		{"truncated hash", append([]byte{1}, h[:5]...), func(r Remote) error { _, err := r.Roots(ctx, []uint32{1}); return err }},
		{"trailing bytes", append(append([]byte{1}, h...), 0), func(r Remote) error { _, err := r.Roots(ctx, []uint32{1}); return err }},
		{"bad boolean", []byte{1, 2}, func(r Remote) error { _, err := r.Pending(ctx, []uint32{1}); return err }},
		{"missing boolean", []byte{1}, func(r Remote) error { _, err := r.Confirm(ctx, 1, []storage.Digest{{}}); return err }},
		{"empty", nil, func(r Remote) error { _, err := r.Pending(ctx, []uint32{1}); return err }},
		{"truncated digests", []byte{1, 1, 'b'}, func(r Remote) error { _, err := r.Digests(ctx, 1, []int{0}); return err }},
		{"truncated entries", []byte{1, 1, 'b', 1, 'k', 5, 1}, func(r Remote) error { _, err := r.Read(ctx, 1, nil); return err }},
	} {
		if err := c.call(respond(c.resp, nil)); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", c.what, err)
		}
	}
	boom := errors.New("boom")
	r := respond(nil, boom)
	for _, err := range []error{
		func() error { _, err := r.Roots(ctx, []uint32{1}); return err }(),
		func() error { _, err := r.Hashes(ctx, 1, 1, []int{0}); return err }(),
		func() error { _, err := r.Digests(ctx, 1, []int{0}); return err }(),
		func() error { _, err := r.Read(ctx, 1, nil); return err }(),
		r.Apply(ctx, 1, nil),
		func() error { _, err := r.Confirm(ctx, 1, nil); return err }(),
		func() error { _, err := r.Pending(ctx, nil); return err }(),
	} {
		if !errors.Is(err, boom) {
			t.Errorf("transport error: %v, want it passed through", err)
		}
	}
}

// fuzzOps are the operations FuzzServe chooses from, and one unknown.
var fuzzOps = []string{OpRoots, OpHashes, OpDigests, OpRead, OpApply, OpConfirm, OpPending, "bogus"}

// FuzzServe: Serve on any operation and any body never panics; it answers
// or returns an error, and an unknown operation is a bad request.
func FuzzServe(f *testing.F) {
	fx := newWireFixture(f)
	for i := range fuzzOps {
		f.Add(byte(i), []byte{})
	}
	// Seed with valid requests of every operation.
	fx.exercise(f, fx.remote())
	for op, bodies := range fx.requests {
		i := slices.Index(fuzzOps, op)
		for _, body := range bodies {
			f.Add(byte(i), body)
		}
	}
	local := Local{Store: fx.s}
	f.Fuzz(func(t *testing.T, opByte byte, body []byte) {
		op := fuzzOps[int(opByte)%len(fuzzOps)]
		resp, err := safeServe(context.Background(), local, op, body)
		if err != nil && strings.HasPrefix(err.Error(), "Serve panicked") {
			t.Fatalf("%s %x: %v", op, body, err)
		}
		if err != nil {
			if op == "bogus" && !errors.Is(err, ErrBadRequest) {
				t.Fatalf("unknown op: %v", err)
			}
			return
		}
		// An answer decodes as the answer to its request.
		if op == OpApply && len(resp) != 0 {
			t.Fatalf("apply answered %x", resp)
		}
	})
}
