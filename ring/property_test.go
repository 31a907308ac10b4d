package ring

import (
	"slices"
	"strconv"
	"testing"

	"pgregory.net/rapid"
)

// Property tests. They run from a fixed seed (see TestMain); rapid prints
// the seed (-rapid.seed) and the shrunk input on failure.

// genID draws valid node ids, often of the node-<digits> shape whose prefixes
// collide inside consistent without the terminator.
func genID() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.StringMatching(`node-[0-9]{1,3}`),
		rapid.StringMatching(`[A-Za-z0-9._-]{1,64}`),
	)
}

func genMembers(t *rapid.T, minN, maxN int) []string {
	members := rapid.SliceOfNDistinct(genID(), minN, maxN, rapid.ID[string]).Draw(t, "members")
	for _, id := range members {
		if err := ValidateNodeID(id); err != nil {
			t.Fatalf("generator produced an invalid id: %v", err)
		}
	}
	return members
}

// sameTable reports where a and b differ, or "" if they are identical.
func sameTable(a, b *Table) string {
	switch {
	case a.Version() != b.Version():
		return "version " + a.Version() + " != " + b.Version()
	case a.Config() != b.Config():
		return "config"
	case !slices.Equal(a.Members(), b.Members()):
		return "members"
	}
	for p := range a.Config().Partitions {
		if !slices.Equal(a.PreferenceList(p), b.PreferenceList(p)) {
			return "preference list of partition " + strconv.Itoa(p)
		}
	}
	return ""
}

func TestDeterminismProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		members := genMembers(t, 1, 16)
		cfg := Config{
			Partitions:   rapid.IntRange(8*len(members), 8*len(members)+600).Draw(t, "partitions"),
			N:            rapid.IntRange(1, 5).Draw(t, "n"),
			VirtualNodes: rapid.IntRange(1, 256).Draw(t, "virtualNodes"),
			Load:         rapid.Float64Range(1.0001, 2).Draw(t, "load"),
		}
		a, errA := New(cfg, members)
		b, errB := New(cfg, rapid.Permutation(members).Draw(t, "shuffled"))
		if (errA == nil) != (errB == nil) {
			t.Fatalf("order changed the outcome: %v vs %v", errA, errB)
		}
		if errA != nil {
			return // one virtual node per member may not place; both agree
		}
		if d := sameTable(a, b); d != "" {
			t.Fatalf("insertion order changed the table: %s", d)
		}
	})
}

func TestPreferenceListProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		members := genMembers(t, 1, 12)
		cfg := DefaultConfig()
		cfg.N = rapid.IntRange(1, 5).Draw(t, "n")
		tb, err := New(cfg, members)
		if err != nil {
			t.Fatal(err)
		}
		sorted := slices.Sorted(slices.Values(members))
		want := min(cfg.N, len(members))
		slots := 0
		for p := range cfg.Partitions {
			list := tb.PreferenceList(p)
			if !slices.Equal(slices.Sorted(slices.Values(list)), sorted) {
				t.Fatalf("p=%d: list %q is not a permutation of the members", p, list)
			}
			prim := tb.Primaries(p)
			if len(prim) != want || !slices.Equal(prim, list[:want]) {
				t.Fatalf("p=%d: primaries %q, want the first %d of %q", p, prim, want, list)
			}
			slots += len(prim)
		}
		var sum float64
		for _, s := range tb.Ownership() {
			sum += s
		}
		if sum < 1-1e-9 || sum > 1+1e-9 || slots != cfg.Partitions*want {
			t.Fatalf("ownership sums to %v over %d slots", sum, slots)
		}
	})
}

// movedShare is the share of a's replica slots (partition, member) that b
// does not have: the data a move from a to b must copy.
func movedShare(a, b *Table) float64 {
	moved, total := 0, 0
	for p := range a.Config().Partitions {
		for _, id := range a.Primaries(p) {
			total++
			if !b.IsPrimary(p, id) {
				moved++
			}
		}
	}
	return float64(moved) / float64(total)
}

// maxMovedTimesK bounds moved share × k on a join or leave that takes the
// cluster between k-1 and k members (ideal: exactly 1). Measured over 200
// random name sets per k in 4..12 (1024 partitions, N=3): mean 1.00–1.04,
// worst 1.18 (k=12); node-1..node-k: 0.99–1.05. 1.3 leaves a margin above the
// worst seen without hiding a regression to GetClosestN-like behaviour.
const maxMovedTimesK = 1.3

func TestJoinMovementProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		k := rapid.IntRange(2, 12).Draw(t, "k")
		members := genMembers(t, k, k)
		cfg := DefaultConfig()
		before, err := New(cfg, members[:k-1])
		if err != nil {
			t.Fatal(err)
		}
		after, err := New(cfg, members)
		if err != nil {
			t.Fatal(err)
		}
		moved := movedShare(before, after)
		t.Logf("k=%d moved %.4f = %.3f/k", k, moved, moved*float64(k))
		if moved > maxMovedTimesK/float64(k) {
			t.Fatalf("adding member %d of %d moved %.4f of the replica slots (%.3f/k), want ≤ %.2f/k",
				k, k, moved, moved*float64(k), maxMovedTimesK)
		}
		// The newcomer gets a share too.
		if k > 1 && after.Ownership()[members[k-1]] == 0 {
			t.Fatalf("new member %q holds no replicas", members[k-1])
		}
	})
}

func TestLeaveMovementProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		k := rapid.IntRange(2, 12).Draw(t, "k")
		members := genMembers(t, k, k)
		gone := rapid.IntRange(0, k-1).Draw(t, "gone")
		cfg := DefaultConfig()
		before, err := New(cfg, members)
		if err != nil {
			t.Fatal(err)
		}
		after, err := New(cfg, slices.Delete(slices.Clone(members), gone, gone+1))
		if err != nil {
			t.Fatal(err)
		}
		// At least the leaver's own slots move: ownership share ≈ 1/k.
		moved := movedShare(before, after)
		t.Logf("k=%d moved %.4f = %.3f/k", k, moved, moved*float64(k))
		if moved > maxMovedTimesK/float64(k) {
			t.Fatalf("removing 1 of %d members moved %.4f of the replica slots (%.3f/k), want ≤ %.2f/k",
				k, moved, moved*float64(k), maxMovedTimesK)
		}
		if lower := before.Ownership()[members[gone]]; moved < lower-1e-9 {
			t.Fatalf("moved %.4f < the leaver's share %.4f", moved, lower)
		}
	})
}
