package ring

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// rec returns a record with addresses derived from id.
func rec(id string, st State, epoch string, version uint64) Member {
	return Member{ID: id, Addr: id + ":8080", Gossip: id + ":7946", Epoch: epoch, State: st, Version: version}
}

// genRecord draws records from small pools, so that ids collide and equal
// versions with different content (concurrent changes) are common.
func genRecord() *rapid.Generator[Member] {
	return rapid.Custom(func(t *rapid.T) Member {
		return Member{
			ID:      rapid.SampledFrom([]string{"n1", "n2", "n3", "n4", "n11"}).Draw(t, "id"),
			Addr:    rapid.SampledFrom([]string{"", "h1:1", "h2:1"}).Draw(t, "addr"),
			Gossip:  rapid.SampledFrom([]string{"", "g1:2", "g2:2"}).Draw(t, "gossip"),
			Epoch:   rapid.SampledFrom([]string{"", "e1", "e2"}).Draw(t, "epoch"),
			State:   State(rapid.IntRange(1, 4).Draw(t, "state")),
			Version: rapid.Uint64Range(0, 3).Draw(t, "version"),
		}
	})
}

func genMembership() *rapid.Generator[Membership] {
	return rapid.Custom(func(t *rapid.T) Membership {
		return NewMembership(rapid.SliceOfN(genRecord(), 0, 8).Draw(t, "records")...)
	})
}

func TestState(t *testing.T) {
	for st, name := range map[State]string{StateJoining: "joining", StateMember: "member", StateLeaving: "leaving", StateRemoved: "removed"} {
		if st.String() != name {
			t.Errorf("%d.String() = %q, want %q", st, st.String(), name)
		}
		got, err := ParseState(name)
		if err != nil || got != st {
			t.Errorf("ParseState(%q) = %v, %v", name, got, err)
		}
		if st.InRing() != (st == StateJoining || st == StateMember) {
			t.Errorf("%v.InRing() = %v", st, st.InRing())
		}
	}
	if _, err := ParseState("Member"); !errors.Is(err, ErrInvalidMember) {
		t.Errorf("ParseState(Member): %v, want ErrInvalidMember", err)
	}
	if s := State(9).String(); s != "state(9)" {
		t.Errorf("State(9) = %q", s)
	}
	b, err := json.Marshal(map[string]State{"s": StateLeaving})
	if err != nil || string(b) != `{"s":"leaving"}` {
		t.Errorf("json: %s, %v", b, err)
	}
	var back map[string]State
	if err := json.Unmarshal(b, &back); err != nil || back["s"] != StateLeaving {
		t.Errorf("json back: %v, %v", back, err)
	}
	if _, err := json.Marshal(State(0)); err == nil {
		t.Error("marshalling State(0) succeeded")
	}
}

