package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Hinted handoff. When a replica of a key does not acknowledge a write, the
// coordinator stores the version on a fallback node as a hint addressed to
// that replica (the owner); the fallback delivers it when the owner is back
// and deletes it once the owner acknowledged it. Hints are durable like
// objects (synced commits) and live in their own key range (see keys.go).

// HintKind says what a hint promises.
type HintKind uint8

const (
	// HintDurable is a hint that counted toward a write's W: the write was
	// acknowledged because this node holds it, so it is never dropped. A
	// full store refuses new ones (ErrHintsFull) so that the coordinator can
	// try another fallback.
	HintDurable HintKind = 1
	// HintSlow is a best-effort hint for a replica that was merely slower
	// than W. Slow hints are bounded by count, bytes and age; one that does
	// not fit is dropped and counted, never an error to the writer.
	// Anti-entropy repairs what dropped hints miss.
	HintSlow HintKind = 2
)

// The zero HintKind is invalid, so a caller that forgets to choose is told
// rather than silently given either promise.
func (k HintKind) valid() bool { return k == HintDurable || k == HintSlow }

func (k HintKind) String() string {
	switch k {
	case HintDurable:
		return "durable"
	case HintSlow:
		return "slow"
	}
	return fmt.Sprintf("HintKind(%d)", uint8(k))
}

// HintConfig bounds the hint store. Bytes count keys and values as stored.
type HintConfig struct {
	// MaxDurable is the most durable hint entries (one per owner and key)
	// kept; past it new ones are refused. Default 1_000_000.
	MaxDurable int
	// MaxDurableBytes is the most bytes of durable hints kept; past it new
	// ones are refused. Default 1 GiB.
	MaxDurableBytes int64
	// MaxSlow is the most slow hint entries kept; past it new ones are
	// dropped. Default 100_000.
	MaxSlow int
	// MaxSlowBytes is the most bytes of slow hints kept; past it new ones
	// are dropped. Default 256 MiB.
	MaxSlowBytes int64
	// MaxSlowAge is how long a slow hint is kept: ExpireHints drops older
	// ones. Durable hints never expire. Default 3h.
	MaxSlowAge time.Duration
}

// DefaultHintConfig returns the default hint bounds.
func DefaultHintConfig() HintConfig {
	return HintConfig{
		MaxDurable:      1_000_000,
		MaxDurableBytes: 1 << 30,
		MaxSlow:         100_000,
		MaxSlowBytes:    256 << 20,
		MaxSlowAge:      3 * time.Hour,
	}
}

func (c *HintConfig) fill() {
	def := DefaultHintConfig()
	if c.MaxDurable <= 0 {
		c.MaxDurable = def.MaxDurable
	}
	if c.MaxDurableBytes <= 0 {
		c.MaxDurableBytes = def.MaxDurableBytes
	}
	if c.MaxSlow <= 0 {
		c.MaxSlow = def.MaxSlow
	}
	if c.MaxSlowBytes <= 0 {
		c.MaxSlowBytes = def.MaxSlowBytes
	}
	if c.MaxSlowAge <= 0 {
		c.MaxSlowAge = def.MaxSlowAge
	}
}

var (
	// ErrHintsFull refuses a new durable hint: the store holds
	// HintConfig.MaxDurable entries or MaxDurableBytes bytes of them.
	ErrHintsFull = errors.New("storage: hint store full")
	// ErrBadHint refuses a hint that cannot be stored or addressed: no
	// owner, no object, an invalid kind, or a key too long to encode.
	ErrBadHint = errors.New("storage: bad hint")
)

// A Hint is a version held for another replica, the owner.
type Hint struct {
	Owner  string
	Key    Key
	Kind   HintKind
	Object *Object
	// Stored is when the oldest version the hint holds was hinted; merges
	// keep it, so a hint's age counts from its first write.
	Stored time.Time
}

// HintStats describes the hint store.
type HintStats struct {
	Durable, DurableBytes int64  // durable entries and their bytes
	Slow, SlowBytes       int64  // slow entries and their bytes
	DroppedSlow           uint64 // slow hints dropped (full or expired) since Open
	Refused               uint64 // durable hints refused with ErrHintsFull since Open
}

