package antientropy

import (
	"context"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// purgeNet is three nodes keeping partitions 1 and 2, purging tombstones
// as soon as they are a nanosecond old.
func purgeNet(t *testing.T) *fakeNet {
	return newFakeNet(t, Config{TombstoneGrace: time.Nanosecond}, []uint32{1, 2}, "n1", "n2", "n3")
}

// everywhere applies o under k on every node.
func everywhere(t *testing.T, n *fakeNet, k storage.Key, o *storage.Object) {
	t.Helper()
	for _, name := range n.names {
		apply(t, n.stores[name], entry(k, o))
	}
}

func purged(t *testing.T, n *fakeNet) map[string]uint64 {
	out := map[string]uint64{}
	for _, name := range n.names {
		out[name] = n.runner(name).Stats().Purged
	}
	return out
}

var hourAgo = time.Now().Add(-time.Hour).UnixNano()

// TestPurgeEveryReplica: a tombstone every replica holds is purged by the
// first node's pass; the others follow on theirs, because the first now
// answers "nothing" to their question. Meanwhile exchanges do not bring
// it back.
func TestPurgeEveryReplica(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	n := purgeNet(t)
	gone, kept := key(1, "gone"), key(1, "kept")
	everywhere(t, n, gone, deleted(hourAgo))
	everywhere(t, n, kept, v1(kept))

	if got := n.runner("n1").purge(ctx); got != 1 {
		t.Fatalf("n1 purged %d, want 1", got)
	}
	if held(t, n.stores["n1"], gone) != nil || held(t, n.stores["n2"], gone) == nil {
		t.Fatal("n1's purge: wrong holders")
	}
	// An exchange now sees n1's absence and n2's old tombstone as equal.
	res, err := n.runner("n1").Repair(ctx, []uint32{1}, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != 0 || res.Pulled+res.Pushed != 0 || held(t, n.stores["n1"], gone) != nil {
		t.Errorf("exchange after the purge: %+v; the purged tombstone must not come back", res)
	}
	for _, name := range []string{"n2", "n3"} {
		if got := n.runner(name).purge(ctx); got != 1 {
			t.Errorf("%s purged %d, want 1", name, got)
		}
	}
	for _, name := range n.names {
		if held(t, n.stores[name], gone) != nil {
			t.Errorf("%s still holds the tombstone", name)
		}
		if enc(held(t, n.stores[name], kept)) != enc(v1(kept)) {
			t.Errorf("%s lost a live key", name)
		}
		if st := n.runner(name).Stats(); st.Purged != 1 {
			t.Errorf("%s: %+v, want 1 purged", name, st)
		}
	}
	if !n.converged(t) {
		t.Error("trees differ after everyone purged")
	}
	// Nothing left to do.
	if got := n.runner("n1").purge(ctx); got != 0 {
		t.Errorf("second pass purged %d", got)
	}
}

// TestPurgeWaits: a tombstone stays while anything could bring back what
// it deleted, or while it is young.
func TestPurgeWaits(t *testing.T) {
	gone := key(1, "gone")
	for _, c := range []struct {
		name  string
		setup func(*testing.T, *fakeNet)
	}{
		{"a member is down", func(t *testing.T, n *fakeNet) { n.set(n.down, "n3", true) }},
		{"a member does not answer", func(t *testing.T, n *fakeNet) { n.set(n.failing, "n3", true) }},
		{"a member holds hints for the partition", func(t *testing.T, n *fakeNet) { n.stores["n3"].setPending(1, true) }},
		{"this node holds hints for the partition", func(t *testing.T, n *fakeNet) { n.stores["n1"].setPending(1, true) }},
		{"a transfer of the partition is pending", func(t *testing.T, n *fakeNet) {
			n.mu.Lock()
			n.unsettled[1] = true
			n.mu.Unlock()
		}},
		{"a replica holds a newer live write", func(t *testing.T, n *fakeNet) {
			apply(t, n.stores["n2"], entry(gone, object([]storage.Entry{{Actor: writer, Counter: 3}}, live(gone, writer, 3))))
		}},
		{"a replica holds a concurrent live write", func(t *testing.T, n *fakeNet) {
			apply(t, n.stores["n2"], entry(gone, object([]storage.Entry{{Actor: writer, Counter: 1}, {Actor: "x.1", Counter: 1}},
				live(gone, writer, 1), live(gone, "x.1", 1))))
		}},
		{"a replica holds another tombstone too", func(t *testing.T, n *fakeNet) {
			apply(t, n.stores["n3"], entry(gone, object([]storage.Entry{{Actor: writer, Counter: 1}, {Actor: "x.1", Counter: 1}},
				tombstone("x.1", 1, hourAgo))))
		}},
		{"a replica does not keep the partition", func(t *testing.T, n *fakeNet) { n.stores["n2"].keepOnly(2) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			noLeaks(t)
			n := purgeNet(t)
			everywhere(t, n, gone, deleted(hourAgo))
			c.setup(t, n)
			if got := n.runner("n1").purge(context.Background()); got != 0 {
				t.Errorf("purged %d, want 0", got)
			}
			if held(t, n.stores["n1"], gone) == nil {
				t.Error("the tombstone went")
			}
			if st := n.runner("n1").Stats(); st.Purged != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}

	t.Run("young tombstone", func(t *testing.T) {
		noLeaks(t)
		n := newFakeNet(t, Config{TombstoneGrace: time.Hour}, []uint32{1}, "n1", "n2")
		everywhere(t, n, gone, deleted(time.Now().Add(-time.Minute).UnixNano()))
		if got := n.runner("n1").purge(context.Background()); got != 0 {
			t.Errorf("purged a tombstone younger than the grace: %d", got)
		}
	})
}

// TestPurgePerPartition: hints pending for one partition hold back its
// tombstones only.
func TestPurgePerPartition(t *testing.T) {
	noLeaks(t)
	n := purgeNet(t)
	k1, k2 := key(1, "gone"), key(2, "gone")
	everywhere(t, n, k1, deleted(hourAgo))
	everywhere(t, n, k2, deleted(hourAgo))
	n.stores["n2"].setPending(2, true)
	if got := n.runner("n1").purge(context.Background()); got != 1 {
		t.Errorf("purged %d, want 1", got)
	}
	if held(t, n.stores["n1"], k1) != nil || held(t, n.stores["n1"], k2) == nil {
		t.Error("purged the wrong partition")
	}
}

// TestPurgeKeepsLaterWrites: a key deleted and written again is not
// purged, and a write that lands between the decision and the purge
// survives it.
func TestPurgeKeepsLaterWrites(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	n := purgeNet(t)
	s := n.stores["n1"]

	// Deleted, then written again, everywhere.
	again := key(1, "again")
	w1, err := s.Put(again, storage.Write{Value: []byte(`1`), ContentType: "application/json", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	del, err := s.Put(again, storage.Write{Context: w1.Context, Tombstone: true, Now: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	w3, err := s.Put(again, storage.Write{Context: del.Context, Value: []byte(`3`), ContentType: "application/json", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"n2", "n3"} {
		apply(t, n.stores[name], entry(again, w3.Object))
	}
	if got := n.runner("n1").purge(ctx); got != 0 {
		t.Errorf("purged %d of a key written after its deletion", got)
	}
	if o := held(t, s, again); o == nil || len(o.Live()) != 1 || string(o.Live()[0].Value) != `3` {
		t.Fatalf("the live write is gone: %+v", o)
	}

	// A client writes the key again while the purge is being decided.
	racing := key(1, "racing")
	everywhere(t, n, racing, deleted(hourAgo))
	var rewritten storage.Written
	s.setPurgeHook(func(ds []storage.Digest) {
		s.setPurgeHook(nil)
		cur := held(t, s, racing)
		rewritten, err = s.Put(racing, storage.Write{Context: cur.Context, Value: []byte(`"back"`), ContentType: "application/json", Now: time.Now()})
		if err != nil {
			t.Error(err)
		}
	})
	if got := n.runner("n1").purge(ctx); got != 0 {
		t.Errorf("purged %d despite the racing write", got)
	}
	if o := held(t, s, racing); o == nil || !hasSibling(o, rewritten.Dot) {
		t.Fatalf("the racing write was lost: %+v", o)
	}

	// Another deletion racing the purge changes the digest: it waits too.
	twice := key(1, "twice")
	everywhere(t, n, twice, deleted(hourAgo))
	s.setPurgeHook(func(ds []storage.Digest) {
		s.setPurgeHook(nil)
		apply(t, s, entry(twice, object([]storage.Entry{{Actor: writer, Counter: 1}, {Actor: "x.1", Counter: 1}},
			tombstone("x.1", 1, hourAgo))))
	})
	if got := n.runner("n1").purge(ctx); got != 0 {
		t.Errorf("purged %d although the tombstone changed", got)
	}
	if held(t, s, twice) == nil {
		t.Error("a changed tombstone was purged")
	}
	if st := n.runner("n1").Stats(); st.Purged != 0 {
		t.Errorf("stats %+v", st)
	}
}
