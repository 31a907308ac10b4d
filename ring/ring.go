// Package ring maps keys to partitions and partitions to preference lists.
//
// It is pure placement code: no I/O, no clocks, no locks. A Table is built
// once per membership change from (Config, member ids) and is immutable; the
// caller swaps the current *Table in atomically. Every node that knows the
// same member set and config builds the identical table, whatever order it
// learned the members in (DESIGN.md invariant 4).
//
// # Keys to partitions
//
// PartitionOf(P, bucket, key) = xxhash64(bucket + "\x00" + key) mod P. It is
// independent of membership, so the Go client computes it too, and a key
// never changes partition while P is fixed.
//
// # Partitions to preference lists
//
// The preference list of partition p names every member once: the first
// min(N, members) entries are the primaries (the replicas), the rest are the
// fallbacks, in the order a sloppy quorum tries them.
//
//   - The first primary (the owner) comes from github.com/buraksezer/consistent:
//     consistent hashing with bounded loads, which caps what any member owns at
//     ceil(Load × floor(P/members)) partitions.
//   - Every other position is the remaining members ranked by rendezvous
//     (highest-random-weight) hashing: score = xxhash64(p as 8 little-endian
//     bytes + id), descending, ties broken by id.
//
// Rendezvous ranking is independent per partition, so the partitions one
// member owns replicate to all the other members about evenly (with 5 members
// no follower gets more than 0.30 of one owner's follower slots; the ideal
// is 0.25). It also moves little: a join changes a partition's primaries
// when the newcomer becomes its owner or scores into its top N-1 (one slot
// either way), or when bounded load shifts the owner between old members,
// which accounts for the few percent above the ideal. consistent's GetClosestN is not used: it
// walks one fixed ring of member names, so every partition owned by X would
// replicate to the same N-1 successors of X (all of X's load lands on them
// when X fails), and it costs about 1µs and 17 allocations per call. New
// precomputes every list instead; lookups are slice indexing.
//
// # consistent traps
//
//   - ReplicationFactor is virtual nodes per member, not N; it is
//     Config.VirtualNodes here. The library defaults (20 points, Load 1.25)
//     left one member of five owning 0.73× the average; 200 points and Load
//     1.05 give 0.89–1.05× for the owner role.
//   - Virtual node i of member m is named m.String() + strconv.Itoa(i), so
//     "node-1"+"11" and "node-11"+"1" are the same point: the member added
//     last takes it, and ownership depends on insertion order. Our member's
//     String() is id + "|", and ids cannot contain '|' (ValidateNodeID), so
//     point names never coincide.
//   - Points live in a map from hash to member, so a 64-bit hash collision
//     would still depend on insertion order; members are added sorted. Apart
//     from that, the result depends only on the member set.
//   - It panics with "not enough room to distribute partitions" when its
//     bounded-load walk finds no member with room. With Load > 1 and at
//     least one partition per member its capacity always suffices, but the
//     walk gives up after all points but one, which loses with one virtual
//     node per member. New builds under recover and returns ErrPlacement.
//
// # Measured (1024 partitions, N=3, 200 virtual nodes, Load 1.05)
//
// Share of replica slots per member, as a multiple of the average:
// node-1..node-5 0.98–1.02, node-1..node-8 0.95–1.03; over 200 random name
// sets, 0.92–1.07 (5 members) and 0.86–1.14 (8). Replica slots moved by the
// join of the k-th member, ideal 1/k: 0.95–1.05/k for node-1..node-12, mean
// 1.00–1.04/k and worst 1.18/k over random name sets; a leave moves the same.
// TestBalance, TestSpread and TestMovementReport print these figures.
//
// # Membership, holdings and placement
//
// Membership is the member table, a state-based CRDT spread by gossip: a
// node enters the ring only by a join (StateJoining, then StateMember) and
// leaves it only by a graceful leave (StateLeaving, then StateRemoved) or an
// operator's remove (StateRemoved); a crash changes liveness, never
// membership. The ring members (joining or member) define the target Table.
// Holdings, also gossiped, say which partitions each node holds completely,
// under which data epoch. From the two, NewPlacement computes who counts
// toward R and W, who receives writes, and who must pull or may drop what
// while partitions move (see Placement). Membership and Holdings encode to
// canonical, versioned, bounded binary forms.
package ring

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// PartitionOf returns the partition of (bucket, key) among partitions:
// xxhash64(bucket + "\x00" + key) mod partitions. It does not allocate.
// partitions must be positive.
func PartitionOf(partitions int, bucket, key string) int {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.WriteString(bucket)
	_, _ = d.WriteString("\x00")
	_, _ = d.WriteString(key)
	return int(d.Sum64() % uint64(partitions))
}

