package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// testSeed returns the seed for a randomized test: def, or the value of
// STORAGE_TEST_SEED to explore others. It is logged if the test fails.
func testSeed(t *testing.T, def uint64) uint64 {
	t.Helper()
	seed := def
	if v := os.Getenv("STORAGE_TEST_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("STORAGE_TEST_SEED: %v", err)
		}
		seed = n
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	})
	return seed
}

// recomputeLeaves computes partition p's tree leaves from its objects,
// reading the data range directly: every object XORs digest(key, raw) into
// the leaf its key names. Stored bytes that fail to decode count as absent,
// as they do for RebuildTree and Digests (anti-entropy replaces them), and
// so do keys whose leaf field is not their key's leaf. skipped is how many
// entries were left out for either reason.
func recomputeLeaves(t testing.TB, s *Store, p uint32) (leaves []uint64, skipped int) {
	t.Helper()
	leaves = make([]uint64, TreeLeaves)
	lo, hi := partitionBounds(p)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k, err := decodeKey(it.Key())
		if err != nil {
			skipped++
			continue
		}
		if k.Partition != p || keyLeaf(it.Key()) != k.Leaf() {
			t.Fatalf("key %v in partition %d's range, leaf field %d", k, p, keyLeaf(it.Key()))
		}
		if _, err := decodeStored(it.Value()); err != nil {
			skipped++
			continue
		}
		leaves[k.Leaf()] ^= digest(it.Key(), it.Value())
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return leaves, skipped
}

func readLeavesT(t testing.TB, s *Store, p uint32) []uint64 {
	t.Helper()
	l, err := s.Leaves(p)
	if err != nil {
		t.Fatalf("Leaves(%d): %v", p, err)
	}
	if len(l) != TreeLeaves {
		t.Fatalf("Leaves(%d): %d leaves, want %d", p, len(l), TreeLeaves)
	}
	return l
}

// differingLeaves lists the leaves where a and b differ.
func differingLeaves(a, b []uint64) []int {
	var d []int
	for i := range a {
		if a[i] != b[i] {
			d = append(d, i)
		}
	}
	return d
}

// checkLeaves fails unless the stored leaves of each partition equal the
// ones recomputed from its objects.
func checkLeaves(t testing.TB, s *Store, what string, parts ...uint32) {
	t.Helper()
	for _, p := range parts {
		got := readLeavesT(t, s, p)
		want, _ := recomputeLeaves(t, s, p)
		if d := differingLeaves(got, want); len(d) > 0 {
			l := d[0]
			t.Fatalf("%s: partition %d: %d leaves differ from the recompute (leaf %d is %#x, want %#x)", what, p, len(d), l, got[l], want[l])
		}
	}
}

// tombstoneTime is when o was deleted, computed here independently of the
// store: the latest LastModified of its tombstones (at least 1) if it holds
// only tombstones, else 0.
func tombstoneTime(o *Object) int64 {
	if o == nil || len(o.Siblings) == 0 {
		return 0
	}
	var at int64 = 1
	for _, s := range o.Siblings {
		if !s.Tombstone {
			return 0
		}
		at = max(at, s.LastModified)
	}
	return at
}

// wantTombstones is what Tombstones(p, MaxInt64, ∞) must return, computed
// from the objects: every tombstone-only object, in key order.
func wantTombstones(t testing.TB, s *Store, p uint32) []Digest {
	t.Helper()
	out := []Digest{}
	lo, hi := partitionBounds(p)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k, err := decodeKey(it.Key())
		if err != nil {
			continue
		}
		o, err := decodeStored(it.Value())
		if err != nil {
			continue
		}
		if at := tombstoneTime(o); at != 0 {
			out = append(out, Digest{Key: k, Hash: digest(it.Key(), it.Value()), DeletedAt: at})
		}
	}
	return out
}

func tombstones(t testing.TB, s *Store, p uint32, before int64, limit int) []Digest {
	t.Helper()
	ds, err := s.Tombstones(p, before, limit)
	if err != nil {
		t.Fatalf("Tombstones(%d): %v", p, err)
	}
	return ds
}

// checkTombIndex fails unless the tombstone index of each partition lists
// exactly its tombstone-only objects, with their deletion time and digest.
func checkTombIndex(t testing.TB, s *Store, what string, parts ...uint32) {
	t.Helper()
	for _, p := range parts {
		got := tombstones(t, s, p, math.MaxInt64, math.MaxInt)
		if want := wantTombstones(t, s, p); !slices.Equal(got, want) {
			t.Fatalf("%s: partition %d: tombstone index\n%+v\nwant\n%+v", what, p, got, want)
		}
	}
}

func checkTree(t testing.TB, s *Store, what string, parts ...uint32) {
	t.Helper()
	checkLeaves(t, s, what, parts...)
	checkTombIndex(t, s, what, parts...)
}

func rebuild(t testing.TB, s *Store, p uint32) int {
	t.Helper()
	n, err := s.RebuildTree(p)
	if err != nil {
		t.Fatalf("RebuildTree(%d): %v", p, err)
	}
	return n
}

