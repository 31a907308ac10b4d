package ring

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// State is a member's place in the membership life cycle. A node enters the
// ring only by joining and leaves it only by a graceful leave or an
// operator's remove; a crash changes liveness, never State (DESIGN.md
// invariant 5). A join writes StateJoining (StateMember once the node holds
// its partitions); a leave writes StateLeaving, and the node writes
// StateRemoved once it has handed everything over (Placement.HandedOff); an
// operator's remove of a dead node writes StateRemoved directly.
//
// The numeric order is also the merge rank: on equal versions the higher
// state wins, so a concurrent leave or remove beats a join.
type State uint8

const (
	// StateJoining: in the target ring; receiving its partitions.
	StateJoining State = iota + 1
	// StateMember: in the target ring.
	StateMember
	// StateLeaving: out of the target ring; handing its partitions over,
	// then exits (and marks itself StateRemoved).
	StateLeaving
	// StateRemoved: a tombstone, kept forever so that stale gossip cannot
	// bring the member back.
	StateRemoved
)

var stateNames = [...]string{StateJoining: "joining", StateMember: "member", StateLeaving: "leaving", StateRemoved: "removed"}

// String returns "joining", "member", "leaving" or "removed", or "state(N)"
// for a value out of range.
func (s State) String() string {
	if s.valid() {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

func (s State) valid() bool { return s >= StateJoining && s <= StateRemoved }

// InRing reports whether a member in state s is in the target ring.
func (s State) InRing() bool { return s == StateJoining || s == StateMember }

// ParseState parses the String form of a state.
func ParseState(s string) (State, error) {
	for st := StateJoining; st <= StateRemoved; st++ {
		if stateNames[st] == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown state %q; want joining, member, leaving or removed", ErrInvalidMember, s)
}

// MarshalText implements encoding.TextMarshaler (JSON uses the String form).
func (s State) MarshalText() ([]byte, error) {
	if !s.valid() {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMember, s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *State) UnmarshalText(b []byte) error {
	st, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = st
	return nil
}

// Member is one record of the member table.
type Member struct {
	ID     string // node id (ValidateNodeID)
	Addr   string // HTTP address host:port
	Gossip string // gossip (memberlist) address host:port
	// Epoch names the data directory of the incarnation this record
	// describes; a node that lost its data takes a new one, which voids its
	// old holdings (DESIGN.md invariant 3).
	Epoch string
	State State
	// Version orders the records of one id: whoever changes the record
	// raises it (see Membership.Set), and Merge keeps the higher.
	Version uint64
}

// Validate checks what a decoder of outside bytes checks: a valid id, a
// known state, and Addr, Gossip and Epoch of at most 255 bytes. Address
// syntax is left to the caller that accepts a join.
func (m Member) Validate() error {
	if err := ValidateNodeID(m.ID); err != nil {
		return err
	}
	if !m.State.valid() {
		return fmt.Errorf("%w: %q has unknown %v", ErrInvalidMember, m.ID, m.State)
	}
	for _, f := range [...]struct{ name, v string }{{"addr", m.Addr}, {"gossip", m.Gossip}, {"epoch", m.Epoch}} {
		if len(f.v) > maxFieldLen {
			return fmt.Errorf("%w: %q has a %d-byte %s; at most %d", ErrInvalidMember, m.ID, len(f.v), f.name, maxFieldLen)
		}
	}
	return nil
}

// compareRecords totally orders two records of the same id; Merge keeps the
// greater. Version first; on equal versions (concurrent changes) the higher
// state, then the greater Epoch, Addr and Gossip. Being a total order is
// what makes Merge commutative, associative and idempotent.
func compareRecords(a, b Member) int {
	return cmp.Or(
		cmp.Compare(a.Version, b.Version),
		cmp.Compare(a.State, b.State),
		cmp.Compare(a.Epoch, b.Epoch),
		cmp.Compare(a.Addr, b.Addr),
		cmp.Compare(a.Gossip, b.Gossip),
	)
}

// Membership is the member table: a state-based CRDT whose Merge is the
// join of a semilattice (per id, the greatest record by compareRecords), so
// every node that has seen the same records holds an Equal table whatever
// order gossip delivered them in.
//
// A Membership is immutable: methods return new values and never modify the
// receiver, so one may be shared between goroutines. The zero value is the
// empty table.
type Membership struct {
	members []Member // sorted by ID, distinct
}

// NewMembership returns the table of members. Records with the same id merge
// as by Merge. It does not validate; see Validate.
func NewMembership(members ...Member) Membership {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	out := ms[:0]
	for _, mem := range ms {
		if n := len(out); n > 0 && out[n-1].ID == mem.ID {
			if compareRecords(mem, out[n-1]) > 0 {
				out[n-1] = mem
			}
			continue
		}
		out = append(out, mem)
	}
	return Membership{members: slices.Clip(out)}
}

func (m Membership) find(id string) (int, bool) {
	return slices.BinarySearchFunc(m.members, id, func(a Member, id string) int { return cmp.Compare(a.ID, id) })
}

// Get returns the record of id.
func (m Membership) Get(id string) (Member, bool) {
	if i, ok := m.find(id); ok {
		return m.members[i], true
	}
	return Member{}, false
}

// All returns a copy of every record, Removed ones included, sorted by ID.
func (m Membership) All() []Member { return slices.Clone(m.members) }

// Len returns the number of records, Removed ones included.
func (m Membership) Len() int { return len(m.members) }

// Merge returns the union of m and o where, for an id in both, the record
// with the higher Version wins, and on equal versions the tie-break of
// compareRecords (Removed > Leaving > Member > Joining, then the greater
// Epoch, Addr, Gossip). Merge is commutative, associative and idempotent;
// in particular a Removed tombstone is only replaced by a higher version.
func (m Membership) Merge(o Membership) Membership {
	switch {
	case len(o.members) == 0:
		return m
	case len(m.members) == 0:
		return o
	}
	out := make([]Member, 0, len(m.members)+len(o.members))
	a, b := m.members, o.members
	for len(a) > 0 && len(b) > 0 {
		switch c := cmp.Compare(a[0].ID, b[0].ID); {
		case c < 0:
			out, a = append(out, a[0]), a[1:]
		case c > 0:
			out, b = append(out, b[0]), b[1:]
		default:
			if compareRecords(a[0], b[0]) >= 0 {
				out = append(out, a[0])
			} else {
				out = append(out, b[0])
			}
			a, b = a[1:], b[1:]
		}
	}
	out = append(append(out, a...), b...)
	return Membership{members: slices.Clip(out)}
}

// Set returns a table where mem replaces the record of mem.ID, with Version
// one above the current record's (or 1 for a new id), whatever mem.Version
// says: a local change that wins over everything this node has seen. Set
// overwrites any state, a Removed tombstone included; whether a change is
// allowed (say, a join under a removed id) is the caller's decision.
func (m Membership) Set(mem Member) Membership {
	i, ok := m.find(mem.ID)
	out := make([]Member, 0, len(m.members)+1)
	out = append(out, m.members[:i]...)
	mem.Version = 1
	if ok {
		mem.Version = m.members[i].Version + 1
		out = append(out, mem)
		out = append(out, m.members[i+1:]...)
	} else {
		out = append(out, mem)
		out = append(out, m.members[i:]...)
	}
	return Membership{members: out}
}

// RingMembers returns the ids of the target ring, those Joining or Member,
// sorted: the member set New builds the target table from.
func (m Membership) RingMembers() []string {
	var ids []string
	for _, mem := range m.members {
		if mem.State.InRing() {
			ids = append(ids, mem.ID)
		}
	}
	return ids
}

// Equal reports whether m and o hold identical records.
func (m Membership) Equal(o Membership) bool { return slices.Equal(m.members, o.members) }

// Validate checks every record with Member.Validate.
func (m Membership) Validate() error {
	for _, mem := range m.members {
		if err := mem.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Digest returns xxhash64 of Encode: equal tables have equal digests, so
// gossip can compare digests before exchanging tables.
func (m Membership) Digest() uint64 { return xxhash.Sum64(m.Encode()) }

// Encode returns the canonical binary form:
//
//	format byte (1)
//	uvarint count
//	count × { id, addr, gossip, epoch: uvarint length + bytes;
//	          state: 1 byte; version: uvarint }   sorted by id
//
// Equal tables encode to equal bytes.
func (m Membership) Encode() []byte {
	size := 1 + 10
	for _, mem := range m.members {
		size += 4*2 + len(mem.ID) + len(mem.Addr) + len(mem.Gossip) + len(mem.Epoch) + 1 + 10
	}
	b := make([]byte, 0, size)
	b = append(b, encodingV1)
	b = binary.AppendUvarint(b, uint64(len(m.members)))
	for _, mem := range m.members {
		b = appendString(b, mem.ID)
		b = appendString(b, mem.Addr)
		b = appendString(b, mem.Gossip)
		b = appendString(b, mem.Epoch)
		b = append(b, byte(mem.State))
		b = binary.AppendUvarint(b, mem.Version)
	}
	return b
}

// minMemberSize is the smallest encoded record: a 1-byte id with its length,
// three empty strings, the state and a 1-byte version.
const minMemberSize = 2 + 3 + 1 + 1

// DecodeMembership decodes the output of Encode. It accepts only canonical
// input of at most 1024 valid records (Member.Validate) in increasing id
// order; every error wraps ErrCorrupt. Its allocations are bounded by the
// input length.
func DecodeMembership(b []byte) (Membership, error) {
	d := &decoder{what: "membership", b: b}
	if err := d.header(); err != nil {
		return Membership{}, err
	}
	n, err := d.count("member count", maxMembers, minMemberSize)
	if err != nil {
		return Membership{}, err
	}
	members := make([]Member, n)
	for i := range members {
		mem := &members[i]
		field := func(name string) string { return "member " + strconv.Itoa(i) + " " + name }
		if mem.ID, err = d.string(field("id"), maxNodeIDLen); err != nil {
			return Membership{}, err
		}
		if mem.Addr, err = d.string(field("addr"), maxFieldLen); err != nil {
			return Membership{}, err
		}
		if mem.Gossip, err = d.string(field("gossip"), maxFieldLen); err != nil {
			return Membership{}, err
		}
		if mem.Epoch, err = d.string(field("epoch"), maxFieldLen); err != nil {
			return Membership{}, err
		}
		st, err := d.byte(field("state"))
		if err != nil {
			return Membership{}, err
		}
		mem.State = State(st)
		if mem.Version, err = d.uvarint(field("version")); err != nil {
			return Membership{}, err
		}
		if err := mem.Validate(); err != nil {
			// %v: the error wraps ErrCorrupt only, as the package promises.
			return Membership{}, d.errorf("member %d: %v", i, err)
		}
		if i > 0 && members[i-1].ID >= mem.ID {
			return Membership{}, d.errorf("member %d: id %q not after %q", i, mem.ID, members[i-1].ID)
		}
	}
	if err := d.end(); err != nil {
		return Membership{}, err
	}
	return Membership{members: members}, nil
}

// CheckLeaveOrRemove reports whether id may leave or be removed so that at
// least n ring members remain (n is typically N, so every partition keeps N
// distinct replicas). The error wraps ErrNotRingMember if id is not Joining
// or Member, or ErrTooFewMembers. A Leaving node that died is not a ring
// member: removing it changes no ring, so the caller skips this check.
func (m Membership) CheckLeaveOrRemove(id string, n int) error {
	mem, ok := m.Get(id)
	switch {
	case !ok:
		return fmt.Errorf("%w: %q is unknown", ErrNotRingMember, id)
	case !mem.State.InRing():
		return fmt.Errorf("%w: %q is %v", ErrNotRingMember, id, mem.State)
	}
	ring := len(m.RingMembers())
	if ring-1 < n {
		return fmt.Errorf("%w: without %q %d ring members would remain; need at least %d",
			ErrTooFewMembers, id, ring-1, n)
	}
	return nil
}
