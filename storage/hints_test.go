package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func openHints(t testing.TB, dir string, hc HintConfig) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, NodeID: "n1", CounterLease: 8, Hints: hc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// version returns an object holding one sibling per dot, each concurrent
// with the others (isolated dots), as a coordinator would have issued them.
func version(dots ...Dot) *Object {
	var o *Object
	for _, d := range dots {
		o = Merge(o, &Object{Context: Context{Dots: []Dot{d}}, Siblings: []Sibling{sibling(d)}})
	}
	return o
}

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)

func putHint(t testing.TB, s *Store, owner string, k Key, o *Object, kind HintKind, now time.Time) {
	t.Helper()
	if err := s.PutHint(owner, k, o, kind, now); err != nil {
		t.Fatal(err)
	}
}

func allHints(t testing.TB, s *Store, owner string) []Hint {
	t.Helper()
	var all []Hint
	var cur []byte
	for {
		hs, next, err := s.ScanHints(owner, cur, 1000)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, hs...)
		if next == nil {
			return all
		}
		cur = next
	}
}

func TestHintPutMergeReadDelete(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{})
	defer s.Close()
	a, b := Dot{"a.1", 1}, Dot{"b.1", 1}
	putHint(t, s, "n2", k1, version(a), HintDurable, t0)
	putHint(t, s, "n2", k1, version(b), HintDurable, t0.Add(time.Minute))
	putHint(t, s, "n2", k1, version(a), HintDurable, t0.Add(2*time.Minute)) // idempotent

	hs := allHints(t, s, "n2")
	if len(hs) != 1 {
		t.Fatalf("%d hints, want one entry per owner, key and kind", len(hs))
	}
	h := hs[0]
	if h.Owner != "n2" || h.Key != k1 || h.Kind != HintDurable || !h.Stored.Equal(t0) {
		t.Fatalf("hint %+v", h)
	}
	if !equalObjects(h.Object, version(a, b)) {
		t.Fatalf("merged hint %+v, want both versions", h.Object)
	}
	st := s.HintStats()
	if st.Durable != 1 || st.DurableBytes <= 0 || st.Slow != 0 {
		t.Fatalf("stats %+v", st)
	}
	owners, err := s.HintOwners()
	if err != nil || len(owners) != 1 || owners["n2"] != 1 {
		t.Fatalf("owners %v, %v", owners, err)
	}
	if ok, err := s.HasHints(k1.Partition); !ok || err != nil {
		t.Fatalf("HasHints(%d) = %v, %v", k1.Partition, ok, err)
	}
	if ok, _ := s.HasHints(k1.Partition + 1); ok {
		t.Fatal("HasHints of an empty partition")
	}

	ok, err := s.DeleteHint(h)
	if err != nil || !ok {
		t.Fatalf("DeleteHint = %v, %v", ok, err)
	}
	if hs := allHints(t, s, ""); len(hs) != 0 {
		t.Fatalf("%d hints after delete", len(hs))
	}
	if st := s.HintStats(); st.Durable != 0 || st.DurableBytes != 0 {
		t.Fatalf("stats after delete %+v", st)
	}
	if ok, err := s.DeleteHint(h); ok || err != nil {
		t.Fatalf("second DeleteHint = %v, %v", ok, err)
	}
}

func TestPutHintRefusesBadInput(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{})
	defer s.Close()
	o := version(Dot{"a.1", 1})
	for name, put := range map[string]func() error{
		"no owner":  func() error { return s.PutHint("", k1, o, HintDurable, t0) },
		"no object": func() error { return s.PutHint("n2", k1, nil, HintDurable, t0) },
		"zero kind": func() error { return s.PutHint("n2", k1, o, 0, t0) },
		"long key": func() error {
			return s.PutHint("n2", Key{Bucket: "b", Key: strings.Repeat("k", 1<<16)}, o, HintDurable, t0)
		},
		"long bucket": func() error {
			return s.PutHint("n2", Key{Bucket: strings.Repeat("b", 256), Key: "k"}, o, HintDurable, t0)
		},
	} {
		if err := put(); !errors.Is(err, ErrBadHint) {
			t.Errorf("%s: got %v, want ErrBadHint", name, err)
		}
	}
	if hs := allHints(t, s, ""); len(hs) != 0 {
		t.Fatalf("refused hints stored: %+v", hs)
	}
}

