// Package storage keeps quorumkv's versioned objects in Pebble.
//
// An object is the set of sibling versions of one key plus its causal
// context (a dotted version vector set, see Object). One pure function,
// Merge, combines versions wherever they meet. A Store adds durability on
// top: every write is a synced Pebble commit, concurrent commits share their
// fsyncs (Pebble's commit pipeline groups them), and a read-modify-write of
// one key holds only that key's lock stripe.
package storage

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// Errors returned by the store.
var (
	ErrNotFound = errors.New("storage: not found")
	ErrClosed   = errors.New("storage: closed")
	// ErrTooManySiblings refuses a client write that would grow an object
	// past Write.SiblingLimit.
	ErrTooManySiblings = errors.New("storage: too many siblings")
	// ErrBadContext refuses a client context that claims versions this
	// replica never issued.
	ErrBadContext = errors.New("storage: context covers versions this replica never issued")
	// ErrWrongNode means the data directory belongs to another node.
	ErrWrongNode = errors.New("storage: data directory belongs to another node")
)

// Config configures a Store.
type Config struct {
	// Dir is the data directory. Required.
	Dir string
	// NodeID names this node; the actor id is NodeID plus an epoch kept in
	// Dir. Required.
	NodeID string
	// CacheSize is the memory kept for recent writes and reads, in bytes:
	// the object cache (ObjectCacheSize), and Pebble's block cache, which
	// gets the rest and out of which Pebble also reserves the memtables
	// (see MemTableSize). Default 128 MiB.
	CacheSize int64
	// ObjectCacheSize is the part of CacheSize that keeps recently used
	// objects decoded in front of Pebble, in bytes (see objCache). Default
	// CacheSize/4 (32 MiB for the default cache: some 12,000 objects of
	// 1 KiB); negative: none. At most CacheSize/2.
	ObjectCacheSize int64
	// MemTableSize is Pebble's memtable size in bytes. Pebble reserves
	// every memtable, the one being written and those waiting to be
	// flushed, inside the block cache, so a memtable half the cache's size
	// leaves no room for blocks at all and every read goes to disk. Default
	// CacheSize/8 (16 MiB for the default cache), at most 64 MiB; a size
	// set here must be at most CacheSize/4. MemTableSpread varies it.
	MemTableSize uint64
	// MemTableSpread varies MemTableSize by up to this fraction either way,
	// by a hash of NodeID, so a node keeps its size across restarts.
	// Replicas of a key take the same writes: with equal memtables they
	// would flush, and compact after, at the same moments, and a quorum
	// would wait on replicas that are all busy at once. Staggered, usually
	// at most one of them is (docs/design.md, "Staggered flushes"). Default
	// 0.25; negative: none. The result stays within CacheSize/4.
	MemTableSpread float64
	// WALMinSyncInterval is the least time between two syncs of Pebble's
	// write-ahead log. Commits that arrive while a sync waits share the
	// next one, so under load fewer, larger syncs carry the same writes; a
	// commit still returns only once its sync is done. An idle store syncs
	// at once. Default 500µs; negative: no wait.
	WALMinSyncInterval time.Duration
	// CounterLease is how many dot counters the store reserves with one
	// synced metadata write. A restart skips what is left of the lease, so
	// counters never repeat within an epoch even if a dot was sent to other
	// replicas before its local commit finished. Default 1<<20.
	CounterLease uint64
	// Logger receives Pebble's and the store's logs. Default slog.Default().
	Logger *slog.Logger
	// Hints bounds the hinted handoff store. Zero fields take defaults.
	Hints HintConfig
	// DisableTree stops maintaining the hash-tree leaves on writes. Only
	// for benchmarks that measure what the tree costs the write path:
	// anti-entropy over such a store sees wrong trees until RebuildTree.
	DisableTree bool
}

// spread returns size scaled by a factor in [1-frac, 1+frac] that id's
// hash picks, at most limit.
func spread(size uint64, frac float64, id string, limit uint64) uint64 {
	u := float64(xxhash.Sum64String(id)>>11) / (1 << 53) // uniform in [0, 1)
	return min(uint64(float64(size)*(1+frac*(2*u-1))), limit)
}

