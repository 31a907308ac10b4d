package antientropy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quorumkv/quorumkv/storage"
)

func TestRunnerRepair(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	n := newFakeNet(t, Config{}, []uint32{1, 2, 3}, "a", "b")
	a, b := n.stores["a"], n.stores["b"]
	seedKeys(t, a, key(1, "a1"), key(1, "a2"), key(1, "a3"), key(1, "both"))
	seedKeys(t, b, key(1, "b1"), key(1, "b2"), key(1, "both"))
	for i := range 5 {
		seedKeys(t, a, key(2, fmt.Sprint(i)))
		seedKeys(t, b, key(2, fmt.Sprint(i)))
	}
	r := n.runner("a")
	res, err := r.Repair(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Exchanges: 3, Differing: 1, Leaves: res.Leaves, Keys: 5, Pulled: 2, Pushed: 3}
	// Partition 1 is sparse: each differing subtree is listed whole.
	if res != want || res.Leaves < 1 || res.Leaves > 5*Fanout {
		t.Errorf("repair: %+v, want %+v (1 to %d leaves)", res, want, 5*Fanout)
	}
	if !n.converged(t) {
		t.Fatal("stores differ after the repair")
	}
	for _, k := range []storage.Key{key(1, "a1"), key(1, "b2"), key(1, "both")} {
		if enc(held(t, a, k)) != enc(v1(k)) || enc(held(t, b, k)) != enc(v1(k)) {
			t.Errorf("%s not repaired", k)
		}
	}
	st := r.Stats()
	if st.Exchanges != 3 || st.Differing != 1 || st.Pulled != 2 || st.Pushed != 3 || st.Leaves != uint64(res.Leaves) || st.Errors != 0 {
		t.Errorf("stats after the repair: %+v", st)
	}
	if st.BytesSent == 0 || st.BytesRecv == 0 {
		t.Errorf("no protocol bytes counted: %+v", st)
	}
	if st.Rounds != 0 || !r.LastRound().IsZero() {
		t.Errorf("an operator's repair counted as a scheduled round: %+v, last %v", st, r.LastRound())
	}

	// Converged: roots compared, nothing else.
	hashes, roots := n.callsTo(OpHashes), n.callsTo(OpRoots)
	res, err = r.Repair(ctx, nil, false)
	if n.callsTo(OpHashes) != hashes || n.callsTo(OpRoots) != roots+1 {
		t.Errorf("repair of converged stores: %d hash and %d root requests, want 0 and 1 (all three partitions in one)",
			n.callsTo(OpHashes)-hashes, n.callsTo(OpRoots)-roots)
	}
	if err != nil || res != (Result{Exchanges: 3}) {
		t.Errorf("second repair: %+v, %v; want 3 equal roots", res, err)
	}
	st2 := r.Stats()
	if st2.Pulled != st.Pulled || st2.Pushed != st.Pushed || st2.Leaves != st.Leaves || st2.Differing != st.Differing || st2.Exchanges != st.Exchanges+3 {
		t.Errorf("stats after a repair of converged stores: %+v, before %+v", st2, st)
	}

	// Only partitions this node keeps.
	if _, err := r.Repair(ctx, []uint32{2, 99}, false); !errors.Is(err, ErrNotReplica) {
		t.Errorf("repair of a partition not kept: %v, want ErrNotReplica", err)
	}
	// With rebuild, each named partition's tree is recomputed first.
	if res, err := r.Repair(ctx, []uint32{1}, true); err != nil || res != (Result{Exchanges: 1}) {
		t.Errorf("repair with rebuild: %+v, %v", res, err)
	}
	if fixed, err := r.Rebuild(2); err != nil || fixed != 0 {
		t.Errorf("rebuild of a correct tree: %d fixed, %v", fixed, err)
	}
	if st := r.Stats(); st.Rebuilds != 2 || st.LeavesFixed != 0 {
		t.Errorf("after two rebuilds: %+v", st)
	}
}