// Table is an immutable map from partition to preference list. It is safe
// for concurrent use. The zero Table is not usable; build one with New.
type Table struct {
	cfg       Config
	members   []string       // sorted
	lists     [][]string     // lists[p]: preference list of partition p
	primaries int            // min(N, len(members))
	ownership map[string]int // primary slots held per member
	version   string
}

// member is how a node appears on the consistent ring. String returns id
// plus a terminator that ids cannot contain, so the library's point names
// (String() + decimal index) of two members never coincide.
type member struct {
	id, name string
}

func (m member) String() string { return m.name }

const terminator = "|"

// hasher adapts xxhash to consistent.Hasher.
type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// New builds the table for cfg and members. members are node ids; they must
// be valid and distinct, and the result does not depend on their order. New
// needs cfg.Partitions >= 8 × len(members). It never panics.
func New(cfg Config, members []string) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, ErrNoMembers
	}
	sorted := slices.Clone(members)
	slices.Sort(sorted)
	for i, id := range sorted {
		if err := ValidateNodeID(id); err != nil {
			return nil, err
		}
		if i > 0 && sorted[i-1] == id {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateMember, id)
		}
	}
	if cfg.Partitions < minPartitionsPerMember*len(sorted) {
		return nil, fmt.Errorf("%w: %d partitions for %d members; need at least %d (%d per member)",
			ErrInvalidConfig, cfg.Partitions, len(sorted),
			minPartitionsPerMember*len(sorted), minPartitionsPerMember)
	}

	owners, err := placeOwners(cfg, sorted)
	if err != nil {
		return nil, err
	}

	t := &Table{
		cfg:       cfg,
		members:   sorted,
		lists:     make([][]string, cfg.Partitions),
		primaries: min(cfg.N, len(sorted)),
		ownership: make(map[string]int, len(sorted)),
	}
	m := len(sorted)
	all := make([]string, cfg.Partitions*m)
	scores := make([]uint64, m)
	order := make([]int, 0, m)
	buf := make([]byte, 8, 8+maxNodeIDLen)
	for p := range cfg.Partitions {
		binary.LittleEndian.PutUint64(buf, uint64(p))
		order = order[:0]
		for i, id := range sorted {
			if i == owners[p] {
				continue
			}
			scores[i] = xxhash.Sum64(append(buf, id...))
			order = append(order, i)
		}
		// Members are sorted, so a lower index is a lower id: the tie-break.
		slices.SortFunc(order, func(a, b int) int {
			if scores[a] != scores[b] {
				if scores[a] > scores[b] {
					return -1
				}
				return 1
			}
			return a - b
		})
		list := all[p*m : (p+1)*m : (p+1)*m]
		list[0] = sorted[owners[p]]
		for j, i := range order {
			list[j+1] = sorted[i]
		}
		t.lists[p] = list
		for _, id := range list[:t.primaries] {
			t.ownership[id]++
		}
	}
	t.version = t.computeVersion()
	return t, nil
}

// placeOwners returns, for each partition, the index in sorted of its owner as
// chosen by consistent. consistent panics when bounded-load placement runs out
// of room; that becomes ErrPlacement.
func placeOwners(cfg Config, sorted []string) (owners []int, err error) {
	defer func() {
		if r := recover(); r != nil {
			owners = nil
			err = fmt.Errorf("%w: %d partitions on %d members (virtual nodes %d, load %g): %v",
				ErrPlacement, cfg.Partitions, len(sorted), cfg.VirtualNodes, cfg.Load, r)
		}
	}()
	// Sorted insertion: consistent keeps point → member in a map, so on a
	// point-hash collision the last member added wins.
	ms := make([]consistent.Member, len(sorted))
	index := make(map[string]int, len(sorted))
	for i, id := range sorted {
		ms[i] = member{id: id, name: id + terminator}
		index[id] = i
	}
	c := consistent.New(ms, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    cfg.Partitions,
		ReplicationFactor: cfg.VirtualNodes,
		Load:              cfg.Load,
	})
	owners = make([]int, cfg.Partitions)
	for p := range owners {
		o, ok := c.GetPartitionOwner(p).(member)
		if !ok {
			return nil, fmt.Errorf("%w: partition %d has no owner", ErrPlacement, p)
		}
		owners[p] = index[o.id]
	}
	return owners, nil
}

