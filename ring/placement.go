package ring

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Placement says, for every partition, which replicas count toward R and W,
// which must receive writes, which are fallbacks, and who must pull or may
// drop what. It is computed from (Config, Membership, Holdings) alone, so
// every node that has merged the same gossip computes the identical
// Placement.
//
// For partition p, with T the target table New(cfg, m.RingMembers()),
// Tlist(p) = T.PreferenceList(p) and Tprim(p) = T.Primaries(p):
//
//   - A node holds p if its Holding names its current Member.Epoch, covers
//     cfg.Partitions partitions and has p set, and it is not Removed.
//   - Counting(p): the first N holders of p, scanning Tlist(p) and then the
//     Leaving members (by id). During a join the old holders count until
//     the newcomer has pulled; a leaving node counts until its successors
//     hold p. It may be shorter than N, even empty, after a remove.
//   - Writes(p): Counting(p), then the members of Tprim(p) not in it, so
//     that new primaries receive writes while they pull.
//   - Fallbacks(p): Tlist(p) minus Writes(p): the sloppy-quorum order.
//
// A Placement is immutable and safe for concurrent use. Accessors that
// return slices return shared ones: do not modify them. They do not
// allocate, except Sources in the rare case noted there.
type Placement struct {
	target *Table
	// tlist[p*R:(p+1)*R] is Tlist(p) as indices into target.members (R of
	// them). It depends on the table only, so Update shares it.
	tlist    []uint16
	members  Membership
	holdings Holdings // as given (cloned)

	// By index in members.members:
	holds  []Bitmap // holdings that count (the zero Bitmap holds nothing)
	pulls  [][]int
	drops  [][]int
	slots  []int // Tprim slots
	counts []int // partitions where the node is in Counting

	counting  [][]string
	writes    [][]string
	fallbacks [][]string
	sources   [][]string
	settled   bool
	version   string
}

// NewPlacement computes the placement of cfg, m and h. Holdings of ids not
// in m, of Removed members, under another epoch than the member's, or of a
// bitmap not covering exactly cfg.Partitions partitions are ignored (they
// hold nothing). It fails if m fails Validate, has no ring member (wrapping
// ErrNoMembers), or New fails for its ring members.
func NewPlacement(cfg Config, m Membership, h Holdings) (*Placement, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	ring := m.RingMembers()
	if len(ring) == 0 {
		return nil, fmt.Errorf("%w: none of %d member records is joining or member", ErrNoMembers, m.Len())
	}
	t, err := New(cfg, ring)
	if err != nil {
		return nil, err
	}
	return build(t, indexLists(t), m, h), nil
}

