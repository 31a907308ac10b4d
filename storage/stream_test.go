package storage

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// fillPartitions writes objects of varied sizes to each partition and
// returns what each holds, in key order, as scanAll reads it.
func fillPartitions(t testing.TB, s *Store, n int, parts ...uint32) map[uint32][]PartitionEntry {
	t.Helper()
	for _, p := range parts {
		for i := range n {
			k := Key{Partition: p, Bucket: fmt.Sprintf("b%d", i%3), Key: fmt.Sprintf("k%03d", i)}
			put(t, s, k, Context{}, strings.Repeat("v", i*37%500))
			if i%5 == 0 { // some keys with siblings
				if _, err := s.Apply(k, version(Dot{"z.1", uint64(i + 1)})); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return scanAll(t, s, parts...)
}

func scanAll(t testing.TB, s *Store, parts ...uint32) map[uint32][]PartitionEntry {
	t.Helper()
	out := map[uint32][]PartitionEntry{}
	for _, p := range parts {
		out[p] = []PartitionEntry{}
		// An independent reading of the partition's key range, to check
		// ReadPartition against.
		lo, hi := partitionBounds(p)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			k, err := decodeKey(it.Key())
			if err != nil {
				t.Fatal(err)
			}
			o, err := decodeStored(it.Value())
			if err != nil {
				t.Fatal(err)
			}
			out[p] = append(out[p], PartitionEntry{k, o})
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func sameEntries(t testing.TB, what string, got, want []PartitionEntry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i].Key != want[i].Key || !equalObjects(got[i].Object, want[i].Object) {
			t.Fatalf("%s: entry %d is %v, want %v", what, i, got[i].Key, want[i].Key)
		}
	}
}

// readAll streams partition p in batches of maxBytes.
func readAll(t testing.TB, s *Store, p uint32, maxBytes int) (all []PartitionEntry, batches int) {
	t.Helper()
	var cur []byte
	for {
		es, next, done, err := s.ReadPartition(p, cur, maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		batches++
		if len(es) == 0 && !done {
			t.Fatal("empty batch before the end")
		}
		all = append(all, es...)
		if done {
			return all, batches
		}
		cur = next
	}
}

func TestReadPartitionPagination(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	want := fillPartitions(t, s, 40, 4, 5, 6)
	for _, maxBytes := range []int{0, 1, 300, 4 << 10, 1 << 20} {
		got, batches := readAll(t, s, 5, maxBytes)
		sameEntries(t, fmt.Sprintf("maxBytes %d", maxBytes), got, want[5])
		if maxBytes <= 1 && batches != len(want[5]) {
			t.Fatalf("maxBytes %d: %d batches, want one entry each (%d)", maxBytes, batches, len(want[5]))
		}
		if maxBytes == 1<<20 && batches != 1 {
			t.Fatalf("whole partition in %d batches", batches)
		}
	}
	// A batch ends exactly at the last entry: done without an empty round.
	_, next, done, err := s.ReadPartition(5, nil, 1)
	if err != nil || done {
		t.Fatal(err, done)
	}
	for !done {
		var es []PartitionEntry
		es, next, done, err = s.ReadPartition(5, next, 1)
		if err != nil || len(es) != 1 {
			t.Fatalf("%v, %d entries", err, len(es))
		}
	}
	if es, _, done, err := s.ReadPartition(5, next, 1); err != nil || !done || len(es) != 0 {
		t.Fatalf("past the end: %v %v %d", err, done, len(es))
	}
	if es, _, done, err := s.ReadPartition(9, nil, 1); err != nil || !done || len(es) != 0 {
		t.Fatalf("empty partition: %v %v %d", err, done, len(es))
	}
	// Streaming does not touch other partitions.
	after := scanAll(t, s, 4, 6)
	sameEntries(t, "partition 4", after[4], want[4])
	sameEntries(t, "partition 6", after[6], want[6])
}

func TestReadPartitionBadCursor(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	fillPartitions(t, s, 3, 4, 5)
	_, next, _, err := s.ReadPartition(4, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{next, []byte("h"), []byte("m"), {prefixData}} {
		if _, _, _, err := s.ReadPartition(5, bad, 1); !errors.Is(err, ErrBadCursor) {
			t.Errorf("cursor %x on partition 5: got %v, want ErrBadCursor", bad, err)
		}
	}
}

func TestReadPartitionResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	want := fillPartitions(t, s, 30, 2)[2]
	first, next, done, err := s.ReadPartition(2, nil, 2<<10)
	if err != nil || done || len(first) == 0 {
		t.Fatalf("first batch: %v %v %d", err, done, len(first))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	all := first
	for !done {
		var es []PartitionEntry
		es, next, done, err = s.ReadPartition(2, next, 2<<10)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
	}
	sameEntries(t, "resumed", all, want)
}

func TestDeletePartition(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const last = 1<<32 - 1
	parts := []uint32{0, 1, 4, 5, 6, last - 1, last}
	want := fillPartitions(t, s, 10, parts...)
	putHint(t, s, "n2", Key{Partition: 5, Bucket: "b", Key: "k"}, version(Dot{"a.1", 1}), HintDurable, t0)
	for _, p := range []uint32{5, 0, last} {
		if err := s.DeletePartition(p); err != nil {
			t.Fatal(err)
		}
		if es, _, done, err := s.ReadPartition(p, nil, 1<<20); err != nil || !done || len(es) != 0 {
			t.Fatalf("partition %d after delete: %v %v %d entries", p, err, done, len(es))
		}
		if n, b, err := s.PartitionStats(p); err != nil || n != 0 || b != 0 {
			t.Fatalf("stats of deleted partition %d: %d %d %v", p, n, b, err)
		}
	}
	got := scanAll(t, s, 1, 4, 6, last-1)
	for _, p := range []uint32{1, 4, 6, last - 1} {
		sameEntries(t, fmt.Sprintf("neighbour %d", p), got[p], want[p])
	}
	// Metadata and hints live outside the data range.
	if _, err := s.GetMeta("epoch"); err != nil {
		t.Fatalf("metadata after DeletePartition: %v", err)
	}
	if objs, err := s.HintsForKey(Key{Partition: 5, Bucket: "b", Key: "k"}); err != nil || len(objs) != 1 {
		t.Fatalf("hints after DeletePartition: %v %d", err, len(objs))
	}
	// The partition takes writes again (the partition may come back).
	put(t, s, Key{Partition: 5, Bucket: "b", Key: "again"}, Context{}, "v")
	if n, _, _ := s.PartitionStats(5); n != 1 {
		t.Fatalf("%d objects after rewrite", n)
	}
}

func TestPartitionStats(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	want := fillPartitions(t, s, 25, 3, 4)
	for _, p := range []uint32{3, 4} {
		var size int64
		for _, e := range want[p] {
			size += int64(len(e.Key.encode()) + len(appendStored(nil, e.Object)))
		}
		n, b, err := s.PartitionStats(p)
		if err != nil || n != len(want[p]) || b != size {
			t.Fatalf("partition %d: %d objects, %d bytes, %v; want %d, %d", p, n, b, err, len(want[p]), size)
		}
	}
}

func TestApplyManyMerges(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	local := put(t, s, k1, Context{}, "local")
	remote := &Object{Context: Context{Dots: []Dot{{"z.1", 1}}}, Siblings: []Sibling{sibling(Dot{"z.1", 1})}}
	other := Key{Partition: 7, Bucket: "b", Key: "other"}
	if err := s.ApplyMany([]PartitionEntry{{k1, remote}, {other, remote}, {k1, remote}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(k1)
	if err != nil {
		t.Fatal(err)
	}
	if !equalObjects(got, Merge(local.Object, remote)) {
		t.Fatalf("k1 is %+v", got)
	}
	if o, err := s.Get(other); err != nil || !equalObjects(o, remote) {
		t.Fatalf("other: %v", err)
	}
}
