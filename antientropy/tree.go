// Package antientropy finds and repairs divergence between the replicas of
// a partition in the background: whatever hinted handoff and read repair
// missed (a dropped slow hint, a wiped disk, a key never read again, bytes
// changed on disk).
//
// Each replica keeps a hash tree per partition. The store maintains the
// leaves from the write path (storage.Store.Leaves); this package derives
// the interior levels. An exchange between two replicas compares roots,
// descends only into differing subtrees, swaps key → digest lists for the
// differing leaves, and repairs both sides through the store's merge, so
// afterwards each holds the merge of both. Its cost is proportional to the
// difference, not to the data.
//
// A Runner schedules exchanges (one per partition at a time, rate-limited,
// backing off under foreground load), rebuilds trees from data on a slow
// schedule to find corruption that bypassed the write path, and purges
// tombstones once every replica holds them and nothing that could bring the
// deleted data back is pending anywhere.
package antientropy

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// Fanout is the number of children of an interior tree node. With the
// store's 256 leaves per partition a tree has three levels: the root, 16
// interior nodes and the leaves, so an exchange that finds one differing
// key compares 1 + 16 + 16 hashes.
const Fanout = 16

// Tree is a partition's hash tree. Level 0 is the root; the last level is
// the leaves.
type Tree struct {
	levels [][]uint64
}

// NewTree builds the interior levels over leaves. An interior node over
// children that are all zero (nothing stored beneath) is zero, so an empty
// partition's root is 0.
func NewTree(leaves []uint64) *Tree {
	levels := [][]uint64{leaves}
	for len(levels[0]) > 1 {
		child := levels[0]
		parent := make([]uint64, (len(child)+Fanout-1)/Fanout)
		for i := range parent {
			parent[i] = hashNodes(child[i*Fanout : min(len(child), (i+1)*Fanout)])
		}
		levels = append([][]uint64{parent}, levels...)
	}
	return &Tree{levels: levels}
}

func hashNodes(children []uint64) uint64 {
	var buf [Fanout * 8]byte
	b := buf[:0]
	zero := true
	for _, c := range children {
		zero = zero && c == 0
		b = binary.LittleEndian.AppendUint64(b, c)
	}
	if zero {
		return 0
	}
	return xxhash.Sum64(b)
}

// Root returns the root hash.
func (t *Tree) Root() uint64 { return t.levels[0][0] }

// Depth returns the level of the leaves.
func (t *Tree) Depth() int { return len(t.levels) - 1 }

// Hashes returns the hashes of the nodes idx at level.
func (t *Tree) Hashes(level int, idx []int) ([]uint64, error) {
	if level < 0 || level >= len(t.levels) {
		return nil, fmt.Errorf("antientropy: level %d out of range [0, %d]", level, t.Depth())
	}
	out := make([]uint64, len(idx))
	for i, x := range idx {
		if x < 0 || x >= len(t.levels[level]) {
			return nil, fmt.Errorf("antientropy: node %d out of range at level %d", x, level)
		}
		out[i] = t.levels[level][x]
	}
	return out, nil
}

// Width returns the number of nodes at level.
func (t *Tree) Width(level int) int { return len(t.levels[level]) }

// children returns the indexes at level+1 of the children of nodes idx at
// level, in a tree whose level+1 has width nodes.
func children(idx []int, width int) []int {
	var out []int
	for _, x := range idx {
		for c := x * Fanout; c < min(width, (x+1)*Fanout); c++ {
			out = append(out, c)
		}
	}
	return out
}

// differing returns the elements of idx whose hashes in a and b differ.
func differing(idx []int, a, b []uint64) []int {
	var out []int
	for i, x := range idx {
		if a[i] != b[i] {
			out = append(out, x)
		}
	}
	return out
}