// hintCounters track the hint store's size in memory, so that PutHint can
// check the bounds without a scan. Open rebuilds them with one scan.
type hintCounters struct {
	mu                    sync.Mutex // serializes check-and-add; reads are lock-free
	durable, durableBytes atomic.Int64
	slow, slowBytes       atomic.Int64
	droppedSlow, refused  atomic.Uint64
}

func (c *hintCounters) of(kind HintKind) (n, bytes *atomic.Int64) {
	if kind == HintDurable {
		return &c.durable, &c.durableBytes
	}
	return &c.slow, &c.slowBytes
}

// reserve adds dn entries and db bytes of kind if the bounds allow it. The
// space is reserved before the commit, so concurrent writers of different
// keys cannot overshoot together; a failed commit gives it back.
func (c *hintCounters) reserve(cfg *HintConfig, kind HintKind, dn, db int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, b := c.of(kind)
	switch kind {
	case HintDurable:
		// Only a new entry is refused. Merging into an existing one adds no
		// entry and at most the new version's bytes, and keeps every version
		// of the key that this node promised to hold in one place.
		if dn > 0 && (n.Load()+dn > int64(cfg.MaxDurable) || b.Load()+db > cfg.MaxDurableBytes) {
			return false
		}
	case HintSlow:
		if dn > 0 && n.Load()+dn > int64(cfg.MaxSlow) || db > 0 && b.Load()+db > cfg.MaxSlowBytes {
			return false
		}
	}
	n.Add(dn)
	b.Add(db)
	return true
}

func (c *hintCounters) add(kind HintKind, dn, db int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, b := c.of(kind)
	n.Add(dn)
	b.Add(db)
}

// Hint value format: a version byte (1), the kind (again: a value is checked
// against its key), the stored time in Unix nanoseconds (zigzag varint), and
// then the object's encoding (EncodeObject).
const hintFormatV1 = 1

func appendHintValue(buf []byte, kind HintKind, stored int64, o *Object) []byte {
	buf = append(buf, hintFormatV1, byte(kind))
	buf = binary.AppendVarint(buf, stored)
	return AppendObject(buf, o)
}

// splitHintValue parses a hint value's header and returns the object's
// encoding, undecoded. obj aliases b.
func splitHintValue(b []byte) (kind HintKind, stored int64, obj []byte, err error) {
	if len(b) < 2 {
		return 0, 0, nil, fmt.Errorf("%w: hint value of %d bytes", ErrCorrupt, len(b))
	}
	if b[0] != hintFormatV1 {
		return 0, 0, nil, fmt.Errorf("%w: unknown hint format %d", ErrCorrupt, b[0])
	}
	kind = HintKind(b[1])
	if !kind.valid() {
		return 0, 0, nil, fmt.Errorf("%w: unknown hint kind %d", ErrCorrupt, b[1])
	}
	stored, n := binary.Varint(b[2:])
	if n <= 0 {
		return 0, 0, nil, fmt.Errorf("%w: truncated hint time", ErrCorrupt)
	}
	return kind, stored, b[2+n:], nil
}

// decodeHintValue decodes a hint value. The result shares no memory with b.
func decodeHintValue(b []byte) (HintKind, time.Time, *Object, error) {
	kind, stored, enc, err := splitHintValue(b)
	if err != nil {
		return 0, time.Time{}, nil, err
	}
	o, err := DecodeObject(enc)
	if err != nil {
		return 0, time.Time{}, nil, err
	}
	return kind, time.Unix(0, stored), o, nil
}

// decodeHint decodes a stored hint entry.
func decodeHint(key, value []byte) (Hint, error) {
	k, kind, owner, err := decodeHintKey(key)
	if err != nil {
		return Hint{}, err
	}
	vkind, stored, o, err := decodeHintValue(value)
	if err != nil {
		return Hint{}, fmt.Errorf("storage: hint %s for %s: %w", k, owner, err)
	}
	if vkind != kind {
		return Hint{}, fmt.Errorf("%w: hint %s for %s: key says %s, value %s", ErrCorrupt, k, owner, kind, vkind)
	}
	return Hint{Owner: owner, Key: k, Kind: kind, Object: o, Stored: stored}, nil
}

