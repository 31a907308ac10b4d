package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

func cachedObject(v string) current {
	o := version(Dot{"a.1", 1})
	o.Siblings[0].Value = []byte(v)
	return current{raw: appendStored(nil, o), obj: o}
}

func TestObjCacheStaysWithinBudget(t *testing.T) {
	const budget = 1 << 20
	c := newObjCache(budget)
	val := cachedObject(strings.Repeat("x", 1000))
	for i := range 5000 {
		key := Key{Partition: 1, Bucket: "b", Key: fmt.Sprintf("k%d", i)}.encode()
		c.set(key, val)
		if i%3 == 0 {
			c.set(key, current{}) // removals leave slots in the clock
		}
	}
	entries, bytes, slots := 0, int64(0), 0
	for i := range c.shards {
		s := &c.shards[i]
		if s.bytes > s.budget {
			t.Errorf("shard %d holds %d bytes, budget %d", i, s.bytes, s.budget)
		}
		entries += len(s.m)
		bytes += s.bytes
		slots += len(s.queue) - s.head
	}
	if entries == 0 || bytes == 0 {
		t.Fatal("the cache kept nothing")
	}
	if slots > 2*entries+objShards*130 {
		t.Errorf("%d clock slots for %d entries: removed entries pile up", slots, entries)
	}
	// Replacing a key in place takes no new slot.
	key := Key{Partition: 1, Bucket: "b", Key: "again"}.encode()
	for range 1000 {
		c.set(key, val)
	}
	if s := c.shard(key); len(s.queue)-s.head > 2*len(s.m)+130 {
		t.Errorf("%d slots for %d entries after rewriting one key", len(s.queue)-s.head, len(s.m))
	}
}

// An entry used since the clock hand last passed it survives one more
// round; unused ones go first.
func TestObjCacheKeepsUsedEntries(t *testing.T) {
	val := cachedObject(strings.Repeat("x", 200))
	size := entrySize(string(Key{Partition: 1, Bucket: "b", Key: "k000"}.encode()), val)
	c := newObjCache(objShards * 10 * size) // ten entries per shard
	s := &c.shards[0]
	var keys [][]byte
	for i := 0; len(keys) < 20; i++ {
		k := Key{Partition: 1, Bucket: "b", Key: fmt.Sprintf("k%03d", i)}.encode()
		if c.shard(k) == s {
			keys = append(keys, k)
		}
	}
	for _, k := range keys[:10] {
		c.set(k, val)
	}
	// set marks an entry used; the first new key clears every mark and
	// evicts the oldest.
	if _, ok := c.get(keys[9]); !ok {
		t.Fatal("a key in a cache with room is missing")
	}
	c.set(keys[10], val)
	if _, ok := c.get(keys[0]); ok {
		t.Fatal("the oldest entry survived a full cache")
	}
	_, _ = c.get(keys[1]) // used: gets another round
	for _, k := range keys[11:15] {
		c.set(k, val)
	}
	if _, ok := c.get(keys[1]); !ok {
		t.Error("a used entry was evicted before unused ones")
	}
	if _, ok := c.get(keys[2]); ok {
		t.Error("an unused entry outlived a used one")
	}
}

// A reader's fill loses to any change made after the reader began: it
// could hold the version that change replaced.
func TestObjCacheFillLosesToChanges(t *testing.T) {
	c := newObjCache(1 << 20)
	key := Key{Partition: 1, Bucket: "b", Key: "k"}.encode()
	old, new := cachedObject("old"), cachedObject("new")

	gen := c.gen(key)
	c.set(key, new)
	c.fill(key, gen, old)
	if got, _ := c.get(key); got.obj != new.obj {
		t.Fatal("a fill replaced a later write")
	}
	gen = c.gen(key)
	c.set(key, current{})
	c.fill(key, gen, old)
	if _, ok := c.get(key); ok {
		t.Fatal("a fill brought back a removed key")
	}
	gen = c.gen(key)
	c.fill(key, gen, new)
	if got, ok := c.get(key); !ok || got.obj != new.obj {
		t.Fatal("a fill with no change since did not cache")
	}
}

