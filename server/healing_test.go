package server

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// waitDown waits until every other running node sees id as down.
func (c *testCluster) waitDown(id string) {
	c.t.Helper()
	eventually(c.t, id+" to be seen down", func() bool {
		for _, other := range c.running() {
			if other != id && c.servers[other].Node.alive(id) {
				return false
			}
		}
		return true
	})
}

// pendingHints sums the hints every running node holds.
func (c *testCluster) pendingHints() int64 {
	var n int64
	for _, id := range c.running() {
		st := c.store(id).HintStats()
		n += st.Durable + st.Slow
	}
	return n
}

// objectOn returns the encoded object id stores for bucket/key ("" if none).
func (c *testCluster) objectOn(id, bucket, key string) string {
	k := c.servers[id].Node.keyFor(bucket, key)
	o, err := c.store(id).Get(k)
	if err != nil {
		return ""
	}
	return string(storage.EncodeObject(o))
}

// checkPlacement asserts, replica by replica (never through a read that
// would repair), that every key is held identically by exactly its
// primaries, and that no node holds a partition it does not own.
func (c *testCluster) checkPlacement(bucket string, keys []string) {
	c.t.Helper()
	pl := c.anyNode().placement()
	// A drop is published before the data goes: wait for the deletes.
	eventually(c.t, "drops to finish", func() bool {
		for _, id := range c.running() {
			for p := range c.cfg.Ring.Partitions {
				if !pl.Target().IsPrimary(p, id) {
					if n, _, err := c.store(id).PartitionStats(uint32(p)); err != nil || n > 0 {
						return false
					}
				}
			}
		}
		return true
	})
	for _, key := range keys {
		p := pl.Target().Partition(bucket, key)
		prim := pl.Target().Primaries(p)
		var want string
		for _, id := range c.running() {
			got := c.objectOn(id, bucket, key)
			if slices.Contains(prim, id) {
				if got == "" {
					c.t.Fatalf("key %s: primary %s does not hold it (primaries %v)", key, id, prim)
				}
				if want != "" && got != want {
					c.t.Fatalf("key %s: primaries disagree", key)
				}
				want = got
			} else if got != "" {
				c.t.Fatalf("key %s: %s holds it but is not a primary (primaries %v)", key, id, prim)
			}
		}
	}
	for _, id := range c.running() {
		for p := range c.cfg.Ring.Partitions {
			keys, _, err := c.store(id).PartitionStats(uint32(p))
			if err != nil {
				c.t.Fatal(err)
			}
			if keys > 0 && !pl.Target().IsPrimary(p, id) {
				c.t.Fatalf("%s keeps %d keys of partition %d it does not own", id, keys, p)
			}
		}
	}
}

// Five nodes, N=3, W=2: with one node cut off in both directions every
// write through the others succeeds and hints are kept for it; after the
// heal the hints drain and every key's primaries hold the same version.
func TestPartitionedNodeGetsHintsAfterHeal(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	c.net.Isolate("n5")
	c.waitDown("n5")

	var keys []string
	for i := range 200 {
		key := fmt.Sprintf("k%d", i)
		keys = append(keys, key)
		c.must(204, c.do(c.ids[i%4], "PUT", "/v1/kv/b/"+key, fmt.Sprint(i)))
	}
	var stored int64
	for _, id := range c.running() {
		stored += c.store(id).HintStats().Durable
	}
	if stored == 0 {
		t.Fatal("no hints stored for the partitioned node")
	}
	c.net.Heal()
	eventually(t, "zero pending hints", func() bool { return c.pendingHints() == 0 })
	c.checkPlacement("b", keys)
	for _, id := range c.running() {
		if st := c.store(id).HintStats(); st.Refused != 0 {
			t.Fatalf("%s refused %d hints", id, st.Refused)
		}
	}
}

// With two of a key's three primaries down, a strict write is refused and
// never acknowledged; a sloppy one succeeds through fallbacks.
func TestStrictQuorumRefusesWithoutPrimaries(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	pl := c.anyNode().placement()
	key := "strict"
	prim := pl.Counting(pl.Target().Partition("b", key))
	c.stop(prim[1])
	c.stop(prim[2])
	c.waitDown(prim[1])
	c.waitDown(prim[2])
	r := c.must(503, c.do(prim[0], "PUT", "/v1/kv/b/"+key+"?sloppy=false", `"strict"`))
	if !containsAll(r.body, `"required":2`, `"acknowledged":1`) {
		t.Fatalf("503 body: %s", r.body)
	}
	c.must(503, c.do(prim[0], "GET", "/v1/kv/b/"+key+"?sloppy=false", ""))
	c.must(204, c.do(prim[0], "PUT", "/v1/kv/b/"+key, `"sloppy"`))
	if r := c.must(200, c.do(prim[0], "GET", "/v1/kv/b/"+key, "")); r.body != `"sloppy"` {
		t.Fatalf("sloppy read: %q", r.body)
	}
}

// writeLoad writes new keys through the running nodes until stopped, and
// records the keys whose writes were acknowledged.
type writeLoad struct {
	stop  chan struct{}
	done  sync.WaitGroup
	mu    sync.Mutex
	acked []string
}

func (c *testCluster) startLoad(prefix string, seed uint64) *writeLoad {
	l := &writeLoad{stop: make(chan struct{})}
	rng := rand.New(rand.NewPCG(seed, 1))
	nodes := c.running()
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			key := fmt.Sprintf("%s%d", prefix, i)
			node := nodes[rng.IntN(len(nodes))]
			if r, err := c.tryDo(node, "PUT", "/v1/kv/b/"+key, fmt.Sprint(i)); err == nil && r.status == 204 {
				l.mu.Lock()
				l.acked = append(l.acked, key)
				l.mu.Unlock()
			}
		}
	}()
	return l
}