// computeVersion hashes what defines the table: N, Partitions, the sorted
// members and every preference list (as member indices).
func (t *Table) computeVersion() string {
	index := make(map[string]int, len(t.members))
	for i, id := range t.members {
		index[id] = i
	}
	var d xxhash.Digest
	d.Reset()
	var b [8]byte
	putInt := func(v int) {
		binary.LittleEndian.PutUint64(b[:], uint64(v))
		_, _ = d.Write(b[:])
	}
	_, _ = d.WriteString("quorumkv/ring/v1")
	putInt(t.cfg.N)
	putInt(t.cfg.Partitions)
	putInt(len(t.members))
	for _, id := range t.members {
		putInt(len(id))
		_, _ = d.WriteString(id)
	}
	enc := make([]byte, 0, 2*len(t.members))
	for _, list := range t.lists {
		enc = enc[:0]
		for _, id := range list {
			// Members ≤ maxPartitions/8, so an index fits in 16 bits.
			enc = binary.LittleEndian.AppendUint16(enc, uint16(index[id]))
		}
		_, _ = d.Write(enc)
	}
	return fmt.Sprintf("%016x", d.Sum64())
}

// Config returns the configuration the table was built with.
func (t *Table) Config() Config { return t.cfg }

// Members returns a sorted copy of the member ids.
func (t *Table) Members() []string { return slices.Clone(t.members) }

// Partition returns the partition of (bucket, key).
func (t *Table) Partition(bucket, key string) int {
	return PartitionOf(t.cfg.Partitions, bucket, key)
}

// PreferenceList returns every member in the order partition p uses them:
// min(N, members) primaries, then the fallbacks. The slice is shared by all
// callers and must not be modified. It panics if p is not in [0, Partitions).
func (t *Table) PreferenceList(p int) []string { return t.lists[p] }

// Primaries returns the first min(N, members) entries of PreferenceList(p):
// the replicas of partition p. The slice is shared and must not be modified.
func (t *Table) Primaries(p int) []string {
	return t.lists[p][:t.primaries:t.primaries]
}

// IsPrimary reports whether node is a replica of partition p.
func (t *Table) IsPrimary(p int, node string) bool {
	return slices.Contains(t.lists[p][:t.primaries], node)
}

// Version identifies the table: a hex 64-bit hash over N, Partitions, the
// members and every preference list. Equal tables have equal versions.
func (t *Table) Version() string { return t.version }

// Ownership returns each member's share of all replica (primary) slots:
// slots held / (Partitions × min(N, members)). The shares sum to 1.
func (t *Table) Ownership() map[string]float64 {
	total := float64(t.cfg.Partitions * t.primaries)
	out := make(map[string]float64, len(t.ownership))
	for id, n := range t.ownership {
		out[id] = float64(n) / total
	}
	return out
}

// View is the JSON form of a table, served by /v1/cluster.
type View struct {
	Version    string     `json:"ring_version"`
	N          int        `json:"n"`
	Partitions int        `json:"partitions"`
	Members    []string   `json:"members"`
	Table      [][]string `json:"preference_lists"` // index = partition; full preference list
}

// View returns a copy of the table that the caller owns.
func (t *Table) View() View {
	m := len(t.members)
	all := make([]string, 0, t.cfg.Partitions*m)
	lists := make([][]string, t.cfg.Partitions)
	for p, list := range t.lists {
		all = append(all, list...)
		lists[p] = all[p*m : (p+1)*m : (p+1)*m]
	}
	return View{
		Version:    t.version,
		N:          t.cfg.N,
		Partitions: t.cfg.Partitions,
		Members:    t.Members(),
		Table:      lists,
	}
}