// getRaw returns a copy of the value stored under key, or nil if there is
// none.
func (s *Store) getRaw(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get %x: %w", key, err)
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

// [hintLo, hintHi) is the key range of all hints.
var hintLo, hintHi = []byte{prefixHint}, []byte{prefixHint + 1}

// PutHint stores o as a hint of kind for owner, merging it (Merge) into the
// hint already held for the same owner, key and kind. It returns after the
// commit is synced.
//
// A durable hint that would add a new entry past MaxDurable or
// MaxDurableBytes is refused with ErrHintsFull and nothing is stored;
// merging into an existing entry is always allowed. A slow hint that would
// add an entry or bytes past MaxSlow or MaxSlowBytes is dropped, counted in
// HintStats.DroppedSlow, and PutHint returns nil.
//
// now (required) is recorded as the hint's Stored time; a merge keeps the
// older time.
func (s *Store) PutHint(owner string, k Key, o *Object, kind HintKind, now time.Time) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if owner == "" || o == nil || !kind.valid() || now.IsZero() {
		return fmt.Errorf("%w: owner %q, kind %s, object set %t, time set %t", ErrBadHint, owner, kind, o != nil, !now.IsZero())
	}
	hk, err := hintKey(k, kind, owner)
	if err != nil {
		return err
	}
	mu := s.lock(k)
	mu.Lock()
	defer mu.Unlock()
	old, err := s.getRaw(hk)
	if err != nil {
		return err
	}
	stored := now.UnixNano()
	var cur *Object
	if old != nil {
		h, err := decodeHint(hk, old)
		if err != nil {
			return err
		}
		cur = h.Object
		stored = min(stored, h.Stored.UnixNano())
	}
	val := appendHintValue(nil, kind, stored, Merge(cur, o))
	if bytes.Equal(val, old) {
		return nil
	}
	dn, db := int64(0), int64(len(val)-len(old))
	if old == nil {
		dn, db = 1, int64(len(hk)+len(val))
	}
	if !s.hints.reserve(&s.cfg.Hints, kind, dn, db) {
		if kind == HintSlow {
			s.hints.droppedSlow.Add(1)
			return nil
		}
		s.hints.refused.Add(1)
		return fmt.Errorf("%w: %d durable hints of %d bytes held (limits %d, %d bytes); %s for %s refused",
			ErrHintsFull, s.hints.durable.Load(), s.hints.durableBytes.Load(),
			s.cfg.Hints.MaxDurable, s.cfg.Hints.MaxDurableBytes, k, owner)
	}
	if err := s.db.Set(hk, val, pebble.Sync); err != nil {
		s.hints.add(kind, -dn, -db)
		return fmt.Errorf("storage: put hint %s for %s: %w", k, owner, err)
	}
	return nil
}

// HintsForKey returns every object hinted for k, for all owners and both
// kinds. A fallback's reply to a read includes them, so that a read at R
// sees the writes this node holds for replicas that missed them.
func (s *Store) HintsForKey(k Key) (objs []*Object, err error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	p, err := hintPrefix(k)
	if err != nil {
		return nil, err
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, fmt.Errorf("storage: hints for %s: %w", k, err)
	}
	defer closeIter(it, &err)
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("storage: hints for %s: %w", k, err)
		}
		h, err := decodeHint(it.Key(), v)
		if err != nil {
			return nil, err
		}
		objs = append(objs, h.Object)
	}
	return objs, it.Error()
}

// ScanHints returns up to limit hints for owner (all owners if owner is
// ""), in key order (partition, bucket, key, kind, owner), starting after
// the cursor after (empty: from the start).
//
// next is the cursor for the following call, or nil when no hint is left:
// fewer than limit hints always come with a nil next. The cursor is the
// encoded Pebble key of the last hint returned (opaque to callers); it stays
// valid across restarts and deletions. limit below 1 is taken as 1.
//
// Hints of other owners are stepped over reading their keys only, but they
// are stepped over: draining every owner costs less with owner "" and
// routing each hint by its Owner.
func (s *Store) ScanHints(owner string, after []byte, limit int) (hints []Hint, next []byte, err error) {
	if s.closed.Load() {
		return nil, nil, ErrClosed
	}
	limit = max(limit, 1)
	lo := hintLo
	if len(after) > 0 {
		if after[0] != prefixHint {
			return nil, nil, fmt.Errorf("%w: %x is not a hint cursor", ErrBadCursor, after)
		}
		lo = append(bytes.Clone(after), 0) // the first key after the cursor
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hintHi})
	if err != nil {
		return nil, nil, fmt.Errorf("storage: scan hints: %w", err)
	}
	defer closeIter(it, &err)
	for it.First(); it.Valid(); it.Next() {
		key := it.Key()
		if owner != "" {
			o, ok := hintOwner(key)
			if !ok {
				return nil, nil, fmt.Errorf("%w: hint key %x", ErrCorrupt, key)
			}
			if string(o) != owner {
				continue
			}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, nil, fmt.Errorf("storage: scan hints: %w", err)
		}
		h, err := decodeHint(key, v)
		if err != nil {
			return nil, nil, err
		}
		hints = append(hints, h)
		if len(hints) == limit {
			// Peek, so that a scan that ends here says so. With an owner
			// filter the next hint may belong to someone else, and the
			// following call returns nothing.
			next = bytes.Clone(key)
			if !it.Next() {
				next = nil
			}
			return hints, next, it.Error()
		}
	}
	return hints, nil, it.Error()
}

