package antientropy

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/quorumkv/quorumkv/storage"
)

// divergence is how the two sides of a key relate.
type divergence int

const (
	onlyA          divergence = iota // v1 on A, nothing on B
	onlyB                            // nothing on A, v1 on B
	same                             // v1 on both
	siblingOnB                       // v1 on A; v1 and a concurrent version on B
	newerOnA                         // v2 on A, v1 on B
	tombOnA                          // v1 deleted on A, v1 on B
	tombOnlyB                        // nothing on A, a tombstone on B
	bothSiblings                     // v1 with different concurrent versions on each side
	sameTomb                         // the same tombstone on both
	tombAndSibling                   // a tombstone on A, v1 and a concurrent version on B
	divergences
)

// versions returns the objects A and B hold for k under d (nil: absent).
func (d divergence) versions(k storage.Key, at int64) (a, b *storage.Object) {
	switch d {
	case onlyA:
		return v1(k), nil
	case onlyB:
		return nil, v1(k)
	case same:
		return v1(k), v1(k)
	case siblingOnB:
		return v1(k), withSibling(k, "x.1")
	case newerOnA:
		return v2(k), v1(k)
	case tombOnA:
		return deleted(at), v1(k)
	case tombOnlyB:
		return nil, deleted(at)
	case bothSiblings:
		return withSibling(k, "x.1"), withSibling(k, "y.1")
	case sameTomb:
		return deleted(at), deleted(at)
	case tombAndSibling:
		return deleted(at), withSibling(k, "x.1")
	}
	panic(fmt.Sprint("divergence ", int(d)))
}

// TestDiffProperty checks on random pairs of stores that Diff reports
// exactly the keys whose stored versions differ, with their digests, and
// that Exchange then leaves both sides with the merge of both.
func TestDiffProperty(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	a, b := newTestStore(t, "a"), newTestStore(t, "b")
	var iter uint32
	rapid.Check(t, func(rt *rapid.T) {
		// Fresh partitions for every run, so the two stores serve them all.
		iter++
		parts := []uint32{2 * iter, 2*iter + 1}
		names := rapid.SliceOfNDistinct(rapid.StringMatching(`[a-z0-9/]{1,10}`), 1, 24, rapid.ID[string]).Draw(rt, "keys")
		var keys []storage.Key
		var ea, eb []storage.PartitionEntry
		orig := map[storage.Key][2]*storage.Object{}
		for i, name := range names {
			k := storage.Key{
				Partition: parts[rapid.IntRange(0, 1).Draw(rt, fmt.Sprint("part", i))],
				Bucket:    rapid.SampledFrom([]string{"b", "docs"}).Draw(rt, fmt.Sprint("bucket", i)),
				Key:       name,
			}
			d := divergence(rapid.IntRange(0, int(divergences)-1).Draw(rt, fmt.Sprint("divergence", i)))
			at := rapid.Int64Range(1, 1<<40).Draw(rt, fmt.Sprint("deletedAt", i))
			oa, ob := d.versions(k, at)
			keys = append(keys, k)
			orig[k] = [2]*storage.Object{oa, ob}
			if oa != nil {
				ea = append(ea, entry(k, oa))
			}
			if ob != nil {
				eb = append(eb, entry(k, ob))
			}
		}
		apply(rt, a, ea...)
		apply(rt, b, eb...)

		for _, p := range parts {
			// What the stores hold, and which keys differ.
			var want []KeyDiff
			leaves := map[int]bool{}
			for _, k := range keys {
				if k.Partition != p {
					continue
				}
				da, db := digestOf(k, held(rt, a, k)), digestOf(k, held(rt, b, k))
				if da != db {
					want = append(want, KeyDiff{Key: k, Local: da, Peer: db})
					leaves[k.Leaf()] = true
				}
			}
			slices.SortFunc(want, func(x, y KeyDiff) int {
				return cmp.Or(cmp.Compare(x.Key.Bucket, y.Key.Bucket), cmp.Compare(x.Key.Key, y.Key.Key))
			})

			got, st, err := Diff(ctx, p, Local{Store: a}, wire(b), 0)
			if err != nil {
				rt.Fatalf("Diff %d: %v", p, err)
			}
			if !slices.Equal(got, want) {
				rt.Fatalf("Diff of partition %d:\n got %v\nwant %v", p, got, want)
			}
			// Small subtrees are listed whole, so more leaves than differ
			// may be listed, never fewer.
			if st.Leaves < len(leaves) || st.Purgeable != 0 {
				rt.Fatalf("Diff of partition %d: stats %+v, want at least %d leaves", p, st, len(leaves))
			}
			// The other way round, directly: the mirror image.
			back, _, err := Diff(ctx, p, Local{Store: b}, Local{Store: a}, 0)
			if err != nil {
				rt.Fatal(err)
			}
			for i := range back {
				back[i].Local, back[i].Peer = back[i].Peer, back[i].Local
			}
			if !slices.Equal(back, want) {
				rt.Fatalf("Diff of partition %d from B's side:\n got %v\nwant %v", p, back, want)
			}

			res, err := Exchange(ctx, p, Local{Store: a}, wire(b), 0, 3)
			if err != nil {
				rt.Fatalf("Exchange %d: %v", p, err)
			}
			if res.Keys != len(want) || res.Leaves != st.Leaves {
				rt.Fatalf("Exchange %d: %+v, want %d keys in %d leaves", p, res, len(want), st.Leaves)
			}
			for _, k := range keys {
				if k.Partition != p {
					continue
				}
				m := mergeOrNil(orig[k][0], orig[k][1])
				if ga, gb := held(rt, a, k), held(rt, b, k); enc(ga) != enc(m) || enc(gb) != enc(m) {
					rt.Fatalf("%s after the exchange:\n A %+v\n B %+v\nwant the merge %+v", k, ga, gb, m)
				}
			}
			if !slices.Equal(leavesOf(rt, a, p), leavesOf(rt, b, p)) {
				rt.Fatalf("leaves of %d differ after the exchange", p)
			}
		}
	})
}

