package antientropy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// TestExchangeRepairsBothWays: for each kind of divergence, on one key and
// on 0.1% and 1% of 2000 keys, an exchange leaves both sides with the merge
// of both for every key, counts exactly the keys it changed on each side,
// and a second exchange finds nothing.
func TestExchangeRepairsBothWays(t *testing.T) {
	noLeaks(t)
	const (
		seed  = 0xe8c4a96e
		total = 2000
	)
	t.Logf("seed %#x", seed)
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC).UnixNano()
	kinds := []struct {
		name string
		// versions of a divergent key; i alternates the lagging side.
		versions func(k storage.Key, i int) (a, b *storage.Object)
	}{
		{"missing", func(k storage.Key, i int) (a, b *storage.Object) {
			return swapIf(i%2 == 1, v1(k), nil)
		}},
		{"stale", func(k storage.Key, i int) (a, b *storage.Object) {
			return swapIf(i%2 == 1, v1(k), v2(k))
		}},
		{"sibling", func(k storage.Key, i int) (a, b *storage.Object) {
			return swapIf(i%2 == 1, v1(k), withSibling(k, "x.1"))
		}},
		{"concurrent siblings", func(k storage.Key, i int) (a, b *storage.Object) {
			return withSibling(k, "x.1"), withSibling(k, "y.1")
		}},
		{"tombstone", func(k storage.Key, i int) (a, b *storage.Object) {
			return swapIf(i%2 == 1, v1(k), deleted(at))
		}},
		{"mixed", func(k storage.Key, i int) (a, b *storage.Object) {
			switch i % 6 {
			case 0:
				return nil, v1(k)
			case 1:
				return v2(k), v1(k)
			case 2:
				return withSibling(k, "y.1"), v2(k) // v2 supersedes v1, not y's version
			case 3:
				return deleted(at), withSibling(k, "x.1")
			case 4:
				return withSibling(k, "x.1"), withSibling(k, "y.1")
			default:
				return v1(k), nil
			}
		}},
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	const p = 11
	for _, kind := range kinds {
		for _, n := range []int{1, total / 1000, total / 100} {
			for _, batch := range []int{256, 3} {
				if batch != 256 && (n < 10 || kind.name != "mixed") {
					continue
				}
				chosen := rng.Perm(total)[:n]
				t.Run(fmt.Sprintf("%s/%d keys/batch %d", kind.name, n, batch), func(t *testing.T) {
					t.Parallel()
					ctx := context.Background()
					a, b := newTestStore(t, "a"), newTestStore(t, "b")
					keys := make([]storage.Key, total)
					for i := range keys {
						keys[i] = storage.Key{Partition: p, Bucket: "docs", Key: fmt.Sprintf("key-%04d", i)}
					}
					orig := map[storage.Key][2]*storage.Object{}
					for i, j := range chosen {
						oa, ob := kind.versions(keys[j], i)
						orig[keys[j]] = [2]*storage.Object{oa, ob}
					}
					var ea, eb []storage.PartitionEntry
					for _, k := range keys {
						o, ok := orig[k]
						if !ok {
							o = [2]*storage.Object{v1(k), v1(k)}
							orig[k] = o
						}
						if o[0] != nil {
							ea = append(ea, entry(k, o[0]))
						}
						if o[1] != nil {
							eb = append(eb, entry(k, o[1]))
						}
					}
					apply(t, a, ea...)
					apply(t, b, eb...)

					var pulled, pushed, differing int
					ha, hb := heldAll(t, a, keys), heldAll(t, b, keys)
					for _, k := range keys {
						m := mergeOrNil(orig[k][0], orig[k][1])
						da, db, dm := digestOf(k, ha[k]), digestOf(k, hb[k]), digestOf(k, m)
						if da != db {
							differing++
						}
						if dm != da {
							pulled++
						}
						if dm != db {
							pushed++
						}
					}
					if differing != n {
						t.Fatalf("setup: %d keys differ, want %d", differing, n)
					}

					res, err := Exchange(ctx, p, Local{Store: a}, wire(b), 0, batch)
					if err != nil {
						t.Fatal(err)
					}
					if res.Keys != n || res.Pulled != pulled || res.Pushed != pushed {
						t.Errorf("exchange: %+v; want %d keys, %d pulled, %d pushed", res, n, pulled, pushed)
					}
					ha, hb = heldAll(t, a, keys), heldAll(t, b, keys)
					for _, k := range keys {
						m := mergeOrNil(orig[k][0], orig[k][1])
						ga, gb := ha[k], hb[k]
						if enc(ga) != enc(m) || enc(gb) != enc(m) {
							t.Fatalf("%s after the exchange:\n A %+v\n B %+v\nwant the merge %+v", k, ga, gb, m)
						}
						// Nothing dropped: every sibling of either side that the
						// other side had not superseded is still there.
						for side, o := range orig[k] {
							if o == nil {
								continue
							}
							for _, s := range o.Siblings {
								other := orig[k][1-side]
								superseded := other != nil && other.Context.Covers(s.Dot) && !hasSibling(other, s.Dot)
								if !superseded && !hasSibling(ga, s.Dot) {
									t.Fatalf("%s: sibling %v of side %d was dropped", k, s.Dot, side)
								}
							}
						}
					}
					if !slices.Equal(leavesOf(t, a, p), leavesOf(t, b, p)) {
						t.Fatal("leaves differ after the exchange")
					}
					again, err := Exchange(ctx, p, Local{Store: a}, wire(b), 0, batch)
					if err != nil || again.Keys != 0 || again.Pulled != 0 || again.Pushed != 0 || again.Leaves != 0 {
						t.Errorf("second exchange: %+v, %v; want nothing to do", again, err)
					}
				})
			}
		}
	}
}