// getOrNil returns k's object, nil if it is absent or corrupt.
func getOrNil(t testing.TB, s *Store, k Key) *Object {
	t.Helper()
	o, err := s.Get(k)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// rawValue returns a copy of the bytes stored under k.
func rawValue(t testing.TB, s *Store, k Key) []byte {
	t.Helper()
	v, closer, err := s.db.Get(k.encode())
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	return bytes.Clone(v)
}

// pickDistinctLeaves returns n entries whose keys are in n different
// leaves.
func pickDistinctLeaves(t testing.TB, es []PartitionEntry, n int) []PartitionEntry {
	t.Helper()
	var out []PartitionEntry
	seen := map[int]bool{}
	for _, e := range es {
		if !seen[e.Key.Leaf()] {
			seen[e.Key.Leaf()] = true
			out = append(out, e)
			if len(out) == n {
				return out
			}
		}
	}
	t.Fatalf("fewer than %d leaves hold objects", n)
	return nil
}

// peer issues versions as another replica would, each dot once.
type peer struct {
	actor string
	n     uint64
}

// write returns the object the peer holds after writing on top of base (nil
// for a blind write), as Apply would receive it.
func (pr *peer) write(base *Object, tombstone bool, now int64) *Object {
	pr.n++
	d := Dot{pr.actor, pr.n}
	var ctx Context
	if base != nil {
		ctx = base.Context
	}
	s := Sibling{LastModified: now, Tombstone: tombstone}
	if !tombstone {
		s.Value = fmt.Appendf(nil, "%s/%d", pr.actor, pr.n)
		s.ContentType = "text/plain"
	}
	o, _ := Update(base, d, ctx, s)
	return o
}

// corruptRaw changes the bytes under three objects of es (in three
// different leaves) behind the store's back: flips a byte of the first,
// deletes the second, replaces the third with the valid stored form of
// another object. It returns the three entries and the replacement.
func corruptRaw(t testing.TB, s *Store, es []PartitionEntry) (flip, del, repl PartitionEntry, other *Object) {
	t.Helper()
	picked := pickDistinctLeaves(t, es, 3)
	flip, del, repl = picked[0], picked[1], picked[2]
	raw := rawValue(t, s, flip.Key)
	raw[len(raw)/2] ^= 0x55
	if _, err := decodeStored(raw); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped bytes still decode: %v", err)
	}
	other = version(Dot{"evil.1", 99})
	for _, err := range []error{
		s.db.Set(flip.Key.encode(), raw, pebble.Sync),
		s.db.Delete(del.Key.encode(), pebble.Sync),
		s.db.Set(repl.Key.encode(), appendStored(nil, other), pebble.Sync),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	forget(s, flip.Key, del.Key, repl.Key)
	return flip, del, repl, other
}

// forget drops keys from the object cache, as a restart would, after a
// test changed their bytes behind the store's back: the tests are about
// what the store makes of the bytes on disk, which a cached object would
// hide until evicted.
func forget(s *Store, keys ...Key) {
	for _, k := range keys {
		s.objects.set(k.encode(), current{})
	}
}

// TestLeavesMatchRecompute runs a random sequence of every kind of write on
// a few partitions and checks after each step that the leaves and the
// tombstone index equal what the objects say.
func TestLeavesMatchRecompute(t *testing.T) {
	seed := testSeed(t, 1)
	rng := rand.New(rand.NewPCG(seed, 0x7ee))
	s := open(t, t.TempDir())
	defer s.Close()
	parts := []uint32{0, 1, 2, math.MaxUint32}
	keys := make([]Key, 200)
	for i := range keys {
		keys[i] = Key{Partition: parts[i%len(parts)], Bucket: fmt.Sprintf("b%d", i%3), Key: fmt.Sprintf("k%03d", i)}
	}
	randKey := func() Key { return keys[rng.IntN(len(keys))] }
	peers := []*peer{{actor: "p.1"}, {actor: "p.2"}, {actor: "p.3"}}
	now := func() int64 { return 1e18 + rng.Int64N(1e12) }
	// peerWrite is what some peer holds after writing k: on top of what
	// this store holds, or blind.
	peerWrite := func(k Key) *Object {
		var base *Object
		if rng.IntN(2) == 0 {
			base = getOrNil(t, s, k)
		}
		return peers[rng.IntN(len(peers))].write(base, rng.IntN(10) < 3, now())
	}
	var sent []PartitionEntry // objects applied so far, to resend stale
	ops := map[string]int{}
	for step := range 400 {
		var op string
		switch r := rng.IntN(100); {
		case r < 30:
			op = "put"
			k := randKey()
			var ctx Context
			if o := getOrNil(t, s, k); o != nil && rng.IntN(3) > 0 {
				ctx = o.Context
			}
			tomb := rng.IntN(10) < 4
			w := Write{Context: ctx, Tombstone: tomb, Now: time.Unix(0, now())}
			if !tomb {
				w.Value = fmt.Appendf(nil, "v%d", step)
			}
			if _, err := s.Put(k, w); err != nil {
				t.Fatalf("step %d: put %v: %v", step, k, err)
			}
		case r < 50:
			op = "apply"
			e := PartitionEntry{Key: randKey()}
			if len(sent) > 0 && rng.IntN(4) == 0 {
				op = "apply-stale"
				e = sent[rng.IntN(len(sent))]
			} else {
				e.Object = peerWrite(e.Key)
				sent = append(sent, e)
			}
			got, err := s.Apply(e.Key, e.Object)
			if err != nil {
				t.Fatalf("step %d: apply %v: %v", step, e.Key, err)
			}
			if stored := getOrNil(t, s, e.Key); !equalObjects(got, stored) {
				t.Fatalf("step %d: Apply returned %+v, stored %+v", step, got, stored)
			}
		case r < 65:
			op = "apply-many"
			var batch []PartitionEntry
			for range 1 + rng.IntN(8) {
				k := randKey()
				if len(batch) > 0 && rng.IntN(4) == 0 {
					k = batch[rng.IntN(len(batch))].Key // duplicate keys merge
				}
				batch = append(batch, PartitionEntry{Key: k, Object: peerWrite(k)})
			}
			if err := s.ApplyMany(batch); err != nil {
				t.Fatalf("step %d: apply many: %v", step, err)
			}
			sent = append(sent, batch...)
		case r < 82:
			op = "purge"
			p := parts[rng.IntN(len(parts))]
			var ds []Digest
			purge := map[Key]bool{}
			for _, d := range tombstones(t, s, p, math.MaxInt64, 4) {
				if rng.IntN(3) == 0 {
					d.Hash ^= 1 << rng.IntN(64) // stale: not purged
				} else {
					purge[d.Key] = true
				}
				ds = append(ds, d)
			}
			// A live object or an absent key, named with its true digest,
			// is never purged.
			k := keys[rng.IntN(len(keys)/len(parts))*len(parts)+slices.Index(parts, p)]
			if o := getOrNil(t, s, k); o == nil || tombstoneTime(o) == 0 {
				var h uint64
				if o != nil {
					h = ObjectDigest(k, o)
				}
				ds = append(ds, Digest{Key: k, Hash: h})
			}
			n, err := s.Purge(ds)
			if err != nil {
				t.Fatalf("step %d: purge: %v", step, err)
			}
			if n != len(purge) {
				t.Fatalf("step %d: purged %d of %+v, want %d", step, n, ds, len(purge))
			}
			for _, d := range ds {
				_, err := s.Get(d.Key)
				stale := !purge[d.Key] && d.DeletedAt != 0 // listed, not purged
				if (purge[d.Key] && !errors.Is(err, ErrNotFound)) || (stale && err != nil) {
					t.Fatalf("step %d: after purging %v (purge %v): Get %v", step, d.Key, purge[d.Key], err)
				}
			}
		case r < 90:
			op = "rebuild"
			p := parts[rng.IntN(len(parts))]
			if n := rebuild(t, s, p); n != 0 {
				t.Fatalf("step %d: RebuildTree(%d) fixed %d leaves of an intact store", step, p, n)
			}
		case r < 92:
			op = "delete-partition"
			if err := s.DeletePartition(parts[rng.IntN(len(parts))]); err != nil {
				t.Fatal(err)
			}
		default:
			op = "apply-same"
			k := randKey()
			if o := getOrNil(t, s, k); o != nil {
				if _, err := s.Apply(k, o); err != nil {
					t.Fatal(err)
				}
			}
		}
		ops[op]++
		checkTree(t, s, fmt.Sprintf("step %d (%s)", step, op), parts...)
	}
	for _, p := range parts {
		if n := rebuild(t, s, p); n != 0 {
			t.Fatalf("RebuildTree(%d) fixed %d leaves of an intact store", p, n)
		}
		if _, skipped := recomputeLeaves(t, s, p); skipped != 0 {
			t.Fatalf("partition %d holds %d undecodable entries", p, skipped)
		}
	}
	if s.Corrupt() != 0 {
		t.Fatalf("Corrupt() = %d on an intact store", s.Corrupt())
	}
	t.Logf("ops %v", ops)
}

// TestRebuildFindsRawChanges changes bytes under the store, bypassing
// stage(), and checks that RebuildTree notices and fixes exactly the
// affected leaves, that corrupt values read as errors or absent, and that a
// repair write replaces them.
func TestRebuildFindsRawChanges(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const p, q = 3, 4
	filled := fillPartitions(t, s, 60, p, q)
	checkTree(t, s, "filled", p, q)
	before := readLeavesT(t, s, p)

	flip, del, repl, other := corruptRaw(t, s, filled[p])
	// A key whose leaf field is not its key's leaf: no object of this
	// store, in no leaf.
	bad := repl.Key.encode()
	badLeaf := (keyLeaf(bad) + 1) % TreeLeaves
	binary.BigEndian.PutUint16(bad[5:], uint16(badLeaf))
	if err := s.db.Set(bad, appendStored(nil, other), pebble.Sync); err != nil {
		t.Fatal(err)
	}

	if got := readLeavesT(t, s, p); !slices.Equal(got, before) {
		t.Fatalf("leaves moved without a write through the store: %v", differingLeaves(got, before))
	}
	want, skipped := recomputeLeaves(t, s, p)
	if skipped != 2 {
		t.Fatalf("recompute skipped %d entries, want 2 (the flipped value and the bad key)", skipped)
	}
	affected := []int{flip.Key.Leaf(), del.Key.Leaf(), repl.Key.Leaf()}
	slices.Sort(affected)
	if d := differingLeaves(before, want); !slices.Equal(d, affected) {
		t.Fatalf("raw changes affect leaves %v, want %v", d, affected)
	}

	c0 := s.Corrupt()
	if n := rebuild(t, s, p); n != len(affected) {
		t.Fatalf("RebuildTree fixed %d leaves, want %d", n, len(affected))
	}
	if c := s.Corrupt(); c < c0+2 {
		t.Fatalf("Corrupt() went from %d to %d over a rebuild that met two corrupt entries", c0, c)
	}
	checkLeaves(t, s, "after rebuild", p)
	if n := rebuild(t, s, p); n != 0 {
		t.Fatalf("second RebuildTree fixed %d leaves", n)
	}
	checkTree(t, s, "untouched neighbour", q)
	if n := rebuild(t, s, q); n != 0 {
		t.Fatalf("RebuildTree of the untouched neighbour fixed %d leaves", n)
	}

	if _, err := s.Get(flip.Key); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of flipped bytes: %v, want ErrCorrupt", err)
	}
	if _, err := s.Get(del.Key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of deleted bytes: %v, want ErrNotFound", err)
	}
	if o, err := s.Get(repl.Key); err != nil || !equalObjects(o, other) {
		t.Fatalf("Get of replaced bytes: %+v %v", o, err)
	}

	// Digests lists what is there and readable: not the flipped value, not
	// the deleted one, not the bad key; the replacement by its own digest.
	leaves := append(slices.Clone(affected), badLeaf)
	var wantDs []Digest
	for _, e := range filled[p] {
		if !slices.Contains(leaves, e.Key.Leaf()) || e.Key == flip.Key || e.Key == del.Key {
			continue
		}
		o := e.Object
		if e.Key == repl.Key {
			o = other
		}
		wantDs = append(wantDs, Digest{Key: e.Key, Hash: ObjectDigest(e.Key, o)})
	}
	c0 = s.Corrupt()
	ds, err := s.Digests(p, leaves)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ds, wantDs) {
		t.Fatalf("Digests\n%+v\nwant\n%+v", ds, wantDs)
	}
	if c := s.Corrupt(); c < c0+2 {
		t.Fatalf("Corrupt() went from %d to %d over Digests that met two corrupt entries", c0, c)
	}
	checkDigestsXOR(t, s, p, leaves, ds)
	got, err := s.Read([]Key{flip.Key, del.Key, repl.Key})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Key != repl.Key || !equalObjects(got[0].Object, other) {
		t.Fatalf("Read returned %+v, want only the replaced object", got)
	}

	// Repair: a good object replaces the corrupt bytes, and the deleted one
	// comes back by a transfer.
	m, err := s.Apply(flip.Key, flip.Object)
	if err != nil {
		t.Fatal(err)
	}
	if !equalObjects(m, flip.Object) {
		t.Fatalf("Apply over corrupt bytes returned %+v, want %+v", m, flip.Object)
	}
	if o, err := s.Get(flip.Key); err != nil || !equalObjects(o, flip.Object) {
		t.Fatalf("Get after repair: %+v %v", o, err)
	}
	if err := s.ApplyMany([]PartitionEntry{del}); err != nil {
		t.Fatal(err)
	}
	checkLeaves(t, s, "after repair", p)
	if n := rebuild(t, s, p); n != 0 {
		t.Fatalf("RebuildTree after repair fixed %d leaves", n)
	}
	ds, err = s.Digests(p, []int{flip.Key.Leaf(), del.Key.Leaf()})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []PartitionEntry{flip, del} {
		if !slices.Contains(ds, Digest{Key: e.Key, Hash: ObjectDigest(e.Key, e.Object)}) {
			t.Fatalf("Digests after repair miss %v: %+v", e.Key, ds)
		}
	}
}