func (l *writeLoad) finish() []string {
	close(l.stop)
	l.done.Wait()
	return l.acked
}

func (c *testCluster) fill(n int) []string {
	var keys []string
	var wg sync.WaitGroup
	var failed atomic.Int32
	ch := make(chan int)
	for w := range 8 {
		wg.Go(func() {
			for i := range ch {
				nodes := c.running()
				if r, err := c.tryDo(nodes[(i+w)%len(nodes)], "PUT", fmt.Sprintf("/v1/kv/b/key%d", i), fmt.Sprint(i)); err != nil || r.status != 204 {
					failed.Add(1)
				}
			}
		})
	}
	for i := range n {
		keys = append(keys, fmt.Sprintf("key%d", i))
		ch <- i
	}
	close(ch)
	wg.Wait()
	if failed.Load() > 0 {
		c.t.Fatalf("%d writes failed while filling", failed.Load())
	}
	return keys
}

func (c *testCluster) checkReadable(keys []string) {
	c.t.Helper()
	for _, key := range keys {
		r := c.do(c.running()[len(key)%len(c.running())], "GET", "/v1/kv/b/"+key+"?sloppy=false", "")
		if r.status != 200 {
			c.t.Fatalf("key %s: status %d %s", key, r.status, r.body)
		}
	}
}

// A fourth node joins a three-node cluster under a light write load: when
// the transfers finish, every key is readable and sits exactly on its new
// preference list.
func TestJoinMovesData(t *testing.T) {
	seed := uint64(rand.Int64())
	t.Logf("seed %d", seed)
	c := newTestCluster(t, 3, nil)
	keys := c.fill(10_000)
	load := c.startLoad("during", seed)
	c.ids = append(c.ids, "n4")
	c.dirs["n4"] = c.dirs["n3"] + "-n4"
	c.start("n4")
	c.waitSettled()
	during := load.finish()
	t.Logf("%d keys before the join, %d acknowledged during it", len(keys), len(during))
	keys = append(keys, during...)
	c.waitSettled()
	eventually(t, "zero pending hints", func() bool { return c.pendingHints() == 0 })
	c.checkReadable(keys)
	c.checkPlacement("b", keys)
}

// From five nodes one leaves and a dead one is removed: the data follows,
// and a change below N members is refused.
func TestLeaveAndRemove(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	keys := c.fill(1000)

	c.leave("n5")
	c.waitSettled()
	c.checkReadable(keys)
	c.checkPlacement("b", keys)

	c.stop("n4")
	c.waitDown("n4")
	c.must(409, c.do("n1", "POST", "/v1/admin/remove/n1", "")) // alive
	c.must(200, c.do("n2", "POST", "/v1/admin/remove/n4", ""))
	c.waitSettled()
	c.checkReadable(keys)
	c.checkPlacement("b", keys)

	r := c.must(409, c.do("n1", "POST", "/v1/admin/leave", ""))
	if !containsAll(r.body, "refused") {
		t.Fatalf("leave below N: %s", r.body)
	}
}

// Concurrent ring changes started at different nodes converge to one ring.
func TestConcurrentRingChangesConverge(t *testing.T) {
	c := newTestCluster(t, 6, nil)
	c.stop("n6")
	c.waitDown("n6")
	var wg sync.WaitGroup
	wg.Go(func() { c.must(200, c.do("n1", "POST", "/v1/admin/remove/n6", "")) })
	wg.Go(func() { c.must(202, c.do("n5", "POST", "/v1/admin/leave", "")) })
	wg.Wait()
	c.awaitLeft("n5")
	c.waitSettled()
}

// A node that leaves right after it joined must not drop partitions on the
// strength of stale gossip about who holds them (N=1, so a dropped copy
// would be the only one).
func TestLeaveRightAfterJoinKeepsData(t *testing.T) {
	c := newTestCluster(t, 1, func(cfg *Config) { cfg.Ring.N, cfg.R, cfg.W = 1, 1, 1 })
	keys := c.fill(300)
	c.ids = append(c.ids, "n2")
	c.dirs["n2"] = c.dirs["n1"] + "-n2"
	c.start("n2")
	c.waitSettled()
	c.leave("n2")
	c.waitSettled()
	c.checkReadable(keys)
	c.checkPlacement("b", keys)
}

// An id that left can come back with a wiped data directory: the new
// incarnation's record overrides the tombstone.
func TestRemovedIDRejoinsWiped(t *testing.T) {
	c := newTestCluster(t, 4, nil)
	keys := c.fill(200)
	c.leave("n4")
	c.waitSettled()
	c.wipe("n4")
	c.start("n4")
	c.waitSettled()
	if m, _ := c.anyNode().placement().Membership().Get("n4"); m.State != ring.StateMember {
		t.Fatalf("n4 is %s after rejoining", m.State)
	}
	c.checkReadable(keys)
	c.checkPlacement("b", keys)
}

// leave asks id to leave, waits until it handed its data over, and stops it.
func (c *testCluster) leave(id string) {
	c.t.Helper()
	c.must(202, c.do(id, "POST", "/v1/admin/leave", ""))
	c.awaitLeft(id)
}

// awaitLeft waits until a leaving node finished, then stops it.
func (c *testCluster) awaitLeft(id string) {
	c.t.Helper()
	select {
	case <-c.servers[id].Node.LeaveDone():
	case <-timeout(c.t):
		c.t.Fatalf("%s did not finish leaving", id)
	}
	c.stop(id)
}