// A hint merged with a newer version after the delivery loop read it must
// not be deleted when the older read is acknowledged.
func TestDeleteHintRefusesChangedEntry(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{})
	defer s.Close()
	putHint(t, s, "n2", k1, version(Dot{"a.1", 1}), HintDurable, t0)
	read := allHints(t, s, "n2")[0]
	putHint(t, s, "n2", k1, version(Dot{"b.1", 1}), HintDurable, t0) // lands during delivery
	if ok, err := s.DeleteHint(read); ok || err != nil {
		t.Fatalf("DeleteHint of a changed entry = %v, %v", ok, err)
	}
	objs, err := s.HintsForKey(k1)
	if err != nil || len(objs) != 1 || len(objs[0].Siblings) != 2 {
		t.Fatalf("hint after refused delete: %v %+v", err, objs)
	}
	again := allHints(t, s, "n2")[0]
	if ok, err := s.DeleteHint(again); !ok || err != nil {
		t.Fatalf("DeleteHint of the current entry = %v, %v", ok, err)
	}
}

func TestDeleteHintsBatch(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{})
	defer s.Close()
	for i := range 10 {
		putHint(t, s, "n2", Key{Partition: uint32(i % 3), Bucket: "b", Key: fmt.Sprint(i)}, version(Dot{"a.1", uint64(i + 1)}), HintDurable, t0)
		putHint(t, s, "n3", Key{Partition: uint32(i % 3), Bucket: "b", Key: fmt.Sprint(i)}, version(Dot{"a.1", uint64(i + 1)}), HintSlow, t0)
	}
	hs := allHints(t, s, "n2")
	stale := hs[0]
	putHint(t, s, "n2", stale.Key, version(Dot{"z.1", 1}), HintDurable, t0)
	batch := append(slices.Clone(hs), hs[1]) // a duplicate is deleted once
	n, err := s.DeleteHints(batch)
	if err != nil || n != len(hs)-1 {
		t.Fatalf("DeleteHints = %d, %v; want %d", n, err, len(hs)-1)
	}
	if got := allHints(t, s, "n2"); len(got) != 1 || got[0].Key != stale.Key {
		t.Fatalf("left %+v, want only the changed entry", got)
	}
	st := s.HintStats()
	if st.Durable != 1 || st.Slow != 10 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := s.DeleteHints([]Hint{{Owner: "n2", Key: k1, Kind: HintDurable}}); !errors.Is(err, ErrBadHint) {
		t.Fatalf("hint without object: %v", err)
	}
}

