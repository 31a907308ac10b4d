package antientropy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/quorumkv/quorumkv/storage"
)

// Test fixture: a Store over a real storage.Store in a temporary
// directory, with configurable ownership and pending state, and helpers to
// build versions of keys and look at what a store holds.

var discard = slog.New(slog.DiscardHandler)

type testStore struct {
	*storage.Store
	name string

	mu        sync.Mutex
	only      map[uint32]bool // if set, the partitions kept
	notKept   map[uint32]bool
	pending   map[uint32]bool
	purgeHook func(ds []storage.Digest) // runs before Purge, if set
	rebuilt   map[uint32]int            // RebuildTree calls by partition
}

var _ Store = (*testStore)(nil)

func newTestStore(t testing.TB, node string) *testStore {
	t.Helper()
	s, err := storage.Open(storage.Config{
		Dir: t.TempDir(), NodeID: node, Logger: discard,
		CacheSize: 16 << 20, MemTableSize: 4 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close %s: %v", node, err)
		}
	})
	return &testStore{Store: s, name: node, notKept: map[uint32]bool{}, pending: map[uint32]bool{}}
}

func (s *testStore) Keeps(p uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.notKept[p] && (s.only == nil || s.only[p])
}

// keepOnly makes s keep parts only.
func (s *testStore) keepOnly(parts ...uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.only = map[uint32]bool{}
	for _, p := range parts {
		s.only[p] = true
	}
}

func (s *testStore) Pending(p uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[p]
}

func (s *testStore) Apply(_ uint32, entries []storage.PartitionEntry) error {
	return s.ApplyMany(entries)
}

func (s *testStore) Purge(ds []storage.Digest) (int, error) {
	s.mu.Lock()
	hook := s.purgeHook
	s.mu.Unlock()
	if hook != nil {
		hook(ds)
	}
	return s.Store.Purge(ds)
}

func (s *testStore) RebuildTree(p uint32) (int, error) {
	s.mu.Lock()
	if s.rebuilt == nil {
		s.rebuilt = map[uint32]int{}
	}
	s.rebuilt[p]++
	s.mu.Unlock()
	return s.Store.RebuildTree(p)
}

// rebuilds returns how many times each partition's tree was rebuilt.
func (s *testStore) rebuilds() map[uint32]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.rebuilt)
}

func (s *testStore) setKept(p uint32, kept bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notKept[p] = !kept
}

func (s *testStore) setPending(p uint32, pending bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending[p] = pending
}

func (s *testStore) setPurgeHook(h func([]storage.Digest)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeHook = h
}

// wire returns the Replica of s reached through the protocol encoding:
// every call goes Remote → bytes → Serve → Local{s} → bytes → Remote.
func wire(s Store) Replica {
	return NewRemote(func(ctx context.Context, op string, body []byte) ([]byte, error) {
		return Serve(ctx, Local{Store: s}, op, body)
	})
}

// apply merges objects into s in one batch.
func apply(t tb, s *testStore, es ...storage.PartitionEntry) {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	if len(es) == 0 {
		return
	}
	if err := s.ApplyMany(es); err != nil {
		t.Fatal(err)
	}
}

// entry pairs a key with an object.
func entry(k storage.Key, o *storage.Object) storage.PartitionEntry {
	return storage.PartitionEntry{Key: k, Object: o}
}

// held returns the object s holds for k, or nil.
func held(t tb, s Store, k storage.Key) *storage.Object {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	es, err := s.Read([]storage.Key{k})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) == 0 {
		return nil
	}
	return es[0].Object
}

// digestOf returns the digest of what s holds for k (0: absent).
func digestOf(k storage.Key, o *storage.Object) uint64 {
	if o == nil {
		return 0
	}
	return storage.ObjectDigest(k, o)
}

// enc is an object's encoding, "" for nil, for comparisons.
func enc(o *storage.Object) string {
	if o == nil {
		return ""
	}
	return string(storage.EncodeObject(o))
}

// mergeOrNil is storage.Merge that keeps "absent on both" absent.
func mergeOrNil(a, b *storage.Object) *storage.Object {
	if a == nil && b == nil {
		return nil
	}
	return storage.Merge(a, b)
}

func leavesOf(t tb, s Store, p uint32) []uint64 {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	l, err := s.Leaves(p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Versions. Dots of a writer actor "w.1" make a history v1 → v2 (live or
// tombstone); actors "x.1", "y.1", ... add versions concurrent with v2 that
// saw v1. A dot names one write, so its content depends only on the key and
// the dot.

const writer = "w.1"

func live(k storage.Key, actor string, c uint64) storage.Sibling {
	return storage.Sibling{
		Dot:          storage.Dot{Actor: actor, Counter: c},
		Value:        fmt.Appendf(nil, `{"key":%q,"dot":"%s:%d"}`, k.Key, actor, c),
		ContentType:  "application/json",
		LastModified: 1_000_000 + int64(c),
	}
}

func tombstone(actor string, c uint64, at int64) storage.Sibling {
	return storage.Sibling{Dot: storage.Dot{Actor: actor, Counter: c}, LastModified: at, Tombstone: true}
}

// object returns the object holding sibs whose context is vv plus the
// siblings' dots.
func object(vv []storage.Entry, sibs ...storage.Sibling) *storage.Object {
	vv = slices.Clone(vv)
	slices.SortFunc(vv, func(a, b storage.Entry) int { return cmp.Compare(a.Actor, b.Actor) })
	dots := make([]storage.Dot, len(sibs))
	for i, s := range sibs {
		dots[i] = s.Dot
	}
	ctx := storage.Context{VV: vv}.Join(storage.Context{Dots: dots})
	sibs = slices.Clone(sibs)
	slices.SortFunc(sibs, func(a, b storage.Sibling) int {
		return cmp.Or(cmp.Compare(a.Dot.Actor, b.Dot.Actor), cmp.Compare(a.Dot.Counter, b.Dot.Counter))
	})
	return &storage.Object{Context: ctx, Siblings: sibs}
}

// v1 is the first version of k.
func v1(k storage.Key) *storage.Object {
	return object([]storage.Entry{{Actor: writer, Counter: 1}}, live(k, writer, 1))
}

// v2 supersedes v1.
func v2(k storage.Key) *storage.Object {
	return object([]storage.Entry{{Actor: writer, Counter: 2}}, live(k, writer, 2))
}

// withSibling is v1 plus a version by actor concurrent with everything but
// v1.
func withSibling(k storage.Key, actor string) *storage.Object {
	return object([]storage.Entry{{Actor: writer, Counter: 1}, {Actor: actor, Counter: 1}},
		live(k, writer, 1), live(k, actor, 1))
}

// deleted is v1 deleted at the given time (Unix nanoseconds).
func deleted(at int64) *storage.Object {
	return object([]storage.Entry{{Actor: writer, Counter: 2}}, tombstone(writer, 2, at))
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// tb is what the helpers need of a *testing.T or a *rapid.T.
type tb interface {
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// heldAll returns what s holds for each of keys (absent ones are missing).
func heldAll(t tb, s Store, keys []storage.Key) map[storage.Key]*storage.Object {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	es, err := s.Read(keys)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[storage.Key]*storage.Object, len(es))
	for _, e := range es {
		out[e.Key] = e.Object
	}
	return out
}
