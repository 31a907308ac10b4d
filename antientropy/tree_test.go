package antientropy

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/quorumkv/quorumkv/storage"
)

func randomLeaves(rng *rand.Rand, n int) []uint64 {
	leaves := make([]uint64, n)
	for i := range leaves {
		leaves[i] = rng.Uint64() | 1 // nonzero
	}
	return leaves
}

func TestTreeShape(t *testing.T) {
	tr := NewTree(make([]uint64, storage.TreeLeaves))
	if tr.Depth() != 2 {
		t.Fatalf("depth %d, want 2", tr.Depth())
	}
	for level, want := range []int{1, 16, 256} {
		if got := tr.Width(level); got != want {
			t.Errorf("width of level %d: %d, want %d", level, got, want)
		}
	}
	if !slices.Equal(shape, []int{1, 16, 256}) {
		t.Errorf("shape %v", shape)
	}
	if tr.Root() != 0 {
		t.Errorf("all-zero tree has root %x, want 0", tr.Root())
	}
	hs, err := tr.Hashes(1, []int{0, 7, 15})
	if err != nil || !slices.Equal(hs, []uint64{0, 0, 0}) {
		t.Errorf("interior nodes over zero leaves: %x, %v", hs, err)
	}

	// Other sizes: one leaf is its own root; 17 leaves need two interior
	// nodes, the second over a single leaf.
	one := NewTree([]uint64{42})
	if one.Depth() != 0 || one.Root() != 42 {
		t.Errorf("one leaf: depth %d root %d", one.Depth(), one.Root())
	}
	odd := NewTree(randomLeaves(rand.New(rand.NewPCG(1, 2)), 17))
	if odd.Depth() != 2 || odd.Width(0) != 1 || odd.Width(1) != 2 || odd.Width(2) != 17 {
		t.Errorf("17 leaves: depth %d widths %d/%d/%d", odd.Depth(), odd.Width(0), odd.Width(1), odd.Width(2))
	}
}

func TestTreeOneLeafChangesItsAncestors(t *testing.T) {
	const seed = 20260901
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	for range 50 {
		leaves := randomLeaves(rng, storage.TreeLeaves)
		if rng.IntN(4) == 0 {
			// Sparse trees too: most subtrees empty.
			for i := range leaves {
				if rng.IntN(8) != 0 {
					leaves[i] = 0
				}
			}
		}
		before := NewTree(slices.Clone(leaves))
		leaf := rng.IntN(storage.TreeLeaves)
		leaves[leaf] ^= rng.Uint64() | 1
		after := NewTree(leaves)
		for level := 0; level <= before.Depth(); level++ {
			ancestor := leaf
			for range before.Depth() - level {
				ancestor /= Fanout
			}
			all := make([]int, before.Width(level))
			for i := range all {
				all[i] = i
			}
			bh, err := before.Hashes(level, all)
			if err != nil {
				t.Fatal(err)
			}
			ah, err := after.Hashes(level, all)
			if err != nil {
				t.Fatal(err)
			}
			if got := differing(all, bh, ah); !slices.Equal(got, []int{ancestor}) {
				t.Fatalf("leaf %d changed: level %d differs at %v, want [%d]", leaf, level, got, ancestor)
			}
		}
		if before.Root() == after.Root() {
			t.Fatalf("root unchanged after leaf %d changed", leaf)
		}
	}
}

func TestTreeInteriorNodes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	leaves := make([]uint64, storage.TreeLeaves)
	for i := 16; i < 32; i++ {
		leaves[i] = rng.Uint64() | 1
	}
	tr := NewTree(slices.Clone(leaves))
	hs, err := tr.Hashes(1, []int{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	if hs[0] != 0 || hs[1] == 0 || hs[2] != 0 {
		t.Errorf("only subtree 1 holds data, interior hashes %x", hs)
	}
	if tr.Root() == 0 {
		t.Error("root of a non-empty tree is 0")
	}
	// Hashes returns the leaves themselves at the last level.
	got, err := tr.Hashes(2, []int{16, 31, 0})
	if err != nil || !slices.Equal(got, []uint64{leaves[16], leaves[31], 0}) {
		t.Errorf("leaf hashes %x, %v", got, err)
	}
	// Position matters: swapping two leaves changes their parent.
	leaves[16], leaves[17] = leaves[17], leaves[16]
	if NewTree(leaves).Root() == tr.Root() {
		t.Error("swapping two leaves left the root unchanged")
	}
}

func TestTreeHashesErrors(t *testing.T) {
	tr := NewTree(make([]uint64, storage.TreeLeaves))
	for _, c := range []struct {
		level int
		idx   []int
	}{
		{-1, []int{0}},
		{3, []int{0}},
		{0, []int{1}},
		{0, []int{-1}},
		{1, []int{0, 16}},
		{2, []int{256}},
		{2, []int{3, -2}},
	} {
		if hs, err := tr.Hashes(c.level, c.idx); err == nil {
			t.Errorf("Hashes(%d, %v) = %x, want an error", c.level, c.idx, hs)
		}
	}
	if hs, err := tr.Hashes(2, nil); err != nil || len(hs) != 0 {
		t.Errorf("Hashes of no nodes: %v, %v", hs, err)
	}
}

func TestChildrenAndDiffering(t *testing.T) {
	seq := func(lo, hi int) []int {
		var out []int
		for i := lo; i < hi; i++ {
			out = append(out, i)
		}
		return out
	}
	for _, c := range []struct {
		idx   []int
		width int
		want  []int
	}{
		{[]int{0}, 16, seq(0, 16)},
		{[]int{0}, 5, seq(0, 5)},
		{[]int{1, 3}, 256, append(seq(16, 32), seq(48, 64)...)},
		{[]int{15}, 256, seq(240, 256)},
		{[]int{15}, 250, seq(240, 250)},
		{[]int{1}, 17, []int{16}},
		{nil, 256, nil},
	} {
		if got := children(c.idx, c.width); !slices.Equal(got, c.want) {
			t.Errorf("children(%v, %d) = %v, want %v", c.idx, c.width, got, c.want)
		}
	}
	idx := []int{3, 9, 12, 40}
	if got := differing(idx, []uint64{1, 2, 3, 4}, []uint64{1, 0, 3, 5}); !slices.Equal(got, []int{9, 40}) {
		t.Errorf("differing: %v", got)
	}
	if got := differing(idx, []uint64{1, 2, 3, 4}, []uint64{1, 2, 3, 4}); got != nil {
		t.Errorf("differing of equal hashes: %v", got)
	}
}