func TestDurableHintsFullRefuses(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{MaxDurable: 3})
	defer s.Close()
	key := func(i int) Key { return Key{Partition: 1, Bucket: "b", Key: fmt.Sprint(i)} }
	for i := range 3 {
		putHint(t, s, "n2", key(i), version(Dot{"a.1", uint64(i + 1)}), HintDurable, t0)
	}
	err := s.PutHint("n2", key(3), version(Dot{"a.1", 9}), HintDurable, t0)
	if !errors.Is(err, ErrHintsFull) {
		t.Fatalf("got %v, want ErrHintsFull", err)
	}
	// Another owner of a held key is a new entry too.
	if err := s.PutHint("n3", key(0), version(Dot{"a.1", 9}), HintDurable, t0); !errors.Is(err, ErrHintsFull) {
		t.Fatalf("new owner: got %v, want ErrHintsFull", err)
	}
	if objs, _ := s.HintsForKey(key(3)); len(objs) != 0 {
		t.Fatal("refused hint was stored")
	}
	// Merging into an existing entry is always allowed.
	putHint(t, s, "n2", key(0), version(Dot{"b.1", 1}), HintDurable, t0)
	if objs, _ := s.HintsForKey(key(0)); len(objs) != 1 || len(objs[0].Siblings) != 2 {
		t.Fatalf("merge into a full store: %+v", objs)
	}
	// Slow hints have their own bounds.
	putHint(t, s, "n2", key(3), version(Dot{"a.1", 9}), HintSlow, t0)
	st := s.HintStats()
	if st.Durable != 3 || st.Refused != 2 || st.Slow != 1 || st.DroppedSlow != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Delivering one makes room.
	h := allHints(t, s, "n2")[0]
	if ok, err := s.DeleteHint(h); !ok || err != nil {
		t.Fatal(ok, err)
	}
	putHint(t, s, "n2", key(3), version(Dot{"a.1", 9}), HintDurable, t0)

	// The byte bound refuses as well.
	big := &Object{Siblings: []Sibling{{Dot: Dot{"a.1", 1}, Value: make([]byte, 600)}}}
	s2 := openHints(t, t.TempDir(), HintConfig{MaxDurableBytes: 1000})
	defer s2.Close()
	putHint(t, s2, "n2", key(0), big, HintDurable, t0)
	if err := s2.PutHint("n2", key(1), big, HintDurable, t0); !errors.Is(err, ErrHintsFull) {
		t.Fatalf("byte bound: got %v, want ErrHintsFull", err)
	}
	if st := s2.HintStats(); st.Durable != 1 || st.DurableBytes > 1000 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSlowHintsBoundedAndDropped(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{MaxSlow: 2, MaxSlowBytes: 4 << 10})
	defer s.Close()
	key := func(i int) Key { return Key{Partition: 1, Bucket: "b", Key: fmt.Sprint(i)} }
	for i := range 3 {
		putHint(t, s, "n2", key(i), version(Dot{"a.1", uint64(i + 1)}), HintSlow, t0)
	}
	if objs, _ := s.HintsForKey(key(2)); len(objs) != 0 {
		t.Fatal("a slow hint past MaxSlow was stored")
	}
	// Bytes: growing an entry past MaxSlowBytes is dropped too.
	big := &Object{Context: Context{Dots: []Dot{{"b.1", 1}}}, Siblings: []Sibling{{Dot: Dot{"b.1", 1}, Value: make([]byte, 8<<10)}}}
	putHint(t, s, "n2", key(0), big, HintSlow, t0)
	if objs, _ := s.HintsForKey(key(0)); len(objs) != 1 || len(objs[0].Siblings) != 1 {
		t.Fatalf("oversized merge kept: %+v", objs)
	}
	st := s.HintStats()
	if st.Slow != 2 || st.DroppedSlow != 2 || st.Refused != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Durable hints are not affected by slow bounds.
	putHint(t, s, "n2", key(2), version(Dot{"a.1", 3}), HintDurable, t0)
}