// TestDiffIdenticalStores: equal data, whichever way it was written, has
// equal trees, and Diff looks no further than the first level.
func TestDiffIdenticalStores(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	a, b := newTestStore(t, "a"), newTestStore(t, "b")
	var es []storage.PartitionEntry
	for i := range 300 {
		k := storage.Key{Partition: 1, Bucket: "b", Key: fmt.Sprint(i)}
		es = append(es, entry(k, v1(k)))
	}
	apply(t, a, es...)
	// B receives the same objects one at a time, in reverse order.
	for _, e := range slices.Backward(es) {
		apply(t, b, e)
	}
	hashes := 0
	counting := NewRemote(func(ctx context.Context, op string, body []byte) ([]byte, error) {
		if op != OpHashes {
			t.Errorf("Diff of equal trees called %s", op)
		}
		hashes++
		return Serve(ctx, Local{Store: b}, op, body)
	})
	diffs, st, err := Diff(ctx, 1, Local{Store: a}, counting, 0)
	if err != nil || diffs != nil || st != (DiffStats{}) {
		t.Fatalf("Diff of equal stores: %v %+v %v", diffs, st, err)
	}
	if hashes != 1 {
		t.Errorf("Diff of equal trees asked for hashes %d times, want 1", hashes)
	}
	roots, err := Local{Store: a}.Roots(ctx, []uint32{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	if roots[0] == 0 || roots[1] != 0 {
		t.Errorf("roots %x: want nonzero for the partition with data, 0 for the empty one", roots)
	}
	if peer, _ := (Local{Store: b}).Roots(ctx, []uint32{1}); peer[0] != roots[0] {
		t.Errorf("equal data, roots %x and %x", roots[0], peer[0])
	}
}

// TestDiffOneKeyCost: one differing key in a dense partition costs 16
// interior and 16 leaf hashes and the digests of one leaf; in a sparse one
// (at most listBelow keys under each interior node) the 16 interior hashes
// and the digests of the differing node's 16 leaves, listed whole.
func TestDiffOneKeyCost(t *testing.T) {
	noLeaks(t)
	for _, tc := range []struct {
		keys           int
		hashes, leaves int
	}{{keys: 2000, hashes: 32, leaves: 1}, {keys: 200, hashes: 16, leaves: 16}} {
		t.Run(fmt.Sprint(tc.keys), func(t *testing.T) {
			ctx := context.Background()
			a, b := newTestStore(t, "a"), newTestStore(t, "b")
			var es []storage.PartitionEntry
			for i := range tc.keys {
				k := storage.Key{Partition: 1, Bucket: "b", Key: fmt.Sprint(i)}
				es = append(es, entry(k, v1(k)))
			}
			apply(t, a, es...)
			apply(t, b, es...)
			k := storage.Key{Partition: 1, Bucket: "b", Key: "odd one"}
			apply(t, b, entry(k, v1(k)))

			requested := map[string]int{}
			counting := NewRemote(func(ctx context.Context, op string, body []byte) ([]byte, error) {
				resp, err := Serve(ctx, Local{Store: b}, op, body)
				switch op {
				case OpHashes:
					requested[op] += (len(resp) - 1) / 8
				case OpDigests:
					rd := &reader{b: body}
					rd.partition()
					requested["leaves"] += len(rd.runs())
				}
				return resp, err
			})
			diffs, st, err := Diff(ctx, 1, Local{Store: a}, counting, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := []KeyDiff{{Key: k, Peer: digestOf(k, held(t, b, k))}}
			if !slices.Equal(diffs, want) || st.Leaves != tc.leaves {
				t.Fatalf("Diff %v %+v, want %v over %d leaves", diffs, st, want, tc.leaves)
			}
			if !maps.Equal(requested, map[string]int{OpHashes: tc.hashes, "leaves": tc.leaves}) {
				t.Errorf("one differing key cost %v, want %d hashes and %d leaves", requested, tc.hashes, tc.leaves)
			}
		})
	}
}

// TestPurgeableTombstones: a tombstone deleted before purgeBefore that the
// other side lacks is set aside (the other side purged it); one deleted at
// or after it is reported and repaired.
func TestPurgeableTombstones(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	k1 := storage.Key{Partition: 4, Bucket: "b", Key: "gone on B"} // tombstone on A only
	k2 := storage.Key{Partition: 4, Bucket: "b", Key: "gone on A"} // tombstone on B only
	k3 := storage.Key{Partition: 4, Bucket: "b", Key: "late"}      // two tombstones, the later one too recent
	k4 := storage.Key{Partition: 4, Bucket: "b", Key: "mixed"}     // a tombstone and a live version: never set aside
	k5 := storage.Key{Partition: 4, Bucket: "b", Key: "two"}       // different tombstones on both sides: always reported
	late := object([]storage.Entry{{Actor: writer, Counter: 2}, {Actor: "x.1", Counter: 1}},
		tombstone(writer, 2, at), tombstone("x.1", 1, at+10))
	mixed := object([]storage.Entry{{Actor: writer, Counter: 2}, {Actor: "x.1", Counter: 1}},
		tombstone(writer, 2, at), live(k4, "x.1", 1))
	otherTomb := object([]storage.Entry{{Actor: writer, Counter: 2}, {Actor: "x.1", Counter: 1}},
		tombstone(writer, 2, at), tombstone("x.1", 1, at))

	setup := func(t *testing.T) (a, b *testStore) {
		a, b = newTestStore(t, "a"), newTestStore(t, "b")
		apply(t, a, entry(k1, deleted(at)), entry(k3, late), entry(k4, mixed), entry(k5, deleted(at)))
		apply(t, b, entry(k2, deleted(at)), entry(k5, otherTomb))
		return a, b
	}
	keys := func(ds []KeyDiff) []storage.Key {
		var out []storage.Key
		for _, d := range ds {
			out = append(out, d.Key)
		}
		slices.SortFunc(out, func(x, y storage.Key) int { return cmp.Compare(x.Key, y.Key) })
		return out
	}
	all := []storage.Key{k2, k1, k3, k4, k5} // by name
	for _, c := range []struct {
		name        string
		purgeBefore int64
		reported    []storage.Key
		purgeable   int
	}{
		{"no purging", 0, all, 0},
		{"before the deletion", at - 1, all, 0},
		{"at the deletion", at, all, 0},
		{"between the tombstones", at + 5, []storage.Key{k3, k4, k5}, 2},
		{"after every deletion", at + 11, []storage.Key{k4, k5}, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := setup(t)
			diffs, st, err := Diff(ctx, 4, Local{Store: a}, wire(b), c.purgeBefore)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keys(diffs), c.reported) || st.Purgeable != c.purgeable {
				t.Fatalf("Diff reported %v, %d purgeable; want %v, %d", keys(diffs), st.Purgeable, c.reported, c.purgeable)
			}
			orig := map[storage.Key][2]*storage.Object{}
			for _, k := range all {
				orig[k] = [2]*storage.Object{held(t, a, k), held(t, b, k)}
			}
			res, err := Exchange(ctx, 4, Local{Store: a}, wire(b), c.purgeBefore, 256)
			if err != nil {
				t.Fatal(err)
			}
			if res.Keys != len(c.reported) {
				t.Errorf("Exchange: %+v, want %d keys", res, len(c.reported))
			}
			for _, k := range all {
				want := [2]*storage.Object{orig[k][0], orig[k][1]} // set aside: untouched
				if slices.Contains(c.reported, k) {
					m := mergeOrNil(orig[k][0], orig[k][1])
					want = [2]*storage.Object{m, m}
				}
				if ga, gb := held(t, a, k), held(t, b, k); enc(ga) != enc(want[0]) || enc(gb) != enc(want[1]) {
					t.Errorf("%s after the exchange: A %+v, B %+v; want %+v, %+v", k, ga, gb, want[0], want[1])
				}
			}
			again, err := Exchange(ctx, 4, Local{Store: a}, wire(b), c.purgeBefore, 256)
			if err != nil || again.Keys != 0 || again.Pulled+again.Pushed != 0 {
				t.Errorf("second exchange: %+v, %v", again, err)
			}
		})
	}
}

func TestDiffNotReplica(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	a, b := newTestStore(t, "a"), newTestStore(t, "b")
	k := storage.Key{Partition: 3, Bucket: "b", Key: "k"}
	apply(t, a, entry(k, v1(k)))
	b.setKept(3, false)
	if _, err := Exchange(ctx, 3, Local{Store: a}, wire(b), 0, 256); !errorsIs(err, ErrNotReplica) {
		t.Errorf("exchange with a peer that does not keep the partition: %v, want ErrNotReplica", err)
	}
	if _, _, err := Diff(ctx, 3, Local{Store: b}, Local{Store: a}, 0); !errorsIs(err, ErrNotReplica) {
		t.Errorf("diff from a node that does not keep the partition: %v, want ErrNotReplica", err)
	}
	if held(t, b, k) != nil {
		t.Error("a partition the peer does not keep was repaired there")
	}
}