func TestMembershipBasics(t *testing.T) {
	m := NewMembership(
		rec("node-3", StateMember, "e3", 1),
		rec("node-1", StateJoining, "e1", 1),
		rec("node-2", StateLeaving, "e2", 2),
		rec("node-1", StateMember, "e1", 2), // later duplicate: merged, wins on version
		rec("node-4", StateRemoved, "e4", 3),
	)
	if m.Len() != 4 {
		t.Fatalf("Len = %d, want 4", m.Len())
	}
	ids := []string{}
	for _, mem := range m.All() {
		ids = append(ids, mem.ID)
	}
	if want := []string{"node-1", "node-2", "node-3", "node-4"}; !slices.Equal(ids, want) {
		t.Errorf("All ids = %q, want %q", ids, want)
	}
	if got, _ := m.Get("node-1"); got != rec("node-1", StateMember, "e1", 2) {
		t.Errorf("Get(node-1) = %+v", got)
	}
	if _, ok := m.Get("node-9"); ok {
		t.Error("Get(node-9) found")
	}
	if got, want := m.RingMembers(), []string{"node-1", "node-3"}; !slices.Equal(got, want) {
		t.Errorf("RingMembers = %q, want %q", got, want)
	}
	all := m.All()
	all[0].State = StateRemoved
	if got, _ := m.Get("node-1"); got.State != StateMember {
		t.Error("All returned a shared slice")
	}

	// Set bumps the version past the current record, ignoring the given one.
	m2 := m.Set(Member{ID: "node-3", State: StateLeaving, Epoch: "e3", Version: 99})
	if got, _ := m2.Get("node-3"); got.Version != 2 || got.State != StateLeaving {
		t.Errorf("Set existing: %+v, want version 2, leaving", got)
	}
	if got, _ := m.Get("node-3"); got.Version != 1 || got.State != StateMember {
		t.Errorf("Set modified the receiver: %+v", got)
	}
	m3 := m2.Set(Member{ID: "node-0", State: StateJoining, Version: 7})
	if got, _ := m3.Get("node-0"); got.Version != 1 {
		t.Errorf("Set new: version %d, want 1", got.Version)
	}
	if m3.All()[0].ID != "node-0" || m3.Len() != 5 || m2.Len() != 4 {
		t.Errorf("Set new: not inserted in order: %+v", m3.All())
	}
	// A Set of a record the merge already agrees on still wins over it.
	if got := m2.Merge(m); !got.Equal(m2) {
		t.Errorf("a local Set lost the merge against the old table")
	}

	var zero Membership
	if zero.Len() != 0 || zero.RingMembers() != nil || !zero.Equal(NewMembership()) || !zero.Merge(m).Equal(m) {
		t.Error("zero Membership misbehaves")
	}
}

func TestMemberValidate(t *testing.T) {
	good := rec("node-1", StateMember, "e", 1)
	if err := NewMembership(good).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Member)
		want error
	}{
		{"id", func(m *Member) { m.ID = "a|b" }, ErrInvalidNodeID},
		{"empty id", func(m *Member) { m.ID = "" }, ErrInvalidNodeID},
		{"state 0", func(m *Member) { m.State = 0 }, ErrInvalidMember},
		{"state 5", func(m *Member) { m.State = 5 }, ErrInvalidMember},
		{"addr", func(m *Member) { m.Addr = strings.Repeat("a", 256) }, ErrInvalidMember},
		{"gossip", func(m *Member) { m.Gossip = strings.Repeat("a", 256) }, ErrInvalidMember},
		{"epoch", func(m *Member) { m.Epoch = strings.Repeat("a", 256) }, ErrInvalidMember},
	} {
		m := good
		tc.edit(&m)
		if err := NewMembership(good.withID("node-0"), m).Validate(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func (m Member) withID(id string) Member { m.ID = id; return m }

func TestMembershipMergeLaws(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := genMembership().Draw(t, "a"), genMembership().Draw(t, "b"), genMembership().Draw(t, "c")
		if !a.Merge(b).Equal(b.Merge(a)) {
			t.Fatalf("not commutative:\n%+v\n%+v", a.Merge(b).All(), b.Merge(a).All())
		}
		if !a.Merge(b).Merge(c).Equal(a.Merge(b.Merge(c))) {
			t.Fatal("not associative")
		}
		if !a.Merge(a).Equal(a) {
			t.Fatal("not idempotent")
		}
		ab := a.Merge(b)
		if !ab.Merge(a).Equal(ab) || !ab.Merge(b).Equal(ab) {
			t.Fatal("merge is not an upper bound of its inputs")
		}
		// NewMembership of all records is the same join.
		if !NewMembership(append(a.All(), b.All()...)...).Equal(ab) {
			t.Fatal("NewMembership(a ∪ b) != a.Merge(b)")
		}
		// Per id the winner has the highest version, and a tombstone
		// yields only to a higher version.
		for _, mem := range ab.All() {
			for _, side := range []Membership{a, b} {
				if o, ok := side.Get(mem.ID); ok {
					if o.Version > mem.Version {
						t.Fatalf("%q: merged version %d < input %d", mem.ID, mem.Version, o.Version)
					}
					if o.State == StateRemoved && mem.State != StateRemoved && mem.Version <= o.Version {
						t.Fatalf("%q: tombstone v%d overturned by %+v", mem.ID, o.Version, mem)
					}
				}
			}
		}
	})
}

