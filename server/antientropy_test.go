package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumkv/quorumkv/antientropy"
	"github.com/quorumkv/quorumkv/storage"
)

// Anti-entropy against real nodes: real Pebble, real HTTP between nodes.
// Hint delivery and transfers are paused where they would repair what
// anti-entropy must, and no test reads through the public API before it
// checks replicas, so read repair cannot help either.

// aaeCluster starts a 3-node cluster (N=3: every node keeps every
// partition) with hint delivery paused and scheduled anti-entropy paused
// unless scheduled is set.
func newAAECluster(t *testing.T, scheduled bool, mutate func(*Config)) *testCluster {
	return newTestCluster(t, 3, func(cfg *Config) {
		cfg.Handoff.PauseHints = true
		cfg.PauseAntiEntropy = !scheduled
		if mutate != nil {
			mutate(cfg)
		}
	})
}

// key returns the storage key of bucket/key in c's ring.
func (c *testCluster) key(bucket, key string) storage.Key {
	return storage.Key{Partition: uint32(c.table().Partition(bucket, key)), Bucket: bucket, Key: key}
}

// seed writes count keys of bucket to every node's store directly, as
// versions of one outside actor, and returns their keys.
func (c *testCluster) seed(bucket string, count int) []storage.Key {
	c.t.Helper()
	var keys []storage.Key
	var es []storage.PartitionEntry
	for i := range count {
		k := c.key(bucket, fmt.Sprintf("k%05d", i))
		keys = append(keys, k)
		es = append(es, storage.PartitionEntry{Key: k, Object: version("seed."+bucket, uint64(i+1), fmt.Sprintf(`{"i":%d}`, i))})
	}
	for _, id := range c.running() {
		for chunk := range slices.Chunk(es, 500) {
			if err := c.store(id).ApplyMany(chunk); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	return keys
}

// version returns an object holding one version of actor.
func version(actor string, counter uint64, value string) *storage.Object {
	d := storage.Dot{Actor: actor, Counter: counter}
	return &storage.Object{
		Context:  storage.Context{VV: []storage.Entry{{Actor: actor, Counter: counter}}},
		Siblings: []storage.Sibling{{Dot: d, Value: []byte(value), ContentType: "application/json", LastModified: time.Now().UnixNano()}},
	}
}

// objects returns what every running node stores for keys (nil if absent).
func (c *testCluster) objects(keys []storage.Key) map[string][]*storage.Object {
	c.t.Helper()
	out := map[string][]*storage.Object{}
	for _, id := range c.running() {
		for _, k := range keys {
			o, err := c.store(id).Get(k)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				c.t.Fatalf("%s: get %s: %v", id, k, err)
			}
			out[id] = append(out[id], o)
		}
	}
	return out
}

// merged returns, per key, the merge of every node's object.
func merged(objs map[string][]*storage.Object, n int) []*storage.Object {
	out := make([]*storage.Object, n)
	for _, os := range objs {
		for i, o := range os {
			out[i] = storage.Merge(out[i], o)
		}
	}
	return out
}

// checkConverged fails unless every running node holds want for keys and
// every partition's tree is equal on all of them.
func (c *testCluster) checkConverged(keys []storage.Key, want []*storage.Object) {
	c.t.Helper()
	got := c.objects(keys)
	for id, os := range got {
		for i, o := range os {
			if (o == nil) != (want[i] == nil) || o != nil && string(storage.EncodeObject(o)) != string(storage.EncodeObject(want[i])) {
				c.t.Fatalf("%s holds %v for %s, want the merge of all replicas %v", id, o, keys[i], want[i])
			}
		}
	}
	c.checkTreesEqual()
}

// checkTreesEqual fails unless every partition's leaves are equal on all
// running nodes.
func (c *testCluster) checkTreesEqual() {
	c.t.Helper()
	ids := c.running()
	for p := range c.cfg.Ring.Partitions {
		first, err := c.store(ids[0]).Leaves(uint32(p))
		if err != nil {
			c.t.Fatal(err)
		}
		for _, id := range ids[1:] {
			leaves, err := c.store(id).Leaves(uint32(p))
			if err != nil {
				c.t.Fatal(err)
			}
			if !slices.Equal(first, leaves) {
				c.t.Fatalf("partition %d: %s's tree differs from %s's", p, id, ids[0])
			}
		}
	}
}

func (c *testCluster) runner(id string) *antientropy.Runner { return c.servers[id].Node.aae }

// repairRound runs one explicit round: every running node exchanges every
// partition with every live peer replica, one node after the other.
func (c *testCluster) repairRound(rebuild bool) antientropy.Result {
	c.t.Helper()
	var total antientropy.Result
	for _, id := range c.running() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := c.runner(id).Repair(ctx, nil, rebuild)
		cancel()
		if err != nil {
			c.t.Fatalf("repair on %s: %v", id, err)
		}
		total.Add(res)
	}
	return total
}