func TestExpireHints(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{MaxSlowAge: time.Hour})
	defer s.Close()
	old, young := Key{Bucket: "b", Key: "old"}, Key{Bucket: "b", Key: "young"}
	putHint(t, s, "n2", old, version(Dot{"a.1", 1}), HintSlow, t0)
	// A merge keeps the oldest stored time: the hint is as old as its first version.
	putHint(t, s, "n2", old, version(Dot{"a.1", 2}), HintSlow, t0.Add(80*time.Minute))
	putHint(t, s, "n2", young, version(Dot{"a.1", 3}), HintSlow, t0.Add(40*time.Minute))
	putHint(t, s, "n3", old, version(Dot{"a.1", 1}), HintDurable, t0)

	n, err := s.ExpireHints(t0.Add(90 * time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("ExpireHints = %d, %v; want 1", n, err)
	}
	var left []string
	for _, h := range allHints(t, s, "") {
		left = append(left, h.Owner+"/"+h.Key.Key+"/"+h.Kind.String())
	}
	if want := []string{"n3/old/durable", "n2/young/slow"}; !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
	st := s.HintStats()
	if st.Slow != 1 || st.DroppedSlow != 1 || st.Durable != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Durable hints never expire.
	if n, err := s.ExpireHints(t0.Add(1000 * time.Hour)); err != nil || n != 1 {
		t.Fatalf("ExpireHints = %d, %v; want 1", n, err)
	}
	if st := s.HintStats(); st.Durable != 1 || st.Slow != 0 || st.SlowBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestExpireHintsManyBatches(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{MaxSlowAge: time.Hour})
	defer s.Close()
	const n = expireBatch + 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k := Key{Partition: uint32(i % 5), Bucket: "b", Key: fmt.Sprint(i)}
			if err := s.PutHint("n2", k, version(Dot{"a.1", uint64(i + 1)}), HintSlow, t0); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got, err := s.ExpireHints(t0.Add(2 * time.Hour)); err != nil || got != n {
		t.Fatalf("ExpireHints = %d, %v; want %d", got, err, n)
	}
	if st := s.HintStats(); st.Slow != 0 || st.SlowBytes != 0 || st.DroppedSlow != n {
		t.Fatalf("stats %+v", st)
	}
}

func TestHintsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := openHints(t, dir, HintConfig{})
	for i := range 5 {
		k := Key{Partition: uint32(i), Bucket: "b", Key: fmt.Sprint(i)}
		putHint(t, s, "n2", k, version(Dot{"a.1", uint64(i + 1)}), HintDurable, t0)
		putHint(t, s, "n3", k, version(Dot{"a.1", uint64(i + 1)}), HintSlow, t0)
	}
	before, hints := s.HintStats(), allHints(t, s, "")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ScanHints("", nil, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed store: %v", err)
	}

	s = openHints(t, dir, HintConfig{})
	defer s.Close()
	if after := s.HintStats(); after != before {
		t.Fatalf("stats after restart %+v, before %+v", after, before)
	}
	got := allHints(t, s, "")
	if len(got) != len(hints) {
		t.Fatalf("%d hints after restart, want %d", len(got), len(hints))
	}
	for i := range got {
		g, w := got[i], hints[i]
		if g.Owner != w.Owner || g.Key != w.Key || g.Kind != w.Kind || !g.Stored.Equal(w.Stored) || !equalObjects(g.Object, w.Object) {
			t.Fatalf("hint %d after restart %+v, want %+v", i, g, w)
		}
	}
}

func TestHintsForKeyAllOwners(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{})
	defer s.Close()
	k := Key{Partition: 3, Bucket: "b", Key: "k"}
	putHint(t, s, "n2", k, version(Dot{"a.1", 1}), HintDurable, t0)
	putHint(t, s, "n3", k, version(Dot{"a.1", 2}), HintDurable, t0)
	putHint(t, s, "n3", k, version(Dot{"a.1", 3}), HintSlow, t0)
	// Keys that share bytes with k must not show up.
	for _, other := range []Key{
		{Partition: 3, Bucket: "b", Key: "k2"},
		{Partition: 3, Bucket: "b", Key: ""},
		{Partition: 3, Bucket: "bk", Key: ""},
		{Partition: 3, Bucket: "", Key: "bk"},
		{Partition: 4, Bucket: "b", Key: "k"},
	} {
		putHint(t, s, "n2", other, version(Dot{"x.1", 1}), HintDurable, t0)
	}
	put(t, s, k, Context{}, "data") // the object itself is not a hint
	objs, err := s.HintsForKey(k)
	if err != nil {
		t.Fatal(err)
	}
	var dots []uint64
	for _, o := range objs {
		for _, sib := range o.Siblings {
			if sib.Dot.Actor != "a.1" {
				t.Fatalf("foreign hint %v", sib.Dot)
			}
			dots = append(dots, sib.Dot.Counter)
		}
	}
	slices.Sort(dots)
	if !slices.Equal(dots, []uint64{1, 2, 3}) {
		t.Fatalf("hinted dots %v, want [1 2 3]", dots)
	}
}

