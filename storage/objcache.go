package storage

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// objCache keeps recently used objects, decoded, in front of Pebble, by
// stored key. A hit saves a Pebble Get, which sets up an iterator per LSM
// level and, under writes, often finds its block rewritten by a compaction
// and gone from the block cache; and it saves the decode. Every write reads
// its key first, so writes gain as much as reads.
//
// Coherence. Every change to an object key is made under the key's lock
// (Put, Apply, ApplyMany, Purge), and each of them sets or removes the
// key's entry after its commit and before it releases the lock;
// DeletePartition removes the partition's entries after its commit. A read
// without the lock may fill in an entry it read from Pebble, but only if no
// change touched the key's shard since it began to read (the shard's gen),
// so it can never put back a version that a writer had replaced.
//
// Cached objects are shared and must not be modified; their values may
// alias the cached stored bytes.
//
// Memory is bounded per shard, counting each entry as twice its stored
// size (the bytes and the decoded object, whose values may live elsewhere)
// plus entryOverhead. Eviction is CLOCK: an entry used since the hand last
// passed it gets a second round.
type objCache struct {
	shards [objShards]objShard
}

const (
	objShards     = 64
	entryOverhead = 256 // map slot, queue slot, Object and Sibling headers
)

type objShard struct {
	mu     sync.Mutex
	m      map[string]*objEntry
	queue  []*objEntry // the clock; removed entries linger until passed
	head   int
	stale  int // removed entries still in queue
	bytes  int64
	budget int64
	gen    atomic.Uint64 // changes so far, for fill
	hits   int64         // under mu
	misses int64         // under mu
}

type objEntry struct {
	key  string
	cur  current
	size int64
	used atomic.Bool
}

// newObjCache returns a cache of about budget bytes, or nil (caching
// nothing) if budget is not positive. All methods accept a nil cache.
func newObjCache(budget int64) *objCache {
	if budget <= 0 {
		return nil
	}
	c := &objCache{}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*objEntry)
		c.shards[i].budget = budget / objShards
	}
	return c
}

func (c *objCache) shard(key []byte) *objShard {
	return &c.shards[xxhash.Sum64(key)%objShards]
}

// get returns key's entry, if cached.
func (c *objCache) get(key []byte) (current, bool) {
	if c == nil {
		return current{}, false
	}
	s := c.shard(key)
	s.mu.Lock()
	e, ok := s.m[string(key)]
	var cur current
	if ok {
		cur = e.cur
		e.used.Store(true)
		s.hits++
	} else {
		s.misses++
	}
	s.mu.Unlock()
	return cur, ok
}

// stats returns the lookups so far that found their key and that did not,
// and the bytes held.
func (c *objCache) stats() (hits, misses, bytes int64) {
	if c == nil {
		return 0, 0, 0
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		hits, misses, bytes = hits+s.hits, misses+s.misses, bytes+s.bytes
		s.mu.Unlock()
	}
	return hits, misses, bytes
}

// gen returns the number of changes to key's shard so far, to pass to fill.
func (c *objCache) gen(key []byte) uint64 {
	if c == nil {
		return 0
	}
	return c.shard(key).gen.Load()
}

// fill caches cur, read from Pebble without key's lock, unless the shard
// changed since gen was taken or key is cached already.
func (c *objCache) fill(key []byte, gen uint64, cur current) {
	if c == nil || cur.obj == nil {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() != gen || s.m[string(key)] != nil {
		return
	}
	s.insert(string(key), cur)
}

// set records key's new contents after a change; the caller holds key's
// lock. A nil cur.obj removes the entry.
func (c *objCache) set(key []byte, cur current) {
	if c == nil {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	e := s.m[string(key)]
	switch {
	case cur.obj == nil && e != nil:
		s.remove(e)
	case cur.obj == nil:
	case e != nil:
		size := entrySize(e.key, cur)
		s.bytes += size - e.size
		e.cur, e.size = cur, size
		e.used.Store(true)
		s.evict()
	default:
		s.insert(string(key), cur)
	}
}

// dropPartition removes every entry of partition p.
func (c *objCache) dropPartition(p uint32) {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen.Add(1)
		for k, e := range s.m {
			if len(k) >= 5 && binary.BigEndian.Uint32([]byte(k[1:5])) == p {
				s.remove(e)
			}
		}
		s.mu.Unlock()
	}
}

func entrySize(key string, cur current) int64 {
	return int64(2*len(cur.raw) + 2*len(key) + entryOverhead)
}

func (s *objShard) insert(key string, cur current) {
	e := &objEntry{key: key, cur: cur, size: entrySize(key, cur)}
	s.m[key] = e
	s.queue = append(s.queue, e)
	s.bytes += e.size
	s.evict()
}

func (s *objShard) remove(e *objEntry) {
	delete(s.m, e.key)
	s.bytes -= e.size
	s.stale++
	if s.stale > 64 && s.stale > len(s.m) {
		s.compact()
	}
}

// evict moves the clock hand until the shard is within its budget.
func (s *objShard) evict() {
	for s.bytes > s.budget && s.head < len(s.queue) {
		e := s.queue[s.head]
		s.queue[s.head] = nil
		s.head++
		switch {
		case s.m[e.key] != e:
			s.stale--
		case e.used.Load():
			e.used.Store(false)
			s.queue = append(s.queue, e)
		default:
			delete(s.m, e.key)
			s.bytes -= e.size
		}
	}
	if s.head > 64 && s.head > len(s.queue)/2 {
		s.compact()
	}
}

// compact drops the passed slots and removed entries from the queue.
func (s *objShard) compact() {
	q := make([]*objEntry, 0, len(s.m))
	for _, e := range s.queue[s.head:] {
		if e != nil && s.m[e.key] == e {
			q = append(q, e)
		}
	}
	s.queue, s.head, s.stale = q, 0, 0
}