// DefaultConfig returns the defaults for the optional fields.
func DefaultConfig() Config {
	return Config{
		CacheSize:          128 << 20,
		MemTableSpread:     0.25,
		WALMinSyncInterval: 500 * time.Microsecond,
		CounterLease:       1 << 20,
		Logger:             slog.Default(),
		Hints:              DefaultHintConfig(),
	}
}

func (c *Config) fill() error {
	def := DefaultConfig()
	if c.Dir == "" {
		return errors.New("storage: Config.Dir is required")
	}
	if c.NodeID == "" {
		return errors.New("storage: Config.NodeID is required")
	}
	if c.CacheSize <= 0 {
		c.CacheSize = def.CacheSize
	}
	if c.MemTableSize == 0 {
		c.MemTableSize = uint64(min(max(c.CacheSize/8, 256<<10), 64<<20))
	}
	switch {
	case c.ObjectCacheSize == 0:
		c.ObjectCacheSize = c.CacheSize / 4
	case c.ObjectCacheSize < 0:
		c.ObjectCacheSize = 0
	case c.ObjectCacheSize > c.CacheSize/2:
		return fmt.Errorf("storage: ObjectCacheSize %d is more than half of CacheSize %d", c.ObjectCacheSize, c.CacheSize)
	}
	if c.MemTableSize > uint64(c.CacheSize/4) {
		return fmt.Errorf("storage: MemTableSize %d is more than a quarter of CacheSize %d: the memtables would crowd blocks out of the cache", c.MemTableSize, c.CacheSize)
	}
	switch {
	case c.MemTableSpread == 0:
		c.MemTableSpread = def.MemTableSpread
	case c.MemTableSpread < 0:
		c.MemTableSpread = 0
	case c.MemTableSpread >= 1:
		return fmt.Errorf("storage: MemTableSpread %v is not below 1", c.MemTableSpread)
	}
	c.MemTableSize = spread(c.MemTableSize, c.MemTableSpread, c.NodeID, uint64(c.CacheSize/4))
	if c.CounterLease == 0 {
		c.CounterLease = def.CounterLease
	}
	switch {
	case c.WALMinSyncInterval == 0:
		c.WALMinSyncInterval = def.WALMinSyncInterval
	case c.WALMinSyncInterval < 0:
		c.WALMinSyncInterval = 0
	}
	if c.Logger == nil {
		c.Logger = def.Logger
	}
	c.Hints.fill()
	return nil
}

// lockStripes is the number of per-key locks. Two keys share a lock with
// probability 1/lockStripes; a shared lock only serializes their commits.
const lockStripes = 1024

// Store is a node's durable object store.
type Store struct {
	cfg   Config
	db    *pebble.DB
	actor string
	seed  maphash.Seed
	locks [lockStripes]sync.Mutex

	counter   atomic.Uint64 // last dot counter issued
	leaseMu   sync.Mutex
	leaseTill atomic.Uint64 // counters up to here are reserved on disk

	objects   *objCache // nil if Config.ObjectCacheSize is negative
	events    engineEvents
	hints     hintCounters
	corrupt   atomic.Uint64
	treeStale atomic.Bool
	rebuildMu sync.Mutex // serializes RebuildTree

	closed atomic.Bool
}