func TestConcurrentSetsConverge(t *testing.T) {
	base := NewMembership(rec("n1", StateMember, "e1", 4), rec("n2", StateMember, "e2", 1))
	// Two nodes change n1 concurrently, from the same version.
	left := base.Set(rec("n1", StateLeaving, "e1", 0))
	removed := base.Set(rec("n1", StateRemoved, "e1", 0))
	rejoined := base.Set(rec("n1", StateJoining, "e9", 0))
	for _, pair := range [][2]Membership{{left, removed}, {left, rejoined}, {removed, rejoined}} {
		x, y := pair[0].Merge(pair[1]), pair[1].Merge(pair[0])
		if !x.Equal(y) || x.Digest() != y.Digest() {
			t.Fatalf("concurrent sets did not converge: %+v vs %+v", x.All(), y.All())
		}
	}
	got, _ := left.Merge(removed).Merge(rejoined).Get("n1")
	if got.State != StateRemoved || got.Version != 5 {
		t.Errorf("winner %+v, want removed at version 5", got)
	}
	// A stale record never brings a removed member back.
	if got, _ := removed.Merge(base).Merge(rejoined).Get("n1"); got.State != StateRemoved {
		t.Errorf("tombstone overturned: %+v", got)
	}
	// Only a later change does.
	back := removed.Set(rec("n1", StateJoining, "e10", 0))
	if got, _ := back.Merge(removed).Get("n1"); got.State != StateJoining || got.Version != 6 {
		t.Errorf("rejoin after remove: %+v", got)
	}
}

// TestMembershipConvergence runs random local changes and random one-way
// gossip among a few replicas, then gossips until quiet: every replica must
// end with the join of every record ever written.
func TestMembershipConvergence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		k := rapid.IntRange(2, 5).Draw(t, "replicas")
		reps := make([]Membership, k)
		var written []Member
		for range rapid.IntRange(0, 40).Draw(t, "steps") {
			r := rapid.IntRange(0, k-1).Draw(t, "replica")
			if rapid.Bool().Draw(t, "gossip") {
				from := rapid.IntRange(0, k-1).Draw(t, "from")
				reps[r] = reps[r].Merge(reps[from])
				continue
			}
			reps[r] = reps[r].Set(genRecord().Draw(t, "change"))
			written = append(written, reps[r].All()...)
		}
		// Gossip in a random order until every replica saw every other.
		for range 2 {
			for _, i := range rapid.Permutation(seq(k)).Draw(t, "order") {
				for j := range k {
					reps[j] = reps[j].Merge(reps[i])
				}
			}
		}
		want := NewMembership(written...)
		for i, r := range reps {
			if !r.Equal(want) || r.Digest() != want.Digest() || !bytes.Equal(r.Encode(), want.Encode()) {
				t.Fatalf("replica %d did not converge:\n got %+v\nwant %+v", i, r.All(), want.All())
			}
		}
	})
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func TestMembershipEncodeRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := genMembership().Draw(t, "m")
		if m.Validate() != nil {
			t.Skip("generator draws valid records only")
		}
		b := m.Encode()
		if b[0] != encodingV1 {
			t.Fatalf("format byte %d", b[0])
		}
		got, err := DecodeMembership(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !got.Equal(m) || got.Digest() != m.Digest() {
			t.Fatalf("round trip changed the table")
		}
		// Canonical: the same set of records in any order encodes the same.
		if !bytes.Equal(NewMembership(rapid.Permutation(m.All()).Draw(t, "perm")...).Encode(), b) {
			t.Fatal("encoding depends on order")
		}
	})
}