// DeleteHint deletes the hint h names (owner, key and kind), but only if
// the stored hint still holds exactly h.Object: a hint that was merged with
// a newer version after it was read is kept, so that version is delivered
// too. It reports whether it deleted. The deletion is synced.
func (s *Store) DeleteHint(h Hint) (bool, error) {
	n, err := s.DeleteHints([]Hint{h})
	return n == 1, err
}

// DeleteHints is DeleteHint for a batch of hints, with one synced commit.
// It returns how many it deleted. It holds the lock stripes of all the
// batch's keys across that commit, delaying foreground writes that share
// them, so batches should stay small (a hundred or so).
func (s *Store) DeleteHints(hs []Hint) (int, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	type candidate struct {
		hk   []byte
		kind HintKind
		want []byte // the delivered object's encoding
	}
	cands := make([]candidate, 0, len(hs))
	keys := make([]Key, 0, len(hs))
	for _, h := range hs {
		if h.Owner == "" || h.Object == nil || !h.Kind.valid() {
			return 0, fmt.Errorf("%w: owner %q, kind %s, object set %t", ErrBadHint, h.Owner, h.Kind, h.Object != nil)
		}
		hk, err := hintKey(h.Key, h.Kind, h.Owner)
		if err != nil {
			return 0, err
		}
		cands = append(cands, candidate{hk, h.Kind, EncodeObject(h.Object)})
		keys = append(keys, h.Key)
	}
	// Compare and delete under the keys' locks, so that no PutHint merges a
	// version in between.
	unlock := s.lockAll(keys)
	defer unlock()
	b := s.db.NewBatch()
	defer b.Close()
	var dn, db [3]int64 // by kind
	deleted := make(map[string]bool, len(cands))
	for _, c := range cands {
		if deleted[string(c.hk)] {
			continue
		}
		cur, err := s.getRaw(c.hk)
		if err != nil {
			return 0, err
		}
		if cur == nil {
			continue
		}
		_, _, obj, err := splitHintValue(cur)
		if err != nil {
			return 0, fmt.Errorf("storage: hint %x: %w", c.hk, err)
		}
		if !bytes.Equal(obj, c.want) {
			continue
		}
		_ = b.Delete(c.hk, nil)
		deleted[string(c.hk)] = true
		dn[c.kind]--
		db[c.kind] -= int64(len(c.hk) + len(cur))
	}
	if len(deleted) == 0 {
		return 0, nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("storage: delete hints: %w", err)
	}
	for _, kind := range []HintKind{HintDurable, HintSlow} {
		s.hints.add(kind, dn[kind], db[kind])
	}
	return len(deleted), nil
}

// expireBatch is how many expired hints ExpireHints deletes per commit: few
// enough that the key locks it holds across the commit delay little
// foreground work, many enough to share one fsync.
const expireBatch = 128