// TestRunnerRepairThreeNodes: a node's repair exchanges with every live
// peer replica; two nodes' repairs make all three equal.
func TestRunnerRepairThreeNodes(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	n := newFakeNet(t, Config{}, []uint32{7, 8}, "n1", "n2", "n3")
	for _, name := range n.names {
		for _, p := range n.parts {
			seedKeys(t, n.stores[name], key(p, "only on "+name), key(p, "everywhere"))
		}
	}
	k := key(7, "siblings")
	apply(t, n.stores["n1"], entry(k, withSibling(k, "x.1")))
	apply(t, n.stores["n3"], entry(k, withSibling(k, "y.1")))

	res, err := n.runner("n1").Repair(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	// n1 pulls n2's and n3's keys (and the merged siblings), n2 and n3
	// each get what n1 holds by then.
	if res.Exchanges != 4 || res.Differing != 4 {
		t.Errorf("n1's repair: %+v", res)
	}
	if _, err := n.runner("n2").Repair(ctx, nil, false); err != nil {
		t.Fatal(err)
	}
	if !n.converged(t) {
		t.Fatal("three nodes differ after two repairs")
	}
	want := storage.Merge(withSibling(k, "x.1"), withSibling(k, "y.1"))
	for _, name := range n.names {
		if got := held(t, n.stores[name], k); enc(got) != enc(want) {
			t.Errorf("%s holds %+v, want both concurrent versions %+v", name, got, want)
		}
		for _, other := range n.names {
			if held(t, n.stores[name], key(8, "only on "+other)) == nil {
				t.Errorf("%s lacks %s's key", name, other)
			}
		}
	}
	if res, err := n.runner("n3").Repair(ctx, nil, false); err != nil || res.Differing != 0 {
		t.Errorf("third repair: %+v, %v; want nothing left", res, err)
	}
}

// TestRunnerRepairSkips: peers that are down, or that do not keep the
// partition in their view, are not exchanged with, and that is no error.
func TestRunnerRepairSkips(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	n := newFakeNet(t, Config{}, []uint32{1, 2}, "a", "b", "c")
	seedKeys(t, n.stores["a"], key(1, "k"), key(2, "k"))
	n.set(n.down, "c", true)
	n.stores["b"].keepOnly(2)
	res, err := n.runner("a").Repair(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Exchanges != 1 || res.Pushed != 1 {
		t.Errorf("repair: %+v; want one exchange (partition 2 with b)", res)
	}
	if held(t, n.stores["b"], key(1, "k")) != nil || held(t, n.stores["b"], key(2, "k")) == nil {
		t.Error("b was repaired in the wrong partition")
	}
	if held(t, n.stores["c"], key(1, "k")) != nil {
		t.Error("a node that is down was exchanged with")
	}
}

// TestRunnerRepairErrors: a peer that does not answer fails the repair,
// counted, and the other peers are still repaired.
func TestRunnerRepairErrors(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	n := newFakeNet(t, Config{}, []uint32{1, 2}, "a", "b", "c")
	seedKeys(t, n.stores["a"], key(1, "k"), key(2, "k"))
	n.set(n.failing, "b", true)
	r := n.runner("a")
	res, err := r.Repair(ctx, nil, false)
	if err == nil || res.Errors != 2 {
		t.Errorf("repair with b unreachable: %+v, %v; want 2 errors", res, err)
	}
	if st := r.Stats(); st.Errors != 2 {
		t.Errorf("stats: %+v, want 2 errors", st)
	}
	if held(t, n.stores["c"], key(1, "k")) == nil || held(t, n.stores["c"], key(2, "k")) == nil {
		t.Error("c was not repaired because b failed")
	}
	// A failure in the middle of an exchange, after the roots, counts too.
	n.set(n.failing, "b", false)
	n.set(n.failingOps, OpApply, true)
	res, err = r.Repair(ctx, []uint32{1}, false)
	if err == nil || res.Errors != 1 || res.Exchanges != 2 || res.Differing != 1 {
		t.Errorf("repair with b refusing applies: %+v, %v; want 1 error", res, err)
	}
	if st := r.Stats(); st.Errors != 3 {
		t.Errorf("stats: %+v, want 3 errors", st)
	}
	n.set(n.failingOps, OpApply, false)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.Repair(cancelled, nil, false); !errors.Is(err, context.Canceled) {
		t.Errorf("repair with a cancelled context: %v", err)
	}
}

// TestRunnerBusyBacksOff: under foreground load an exchange waits, up to
// BusyWait, and then goes ahead anyway.
func TestRunnerBusyBacksOff(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	n := newFakeNet(t, Config{BusyWait: time.Millisecond}, []uint32{1}, "a", "b")
	seedKeys(t, n.stores["a"], key(1, "k"))
	n.mu.Lock()
	n.busy = true
	n.mu.Unlock()
	r := n.runner("a")
	res, err := r.Repair(ctx, nil, false)
	if err != nil || res.Pushed != 1 {
		t.Fatalf("repair while busy: %+v, %v", res, err)
	}
	if st := r.Stats(); st.Backoffs == 0 {
		t.Errorf("no backoff counted: %+v", st)
	}
}

// TestRunnerStalePartitionWaits: a partition whose tree awaits its startup
// rebuild is not exchanged.
func TestRunnerStalePartitionWaits(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	n := newFakeNet(t, Config{}, []uint32{1, 2}, "a", "b")
	seedKeys(t, n.stores["a"], key(1, "k"), key(2, "k"))
	r := n.runner("a")
	r.mu.Lock()
	r.stale[1] = true
	r.mu.Unlock()
	res, err := r.Repair(ctx, nil, false)
	if err != nil || res.Exchanges != 1 || res.Pushed != 1 || held(t, n.stores["b"], key(1, "k")) != nil {
		t.Errorf("repair with partition 1 stale: %+v, %v", res, err)
	}
}

// TestRunnerRun: scheduled rounds converge the nodes, rebuilds run, and
// Run returns when its context ends.
func TestRunnerRun(t *testing.T) {
	noLeaks(t)
	cfg := Config{Interval: 5 * time.Millisecond, RebuildInterval: 10 * time.Millisecond}
	n := newFakeNet(t, cfg, []uint32{1, 2, 3}, "a", "b")
	for _, p := range n.parts {
		seedKeys(t, n.stores["a"], key(p, "a"))
		seedKeys(t, n.stores["b"], key(p, "b"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, name := range n.names {
		wg.Go(func() { n.runner(name).Run(ctx) })
	}
	defer wg.Wait()
	defer cancel()
	eventually(t, 20*time.Second, "scheduled rounds converge the nodes and rebuild trees", func() bool {
		if !n.converged(t) {
			return false
		}
		for _, name := range n.names {
			st := n.runner(name).Stats()
			if st.Rounds == 0 || st.Rebuilds == 0 || n.runner(name).LastRound().IsZero() {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()
	var pulled uint64
	for _, name := range n.names {
		st := n.runner(name).Stats()
		pulled += st.Pulled
		if st.Errors != 0 || st.LeavesFixed != 0 {
			t.Errorf("%s: %+v", name, st)
		}
	}
	if pulled == 0 {
		t.Error("converged without pulling anything")
	}
}

// TestRunnerRebuildLoopCoversEveryPartition: the slow rebuild schedule
// visits every kept partition in turn, whatever order Cluster.Partitions
// lists them in (the interface does not promise an order).
func TestRunnerRebuildLoopCoversEveryPartition(t *testing.T) {
	for _, parts := range [][]uint32{{1, 2, 3, 4}, {3, 1, 4, 2}} {
		t.Run(fmt.Sprint(parts), func(t *testing.T) {
			noLeaks(t)
			n := newFakeNet(t, Config{Interval: time.Hour, RebuildInterval: 4 * time.Millisecond}, parts, "a")
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { n.runner("a").Run(ctx) })
			defer wg.Wait()
			defer cancel()
			// A full pass takes RebuildInterval; give it many.
			deadline := time.Now().Add(2 * time.Second)
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for time.Now().Before(deadline) {
				if len(n.stores["a"].rebuilds()) == len(parts) {
					return
				}
				<-tick.C
			}
			t.Errorf("rebuilds by partition after 2s of 4ms passes: %v; want all of %v", n.stores["a"].rebuilds(), parts)
		})
	}
}

// TestRunnerRunRebuildsStaleTrees: a store last opened with DisableTree
// has stale trees; Run rebuilds every partition, marks the trees fresh,
// and only then are they exchanged.
func TestRunnerRunRebuildsStaleTrees(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	s, err := storage.Open(storage.Config{Dir: dir, NodeID: "a", Logger: discard, DisableTree: true})
	if err != nil {
		t.Fatal(err)
	}
	var es []storage.PartitionEntry
	for _, p := range []uint32{1, 2} {
		for i := range 10 {
			k := key(p, fmt.Sprint(i))
			es = append(es, entry(k, v1(k)))
		}
	}
	if err := s.ApplyMany(es); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = storage.Open(storage.Config{Dir: dir, NodeID: "a", Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if !s.TreeStale() {
		t.Fatal("store opened with DisableTree before is not stale")
	}

	cfg := Config{Interval: 5 * time.Millisecond, Logger: discard, ExchangeRate: 1000}
	n := newFakeNet(t, cfg, []uint32{1, 2}, "b")
	stale := &testStore{Store: s, name: "a", notKept: map[uint32]bool{}, pending: map[uint32]bool{}}
	n.names = append([]string{"a"}, n.names...)
	n.stores["a"] = stale
	n.mu.Lock()
	n.runners["a"] = New(cfg, &fakeCluster{net: n, self: "a"}, stale)
	n.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { n.runner("a").Run(ctx) })
	defer wg.Wait()
	defer cancel()
	eventually(t, 20*time.Second, "the stale trees are rebuilt and b is repaired", func() bool {
		return !s.TreeStale() && n.converged(t) && held(t, n.stores["b"], key(2, "9")) != nil
	})
	st := n.runner("a").Stats()
	if st.Rebuilds < 2 || st.LeavesFixed == 0 {
		t.Errorf("stats: %+v; want both partitions rebuilt, leaves fixed", st)
	}
}

func TestRunnerMetrics(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	n := newFakeNet(t, Config{}, []uint32{1}, "a", "b")
	seedKeys(t, n.stores["a"], key(1, "a"))
	seedKeys(t, n.stores["b"], key(1, "b"), key(1, "c"))
	r := n.runner("a")
	reg := prometheus.NewRegistry()
	if err := r.Register(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Repair(ctx, nil, false); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	st := r.Stats()
	for name, want := range map[string]uint64{
		"quorumkv_antientropy_exchanges_total":              st.Exchanges,
		"quorumkv_antientropy_keys_repaired_total/pulled":   st.Pulled,
		"quorumkv_antientropy_keys_repaired_total/pushed":   st.Pushed,
		"quorumkv_antientropy_bytes_total/sent":             st.BytesSent,
		"quorumkv_antientropy_bytes_total/received":         st.BytesRecv,
		"quorumkv_antientropy_tombstones_purged_total":      st.Purged,
		"quorumkv_antientropy_last_round_timestamp_seconds": 0,
	} {
		if v, ok := got[name]; !ok || v != float64(want) {
			t.Errorf("%s = %v (present %v), want %d", name, v, ok, want)
		}
	}
	if st.Pulled != 2 || st.Pushed != 1 {
		t.Errorf("stats %+v", st)
	}
	if err := r.Register(reg); err == nil {
		t.Error("registering twice succeeded")
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: not yet: %s", limit, what)
		}
		<-tick.C
	}
}