func TestDecodeMembershipErrors(t *testing.T) {
	valid := NewMembership(rec("a", StateMember, "e", 1), rec("b", StateJoining, "e", 300)).Encode()
	// Hand-built record: id "a", empty addr/gossip/epoch, state, version.
	one := func(state byte, version ...byte) []byte {
		return append([]byte{1, 1, 1, 'a', 0, 0, 0, state}, version...)
	}
	cases := map[string][]byte{
		"empty":             {},
		"format":            {2, 0},
		"truncated count":   {1},
		"count too large":   {1, 0x81, 0x08}, // 1025
		"count beyond data": {1, 5, 1, 'a'},
		"truncated":         valid[:len(valid)-1],
		"trailing":          append(slices.Clone(valid), 0),
		"state 0":           one(0, 1),
		"state 5":           one(5, 1),
		"bad id":            {1, 1, 1, '|', 0, 0, 0, 2, 1},
		"empty id":          {1, 1, 0, 0, 0, 0, 2, 1, 0},
		"long id":           append(append([]byte{1, 1, 65}, bytes.Repeat([]byte{'a'}, 65)...), 0, 0, 0, 2, 1),
		"long addr":         append(append([]byte{1, 1, 1, 'a', 0x80, 0x02}, bytes.Repeat([]byte{'a'}, 256)...), 0, 0, 2, 1),
		"padded varint":     one(2, 0x81, 0x00),
		"overflow":          one(2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
	}
	// Unsorted and duplicate ids: swap the two records of a valid encoding.
	a := NewMembership(rec("a", StateMember, "", 1)).Encode()[2:]
	b := NewMembership(rec("b", StateMember, "", 1)).Encode()[2:]
	cases["unsorted"] = slices.Concat([]byte{1, 2}, b, a)
	cases["duplicate"] = slices.Concat([]byte{1, 2}, a, a)
	for name, in := range cases {
		if _, err := DecodeMembership(in); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := DecodeMembership(valid); err != nil {
		t.Errorf("valid: %v", err)
	}
	if _, err := DecodeMembership(one(2, 1)); err != nil {
		t.Errorf("hand-built: %v", err)
	}
	// The largest accepted table.
	var big []Member
	for i := range maxMembers {
		big = append(big, rec(fmt.Sprintf("n%04d", i), StateMember, "e", 1))
	}
	if m, err := DecodeMembership(NewMembership(big...).Encode()); err != nil || m.Len() != maxMembers {
		t.Errorf("%d members: %v", maxMembers, err)
	}
	big = append(big, rec("z", StateMember, "e", 1))
	if _, err := DecodeMembership(NewMembership(big...).Encode()); !errors.Is(err, ErrCorrupt) {
		t.Errorf("%d members: %v, want ErrCorrupt", len(big), err)
	}
}

func TestCheckLeaveOrRemove(t *testing.T) {
	m := NewMembership(
		rec("node-1", StateMember, "e", 1),
		rec("node-2", StateMember, "e", 1),
		rec("node-3", StateJoining, "e", 1),
		rec("node-4", StateMember, "e", 1),
		rec("node-5", StateLeaving, "e", 1),
		rec("node-6", StateRemoved, "e", 1),
	)
	for _, tc := range []struct {
		id   string
		n    int
		want error
	}{
		{"node-1", 3, nil},
		{"node-3", 3, nil},
		{"node-1", 4, ErrTooFewMembers},
		{"node-5", 1, ErrNotRingMember},
		{"node-6", 1, ErrNotRingMember},
		{"node-9", 1, ErrNotRingMember},
	} {
		err := m.CheckLeaveOrRemove(tc.id, tc.n)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("CheckLeaveOrRemove(%s, %d) = %v, want %v", tc.id, tc.n, err, tc.want)
		}
	}
	err := m.CheckLeaveOrRemove("node-2", 4)
	if err == nil || !strings.Contains(err.Error(), "3 ring members would remain; need at least 4") {
		t.Errorf("error does not name the numbers: %v", err)
	}
}

func FuzzDecodeMembership(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Add(NewMembership(rec("node-1", StateMember, "e1", 1)).Encode())
	f.Add(NewMembership(
		rec("node-1", StateMember, "e1", 3), rec("node-11", StateLeaving, "e2", 1<<40),
		rec("node-2", StateRemoved, "", 0), Member{ID: "x", State: StateJoining},
	).Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMembership(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded an invalid table: %v", err)
		}
		if !bytes.Equal(m.Encode(), b) {
			t.Fatalf("not canonical: %x re-encodes as %x", b, m.Encode())
		}
		if !m.Merge(m).Equal(m) || !NewMembership(m.All()...).Equal(m) {
			t.Fatal("decoded table is not normalized")
		}
	})
}