// ExpireHints drops the slow hints stored before now minus
// HintConfig.MaxSlowAge and returns how many it dropped; they are counted in
// HintStats.DroppedSlow. Durable hints never expire.
func (s *Store) ExpireHints(now time.Time) (dropped int, err error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	cutoff := now.Add(-s.cfg.Hints.MaxSlowAge).UnixNano()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: hintLo, UpperBound: hintHi})
	if err != nil {
		return 0, fmt.Errorf("storage: expire hints: %w", err)
	}
	defer closeIter(it, &err)
	var (
		hks  [][]byte
		keys []Key
	)
	flush := func() error {
		n, err := s.expire(hks, keys, cutoff)
		dropped += n
		hks, keys = hks[:0], keys[:0]
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k, kind, _, err := decodeHintKey(it.Key())
		if err != nil {
			return dropped, err
		}
		if kind != HintSlow {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return dropped, fmt.Errorf("storage: expire hints: %w", err)
		}
		_, stored, _, err := splitHintValue(v)
		if err != nil {
			return dropped, fmt.Errorf("storage: hint %s: %w", k, err)
		}
		if stored >= cutoff {
			continue
		}
		hks = append(hks, bytes.Clone(it.Key()))
		keys = append(keys, k)
		if len(hks) == expireBatch {
			if err := flush(); err != nil {
				return dropped, err
			}
		}
	}
	if err := it.Error(); err != nil {
		return dropped, fmt.Errorf("storage: expire hints: %w", err)
	}
	return dropped, flush()
}

// expire deletes the slow hints hks (of keys) that are still older than
// cutoff once their keys are locked, in one synced commit.
func (s *Store) expire(hks [][]byte, keys []Key, cutoff int64) (int, error) {
	if len(hks) == 0 {
		return 0, nil
	}
	unlock := s.lockAll(keys)
	defer unlock()
	b := s.db.NewBatch()
	defer b.Close()
	var n, nbytes int64
	for _, hk := range hks {
		cur, err := s.getRaw(hk)
		if err != nil {
			return 0, err
		}
		if cur == nil {
			continue
		}
		_, stored, _, err := splitHintValue(cur)
		if err != nil {
			return 0, fmt.Errorf("storage: hint %x: %w", hk, err)
		}
		if stored >= cutoff { // deleted and stored anew since the scan
			continue
		}
		_ = b.Delete(hk, nil)
		n++
		nbytes += int64(len(hk) + len(cur))
	}
	if n == 0 {
		return 0, nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("storage: expire hints: %w", err)
	}
	s.hints.add(HintSlow, -n, -nbytes)
	s.hints.droppedSlow.Add(uint64(n))
	return int(n), nil
}

// HintOwners returns how many hints are pending per owner.
func (s *Store) HintOwners() (owners map[string]int, err error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: hintLo, UpperBound: hintHi})
	if err != nil {
		return nil, fmt.Errorf("storage: hint owners: %w", err)
	}
	defer closeIter(it, &err)
	owners = make(map[string]int)
	for it.First(); it.Valid(); it.Next() {
		o, ok := hintOwner(it.Key())
		if !ok {
			return nil, fmt.Errorf("%w: hint key %x", ErrCorrupt, it.Key())
		}
		owners[string(o)]++
	}
	return owners, it.Error()
}

// HasHints reports whether any hint for partition p is pending here. A
// tombstone of p must not be purged while one is (a hint could bring the
// deleted value back).
func (s *Store) HasHints(p uint32) (ok bool, err error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	lo, hi := partitionRange(prefixHint, p)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return false, fmt.Errorf("storage: has hints: %w", err)
	}
	defer closeIter(it, &err)
	return it.First(), it.Error()
}

// HintStats returns the hint store's counters.
func (s *Store) HintStats() HintStats {
	return HintStats{
		Durable:      s.hints.durable.Load(),
		DurableBytes: s.hints.durableBytes.Load(),
		Slow:         s.hints.slow.Load(),
		SlowBytes:    s.hints.slowBytes.Load(),
		DroppedSlow:  s.hints.droppedSlow.Load(),
		Refused:      s.hints.refused.Load(),
	}
}

// countHints rebuilds the hint counters with one scan of the hint keys. It
// reads value lengths, not values.
func (s *Store) countHints() (err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: hintLo, UpperBound: hintHi})
	if err != nil {
		return fmt.Errorf("storage: count hints: %w", err)
	}
	defer closeIter(it, &err)
	var n, nbytes [3]int64 // by kind
	for it.First(); it.Valid(); it.Next() {
		_, kind, _, err := decodeHintKey(it.Key())
		if err != nil {
			return err
		}
		lv := it.LazyValue()
		n[kind]++
		nbytes[kind] += int64(len(it.Key()) + lv.Len())
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("storage: count hints: %w", err)
	}
	for _, kind := range []HintKind{HintDurable, HintSlow} {
		s.hints.add(kind, n[kind], nbytes[kind])
	}
	return nil
}