func swapIf(swap bool, x, y *storage.Object) (a, b *storage.Object) {
	if swap {
		return y, x
	}
	return x, y
}

func hasSibling(o *storage.Object, d storage.Dot) bool {
	if o == nil {
		return false
	}
	return slices.ContainsFunc(o.Siblings, func(s storage.Sibling) bool { return s.Dot == d })
}

// TestExchangeKeepsConcurrentSiblings: both sides hold different versions
// concurrent with each other; the repair keeps both, on both sides.
func TestExchangeKeepsConcurrentSiblings(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	a, b := newTestStore(t, "a"), newTestStore(t, "b")
	k := storage.Key{Partition: 2, Bucket: "b", Key: "k"}
	// Two clients read v1 and wrote through different coordinators.
	apply(t, a, entry(k, v1(k)))
	apply(t, b, entry(k, v1(k)))
	wa, err := a.Put(k, storage.Write{Context: v1(k).Context, Value: []byte(`"from a"`), ContentType: "application/json", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	wb, err := b.Put(k, storage.Write{Context: v1(k).Context, Value: []byte(`"from b"`), ContentType: "application/json", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Exchange(ctx, 2, Local{Store: a}, wire(b), 0, 256)
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != 1 || res.Pulled != 1 || res.Pushed != 1 {
		t.Errorf("exchange %+v, want one key changed on each side", res)
	}
	for _, s := range []*testStore{a, b} {
		o := held(t, s, k)
		if len(o.Siblings) != 2 || !hasSibling(o, wa.Dot) || !hasSibling(o, wb.Dot) || hasSibling(o, storage.Dot{Actor: writer, Counter: 1}) {
			t.Errorf("%s holds %+v; want exactly the two concurrent versions", s.name, o.Siblings)
		}
	}
}

// ack is an acknowledged write: its dot and the context it was written
// with (what it superseded).
type ack struct {
	key storage.Key
	dot storage.Dot
	ctx storage.Context
}

// TestExchangeRacingWrites: exchanges running both ways while clients keep
// writing to both sides never lose an acknowledged write. Afterwards every
// acknowledged version is either a sibling of the final object or was
// superseded by another acknowledged write that saw it, and no superseded
// version is still there.
func TestExchangeRacingWrites(t *testing.T) {
	noLeaks(t)
	const (
		seed    = 0x5ace
		p       = 5
		nkeys   = 4
		writes  = 50
		writers = 2 // per store
	)
	t.Logf("seed %#x", seed)
	ctx := context.Background()
	a, b := newTestStore(t, "a"), newTestStore(t, "b")
	keys := make([]storage.Key, nkeys)
	for i := range keys {
		keys[i] = storage.Key{Partition: p, Bucket: "b", Key: fmt.Sprint("k", i)}
	}

	var mu sync.Mutex
	var acks []ack
	record := func(a ack) {
		mu.Lock()
		acks = append(acks, a)
		mu.Unlock()
	}

	var writing, exchanging sync.WaitGroup
	for si, s := range []*testStore{a, b} {
		for w := range writers {
			rng := rand.New(rand.NewPCG(seed, uint64(si*writers+w)))
			writing.Go(func() {
				for i := range writes {
					k := keys[rng.IntN(nkeys)]
					var c storage.Context
					if rng.IntN(4) != 0 { // else a blind write: a new sibling
						cur, err := s.Read([]storage.Key{k})
						if err != nil {
							t.Errorf("read: %v", err)
							return
						}
						if len(cur) == 1 {
							c = cur[0].Object.Context
						}
					}
					w, err := s.Put(k, storage.Write{
						Context:     c,
						Value:       fmt.Appendf(nil, `{"writer":"%s/%d","n":%d}`, s.name, w, i),
						ContentType: "application/json",
						Tombstone:   rng.IntN(8) == 0,
						Now:         time.Now(),
					})
					if err != nil {
						t.Errorf("put: %v", err)
						return
					}
					record(ack{key: k, dot: w.Dot, ctx: c})
				}
			})
		}
	}
	// A coordinator elsewhere sends versions by its own actor to B.
	writing.Go(func() {
		rng := rand.New(rand.NewPCG(seed, 99))
		for c := uint64(1); c <= writes; c++ {
			k := keys[rng.IntN(nkeys)]
			o := object([]storage.Entry{{Actor: "ext.1", Counter: c}}, live(k, "ext.1", c))
			if err := b.Apply(p, []storage.PartitionEntry{entry(k, o)}); err != nil {
				t.Errorf("apply: %v", err)
				return
			}
			var seen storage.Context
			if c > 1 {
				seen = storage.Context{VV: []storage.Entry{{Actor: "ext.1", Counter: c - 1}}}
			}
			record(ack{key: k, dot: o.Siblings[0].Dot, ctx: seen})
		}
	})
	var done atomic.Bool
	var rounds atomic.Int64
	for _, pair := range [][2]*testStore{{a, b}, {b, a}} {
		exchanging.Go(func() {
			for !done.Load() {
				if _, err := Exchange(ctx, p, Local{Store: pair[0]}, wire(pair[1]), 0, 2); err != nil {
					t.Errorf("exchange: %v", err)
					return
				}
				rounds.Add(1)
			}
		})
	}
	writing.Wait()
	done.Store(true)
	exchanging.Wait()
	t.Logf("%d acknowledged writes, %d exchanges during them", len(acks), rounds.Load())

	if _, err := Exchange(ctx, p, Local{Store: a}, wire(b), 0, 256); err != nil {
		t.Fatal(err)
	}
	if res, err := Exchange(ctx, p, Local{Store: b}, wire(a), 0, 256); err != nil || res.Keys != 0 {
		t.Fatalf("after the final exchange: %+v, %v", res, err)
	}
	if !slices.Equal(leavesOf(t, a, p), leavesOf(t, b, p)) {
		t.Fatal("leaves differ after the final exchange")
	}
	for _, k := range keys {
		fa, fb := held(t, a, k), held(t, b, k)
		if enc(fa) != enc(fb) {
			t.Fatalf("%s differs after the final exchange:\n A %+v\n B %+v", k, fa, fb)
		}
		acked := map[storage.Dot]bool{}
		for _, x := range acks {
			if x.key == k {
				acked[x.dot] = true
			}
		}
		supersededBy := func(d storage.Dot) (storage.Dot, bool) {
			for _, x := range acks {
				if x.key == k && x.dot != d && x.ctx.Covers(d) {
					return x.dot, true
				}
			}
			return storage.Dot{}, false
		}
		for _, x := range acks {
			if x.key != k {
				continue
			}
			if fa == nil || !fa.Context.Covers(x.dot) {
				t.Errorf("%s: acknowledged write %v is not covered by the final context", k, x.dot)
				continue
			}
			if _, ok := supersededBy(x.dot); !ok && !hasSibling(fa, x.dot) {
				t.Errorf("%s: acknowledged write %v vanished without being superseded", k, x.dot)
			}
		}
		if fa == nil {
			continue
		}
		for _, s := range fa.Siblings {
			if !acked[s.Dot] {
				t.Errorf("%s: sibling %v was never written", k, s.Dot)
			}
			if by, ok := supersededBy(s.Dot); ok {
				t.Errorf("%s: sibling %v survives although %v superseded it", k, s.Dot, by)
			}
		}
	}
}