func TestAntiEntropyRepairsInjectedDivergence(t *testing.T) {
	c := newAAECluster(t, false, nil)
	const total = 2000
	keys := c.seed("b", total)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)

	kinds := []string{"missing", "stale", "sibling", "tombstone"}
	phases := []struct {
		name  string
		kinds []string
		count int
	}{
		{"one missing key", kinds[:1], 1},
		{"one stale version", kinds[1:2], 1},
		{"one extra sibling", kinds[2:3], 1},
		{"one missed tombstone", kinds[3:4], 1},
		{"0.1% of keys", kinds, total / 1000},
		{"1% of keys", kinds, total / 100},
	}
	for _, ph := range phases {
		// Inject into n2 only (or into everyone but n2), through the store:
		// it applies versions locally and updates the tree like any write.
		picked := rng.Perm(total)[:ph.count]
		for i, ki := range picked {
			if nk, ok := c.inject(ph.kinds[i%len(ph.kinds)], keys[ki]); ok {
				keys = append(keys, nk)
			}
		}
		want := merged(c.objects(keys), len(keys))
		res := c.repairRound(false)
		if res.Keys < ph.count {
			t.Fatalf("%s: the round found %d differing keys, want at least %d", ph.name, res.Keys, ph.count)
		}
		c.checkConverged(keys, want)

		// Idle: another round finds nothing and repairs nothing.
		if res := c.repairRound(false); res.Differing != 0 || res.Leaves != 0 || res.Pulled != 0 || res.Pushed != 0 {
			t.Fatalf("%s: an idle round did %+v", ph.name, res)
		}
		t.Logf("%s: %d keys injected; repaired with %+v", ph.name, ph.count, res)
	}
	for _, id := range c.running() {
		if st := c.runner(id).Stats(); st.Exchanges == 0 || st.BytesSent == 0 {
			t.Fatalf("%s: stats %+v", id, st)
		}
	}
}