// Open opens or creates the store in cfg.Dir. A directory without an epoch
// (new, or wiped) gets a fresh one, so this node's dots can never repeat
// ones it issued before it lost its data.
func Open(cfg Config) (*Store, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	cache := pebble.NewCache(cfg.CacheSize - cfg.ObjectCacheSize)
	defer cache.Unref()
	s := &Store{cfg: cfg, seed: maphash.MakeSeed(), objects: newObjCache(cfg.ObjectCacheSize)}
	opts := &pebble.Options{
		Cache:              cache,
		FormatMajorVersion: pebble.FormatNewest,
		MemTableSize:       cfg.MemTableSize,
		WALMinSyncInterval: func() time.Duration { return cfg.WALMinSyncInterval },
		Merger:             Merger,
		Logger:             pebbleLogger{cfg.Logger.With("component", "pebble")},
		EventListener:      s.events.listener(cfg.Logger.With("component", "pebble")),
	}
	// A Get of one key would otherwise search every table whose range holds
	// it (each L0 file, one per level); bloom filters rule out nearly all of
	// them without reading a block. 10 bits per key: ~1% false positives.
	// L1 and below inherit L0's setting.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		if strings.Contains(err.Error(), "merger name") {
			err = fmt.Errorf("%w (the directory was written by an older storage format; wipe it and let anti-entropy and handoff refill it)", err)
		}
		return nil, fmt.Errorf("storage: open %s: %w", cfg.Dir, err)
	}
	s.db = db
	if err := s.loadIdentity(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.countHints(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.loadTreeState(); err != nil {
		db.Close()
		return nil, err
	}
	cfg.Logger.Info("storage open", "dir", cfg.Dir, "block_cache", cfg.CacheSize-cfg.ObjectCacheSize,
		"object_cache", cfg.ObjectCacheSize, "memtable", cfg.MemTableSize)
	return s, nil
}

func (s *Store) loadIdentity() error {
	owner, err := s.getMeta("node")
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	case string(owner) != s.cfg.NodeID:
		return fmt.Errorf("%w: %s holds node %q, not %q", ErrWrongNode, s.cfg.Dir, owner, s.cfg.NodeID)
	}
	epoch, err := s.getMeta("epoch")
	if errors.Is(err, ErrNotFound) {
		var r [8]byte
		if _, err := rand.Read(r[:]); err != nil {
			return err
		}
		epoch = []byte(hex.EncodeToString(r[:]))
		b := s.db.NewBatch()
		defer b.Close()
		_ = b.Set(metaKey("node"), []byte(s.cfg.NodeID), nil)
		_ = b.Set(metaKey("epoch"), epoch, nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("storage: persist epoch: %w", err)
		}
		s.cfg.Logger.Info("new epoch: this data directory starts empty", "epoch", string(epoch))
	} else if err != nil {
		return err
	}
	s.actor = s.cfg.NodeID + "." + string(epoch)

	lease, err := s.getMeta("counter-lease")
	var till uint64
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	default:
		if till, err = strconv.ParseUint(string(lease), 10, 64); err != nil {
			return fmt.Errorf("%w: counter lease %q", ErrCorrupt, lease)
		}
	}
	// Skip whatever the previous run may have issued.
	s.counter.Store(till)
	s.leaseTill.Store(till)
	return s.extendLease(till + 1)
}

// extendLease makes sure counter c is reserved on disk before it is used.
func (s *Store) extendLease(c uint64) error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if c <= s.leaseTill.Load() {
		return nil
	}
	till := c + s.cfg.CounterLease
	if err := s.db.Set(metaKey("counter-lease"), strconv.AppendUint(nil, till, 10), pebble.Sync); err != nil {
		return fmt.Errorf("storage: extend counter lease: %w", err)
	}
	s.leaseTill.Store(till)
	return nil
}

// nextCounter issues a dot counter above floor.
func (s *Store) nextCounter(floor uint64) (uint64, error) {
	for {
		cur := s.counter.Load()
		next := max(cur, floor) + 1
		if next > MaxCounter {
			return 0, fmt.Errorf("storage: dot counter exhausted for actor %s", s.actor)
		}
		if !s.counter.CompareAndSwap(cur, next) {
			continue
		}
		if next > s.leaseTill.Load() {
			if err := s.extendLease(next); err != nil {
				return 0, err
			}
		}
		return next, nil
	}
}

// Actor returns the actor id this store issues dots as: the node id plus
// the data directory's epoch.
func (s *Store) Actor() string { return s.actor }

// Close closes the store. Callers must stop using it first.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	return s.db.Close()
}

func (s *Store) lock(k Key) *sync.Mutex { return &s.locks[s.stripe(k)] }

// stripe returns the index of k's lock.
func (s *Store) stripe(k Key) int {
	var h maphash.Hash
	h.SetSeed(s.seed)
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], k.Partition)
	h.Write(p[:])
	h.WriteString(k.Bucket)
	h.WriteByte(0)
	h.WriteString(k.Key)
	return int(h.Sum64() % lockStripes)
}

// lockAll locks the stripes of every key in ks and returns the function
// that unlocks them. Stripes are taken in ascending order, and everything
// else holds at most one stripe at a time, so this cannot deadlock.
func (s *Store) lockAll(ks []Key) (unlock func()) {
	idx := make([]int, 0, len(ks))
	for _, k := range ks {
		idx = append(idx, s.stripe(k))
	}
	slices.Sort(idx)
	return s.lockStripes(slices.Compact(idx))
}