// checkDigestsXOR checks the anti-entropy contract between Digests and
// Leaves: the digests listed for a leaf XOR to the leaf.
func checkDigestsXOR(t testing.TB, s *Store, p uint32, leaves []int, ds []Digest) {
	t.Helper()
	stored := readLeavesT(t, s, p)
	x := map[int]uint64{}
	for _, d := range ds {
		x[d.Key.Leaf()] ^= d.Hash
	}
	for _, l := range leaves {
		if x[l] != stored[l] {
			t.Fatalf("partition %d leaf %d: digests XOR to %#x, leaf is %#x", p, l, x[l], stored[l])
		}
	}
}

// TestRebuildCommutesWithWrites races RebuildTree against writers to the
// same partition. The tree starts wrong on three leaves (bytes changed
// under the store); the writes preserve that error exactly, so the first
// rebuild must fix exactly those three leaves wherever it lands among the
// writes, every later one nothing, and the writers' own updates survive.
func TestRebuildCommutesWithWrites(t *testing.T) {
	seed := testSeed(t, 3)
	s := open(t, t.TempDir())
	defer s.Close()
	const p = 5
	filled := fillPartitions(t, s, 60, p)[p]
	keys := make([]Key, len(filled))
	for i, e := range filled {
		keys[i] = e.Key
	}
	corruptRaw(t, s, filled)
	want, _ := recomputeLeaves(t, s, p)
	if d := differingLeaves(readLeavesT(t, s, p), want); len(d) != 3 {
		t.Fatalf("raw changes affect %d leaves, want 3", len(d))
	}

	start := make(chan struct{})
	var writers sync.WaitGroup
	for w := range 6 {
		writers.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			pr := &peer{actor: fmt.Sprintf("w%d.1", w)}
			get := func(k Key) *Object {
				o, err := s.Get(k)
				if err != nil {
					return nil // absent, or corrupt until someone repairs it
				}
				return o
			}
			<-start
			for i := range 40 {
				k := keys[rng.IntN(len(keys))]
				tomb := rng.IntN(3) == 0
				var err error
				switch rng.IntN(5) {
				case 0, 1:
					var ctx Context
					if o := get(k); o != nil && rng.IntN(2) == 0 {
						ctx = o.Context
					}
					_, err = s.Put(k, Write{Context: ctx, Value: fmt.Appendf(nil, "w%d/%d", w, i), Tombstone: tomb, Now: time.Unix(int64(i), 0)})
				case 2:
					_, err = s.Apply(k, pr.write(get(k), tomb, int64(i)))
				case 3:
					k2 := keys[rng.IntN(len(keys))]
					err = s.ApplyMany([]PartitionEntry{
						{k, pr.write(get(k), tomb, int64(i))},
						{k2, pr.write(nil, !tomb, int64(i))},
					})
				case 4:
					var ds []Digest
					if ds, err = s.Tombstones(p, math.MaxInt64, 3); err == nil {
						_, err = s.Purge(ds)
					}
				}
				if err != nil {
					t.Errorf("writer %d op %d: %v", w, i, err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	var fixes []int
	var rebuilder sync.WaitGroup
	rebuilder.Go(func() {
		<-start
		for {
			n, err := s.RebuildTree(p)
			if err != nil {
				t.Errorf("RebuildTree: %v", err)
				return
			}
			fixes = append(fixes, n)
			select {
			case <-done:
				return
			default:
			}
		}
	})
	close(start)
	writers.Wait()
	close(done)
	rebuilder.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if fixes[0] != 3 || slices.ContainsFunc(fixes[1:], func(n int) bool { return n != 0 }) {
		t.Fatalf("rebuilds fixed %v leaves, want 3 then nothing", fixes)
	}
	t.Logf("%d rebuilds raced the writers", len(fixes))
	checkTree(t, s, "after racing rebuilds", p)
	if n := rebuild(t, s, p); n != 0 {
		t.Fatalf("final RebuildTree fixed %d leaves", n)
	}
}

// TestRebuildWithWritesMidScan is the deterministic counterpart of
// TestRebuildCommutesWithWrites: writes land while RebuildTree is scanning
// the objects (run from the log handler that the rebuild calls when it
// meets the corrupt first object), to keys the scan has not reached yet.
// The rebuild reads leaves and objects at one snapshot, so it fixes only
// the leaf the corruption broke and the writes keep their updates.
func TestRebuildWithWritesMidScan(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const p = 6
	filled := fillPartitions(t, s, 40, p)[p]
	first := filled[0] // the first object the scan meets
	raw := rawValue(t, s, first.Key)
	raw[len(raw)-1] ^= 1 // breaks the checksum
	if err := s.db.Set(first.Key.encode(), raw, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	forget(s, first.Key)
	later := filled[len(filled)-6:]
	if later[0].Key.Leaf() == first.Key.Leaf() {
		t.Fatal("the test needs the written keys after the corrupt one's leaf")
	}
	var once atomic.Bool
	s.cfg.Logger = slog.New(onLog{func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		for i, e := range later {
			var err error
			switch i % 3 {
			case 0:
				_, err = s.Put(e.Key, Write{Context: e.Object.Context, Value: []byte("mid-scan"), Now: time.Unix(3, 0)})
			case 1:
				_, err = s.Put(e.Key, Write{Tombstone: true, Now: time.Unix(3, 0)})
			case 2:
				_, err = s.Apply(e.Key, (&peer{actor: "m.1"}).write(nil, false, 3))
			}
			if err != nil {
				t.Error(err)
			}
		}
	}})
	if n := rebuild(t, s, p); n != 1 {
		t.Fatalf("RebuildTree fixed %d leaves, want 1", n)
	}
	if !once.Load() {
		t.Fatal("the rebuild never met the corrupt object")
	}
	checkTree(t, s, "writes during the rebuild", p)
	if n := rebuild(t, s, p); n != 0 {
		t.Fatalf("second RebuildTree fixed %d leaves", n)
	}
}

// TestTreeSurvivesReopen checks that the leaves, kept as merge operands,
// read the same after a restart, a flush and a compaction (which runs the
// merge operator), and keep taking updates.
func TestTreeSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	parts := []uint32{0, 1, math.MaxUint32}
	filled := fillPartitions(t, s, 50, parts...)
	for i, e := range filled[1][:10] {
		if _, err := s.Put(e.Key, Write{Context: e.Object.Context, Tombstone: true, Now: time.Unix(int64(i+1), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	ts := tombstones(t, s, 1, math.MaxInt64, 3)
	if n, err := s.Purge(ts); err != nil || n != 3 {
		t.Fatalf("purge: %d %v", n, err)
	}
	checkTree(t, s, "before close", parts...)
	saved := map[uint32][]uint64{}
	savedTombs := map[uint32][]Digest{}
	for _, p := range parts {
		saved[p] = readLeavesT(t, s, p)
		savedTombs[p] = tombstones(t, s, p, math.MaxInt64, math.MaxInt)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A closed store refuses the tree calls.
	for name, err := range map[string]error{
		"Leaves":      second(s.Leaves(1)),
		"Digests":     second(s.Digests(1, []int{0})),
		"Read":        second(s.Read([]Key{k1})),
		"RebuildTree": second(s.RebuildTree(1)),
		"Tombstones":  second(s.Tombstones(1, 1, 1)),
		"Purge":       second(s.Purge(ts)),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s on a closed store: %v, want ErrClosed", name, err)
		}
	}

	reopened := func(what string) {
		t.Helper()
		for _, p := range parts {
			if got := readLeavesT(t, s, p); !slices.Equal(got, saved[p]) {
				t.Fatalf("%s: partition %d: leaves %v changed", what, p, differingLeaves(got, saved[p]))
			}
			if got := tombstones(t, s, p, math.MaxInt64, math.MaxInt); !slices.Equal(got, savedTombs[p]) {
				t.Fatalf("%s: partition %d: tombstone index changed", what, p)
			}
		}
		checkTree(t, s, what, parts...)
	}
	s = open(t, dir)
	defer func() { s.Close() }()
	reopened("reopened")
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Compact(context.Background(), []byte{prefixData}, []byte{prefixTomb + 1}, false); err != nil {
		t.Fatal(err)
	}
	reopened("compacted")
	for _, p := range parts {
		if n := rebuild(t, s, p); n != 0 {
			t.Fatalf("RebuildTree(%d) after reopen fixed %d leaves", p, n)
		}
	}
	// Updates after the restart merge onto the compacted leaves.
	for i, e := range filled[0][:20] {
		if i%2 == 0 {
			put(t, s, e.Key, e.Object.Context, "again")
		} else if _, err := s.Apply(e.Key, (&peer{actor: "r.1"}).write(nil, true, 5)); err != nil {
			t.Fatal(err)
		}
	}
	checkTree(t, s, "written after reopen", parts...)
	for _, p := range parts {
		saved[p] = readLeavesT(t, s, p)
		savedTombs[p] = tombstones(t, s, p, math.MaxInt64, math.MaxInt)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	reopened("reopened twice")
}

func second[T any](_ T, err error) error { return err }

// TestDigests checks that Digests lists exactly the objects of the given
// leaves, each with its ObjectDigest and, for tombstone-only objects, when
// they were deleted.
func TestDigests(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const p, q = 9, 10
	type wantObj struct {
		key       Key
		deletedAt int64
	}
	var objs []wantObj
	for i := range 120 {
		k := Key{Partition: p, Bucket: "b", Key: fmt.Sprintf("k%03d", i)}
		// The same bucket and key in q: same leaf, another partition.
		put(t, s, Key{Partition: q, Bucket: k.Bucket, Key: k.Key}, Context{}, "q")
		switch i % 4 {
		case 0: // live
			put(t, s, k, Context{}, "live")
			objs = append(objs, wantObj{k, 0})
		case 1: // deleted
			at := time.Unix(100+int64(i), 0)
			if _, err := s.Put(k, Write{Tombstone: true, Now: at}); err != nil {
				t.Fatal(err)
			}
			objs = append(objs, wantObj{k, at.UnixNano()})
		case 2: // a live version and a concurrent delete: not deleted
			put(t, s, k, Context{}, "live")
			if _, err := s.Put(k, Write{Tombstone: true, Now: time.Unix(7, 0)}); err != nil {
				t.Fatal(err)
			}
			objs = append(objs, wantObj{k, 0})
		case 3: // two concurrent deletes: deleted at the later one
			at := time.Unix(200+int64(i), 0)
			for _, now := range []time.Time{at, time.Unix(50, 0)} {
				if _, err := s.Put(k, Write{Tombstone: true, Now: now}); err != nil {
					t.Fatal(err)
				}
			}
			if o, _ := s.Get(k); len(o.Siblings) != 2 {
				t.Fatalf("%v: %d siblings, want 2 concurrent tombstones", k, len(o.Siblings))
			}
			objs = append(objs, wantObj{k, at.UnixNano()})
		}
	}
	slices.SortFunc(objs, func(a, b wantObj) int { return bytes.Compare(a.key.encode(), b.key.encode()) })
	expect := func(leaves []int) []Digest {
		out := []Digest{}
		for _, o := range objs {
			if slices.Contains(leaves, o.key.Leaf()) {
				obj, err := s.Get(o.key)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, Digest{Key: o.key, Hash: ObjectDigest(o.key, obj), DeletedAt: o.deletedAt})
			}
		}
		return out
	}
	digests := func(leaves []int) []Digest {
		t.Helper()
		ds, err := s.Digests(p, leaves)
		if err != nil {
			t.Fatalf("Digests(%v): %v", leaves, err)
		}
		return append([]Digest{}, ds...)
	}

	// Every other occupied leaf and an empty one, unsorted, with repeats.
	occupied := map[int]bool{}
	for _, o := range objs {
		occupied[o.key.Leaf()] = true
	}
	var leaves []int
	empty := -1
	for l := range TreeLeaves {
		if occupied[l] && l%2 == 0 {
			leaves = append(leaves, l)
		}
		if !occupied[l] && empty < 0 {
			empty = l
		}
	}
	leaves = append(leaves, empty, leaves[0], leaves[len(leaves)/2])
	slices.Reverse(leaves)
	ds := digests(leaves)
	if want := expect(leaves); !slices.Equal(ds, want) {
		t.Fatalf("Digests\n%+v\nwant\n%+v", ds, want)
	}
	if len(ds) == 0 || len(ds) == len(objs) {
		t.Fatalf("%d digests of %d objects: the test picks a proper subset", len(ds), len(objs))
	}
	for _, d := range ds {
		if d.Hash == 0 || d.Key.Partition != p {
			t.Fatalf("digest %+v", d)
		}
	}
	checkDigestsXOR(t, s, p, leaves, ds)

	all := make([]int, TreeLeaves)
	for l := range all {
		all[l] = l
	}
	ds = digests(all)
	if want := expect(all); len(ds) != len(objs) || !slices.Equal(ds, want) {
		t.Fatalf("Digests of every leaf: %d digests, want %d", len(ds), len(objs))
	}
	checkDigestsXOR(t, s, p, all, ds)
	if ds := digests(nil); len(ds) != 0 {
		t.Fatalf("Digests of no leaf: %+v", ds)
	}
	if ds := digests([]int{empty}); len(ds) != 0 {
		t.Fatalf("Digests of empty leaf %d: %+v", empty, ds)
	}
	for _, bad := range [][]int{{-1}, {TreeLeaves}, {0, TreeLeaves + 5}, {math.MaxInt}} {
		if _, err := s.Digests(p, bad); err == nil {
			t.Errorf("Digests(%v) did not fail", bad)
		}
	}

	// Read returns the stored objects of the keys it finds, in order.
	absent := Key{Partition: p, Bucket: "b", Key: "absent"}
	ks := []Key{objs[3].key, absent, objs[0].key, objs[1].key}
	es, err := s.Read(ks)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 {
		t.Fatalf("Read of 3 present and 1 absent keys: %d entries", len(es))
	}
	for i, k := range []Key{objs[3].key, objs[0].key, objs[1].key} {
		o, _ := s.Get(k)
		if es[i].Key != k || !equalObjects(es[i].Object, o) {
			t.Fatalf("Read entry %d: %v, want %v", i, es[i].Key, k)
		}
	}
}

// TestTombstoneIndexAndPurge checks that the tombstone index lists exactly
// the tombstone-only objects by deletion time, and that Purge removes one
// only while it still has the digest the caller saw and holds only
// tombstones.
func TestTombstoneIndexAndPurge(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const p = 11
	key := func(n string) Key { return Key{Partition: p, Bucket: "b", Key: n} }
	a, b, c, d, e, f := key("a"), key("b"), key("c"), key("d"), key("e"), key("f")
	base := time.Unix(1000, 0)
	t1, t2, t3 := base.Add(time.Second), base.Add(2*time.Second), base.Add(3*time.Second)
	del := func(k Key, ctx Context, at time.Time) {
		t.Helper()
		if _, err := s.Put(k, Write{Context: ctx, Tombstone: true, Now: at}); err != nil {
			t.Fatal(err)
		}
	}
	wa := put(t, s, a, Context{}, "a")
	del(a, wa.Context, t1) // a: deleted at t1
	del(b, Context{}, t2)  // b: deleted at t2, never live
	put(t, s, c, Context{}, "c")
	del(d, Context{}, t1)
	od, _ := s.Get(d)
	staleD := Digest{Key: d, Hash: ObjectDigest(d, od), DeletedAt: t1.UnixNano()}
	put(t, s, d, od.Context, "d lives again") // d: written after its delete
	if _, err := s.Apply(e, (&peer{actor: "p.1"}).write(nil, true, t3.UnixNano())); err != nil {
		t.Fatal(err)
	}
	del(f, Context{}, t2)
	del(f, Context{}, t3) // f: two concurrent deletes, the later at t3
	checkTree(t, s, "written", p)

	digestOf := func(k Key, at time.Time) Digest {
		o, err := s.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		return Digest{Key: k, Hash: ObjectDigest(k, o), DeletedAt: at.UnixNano()}
	}
	inKeyOrder := func(ds ...Digest) []Digest {
		slices.SortFunc(ds, func(x, y Digest) int { return bytes.Compare(x.Key.encode(), y.Key.encode()) })
		return ds
	}
	for _, tc := range []struct {
		before int64
		limit  int
		want   []Digest
	}{
		{t1.UnixNano(), 100, nil},
		{t1.UnixNano() + 1, 100, []Digest{digestOf(a, t1)}},
		{t2.UnixNano() + 1, 100, inKeyOrder(digestOf(a, t1), digestOf(b, t2))},
		{t3.UnixNano() + 1, 100, inKeyOrder(digestOf(a, t1), digestOf(b, t2), digestOf(e, t3), digestOf(f, t3))},
		{t3.UnixNano() + 1, 2, inKeyOrder(digestOf(a, t1), digestOf(b, t2), digestOf(e, t3), digestOf(f, t3))[:2]},
		{math.MaxInt64, 0, nil},
	} {
		if got := tombstones(t, s, p, tc.before, tc.limit); !slices.Equal(got, tc.want) {
			t.Fatalf("Tombstones(before %d, limit %d) = %+v, want %+v", tc.before, tc.limit, got, tc.want)
		}
	}
	if got := tombstones(t, s, p+1, math.MaxInt64, 100); len(got) != 0 {
		t.Fatalf("Tombstones of an empty partition: %+v", got)
	}

	purge := func(what string, want int, ds ...Digest) {
		t.Helper()
		n, err := s.Purge(ds)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n != want {
			t.Fatalf("%s: purged %d, want %d", what, n, want)
		}
		checkTree(t, s, what, p)
	}
	present := func(ks ...Key) {
		t.Helper()
		for _, k := range ks {
			if _, err := s.Get(k); err != nil {
				t.Fatalf("%v: %v", k, err)
			}
		}
	}
	gone := func(ks ...Key) {
		t.Helper()
		for _, k := range ks {
			if _, err := s.Get(k); !errors.Is(err, ErrNotFound) {
				t.Fatalf("%v after purge: %v, want ErrNotFound", k, err)
			}
		}
	}

	oc, err := s.Get(c)
	if err != nil {
		t.Fatal(err)
	}
	liveC := Digest{Key: c, Hash: ObjectDigest(c, oc)}
	purge("nothing", 0)
	// f was deleted again after the caller looked: its digest is stale.
	staleF := digestOf(f, t3)
	del(f, Context{}, t3.Add(time.Second))
	purge("stale digest", 0, staleF)
	wrongA := digestOf(a, t1)
	wrongA.Hash ^= 1
	purge("wrong digest", 0, wrongA)
	purge("live object", 0, liveC)
	purge("deleted, then written", 0, staleD)
	purge("absent", 0, Digest{Key: key("nothing"), Hash: 1})
	present(a, b, c, d, e, f)

	purge("a and b", 2, digestOf(a, t1), digestOf(b, t2))
	gone(a, b)
	present(c, d, e, f)
	if got := tombstones(t, s, p, math.MaxInt64, 100); slices.ContainsFunc(got, func(x Digest) bool { return x.Key == a || x.Key == b }) {
		t.Fatalf("purged keys still indexed: %+v", got)
	}
	purge("a again", 0, liveC, Digest{Key: a, Hash: wrongA.Hash ^ 1})
	purge("mixed", 1, digestOf(e, t3), staleF, liveC)
	gone(a, b, e)
	present(c, d, f)
	if n := rebuild(t, s, p); n != 0 {
		t.Fatalf("RebuildTree after purges fixed %d leaves", n)
	}
	// A purged key takes writes again.
	put(t, s, a, Context{}, "a again")
	checkTree(t, s, "rewritten", p)
}

// TestDeletePartitionClearsTree checks that DeletePartition takes the tree
// and the tombstone index with the objects, and nothing of other
// partitions.
func TestDeletePartitionClearsTree(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	parts := []uint32{20, 21, 22, math.MaxUint32 - 1, math.MaxUint32}
	filled := fillPartitions(t, s, 30, parts...)
	for _, p := range parts {
		for i, e := range filled[p][:8] {
			if _, err := s.Put(e.Key, Write{Tombstone: true, Context: e.Object.Context, Now: time.Unix(int64(i+1), 0)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkTree(t, s, "filled", parts...)
	leaves := map[uint32][]uint64{}
	tombs := map[uint32][]Digest{}
	for _, p := range parts {
		leaves[p] = readLeavesT(t, s, p)
		tombs[p] = tombstones(t, s, p, math.MaxInt64, math.MaxInt)
		if len(tombs[p]) != 8 || !slices.ContainsFunc(leaves[p], func(l uint64) bool { return l != 0 }) {
			t.Fatalf("partition %d: %d tombstones, leaves all zero: the test needs both", p, len(tombs[p]))
		}
	}
	all := make([]int, TreeLeaves)
	for l := range all {
		all[l] = l
	}
	for i, p := range []uint32{21, math.MaxUint32} {
		if err := s.DeletePartition(p); err != nil {
			t.Fatal(err)
		}
		if l := readLeavesT(t, s, p); slices.ContainsFunc(l, func(x uint64) bool { return x != 0 }) {
			t.Fatalf("partition %d: leaves %v not zero after DeletePartition", p, differingLeaves(l, make([]uint64, TreeLeaves)))
		}
		if ts := tombstones(t, s, p, math.MaxInt64, math.MaxInt); len(ts) != 0 {
			t.Fatalf("partition %d: %d tombstones after DeletePartition", p, len(ts))
		}
		if ds, err := s.Digests(p, all); err != nil || len(ds) != 0 {
			t.Fatalf("partition %d: %d digests after DeletePartition: %v", p, len(ds), err)
		}
		checkTree(t, s, "deleted", p)
		for _, o := range parts {
			if o == 21 || (i == 1 && o == math.MaxUint32) {
				continue
			}
			if l := readLeavesT(t, s, o); !slices.Equal(l, leaves[o]) {
				t.Fatalf("DeletePartition(%d) changed leaves %v of partition %d", p, differingLeaves(l, leaves[o]), o)
			}
			if ts := tombstones(t, s, o, math.MaxInt64, math.MaxInt); !slices.Equal(ts, tombs[o]) {
				t.Fatalf("DeletePartition(%d) changed partition %d's tombstones", p, o)
			}
		}
	}
	// The partition comes back with nothing of its old tree.
	for i, e := range filled[21][:5] {
		if i%2 == 0 {
			put(t, s, e.Key, Context{}, "back")
		} else if _, err := s.Put(e.Key, Write{Tombstone: true, Now: time.Unix(9, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	checkTree(t, s, "written again", parts...)
	for _, p := range parts {
		if n := rebuild(t, s, p); n != 0 {
			t.Fatalf("RebuildTree(%d) fixed %d leaves", p, n)
		}
	}
}

// Regression tests for bugs these tests found.

// TestPurgeDuplicateDigest: Purge (tree.go) loads every named key from the
// DB, not from its batch, so a key named twice is staged twice: the object
// is deleted once but its digest is XORed out of the leaf twice, which
// leaves the leaf unchanged and wrong; Purge also counts it twice.
// ApplyMany dedups its keys (byKey); Purge does not.
func TestPurgeDuplicateDigest(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const p = 12
	k := Key{Partition: p, Bucket: "b", Key: "k"}
	if _, err := s.Put(k, Write{Tombstone: true, Now: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	ts := tombstones(t, s, p, math.MaxInt64, 10)
	n, err := s.Purge([]Digest{ts[0], ts[0]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after purge: %v", err)
	}
	if n != 1 {
		t.Errorf("purged %d objects, want 1", n)
	}
	checkTree(t, s, "purged twice in one call", p)
}

// onLog is a slog handler that calls f for every record.
type onLog struct{ f func() }

func (h onLog) Enabled(context.Context, slog.Level) bool  { return true }
func (h onLog) Handle(context.Context, slog.Record) error { h.f(); return nil }
func (h onLog) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h onLog) WithGroup(string) slog.Handler             { return h }

// TestOverlappingRebuilds: RebuildTree merges stored^computed as read at
// its snapshot, so two rebuilds of one partition whose snapshots both came
// before either committed would apply the same correction twice, cancelling
// it. Rebuilds are serialized. The overlap is attempted deterministically:
// the first rebuild logs the corrupt value it meets mid-scan, and the log
// handler starts the second one then; it must wait for the first.
func TestOverlappingRebuilds(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const p = 13
	filled := fillPartitions(t, s, 30, p)[p]
	corruptRaw(t, s, filled)
	var started atomic.Bool
	inner := make(chan error, 1)
	s.cfg.Logger = slog.New(onLog{func() {
		if started.CompareAndSwap(false, true) {
			go func() {
				_, err := s.RebuildTree(p)
				inner <- err
			}()
		}
	}})
	outer := rebuild(t, s, p)
	if err := <-inner; err != nil {
		t.Fatal(err)
	}
	if outer == 0 {
		t.Fatal("the first rebuild fixed nothing")
	}
	checkLeaves(t, s, "after two overlapping rebuilds", p)
}

// TestLeavesIgnoresForeignTreeKey: readLeaves (tree.go) is meant to skip a
// tree key it did not write ("not a key this store writes; a rebuild
// ignores it too"), but it reads k[5:7] before checking len(k) == 7, so a
// tree key of 5 or 6 bytes in the partition's range panics Leaves and
// RebuildTree.
func TestLeavesIgnoresForeignTreeKey(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const p = 14
	fillPartitions(t, s, 10, p)
	want := readLeavesT(t, s, p)
	short := binary.BigEndian.AppendUint32([]byte{prefixTree}, p) // 5 bytes
	if err := s.db.Set(short, []byte("junk"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Leaves panicked on a 5-byte tree key: %v", r)
			}
		}()
		if got := readLeavesT(t, s, p); !slices.Equal(got, want) {
			t.Fatalf("a foreign tree key changed leaves %v", differingLeaves(got, want))
		}
		rebuild(t, s, p)
	}()
}

// recomputeCounts counts partition p's objects per leaf from its data
// range, leaving out what recomputeLeaves leaves out.
func recomputeCounts(t testing.TB, s *Store, p uint32) []int64 {
	t.Helper()
	counts := make([]int64, TreeLeaves)
	lo, hi := partitionBounds(p)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if _, err := decodeKey(it.Key()); err != nil {
			continue
		}
		if _, err := decodeStored(it.Value()); err != nil {
			continue
		}
		counts[keyLeaf(it.Key())]++
	}
	return counts
}

func TestKeyCounts(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const p = 4
	check := func(what string) {
		t.Helper()
		got, err := s.KeyCounts(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := recomputeCounts(t, s, p); !slices.Equal(got, want) {
			t.Fatalf("%s: key counts %v, want %v", what, got, want)
		}
	}
	filled := fillPartitions(t, s, 300, p)[p]
	check("after filling")
	// Tombstones are objects too; purged ones are not.
	var ds []Digest
	for _, e := range filled[:20] {
		o, err := s.Get(e.Key)
		if err != nil {
			t.Fatal(err)
		}
		tomb, err := s.Put(e.Key, Write{Context: o.Context, Tombstone: true, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, Digest{Key: e.Key, Hash: ObjectDigest(e.Key, tomb.Object)})
	}
	check("after deletes")
	if n, err := s.Purge(ds[:10]); err != nil || n != 10 {
		t.Fatalf("purged %d, %v", n, err)
	}
	check("after purges")
	// Bytes changed under the store: the rebuild corrects counts too.
	corruptRaw(t, s, filled[20:])
	if rebuild(t, s, p) == 0 {
		t.Fatal("the rebuild fixed nothing")
	}
	check("after the rebuild")
}
