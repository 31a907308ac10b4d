package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func open(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, NodeID: "n1", CounterLease: 8, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var k1 = Key{Partition: 7, Bucket: "b", Key: "k/1"}

func put(t testing.TB, s *Store, k Key, ctx Context, v string) Written {
	t.Helper()
	w, err := s.Put(k, Write{Context: ctx, Value: []byte(v), ContentType: "text/plain", Now: time.Unix(1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func values(o *Object) []string {
	var vs []string
	for _, s := range o.Live() {
		vs = append(vs, string(s.Value))
	}
	return vs
}

func TestPutGetRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	w1 := put(t, s, k1, Context{}, "one")
	w2 := put(t, s, k1, w1.Context, "two")
	got, err := s.Get(k1)
	if err != nil {
		t.Fatal(err)
	}
	if v := values(got); len(v) != 1 || v[0] != "two" {
		t.Fatalf("values %q, want [two]", v)
	}
	if _, err := s.Get(Key{Partition: 7, Bucket: "b", Key: "k"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent key: %v", err)
	}
	actor := s.Actor()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir)
	defer s.Close()
	if s.Actor() != actor {
		t.Fatalf("epoch changed across restart: %s -> %s", actor, s.Actor())
	}
	got, _ = s.Get(k1)
	if v := values(got); len(v) != 1 || v[0] != "two" {
		t.Fatalf("after restart: %q", v)
	}
	// Counters never repeat within an epoch, even past the lease.
	w3 := put(t, s, k1, w2.Context, "three")
	if w3.Dot.Counter <= w2.Dot.Counter {
		t.Fatalf("counter went back: %d after %d", w3.Dot.Counter, w2.Dot.Counter)
	}
	seen := map[uint64]bool{}
	for i := range 50 {
		w := put(t, s, Key{Bucket: "b", Key: fmt.Sprint(i)}, Context{}, "x")
		if seen[w.Dot.Counter] {
			t.Fatalf("counter %d issued twice", w.Dot.Counter)
		}
		seen[w.Dot.Counter] = true
	}
}

func TestWipedDirectoryTakesFreshEpoch(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	old := s.Actor()
	w := put(t, s, k1, Context{}, "before")
	s.Close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	if s.Actor() == old {
		t.Fatalf("wiped store kept epoch %s", old)
	}
	// The old version arrives back by repair; a new write through the
	// wiped replica must not collide with it.
	if _, err := s.Apply(k1, w.Object); err != nil {
		t.Fatal(err)
	}
	n := put(t, s, k1, Context{}, "after")
	if n.Dot == w.Dot {
		t.Fatalf("dot %v reused", n.Dot)
	}
	got, _ := s.Get(k1)
	if v := values(got); len(v) != 2 {
		t.Fatalf("values %q, want both versions as siblings", v)
	}
}

func TestWrongNodeRefused(t *testing.T) {
	dir := t.TempDir()
	open(t, dir).Close()
	if _, err := Open(Config{Dir: dir, NodeID: "n2"}); !errors.Is(err, ErrWrongNode) {
		t.Fatalf("got %v, want ErrWrongNode", err)
	}
}

func TestApplyMergesAndIsIdempotent(t *testing.T) {
	a, b := open(t, t.TempDir()), open(t, filepath.Join(t.TempDir(), "b"))
	defer a.Close()
	defer b.Close()
	wa := put(t, a, k1, Context{}, "from-a")
	wb := put(t, b, k1, Context{}, "from-b")
	if wa.Dot.Actor == wb.Dot.Actor {
		t.Fatal("two stores share an actor")
	}
	m, err := a.Apply(k1, wb.Object)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Siblings) != 2 {
		t.Fatalf("concurrent writes: %d siblings, want 2", len(m.Siblings))
	}
	again, err := a.Apply(k1, wb.Object)
	if err != nil || !equalObjects(again, m) {
		t.Fatalf("apply not idempotent: %v", err)
	}
	// A write with the merged context supersedes both.
	w := put(t, a, k1, m.Context, "resolved")
	if v := values(w.Object); len(v) != 1 || v[0] != "resolved" {
		t.Fatalf("after resolve: %q", v)
	}
	// A stale object arriving later changes nothing.
	m2, _ := a.Apply(k1, wa.Object)
	if !equalObjects(m2, w.Object) {
		t.Fatal("stale apply resurrected a superseded version")
	}
}

func TestConcurrentPutsKeepEveryWrite(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const writers = 16
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			if _, err := s.Put(k1, Write{Value: fmt.Appendf(nil, "%d", i), Now: time.Now()}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, _ := s.Get(k1)
	if n := len(got.Siblings); n != writers {
		t.Fatalf("%d siblings, want %d (one per blind concurrent write)", n, writers)
	}
}

func TestSiblingLimit(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	for i := range 3 {
		if _, err := s.Put(k1, Write{Value: []byte{byte(i)}, SiblingLimit: 3}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Put(k1, Write{Value: []byte("x"), SiblingLimit: 3})
	if !errors.Is(err, ErrTooManySiblings) {
		t.Fatalf("got %v, want ErrTooManySiblings", err)
	}
	got, _ := s.Get(k1)
	if len(got.Siblings) != 3 {
		t.Fatalf("refused write changed the object: %d siblings", len(got.Siblings))
	}
	// A write that resolves siblings is always allowed.
	if _, err := s.Put(k1, Write{Context: got.Context, Value: []byte("ok"), SiblingLimit: 3}); err != nil {
		t.Fatal(err)
	}
	// Apply never refuses.
	big := &Object{}
	for i := range 5 {
		d := Dot{"z.1", uint64(i + 1)}
		big = Merge(big, &Object{Context: Context{Dots: []Dot{d}}, Siblings: []Sibling{sibling(d)}})
	}
	if _, err := s.Apply(k1, big); err != nil {
		t.Fatal(err)
	}
}

func TestForgedContextRefused(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	ctx := Context{VV: []Entry{{s.Actor(), 1 << 40}}}
	if _, err := s.Put(k1, Write{Context: ctx, Value: []byte("x")}); !errors.Is(err, ErrBadContext) {
		t.Fatalf("got %v, want ErrBadContext", err)
	}
	if _, err := s.Get(k1); !errors.Is(err, ErrNotFound) {
		t.Fatal("refused write stored something")
	}
}

func TestScanPartition(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	for p := uint32(0); p < 3; p++ {
		for i := range 4 {
			put(t, s, Key{Partition: p, Bucket: "b", Key: fmt.Sprint(i)}, Context{}, "v")
		}
	}
	keys := scanAll(t, s, 1)[1]
	if len(keys) != 4 {
		t.Fatalf("partition 1 holds %d keys, want 4", len(keys))
	}
	for _, e := range keys {
		if e.Key.Partition != 1 || e.Key.Bucket != "b" {
			t.Fatalf("partition 1's range returned %v", e.Key)
		}
	}
}

func TestCorruptValueIsAnError(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	if err := s.db.Set(k1.encode(), []byte{1, 200}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(k1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

func BenchmarkPut(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	val := make([]byte, 1024)
	b.SetBytes(int64(len(val)))
	b.SetParallelism(32) // concurrent writers share fsyncs (group commit)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			k := Key{Partition: uint32(i % 1024), Bucket: "bench", Key: fmt.Sprintf("%p-%d", pb, i)}
			if _, err := s.Put(k, Write{Value: val, ContentType: "application/json"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkGet(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	val := make([]byte, 1024)
	const keys = 10000
	for i := range keys {
		s.Put(Key{Partition: uint32(i % 1024), Bucket: "bench", Key: fmt.Sprint(i)}, Write{Value: val})
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := s.Get(Key{Partition: uint32(i % keys % 1024), Bucket: "bench", Key: fmt.Sprint(i % keys)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestIssuedSeesTheObjectBeforeCommit(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	var issued *Object
	w, err := s.Put(k1, Write{Value: []byte("v"), Issued: func(o *Object) {
		issued = o
		if _, err := s.Get(k1); !errors.Is(err, ErrNotFound) {
			t.Errorf("Issued called after the commit: %v", err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if issued == nil || !equalObjects(issued, w.Object) {
		t.Fatalf("Issued got %+v, stored %+v", issued, w.Object)
	}
}

// A plain write supersedes what this replica holds as it issues the dot,
// siblings included, plus what its Context covers from other replicas; a
// version it did not see (arriving later) survives as a sibling.
func TestPlainPutSupersedesLocalObject(t *testing.T) {
	a, b := open(t, t.TempDir()), open(t, filepath.Join(t.TempDir(), "b"))
	defer a.Close()
	defer b.Close()
	put(t, a, k1, Context{}, "a1")
	wb := put(t, b, k1, Context{}, "b1")
	if _, err := a.Apply(k1, wb.Object); err != nil {
		t.Fatal(err)
	}
	plain, err := a.Put(k1, Write{Plain: true, Value: []byte("plain"), Now: time.Unix(2, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if v := values(plain.Object); len(v) != 1 || v[0] != "plain" {
		t.Fatalf("after a plain write: %q, want [plain]", v)
	}
	if !plain.Context.Descends(wb.Object.Context) {
		t.Fatalf("returned context %v does not cover the superseded %v", plain.Context, wb.Object.Context)
	}
	// b writes again without having seen the plain write: concurrent.
	wb2 := put(t, b, k1, wb.Context, "b2")
	m, err := a.Apply(k1, wb2.Object)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Siblings) != 2 {
		t.Fatalf("%d siblings after a concurrent write, want 2 (plain, b2)", len(m.Siblings))
	}
	// A plain write's Context also covers what the coordinator read
	// elsewhere: b's new version, not yet on a, is superseded when it lands.
	wb3 := put(t, b, k1, wb2.Context, "b3")
	p2, err := a.Put(k1, Write{Plain: true, Context: wb3.Object.Context, Value: []byte("p2"), Now: time.Unix(3, 0)})
	if err != nil {
		t.Fatal(err)
	}
	m, _ = a.Apply(k1, wb3.Object)
	if v := values(m); len(v) != 1 || v[0] != "p2" || !equalObjects(m, p2.Object) {
		t.Fatalf("after the read version arrived: %q, want [p2]", v)
	}
}

// TestMemTableSpread checks that nodes get different memtable sizes within
// the spread, the same one on every open, and never more than the cache
// allows.
func TestMemTableSpread(t *testing.T) {
	const base = 16 << 20
	sizes := map[uint64]string{}
	for i := range 10 {
		id := fmt.Sprintf("n%d", i+1)
		c := Config{Dir: "x", NodeID: id, MemTableSize: base}
		if err := c.fill(); err != nil {
			t.Fatal(err)
		}
		if c.MemTableSize < base*3/4 || c.MemTableSize > base*5/4 {
			t.Errorf("%s: memtable %d, want within 25%% of %d", id, c.MemTableSize, base)
		}
		again := Config{Dir: "y", NodeID: id, MemTableSize: base}
		if err := again.fill(); err != nil {
			t.Fatal(err)
		}
		if again.MemTableSize != c.MemTableSize {
			t.Errorf("%s: memtable %d, then %d", id, c.MemTableSize, again.MemTableSize)
		}
		sizes[c.MemTableSize] = id
	}
	if len(sizes) < 9 {
		t.Errorf("10 nodes share %d memtable sizes: %v", len(sizes), sizes)
	}

	none := Config{Dir: "x", NodeID: "n1", MemTableSize: base, MemTableSpread: -1}
	if err := none.fill(); err != nil || none.MemTableSize != base {
		t.Errorf("spread off: memtable %d (err %v), want %d", none.MemTableSize, err, base)
	}
	for _, id := range []string{"n1", "n2", "n3", "n4", "n5"} {
		full := Config{Dir: "x", NodeID: id, CacheSize: 64 << 20, MemTableSize: 16 << 20, MemTableSpread: 0.9}
		if err := full.fill(); err != nil || full.MemTableSize > 16<<20 {
			t.Errorf("%s: memtable %d (err %v), want at most a quarter of the cache", id, full.MemTableSize, err)
		}
	}
	if err := (&Config{Dir: "x", NodeID: "n1", MemTableSpread: 1}).fill(); err == nil {
		t.Error("a spread of 1 was accepted")
	}
}