// Update returns the placement of m and h under pl's config: the same as
// NewPlacement(pl.Target().Config(), m, h), but it reuses pl's target table
// when m has the same ring members. Building that table is most of the cost
// of NewPlacement, and most changes (a finished pull, a leave's progress, a
// new epoch) leave the ring members alone.
func (pl *Placement) Update(m Membership, h Holdings) (*Placement, error) {
	if !slices.Equal(m.RingMembers(), pl.target.members) {
		return NewPlacement(pl.target.cfg, m, h)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return build(pl.target, pl.tlist, m, h), nil
}

// indexLists returns every preference list of t as indices into t.members,
// so that build works on integers rather than map lookups of strings. New
// allows at most maxPartitions/8 members, so an index fits in 16 bits.
func indexLists(t *Table) []uint16 {
	r := len(t.members)
	index := make(map[string]uint16, r)
	for i, id := range t.members {
		index[id] = uint16(i)
	}
	out := make([]uint16, 0, t.cfg.Partitions*r)
	for _, list := range t.lists {
		for _, id := range list {
			out = append(out, index[id])
		}
	}
	return out
}

// build computes the placement of a valid m and h over t, the target table
// of m's ring members, whose lists as indices are tlist.
func build(t *Table, tlist []uint16, m Membership, h Holdings) *Placement {
	cfg, r, nm := t.cfg, len(t.members), m.Len()
	pl := &Placement{
		target:   t,
		tlist:    tlist,
		members:  m,
		holdings: maps.Clone(h),
		holds:    make([]Bitmap, nm),
		pulls:    make([][]int, nm),
		drops:    make([][]int, nm),
		slots:    make([]int, nm),
		counts:   make([]int, nm),
		settled:  true,
	}
	ids := make([]string, nm)
	var leaving, holders []int
	for i, mem := range m.members {
		ids[i] = mem.ID
		if mem.State == StateLeaving {
			leaving = append(leaving, i) // sorted by id, as m.members is
		}
		hd, ok := h[mem.ID]
		if ok && mem.State != StateRemoved && hd.Epoch == mem.Epoch && hd.Parts.Len() == cfg.Partitions {
			pl.holds[i] = hd.Parts
			holders = append(holders, i)
		}
	}
	ringToM := make([]int, r)
	for i, id := range t.members {
		ringToM[i], _ = m.find(id)
	}

	// Version: everything that defines the placement, then the lists.
	var d xxhash.Digest
	d.Reset()
	vbuf := make([]byte, 0, 4096+64)
	vbuf = append(vbuf, "quorumkv/placement/v1"...)
	vbuf = binary.AppendUvarint(vbuf, uint64(cfg.N))
	vbuf = binary.AppendUvarint(vbuf, uint64(cfg.Partitions))
	vbuf = appendString(vbuf, t.version)
	vbuf = binary.AppendUvarint(vbuf, uint64(nm))
	for _, mem := range m.members {
		vbuf = appendString(vbuf, mem.ID)
		vbuf = append(vbuf, byte(mem.State))
		vbuf = appendString(vbuf, mem.Epoch)
		_, _ = d.Write(vbuf)
		vbuf = vbuf[:0]
	}

	// One backing array per table; capacities are exact upper bounds, so
	// appends never move the lists already cut from them.
	parts := cfg.Partitions
	maxCounting := min(cfg.N, r+len(leaving))
	cbuf := make([]string, 0, parts*maxCounting)
	wbuf := make([]string, 0, parts*(maxCounting+t.primaries))
	fbuf := make([]string, 0, parts*r)
	sbuf := make([]string, 0, parts*maxCounting)
	pl.counting = make([][]string, parts)
	pl.writes = make([][]string, parts)
	pl.fallbacks = make([][]string, parts)
	pl.sources = make([][]string, parts)

	// Per-member marks, valid for partition p when equal to p+1.
	inPrim := make([]int, nm)
	inWrites := make([]int, nm)                    // counting included
	cur := make([]int, 0, maxCounting+t.primaries) // Writes(p) as member indices
	for p := range parts {
		stamp := p + 1
		list := tlist[p*r : (p+1)*r]
		prim := list[:t.primaries]
		for _, ri := range prim {
			inPrim[ringToM[ri]] = stamp
		}

		// Counting: the first N holders of Tlist(p), then of the leaving.
		cur = cur[:0]
		for _, ri := range list {
			if mi := ringToM[ri]; len(cur) < cfg.N && pl.holds[mi].Has(p) {
				cur = append(cur, mi)
			}
		}
		for _, mi := range leaving {
			if len(cur) < cfg.N && pl.holds[mi].Has(p) {
				cur = append(cur, mi)
			}
		}
		nc := len(cur)
		allHold := true
		for _, mi := range cur {
			inWrites[mi] = stamp
			pl.counts[mi]++
		}
		for _, ri := range prim {
			mi := ringToM[ri]
			pl.slots[mi]++
			if !pl.holds[mi].Has(p) {
				allHold = false
				pl.pulls[mi] = append(pl.pulls[mi], p)
			}
			if inWrites[mi] != stamp {
				inWrites[mi] = stamp
				cur = append(cur, mi)
			}
		}

		start := len(cbuf)
		for _, mi := range cur[:nc] {
			cbuf = append(cbuf, ids[mi])
		}
		pl.counting[p] = cbuf[start:len(cbuf):len(cbuf)]
		start = len(wbuf)
		for _, mi := range cur {
			wbuf = append(wbuf, ids[mi])
		}
		pl.writes[p] = wbuf[start:len(wbuf):len(wbuf)]
		start = len(fbuf)
		for _, ri := range list {
			if mi := ringToM[ri]; inWrites[mi] != stamp {
				fbuf = append(fbuf, ids[mi])
			}
		}
		pl.fallbacks[p] = fbuf[start:len(fbuf):len(fbuf)]

		// Sources: the counting holders losing p, whose copies would
		// otherwise be dropped unread; else every counting holder.
		start = len(sbuf)
		for _, mi := range cur[:nc] {
			if inPrim[mi] != stamp {
				sbuf = append(sbuf, ids[mi])
			}
		}
		if len(sbuf) > start {
			pl.sources[p] = sbuf[start:len(sbuf):len(sbuf)]
		} else {
			pl.sources[p] = pl.counting[p]
		}

		if allHold {
			for _, mi := range holders {
				if inPrim[mi] != stamp && pl.holds[mi].Has(p) {
					pl.drops[mi] = append(pl.drops[mi], p)
				}
			}
		} else {
			pl.settled = false
		}

		vbuf = binary.AppendUvarint(vbuf, uint64(nc))
		vbuf = binary.AppendUvarint(vbuf, uint64(len(cur)))
		for _, mi := range cur {
			vbuf = binary.AppendUvarint(vbuf, uint64(mi))
		}
		if len(vbuf) >= 4096 {
			_, _ = d.Write(vbuf)
			vbuf = vbuf[:0]
		}
	}
	_, _ = d.Write(vbuf)
	pl.version = fmt.Sprintf("%016x", d.Sum64())
	return pl
}

// index returns node's index in the membership.
func (pl *Placement) index(node string) (int, bool) { return pl.members.find(node) }

// Version identifies the placement: 16 hex digits hashing N, Partitions,
// the target table, every member's (ID, State, Epoch) and the Counting and
// Writes lists. Nodes with equal versions route identically; a coordinator
// and a replica can compare versions to notice that one lags in gossip.
func (pl *Placement) Version() string { return pl.version }

// Target returns the target table: where partitions go once every handoff
// is done.
func (pl *Placement) Target() *Table { return pl.target }

// Membership returns the membership the placement was computed from.
func (pl *Placement) Membership() Membership { return pl.members }

// Holdings returns a copy of the holdings the placement was computed from,
// ignored ones included.
func (pl *Placement) Holdings() Holdings { return maps.Clone(pl.holdings) }

// Counting returns the replicas of p that count toward R and W: at most N
// holders of p (see Placement). Shared; do not modify. It panics if p is out
// of range, as do all per-partition accessors.
func (pl *Placement) Counting(p int) []string { return pl.counting[p] }

// Writes returns every node a write to p must reach: Counting(p), then the
// primaries of p that do not hold it yet. Shared; do not modify.
func (pl *Placement) Writes(p int) []string { return pl.writes[p] }

// Fallbacks returns the target preference list of p without Writes(p), in
// order: where a sloppy quorum sends hints. Shared; do not modify.
func (pl *Placement) Fallbacks(p int) []string { return pl.fallbacks[p] }

// IsCounting reports whether node is in Counting(p).
func (pl *Placement) IsCounting(p int, node string) bool {
	return slices.Contains(pl.counting[p], node)
}

// IsWriteTarget reports whether node is in Writes(p).
func (pl *Placement) IsWriteTarget(p int, node string) bool {
	return slices.Contains(pl.writes[p], node)
}

// Holds reports whether node holds p in a way that counts (current epoch,
// not removed).
func (pl *Placement) Holds(p int, node string) bool {
	i, ok := pl.index(node)
	return ok && pl.holds[i].Has(p)
}

// Pulls returns the partitions, ascending, that node must pull: those where
// it is a target primary and does not hold them. Shared; do not modify.
func (pl *Placement) Pulls(node string) []int {
	if i, ok := pl.index(node); ok {
		return pl.pulls[i]
	}
	return nil
}

// Sources returns the nodes to pull p from: the holders in Counting(p) that
// are not target primaries of p (they are losing it, so their copy must be
// read before it is dropped), or, if there are none, the holders in
// Counting(p) other than node. It may be empty: no holder is left, and the
// data can only come from hints and anti-entropy. The caller pulls from all
// of them and merges. Shared; do not modify. It allocates only when node
// itself is among the sources, which a node that must pull p never is.
func (pl *Placement) Sources(p int, node string) []string {
	src := pl.sources[p]
	if !slices.Contains(src, node) {
		return src
	}
	out := make([]string, 0, len(src)-1)
	for _, id := range src {
		if id != node {
			out = append(out, id)
		}
	}
	return out
}

// Drops returns the partitions, ascending, that node holds but may delete:
// it is not a target primary of them and every target primary holds them.
// Gossip is not instant: a peer with an older view may still count node for
// a dropped partition, so act on Drops only after a grace period in which
// the version stays put. Shared; do not modify.
func (pl *Placement) Drops(node string) []int {
	if i, ok := pl.index(node); ok {
		return pl.drops[i]
	}
	return nil
}

// Settled reports whether every target primary of every partition holds it:
// nothing to pull anywhere, so Counting(p) is Tprim(p) (plus leaving
// holders when the ring has fewer than N members).
func (pl *Placement) Settled() bool { return pl.settled }

// HandedOff reports whether node may exit after a leave: it is a primary of
// no partition and every partition it holds is held by all of its target
// primaries (its Drops are all it holds). A leaving node asks this about
// itself, with its own holding current.
func (pl *Placement) HandedOff(node string) bool {
	i, ok := pl.index(node)
	return !ok || pl.slots[i] == 0 && len(pl.drops[i]) == pl.holds[i].Count()
}

// NodeStatus is one row of an operator's view of a placement.
type NodeStatus struct {
	State State // 0 if node is not in the membership
	// Owned is the node's share of all target primary slots, in [0, 1]:
	// primaries held / (Partitions × min(N, ring members)).
	Owned    float64
	Holds    int // partitions it holds (counting holdings only)
	Counting int // partitions where it counts toward R and W
	Pulls    int // partitions it must still pull
	Drops    int // partitions it may delete
}

// Status returns node's row of the operator table.
func (pl *Placement) Status(node string) NodeStatus {
	i, ok := pl.index(node)
	if !ok {
		return NodeStatus{}
	}
	return NodeStatus{
		State:    pl.members.members[i].State,
		Owned:    float64(pl.slots[i]) / float64(pl.target.cfg.Partitions*pl.target.primaries),
		Holds:    pl.holds[i].Count(),
		Counting: pl.counts[i],
		Pulls:    len(pl.pulls[i]),
		Drops:    len(pl.drops[i]),
	}
}