func TestScanHintsPagination(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{})
	defer s.Close()
	owners := []string{"n2", "n3", "n33"}
	want := map[string][]string{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range 60 {
		for j, o := range owners {
			if (i+j)%4 == 0 {
				continue // owners' hints interleave unevenly
			}
			k := Key{Partition: uint32(i % 7), Bucket: "b", Key: fmt.Sprintf("%03d", i)}
			mu.Lock()
			want[o] = append(want[o], k.String())
			want[""] = append(want[""], o+"@"+k.String())
			mu.Unlock()
			wg.Go(func() {
				if err := s.PutHint(o, k, version(Dot{"a.1", uint64(i + 1)}), HintDurable, t0); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	for _, o := range append(owners, "") {
		slices.Sort(want[o])
	}

	for _, limit := range []int{0, 1, 7, 1000} {
		for _, owner := range append(owners, "", "nobody") {
			var got []string
			var cur, last []byte
			for {
				hs, next, err := s.ScanHints(owner, cur, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(hs) > max(limit, 1) || len(hs) < max(limit, 1) && next != nil {
					t.Fatalf("%d hints, limit %d, next %x", len(hs), limit, next)
				}
				for _, h := range hs {
					if owner != "" && h.Owner != owner {
						t.Fatalf("owner %q: got a hint for %q", owner, h.Owner)
					}
					hk, _ := hintKey(h.Key, h.Kind, h.Owner)
					if bytes.Compare(hk, last) <= 0 {
						t.Fatalf("hints out of key order: %x after %x", hk, last)
					}
					last = hk
					if owner == "" {
						got = append(got, h.Owner+"@"+h.Key.String())
					} else {
						got = append(got, h.Key.String())
					}
				}
				if next == nil {
					break
				}
				if bytes.Equal(next, cur) {
					t.Fatal("cursor did not advance")
				}
				cur = next
			}
			slices.Sort(got)
			if !slices.Equal(got, want[owner]) {
				t.Fatalf("limit %d owner %q: got %d hints, want %d", limit, owner, len(got), len(want[owner]))
			}
		}
	}
	if _, _, err := s.ScanHints("", []byte("d\x00"), 10); !errors.Is(err, ErrBadCursor) {
		t.Fatalf("data key as hint cursor: %v", err)
	}
}

func TestHintsNotInDataRange(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{})
	defer s.Close()
	k := Key{Partition: 7, Bucket: "b", Key: "data"}
	put(t, s, k, Context{}, "v")
	for i := range 5 {
		putHint(t, s, "n2", Key{Partition: 7, Bucket: "b", Key: fmt.Sprint(i)}, version(Dot{"a.1", 1}), HintDurable, t0)
	}
	if seen := scanAll(t, s, 7)[7]; len(seen) != 1 || seen[0].Key != k {
		t.Fatalf("the data range holds %v", seen)
	}
	entries, _, done, err := s.ReadPartition(7, nil, 1<<20)
	if err != nil || !done || len(entries) != 1 || entries[0].Key != k {
		t.Fatalf("ReadPartition: %v %v %+v", err, done, entries)
	}
	if n, _, _ := s.PartitionStats(7); n != 1 {
		t.Fatalf("PartitionStats counted %d objects", n)
	}
	if _, err := s.Get(Key{Partition: 7, Bucket: "b", Key: "0"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("hint readable as an object: %v", err)
	}
	// Moving the partition away keeps the hints addressed to other nodes.
	if err := s.DeletePartition(7); err != nil {
		t.Fatal(err)
	}
	if hs := allHints(t, s, ""); len(hs) != 5 {
		t.Fatalf("%d hints after DeletePartition, want 5", len(hs))
	}
}

// Concurrent hints for one key, as a fallback receives them for concurrent
// writes, keep every version.
func TestConcurrentPutHintKeepsEverySibling(t *testing.T) {
	s := openHints(t, t.TempDir(), HintConfig{})
	defer s.Close()
	const writers = 32
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			d := Dot{fmt.Sprintf("c%d.1", i%4), uint64(i + 1)}
			if err := s.PutHint("n2", k1, version(d), HintDurable, t0.Add(time.Duration(i)*time.Second)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	hs := allHints(t, s, "")
	if len(hs) != 1 {
		t.Fatalf("%d hint entries, want 1", len(hs))
	}
	if n := len(hs[0].Object.Siblings); n != writers {
		t.Fatalf("%d siblings, want %d", n, writers)
	}
	if !hs[0].Stored.Equal(t0) {
		t.Fatalf("stored %v, want the oldest %v", hs[0].Stored, t0)
	}
	st := s.HintStats()
	if st.Durable != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The byte count tracks the stored entry exactly.
	s.Close()
	s2 := openHints(t, s.cfg.Dir, HintConfig{})
	defer s2.Close()
	if got := s2.HintStats(); got.DurableBytes != st.DurableBytes {
		t.Fatalf("recounted %d bytes, tracked %d", got.DurableBytes, st.DurableBytes)
	}
}

func TestHintKeyEncoding(t *testing.T) {
	genKey := rapid.Custom(func(t *rapid.T) Key {
		return Key{
			Partition: rapid.SampledFrom([]uint32{0, 1, 255, 256, 1<<32 - 1}).Draw(t, "p"),
			Bucket:    string(rapid.SliceOfN(rapid.SampledFrom([]byte{0, 1, 'b', 0xff}), 0, 4).Draw(t, "bucket")),
			Key:       string(rapid.SliceOfN(rapid.SampledFrom([]byte{0, 1, 'k', 0xff}), 0, 4).Draw(t, "key")),
		}
	})
	rapid.Check(t, func(t *rapid.T) {
		k, k2 := genKey.Draw(t, "k"), genKey.Draw(t, "k2")
		kind := rapid.SampledFrom([]HintKind{HintDurable, HintSlow}).Draw(t, "kind")
		owner := rapid.StringMatching(`[a-z0-9\x00\xff]{1,6}`).Draw(t, "owner")
		hk, err := hintKey(k2, kind, owner)
		if err != nil {
			t.Fatal(err)
		}
		gk, gkind, gowner, err := decodeHintKey(hk)
		if err != nil || gk != k2 || gkind != kind || gowner != owner {
			t.Fatalf("round trip: %v %v %v %q", err, gk, gkind, gowner)
		}
		if o, ok := hintOwner(hk); !ok || string(o) != owner {
			t.Fatalf("hintOwner %q, want %q", o, owner)
		}
		// HintsForKey's prefix scan sees exactly k's hints.
		p, _ := hintPrefix(k)
		if bytes.HasPrefix(hk, p) != (k == k2) {
			t.Fatalf("prefix of %v matches hint of %v: %t", k, k2, bytes.HasPrefix(hk, p))
		}
		if bytes.Compare(hk, hintLo) < 0 || bytes.Compare(hk, hintHi) >= 0 {
			t.Fatal("hint key outside the hint range")
		}
	})
}

func TestDecodeHintValueRejectsGarbage(t *testing.T) {
	good := appendHintValue(nil, HintSlow, t0.UnixNano(), version(Dot{"a.1", 1}))
	kind, stored, o, err := decodeHintValue(good)
	if err != nil || kind != HintSlow || !stored.Equal(t0) || !equalObjects(o, version(Dot{"a.1", 1})) {
		t.Fatalf("round trip: %v %v %v %+v", err, kind, stored, o)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{9}, good[1:]...),
		"kind":      append([]byte{hintFormatV1, 0}, good[2:]...),
		"time":      {hintFormatV1, byte(HintSlow), 0x80},
		"no object": binary.AppendVarint([]byte{hintFormatV1, byte(HintSlow)}, 5),
		"truncated": good[:len(good)-1],
	} {
		if _, _, _, err := decodeHintValue(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
}