func TestObjCacheDropPartition(t *testing.T) {
	c := newObjCache(1 << 20)
	val := cachedObject("v")
	var keys [][]byte
	for i := range 100 {
		k := Key{Partition: uint32(i % 2), Bucket: "b", Key: fmt.Sprint(i)}.encode()
		keys = append(keys, k)
		c.set(k, val)
	}
	c.dropPartition(1)
	for i, k := range keys {
		if _, ok := c.get(k); ok != (i%2 == 0) {
			t.Fatalf("key %d of partition %d: cached %v after dropping partition 1", i, i%2, ok)
		}
	}
}

// TestObjectCacheMatchesDisk races every path that changes objects (Put,
// Apply, ApplyMany, Purge, DeletePartition) against readers that fill the
// cache, with a cache small enough to evict all the time. Afterwards every
// key the cache holds must match what Pebble holds.
func TestObjectCacheMatchesDisk(t *testing.T) {
	seed := testSeed(t, 7)
	s, err := Open(Config{Dir: t.TempDir(), NodeID: "n1", CounterLease: 8, ObjectCacheSize: 256 << 10, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const p, q = 5, 6 // q is deleted now and then
	var keys []Key
	for i := range 60 {
		keys = append(keys, Key{Partition: []uint32{p, q}[i%2], Bucket: "b", Key: fmt.Sprintf("k%02d", i)})
	}
	get := func(k Key) *Object {
		o, err := s.Get(k)
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("Get %v: %v", k, err)
		}
		return o
	}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			pr := &peer{actor: fmt.Sprintf("w%d.1", w)}
			for i := range 400 {
				k := keys[rng.IntN(len(keys))]
				tomb := rng.IntN(3) == 0
				var err error
				switch rng.IntN(8) {
				case 0, 1:
					var ctx Context
					if o := get(k); o != nil && rng.IntN(2) == 0 {
						ctx = o.Context
					}
					_, err = s.Put(k, Write{Context: ctx, Plain: rng.IntN(2) == 0, Value: fmt.Appendf(nil, "w%d/%d", w, i), Tombstone: tomb, Now: time.Unix(int64(i), 0)})
				case 2:
					_, err = s.Apply(k, pr.write(get(k), tomb, int64(i)))
				case 3:
					k2 := keys[rng.IntN(len(keys))]
					err = s.ApplyMany([]PartitionEntry{{k, pr.write(get(k), tomb, int64(i))}, {k2, pr.write(nil, !tomb, int64(i))}})
				case 4:
					var ds []Digest
					if ds, err = s.Tombstones(p, math.MaxInt64, 3); err == nil {
						_, err = s.Purge(ds)
					}
				case 5:
					if rng.IntN(20) == 0 {
						err = s.DeletePartition(q)
					}
				default:
					for range 4 {
						get(keys[rng.IntN(len(keys))])
					}
				}
				if err != nil {
					t.Errorf("writer %d op %d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	cached := 0
	for _, k := range keys {
		c, ok := s.objects.get(k.encode())
		if !ok {
			continue
		}
		cached++
		v, closer, err := s.db.Get(k.encode())
		if errors.Is(err, pebble.ErrNotFound) {
			t.Errorf("%v: cached %v, absent on disk", k, c.obj)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		disk, err := decodeStored(v)
		closer.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !equalObjects(c.obj, disk) || string(c.raw) != string(appendStored(nil, disk)) {
			t.Errorf("%v: cached %v, on disk %v", k, c.obj, disk)
		}
	}
	if cached == 0 {
		t.Fatal("the cache held none of the keys: the test checked nothing")
	}
	t.Logf("%d of %d keys cached at the end", cached, len(keys))
}