// inject makes n2 diverge from n1 and n3 on k in one way. For "missing" it
// writes a new key next to k, which it returns.
func (c *testCluster) inject(kind string, k storage.Key) (storage.Key, bool) {
	c.t.Helper()
	cur, err := c.store("n1").Get(k)
	if err != nil {
		c.t.Fatal(err)
	}
	write := func(id string, w storage.Write) *storage.Object {
		w.ContentType, w.Now = "application/json", time.Now()
		got, err := c.store(id).Put(k, w)
		if err != nil {
			c.t.Fatal(err)
		}
		return got.Object
	}
	applyTo := func(o *storage.Object, ids ...string) {
		for _, id := range ids {
			if _, err := c.store(id).Apply(k, o); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	switch kind {
	case "missing": // n2 never got a new key
		nk := c.key(k.Bucket, k.Key+"-new")
		got, err := c.store("n1").Put(nk, storage.Write{Value: []byte(`"new"`), ContentType: "application/json", Now: time.Now()})
		if err != nil {
			c.t.Fatal(err)
		}
		if _, err := c.store("n3").Apply(nk, got.Object); err != nil {
			c.t.Fatal(err)
		}
		return nk, true
	case "stale": // n2 missed an update
		applyTo(write("n1", storage.Write{Context: cur.Context, Value: []byte(`"newer"`)}), "n3")
	case "sibling": // n2 alone holds a concurrent version
		write("n2", storage.Write{Value: []byte(`"concurrent"`)})
	case "tombstone": // n2 missed a delete
		applyTo(write("n1", storage.Write{Context: cur.Context, Tombstone: true}), "n3")
	default:
		c.t.Fatalf("unknown divergence %q", kind)
	}
	return storage.Key{}, false
}

func TestAntiEntropyRefillsWipedReplica(t *testing.T) {
	c := newAAECluster(t, true, nil)
	keys := c.seed("b", 1000)
	want := c.objects(keys)["n1"]

	c.stop("n3")
	c.wipe("n3")
	c.cfg.Handoff.PauseTransfers = true // for the new n3: it never pulls
	c.start("n3")
	if a, b := c.store("n3").Actor(), "n3."; !strings.HasPrefix(a, b) {
		t.Fatalf("actor %q", a)
	}
	// Transfers and hint delivery are paused: only anti-entropy can refill
	// n3, through the scheduled rounds.
	eventually(t, "n3 refilled by anti-entropy", func() bool {
		for _, k := range keys {
			if _, err := c.store("n3").Get(k); err != nil {
				return false
			}
		}
		return true
	})
	c.checkConverged(keys, want)
	if st := c.runner("n3").Stats(); st.Pulled == 0 && c.runner("n1").Stats().Pushed == 0 && c.runner("n2").Stats().Pushed == 0 {
		t.Fatalf("no exchange counted the refill: %+v", st)
	}
	eventually(t, "n3 completes a full round", func() bool { return !c.runner("n3").LastRound().IsZero() })
}

func TestAntiEntropyRebuildFindsRawCorruption(t *testing.T) {
	c := newAAECluster(t, false, nil)
	keys := c.seed("b", 300)
	want := c.objects(keys)["n1"]

	// Change n2's bytes under the store: flip a byte of one value, delete
	// another key, all in Pebble directly (the tree is not told).
	c.stop("n2")
	db, err := pebble.Open(c.dirs["n2"], &pebble.Options{Merger: storage.Merger, FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{'d'}, UpperBound: []byte{'e'}})
	if err != nil {
		t.Fatal(err)
	}
	var flipped, deleted []byte
	for it.First(); it.Valid() && deleted == nil; it.Next() {
		if flipped == nil {
			flipped = slices.Clone(it.Key())
			v := slices.Clone(it.Value())
			v[len(v)/2] ^= 0x20
			if err := db.Set(flipped, v, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			continue
		}
		deleted = slices.Clone(it.Key())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete(deleted, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	c.start("n2")
	c.waitSettled()

	// The trees do not know: an exchange finds nothing.
	if res := c.repairRound(false); res.Keys != 0 {
		t.Fatalf("exchanges found %d keys before any rebuild", res.Keys)
	}
	// The rebuild finds the changed leaves, and exchanges repair them.
	res := c.repairRound(true)
	if res.Keys != 2 || res.Pulled != 2 {
		t.Fatalf("after rebuilds the round did %+v, want 2 keys pulled", res)
	}
	if st := c.runner("n2").Stats(); st.LeavesFixed != 2 || st.Rebuilds == 0 {
		t.Fatalf("n2's rebuilds: %+v", st)
	}
	c.checkConverged(keys, want)
}

// waitPurged waits until no running node holds k.
func (c *testCluster) waitPurged(k storage.Key) {
	c.t.Helper()
	eventually(c.t, fmt.Sprintf("%s purged everywhere", k), func() bool {
		for _, id := range c.running() {
			if _, err := c.store(id).Get(k); !errors.Is(err, storage.ErrNotFound) {
				return false
			}
		}
		return true
	})
}

func purgeConfig(cfg *Config) {
	cfg.Handoff.Hints.MaxSlowAge = 5 * time.Millisecond
	cfg.AntiEntropy.TombstoneGrace = 10 * time.Millisecond
}

func TestDeletedKeyStaysDeletedWhenReplicaReturns(t *testing.T) {
	// Hint delivery stays on: a hint held for n3 must hold purges back, and
	// a paused one would hold them back forever.
	c := newAAECluster(t, true, func(cfg *Config) {
		purgeConfig(cfg)
		cfg.Handoff.PauseHints = false
	})
	k := c.key("b", "doomed")
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/doomed?w=3", `{"v":1}`))

	// n3 holds the live version and goes down; the delete reaches n1, n2.
	c.stop("n3")
	eventually(t, "n1 sees n3 down", func() bool { return !c.servers["n1"].Node.alive("n3") })
	ctxTok := c.do("n1", "GET", "/v1/kv/b/doomed?r=2", "").header.Get("X-Context")
	c.must(204, c.do("n1", "DELETE", "/v1/kv/b/doomed?w=2", "", "X-Context", ctxTok))

	// While n3 is down nobody may purge: n3 could bring the value back.
	// Let several scheduled rounds and purge passes run past the grace.
	rounds := c.runner("n1").Stats().Rounds
	eventually(t, "rounds on n1", func() bool { return c.runner("n1").Stats().Rounds >= rounds+3 })
	for _, id := range []string{"n1", "n2"} {
		if o, err := c.store(id).Get(k); err != nil || !o.IsDeleted() {
			t.Fatalf("%s purged the tombstone while n3 was down: %v, %v", id, o, err)
		}
	}

	// n3 returns with the old live version: anti-entropy hands it the
	// tombstone, and then every replica purges.
	c.start("n3")
	c.waitPurged(k)
	// It stays gone through more rounds.
	rounds = c.runner("n3").Stats().Rounds
	eventually(t, "rounds on n3", func() bool { return c.runner("n3").Stats().Rounds >= rounds+3 })
	for _, id := range c.running() {
		if o, err := c.store(id).Get(k); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("%s: the deleted key came back: %v, %v", id, o, err)
		}
	}
	c.must(404, c.do("n1", "GET", "/v1/kv/b/doomed?r=3", ""))
	var purged uint64
	for _, id := range c.running() {
		purged += c.runner(id).Stats().Purged
	}
	if purged == 0 {
		t.Fatal("no node counted a purge")
	}
}

func TestRewriteAfterDeleteSurvivesPurge(t *testing.T) {
	c := newAAECluster(t, true, purgeConfig)
	k := c.key("b", "phoenix")
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/phoenix?w=3", `{"v":1}`))
	ctxTok := c.do("n1", "GET", "/v1/kv/b/phoenix?r=3", "").header.Get("X-Context")
	c.must(204, c.do("n1", "DELETE", "/v1/kv/b/phoenix?w=3", "", "X-Context", ctxTok))

	// The key is written again, seeing the delete, but the write reaches n1
	// only: n2 and n3 hold nothing but the old tombstone.
	tomb, err := c.store("n1").Get(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.store("n1").Put(k, storage.Write{Context: tomb.Context, Value: []byte(`{"v":2}`), ContentType: "application/json", Now: time.Now()}); err != nil {
		t.Fatal(err)
	}

	// Scheduled rounds and purge passes run; whatever n2 and n3 do with
	// their tombstone (purge it, or merge the rewrite into it), the rewrite
	// must end up everywhere and stay.
	rewritten := func() bool {
		for _, id := range c.running() {
			if got := c.liveValues(id, "b", "phoenix"); len(got) != 1 || got[0] != `{"v":2}` {
				return false
			}
		}
		return true
	}
	eventually(t, "the rewrite on every replica", rewritten)
	rounds := c.runner("n2").Stats().Rounds
	eventually(t, "rounds on n2", func() bool { return c.runner("n2").Stats().Rounds >= rounds+3 })
	if !rewritten() {
		t.Fatal("the rewrite was lost after more rounds")
	}
	for _, id := range c.running() {
		if ds, err := c.store(id).Tombstones(k.Partition, time.Now().UnixNano(), 10); err != nil || len(ds) != 0 {
			t.Fatalf("%s still indexes tombstones %v (%v)", id, ds, err)
		}
	}
	r := c.must(200, c.do("n2", "GET", "/v1/kv/b/phoenix?r=3", ""))
	if r.body != `{"v":2}` {
		t.Fatalf("GET answered %s", r.body)
	}
}

func TestRepairRacingClientWritesLosesNothing(t *testing.T) {
	c := newAAECluster(t, false, nil)
	const writers, writes = 6, 30
	var wg sync.WaitGroup
	last := make([]string, writers)
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			ctxTok := ""
			for i := range writes {
				v := fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)
				node := fmt.Sprintf("n%d", 1+(w+i)%3)
				// W=1: the other replicas get the write in the background
				// or not at all; repairs race it.
				r, err := c.tryDo(node, "PUT", fmt.Sprintf("/v1/kv/race/k%d?w=1", w), v, "X-Context", ctxTok)
				if err != nil || r.status != 204 {
					errs <- fmt.Errorf("writer %d: %v %d %s", w, err, r.status, r.body)
					return
				}
				ctxTok = r.header.Get("X-Context")
				last[w] = v
			}
		})
	}
	stop := make(chan struct{})
	var repairs sync.WaitGroup
	for _, id := range c.running() {
		repairs.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, _ = c.runner(id).Repair(ctx, nil, false)
				cancel()
			}
		})
	}
	wg.Wait()
	close(stop)
	repairs.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c.repairRound(false)
	for w := range writers {
		for _, id := range c.running() {
			got := c.liveValues(id, "race", fmt.Sprintf("k%d", w))
			if !slices.Contains(got, last[w]) {
				t.Fatalf("%s lost writer %d's last acknowledged write %s: holds %v", id, w, last[w], got)
			}
		}
	}
}

func TestStaleTreesRebuiltAtStartup(t *testing.T) {
	c := newAAECluster(t, true, nil)
	keys := c.seed("b", 300)

	// n2's store is opened without tree maintenance (as a benchmark would)
	// and changed: its trees no longer match its data.
	c.stop("n2")
	s, err := storage.Open(storage.Config{Dir: c.dirs["n2"], NodeID: "n2", Logger: quietLogger(), DisableTree: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[:5] {
		if _, err := s.Apply(k, version("offline", uint64(time.Now().UnixNano()), `"offline"`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.start("n2")
	if !c.store("n2").TreeStale() && c.runner("n2").Stats().Rebuilds == 0 {
		t.Fatal("n2 opened a store written without trees, and neither marks them stale nor rebuilt them")
	}
	eventually(t, "n2 rebuilds its trees", func() bool { return !c.store("n2").TreeStale() })
	want := merged(c.objects(keys), len(keys))
	eventually(t, "the offline writes spread", func() bool {
		for _, id := range c.running() {
			for _, k := range keys[:5] {
				o, err := c.store(id).Get(k)
				if err != nil || len(o.Siblings) != 2 {
					return false
				}
			}
		}
		return true
	})
	c.checkConverged(keys, want)
}