// lockEvery locks every stripe, in the same order as lockAll, and returns
// the function that unlocks them.
func (s *Store) lockEvery() (unlock func()) {
	idx := make([]int, lockStripes)
	for i := range idx {
		idx[i] = i
	}
	return s.lockStripes(idx)
}

// lockStripes locks the stripes idx, which must be ascending.
func (s *Store) lockStripes(idx []int) (unlock func()) {
	for _, i := range idx {
		s.locks[i].Lock()
	}
	return func() {
		for _, i := range slices.Backward(idx) {
			s.locks[i].Unlock()
		}
	}
}

// Get returns the object stored under k, or ErrNotFound.
func (s *Store) Get(k Key) (*Object, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	return s.get(k.encode())
}

func (s *Store) get(key []byte) (*Object, error) {
	if cur, ok := s.objects.get(key); ok {
		return cur.obj, nil
	}
	gen := s.objects.gen(key)
	raw, err := s.getRaw(key)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, ErrNotFound
	}
	o, err := decodeOwned(raw)
	if err != nil {
		return nil, fmt.Errorf("storage: key %x: %w", key, err)
	}
	s.objects.fill(key, gen, current{raw: raw, obj: o})
	return o, nil
}

// Apply merges an incoming object (from a coordinator, read repair or any
// repair path) into the stored one and returns the result. It never refuses
// on content: the merge is total. It writes only when the merge changed
// something, and returns after the commit is synced.
func (s *Store) Apply(k Key, in *Object) (*Object, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	key := k.encode()
	mu := s.lock(k)
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.load(key)
	if err != nil {
		return nil, err
	}
	merged := Merge(cur.obj, in)
	raw := appendStored(nil, merged)
	if cur.obj != nil && bytes.Equal(raw, cur.raw) {
		s.objects.set(key, cur)
		return cur.obj, nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	s.stage(b, key, cur, raw, merged)
	if err := b.Commit(pebble.Sync); err != nil {
		s.objects.set(key, current{}) // the outcome is unknown: ask Pebble
		return nil, fmt.Errorf("storage: apply %s: %w", k, err)
	}
	s.objects.set(key, current{raw: raw, obj: merged})
	return merged, nil
}

// Write is a client write to be coordinated by this replica.
type Write struct {
	// Context is the causal context the client read; the write supersedes
	// exactly the versions it covers.
	Context Context
	// Plain marks a write without a client context: it also supersedes
	// what this replica holds when it issues the dot, read under the key's
	// lock. Context then holds what the coordinator read from other
	// replicas, if anything.
	Plain bool
	// Value, ContentType and Tombstone describe the new version.
	Value       []byte
	ContentType string
	Tombstone   bool
	// Now is the wall-clock time recorded as LastModified (display only).
	Now time.Time
	// RequestID is the client's id of this logical write (X-Request-Id),
	// kept with the version. If the object already holds a version with
	// this id, the write is a retry of it: Put issues no new version and
	// answers with that one (Written.Retry).
	RequestID string
	// SiblingLimit refuses the write with ErrTooManySiblings when it would
	// add a sibling to an object that already has this many. Zero means no
	// limit.
	SiblingLimit int
	// Issued, if set, is called with the new object after its dot is issued
	// and before the local commit, under the key's lock, so that the caller
	// can send it to other replicas while the local fsync runs. Sharing the
	// object early is safe: the counter lease guarantees its dot is never
	// issued again, even if the commit fails or the process crashes. It
	// must not block.
	Issued func(*Object)
}

// Written is the outcome of a coordinated write.
type Written struct {
	Object  *Object // the stored object after the write
	Context Context // the context to return: the client's plus the new dot
	Dot     Dot     // the new version's dot
	// Retry is set when the write was a retry of a version this replica
	// already held (same RequestID): nothing new was written, and Dot is
	// that version's.
	Retry bool
}

// Put coordinates a client write at this replica: it issues a new dot, lets
// the write supersede what w.Context covers, and commits synced.
func (s *Store) Put(k Key, w Write) (Written, error) {
	if s.closed.Load() {
		return Written{}, ErrClosed
	}
	key := k.encode()
	mu := s.lock(k)
	mu.Lock()
	defer mu.Unlock()
	loaded, err := s.load(key)
	if err != nil {
		return Written{}, err
	}
	cur := loaded.obj
	if cur == nil {
		cur = &Object{}
	}
	if err := s.checkContext(w.Context); err != nil {
		return Written{}, err
	}
	if w.RequestID != "" {
		if retry, ok := retryOf(cur, w); ok {
			if w.Issued != nil {
				w.Issued(cur) // the other replicas may have missed the first attempt
			}
			if w.Plain {
				retry.Context = retry.Context.Join(cur.Context)
			}
			return retry, nil
		}
	}
	if w.Plain {
		w.Context = w.Context.Join(cur.Context)
	}
	c, err := s.nextCounter(max(cur.Context.Max(s.actor), w.Context.Max(s.actor)))
	if err != nil {
		return Written{}, err
	}
	d := Dot{Actor: s.actor, Counter: c}
	obj, ctx := Update(cur, d, w.Context, Sibling{
		RequestID:    w.RequestID,
		Value:        w.Value,
		ContentType:  w.ContentType,
		LastModified: w.Now.UnixNano(),
		Tombstone:    w.Tombstone,
	})
	if n := len(obj.Siblings); w.SiblingLimit > 0 && n > len(cur.Siblings) && n > w.SiblingLimit {
		return Written{}, fmt.Errorf("%w: %s has %d siblings, the limit is %d", ErrTooManySiblings, k, len(cur.Siblings), w.SiblingLimit)
	}
	if w.Issued != nil {
		w.Issued(obj)
	}
	b := s.db.NewBatch()
	defer b.Close()
	raw := appendStored(nil, obj)
	s.stage(b, key, loaded, raw, obj)
	if err := b.Commit(pebble.Sync); err != nil {
		s.objects.set(key, current{}) // the outcome is unknown: ask Pebble
		return Written{}, fmt.Errorf("storage: put %s: %w", k, err)
	}
	s.objects.set(key, current{raw: raw, obj: obj})
	return Written{Object: obj, Context: ctx, Dot: d}, nil
}

// retryOf reports whether w retries a write cur already holds (a sibling
// with w's RequestID that w's context does not cover: a write that saw that
// version supersedes it, as a plain write issued again over another
// replica's version does), and the answer to give: cur unchanged, and the
// client's context plus every dot of that write.
func retryOf(cur *Object, w Write) (Written, bool) {
	var dots []Dot
	for _, s := range cur.Siblings {
		if s.RequestID == w.RequestID && !w.Context.Covers(s.Dot) {
			dots = append(dots, s.Dot)
		}
	}
	if len(dots) == 0 {
		return Written{}, false
	}
	return Written{Object: cur, Context: w.Context.Join(Context{Dots: dots}), Dot: dots[0], Retry: true}, true
}

// checkContext refuses a client context that covers dots of this actor
// beyond the last one issued: merged into the object, it would hide this
// replica's next writes.
func (s *Store) checkContext(c Context) error {
	if issued := s.counter.Load(); c.Max(s.actor) > issued {
		return fmt.Errorf("%w: %s up to %d, issued %d", ErrBadContext, s.actor, c.Max(s.actor), issued)
	}
	return nil
}

func (s *Store) getMeta(name string) ([]byte, error) {
	v, closer, err := s.db.Get(metaKey(name))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: read %s: %w", name, err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// GetMeta returns a node metadata value, or ErrNotFound.
func (s *Store) GetMeta(name string) ([]byte, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	return s.getMeta(name)
}

// SetMeta stores a node metadata value, synced.
func (s *Store) SetMeta(name string, value []byte) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.db.Set(metaKey(name), value, pebble.Sync)
}

// closeIter closes it, reporting its error through err unless err is
// already set. Use it deferred, with a named error result.
func closeIter(it *pebble.Iterator, err *error) {
	if cerr := it.Close(); cerr != nil && *err == nil {
		*err = fmt.Errorf("storage: iterator: %w", cerr)
	}
}

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) { p.l.Info(fmt.Sprintf(format, args...)) }
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf logs and panics: Pebble calls it only for unrecoverable invariant
// violations, and a panic lets the process's owner decide how to stop.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "fatal", true)
	panic(msg)
}
