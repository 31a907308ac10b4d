package ring

import (
	"errors"
	"maps"
	"math"
	"slices"
	"strconv"
	"testing"

	"pgregory.net/rapid"
)

func epochOf(id string) string { return "e-" + id }

// cluster returns a membership of ids in state st, each under epochOf(id).
func cluster(st State, ids ...string) Membership {
	ms := make([]Member, len(ids))
	for i, id := range ids {
		ms[i] = rec(id, st, epochOf(id), 1)
	}
	return NewMembership(ms...)
}

// settled returns holdings where every ring member of m holds exactly the
// partitions it is a target primary of in tb, under its current epoch.
func settled(tb *Table, m Membership) Holdings {
	h := Holdings{}
	for _, id := range m.RingMembers() {
		mem, _ := m.Get(id)
		b := NewBitmap(tb.Config().Partitions)
		for p := range tb.Config().Partitions {
			if tb.IsPrimary(p, id) {
				b = b.With(p)
			}
		}
		h = h.Set(id, mem.Epoch, b)
	}
	return h
}

// completePulls returns h where every node also holds its pending pulls.
func completePulls(pl *Placement, h Holdings) Holdings {
	for _, mem := range pl.Membership().All() {
		if len(pl.Pulls(mem.ID)) == 0 {
			continue
		}
		i, _ := pl.index(mem.ID)
		b := pl.holds[i]
		if b.Len() == 0 {
			b = NewBitmap(pl.Target().Config().Partitions)
		}
		for _, p := range pl.Pulls(mem.ID) {
			b = b.With(p)
		}
		h = h.Set(mem.ID, mem.Epoch, b)
	}
	return h
}

// fataler is what testing.TB and *rapid.T share.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

func mustPlacement(t fataler, cfg Config, m Membership, h Holdings) *Placement {
	t.Helper()
	pl, err := NewPlacement(cfg, m, h)
	if err != nil {
		t.Fatalf("NewPlacement: %v", err)
	}
	return pl
}

func sorted(ids []string) []string { return slices.Sorted(slices.Values(ids)) }

// minus returns the ids of a not in b, in a's order.
func minus(a, b []string) []string {
	var out []string
	for _, id := range a {
		if !slices.Contains(b, id) {
			out = append(out, id)
		}
	}
	return out
}

// checkSettled asserts that pl routes exactly by its target table.
func checkSettled(t *testing.T, pl *Placement) {
	t.Helper()
	tb := pl.Target()
	if !pl.Settled() {
		t.Fatal("not settled")
	}
	for p := range tb.Config().Partitions {
		prim := tb.Primaries(p)
		if !slices.Equal(pl.Counting(p), prim) || !slices.Equal(pl.Writes(p), prim) {
			t.Fatalf("partition %d: counting %q, writes %q, want primaries %q", p, pl.Counting(p), pl.Writes(p), prim)
		}
		if !slices.Equal(pl.Fallbacks(p), tb.PreferenceList(p)[len(prim):]) {
			t.Fatalf("partition %d: fallbacks %q", p, pl.Fallbacks(p))
		}
	}
	for _, id := range tb.Members() {
		if len(pl.Pulls(id)) != 0 {
			t.Fatalf("%s pulls %v", id, pl.Pulls(id))
		}
	}
}

func TestPlacementNewCluster(t *testing.T) {
	cfg := DefaultConfig()
	for _, k := range []int{1, 3, 5} {
		t.Run(strconv.Itoa(k), func(t *testing.T) {
			m := cluster(StateMember, nodeNames(k)...)
			// A new cluster has no data: every node holds everything.
			h := Holdings{}
			for _, id := range nodeNames(k) {
				h = h.Set(id, epochOf(id), FullBitmap(cfg.Partitions))
			}
			pl := mustPlacement(t, cfg, m, h)
			checkSettled(t, pl)
			sum := 0.0
			for _, id := range nodeNames(k) {
				st := pl.Status(id)
				sum += st.Owned
				// Nodes holding partitions they are no primary of may drop them.
				var want []int
				for p := range cfg.Partitions {
					if !pl.Target().IsPrimary(p, id) {
						want = append(want, p)
					}
				}
				if !slices.Equal(pl.Drops(id), want) || st.Drops != len(want) || st.Pulls != 0 || st.Holds != cfg.Partitions || st.State != StateMember {
					t.Errorf("%s: drops %d, want %d; status %+v", id, len(pl.Drops(id)), len(want), st)
				}
			}
			if math.Abs(sum-1) > 1e-9 {
				t.Errorf("owned shares sum to %v", sum)
			}
			if k <= cfg.N && len(pl.Drops("node-1")) != 0 {
				t.Errorf("k=%d: drops %v", k, pl.Drops("node-1"))
			}
		})
	}
}

func TestPlacementErrors(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct {
		name string
		cfg  Config
		m    Membership
		want error
	}{
		{"empty", cfg, Membership{}, ErrNoMembers},
		{"no ring member", cfg, cluster(StateLeaving, "a", "b"), ErrNoMembers},
		{"invalid state", cfg, NewMembership(Member{ID: "a", State: 7}), ErrInvalidMember},
		{"invalid id", cfg, NewMembership(Member{ID: "a|", State: StateMember}), ErrInvalidNodeID},
		{"config", Config{}, cluster(StateMember, "a"), ErrInvalidConfig},
		{"too few partitions", Config{Partitions: 8, N: 3, VirtualNodes: 10, Load: 1.25}, cluster(StateMember, "a", "b"), ErrInvalidConfig},
	} {
		if _, err := NewPlacement(tc.cfg, tc.m, nil); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestPlacementJoin(t *testing.T) {
	cfg := DefaultConfig()
	m5 := cluster(StateMember, nodeNames(5)...)
	t5 := mustNew(t, cfg, nodeNames(5))
	h := settled(t5, m5)
	checkSettled(t, mustPlacement(t, cfg, m5, h))

	m6 := m5.Set(rec("node-6", StateJoining, epochOf("node-6"), 0))
	// Holding nothing and having no holding at all are the same.
	for _, h := range []Holdings{h, h.Set("node-6", epochOf("node-6"), NewBitmap(cfg.Partitions))} {
		pl := mustPlacement(t, cfg, m6, h)
		t6 := pl.Target()
		if !slices.Equal(t6.Members(), nodeNames(6)) || pl.Settled() {
			t.Fatalf("target %q, settled %v", t6.Members(), pl.Settled())
		}
		pulls := map[string][]int{}
		for p := range cfg.Partitions {
			old, prim := t5.Primaries(p), t6.Primaries(p)
			if !slices.Equal(sorted(pl.Counting(p)), sorted(old)) {
				t.Fatalf("partition %d: counting %q, want the old primaries %q", p, pl.Counting(p), old)
			}
			if !slices.Equal(pl.Writes(p)[:len(old)], pl.Counting(p)) || len(minus(prim, pl.Writes(p))) != 0 {
				t.Fatalf("partition %d: writes %q do not cover counting %q and primaries %q", p, pl.Writes(p), pl.Counting(p), prim)
			}
			for _, x := range minus(prim, old) {
				pulls[x] = append(pulls[x], p)
				if got, want := sorted(pl.Sources(p, x)), sorted(minus(old, prim)); !slices.Equal(got, want) {
					t.Fatalf("partition %d: %s pulls from %q, want the old holders losing it %q", p, x, got, want)
				}
			}
		}
		if len(pulls["node-6"]) == 0 {
			t.Fatal("the joiner pulls nothing")
		}
		for _, id := range nodeNames(6) {
			if !slices.Equal(pl.Pulls(id), pulls[id]) {
				t.Fatalf("%s pulls %d partitions, want %d", id, len(pl.Pulls(id)), len(pulls[id]))
			}
			if len(pl.Drops(id)) != 0 {
				t.Fatalf("%s drops %v before the joiner holds anything", id, pl.Drops(id))
			}
		}
		if st := pl.Status("node-6"); st.Pulls != len(pulls["node-6"]) || st.Holds != 0 || st.Counting != 0 || st.Owned == 0 {
			t.Errorf("joiner status %+v", st)
		}
		t.Logf("join of node-6: it pulls %d of %d partitions; %d partitions move in all",
			len(pulls["node-6"]), cfg.Partitions, moved(pulls))

		done := mustPlacement(t, cfg, m6, completePulls(pl, h))
		checkSettled(t, done)
		for _, id := range nodeNames(6) {
			var lost []int
			for p := range cfg.Partitions {
				if t5.IsPrimary(p, id) && !t6.IsPrimary(p, id) {
					lost = append(lost, p)
				}
			}
			if !slices.Equal(done.Drops(id), lost) {
				t.Errorf("%s drops %v, want the partitions it lost %v", id, done.Drops(id), lost)
			}
		}
		if done.Version() == pl.Version() {
			t.Error("version did not change when the pulls completed")
		}
	}
}

func moved(pulls map[string][]int) int {
	n := 0
	for _, ps := range pulls {
		n += len(ps)
	}
	return n
}

func TestPlacementLeave(t *testing.T) {
	cfg := DefaultConfig()
	m5 := cluster(StateMember, nodeNames(5)...)
	t5 := mustNew(t, cfg, nodeNames(5))
	h := settled(t5, m5)
	if err := m5.CheckLeaveOrRemove("node-3", cfg.N); err != nil {
		t.Fatal(err)
	}
	m := m5.Set(rec("node-3", StateLeaving, epochOf("node-3"), 0))
	pl := mustPlacement(t, cfg, m, h)
	t4 := pl.Target()
	if t4.IsPrimary(0, "node-3") || slices.Contains(t4.Members(), "node-3") {
		t.Fatal("leaving node in the target")
	}
	for p := range cfg.Partitions {
		old, prim, c := t5.Primaries(p), t4.Primaries(p), pl.Counting(p)
		if !slices.Equal(sorted(c), sorted(old)) {
			t.Fatalf("partition %d: counting %q, want the old primaries %q", p, c, old)
		}
		// The leaving node is scanned after the target list.
		if i := slices.Index(c, "node-3"); i >= 0 && i != len(c)-1 {
			t.Fatalf("partition %d: leaving node at %d of %q", p, i, c)
		}
		if slices.Contains(pl.Fallbacks(p), "node-3") {
			t.Fatalf("partition %d: leaving node is a fallback", p)
		}
		for _, x := range minus(prim, old) {
			if !slices.Contains(pl.Pulls(x), p) {
				t.Fatalf("partition %d: %s does not pull it", p, x)
			}
			if got, want := sorted(pl.Sources(p, x)), sorted(minus(old, prim)); !slices.Equal(got, want) {
				t.Fatalf("partition %d: %s pulls from %q, want %q", p, x, got, want)
			}
		}
	}
	if pl.HandedOff("node-3") || len(pl.Drops("node-3")) != 0 {
		t.Fatalf("leaving node handed off before anyone pulled: drops %d", len(pl.Drops("node-3")))
	}
	if st := pl.Status("node-3"); st.State != StateLeaving || st.Owned != 0 || st.Counting == 0 {
		t.Errorf("leaving status %+v", st)
	}

	// Half of the successors done: node-3 still counts where they are not.
	half := h
	for _, id := range []string{"node-1", "node-2"} {
		b := half[id].Parts
		for _, p := range pl.Pulls(id) {
			b = b.With(p)
		}
		half = half.Set(id, epochOf(id), b)
	}
	mid := mustPlacement(t, cfg, m, half)
	for p := range cfg.Partitions {
		waiting := false
		for _, x := range t4.Primaries(p) {
			waiting = waiting || !mid.Holds(p, x)
		}
		if t5.IsPrimary(p, "node-3") && mid.IsCounting(p, "node-3") != waiting {
			t.Fatalf("partition %d: leaving node counting %v, successors waiting %v", p, mid.IsCounting(p, "node-3"), waiting)
		}
	}

	h2 := completePulls(pl, h)
	done := mustPlacement(t, cfg, m, h2)
	checkSettled(t, done)
	var held []int
	for p := range cfg.Partitions {
		if t5.IsPrimary(p, "node-3") {
			held = append(held, p)
		}
		if done.IsCounting(p, "node-3") {
			t.Fatalf("partition %d: leaving node still counts", p)
		}
	}
	if !slices.Equal(done.Drops("node-3"), held) {
		t.Errorf("leaving node drops %d of its %d partitions", len(done.Drops("node-3")), len(held))
	}
	if !done.HandedOff("node-3") {
		t.Error("leaving node not handed off once every successor holds its partitions")
	}
	// It exits and marks itself removed; its last holding stays in gossip.
	gone := mustPlacement(t, cfg, m.Set(rec("node-3", StateRemoved, epochOf("node-3"), 0)), h2)
	checkSettled(t, gone)
	if gone.Version() == done.Version() {
		t.Error("version did not change on removal")
	}
}

func TestPlacementRemove(t *testing.T) {
	cfg := DefaultConfig()
	m5 := cluster(StateMember, nodeNames(5)...)
	t5 := mustNew(t, cfg, nodeNames(5))
	h := settled(t5, m5) // node-3's last holding is still gossiped
	m := m5.Set(rec("node-3", StateRemoved, epochOf("node-3"), 0))
	pl := mustPlacement(t, cfg, m, h)
	t4 := pl.Target()
	shrunk := 0
	for p := range cfg.Partitions {
		survivors := minus(t5.Primaries(p), []string{"node-3"})
		if !slices.Equal(sorted(pl.Counting(p)), sorted(survivors)) {
			t.Fatalf("partition %d: counting %q, want survivors %q", p, pl.Counting(p), survivors)
		}
		if len(survivors) < cfg.N {
			shrunk++
		}
		for _, list := range [][]string{pl.Writes(p), pl.Fallbacks(p), pl.Counting(p)} {
			if slices.Contains(list, "node-3") {
				t.Fatalf("partition %d: removed node in %q", p, list)
			}
		}
		for _, x := range t4.Primaries(p) {
			if pl.Holds(p, x) {
				continue
			}
			src := pl.Sources(p, x)
			if len(src) == 0 || len(minus(src, survivors)) != 0 {
				t.Fatalf("partition %d: %s pulls from %q, want survivors %q", p, x, src, survivors)
			}
			if len(minus(survivors, t4.Primaries(p))) == 0 && !slices.Equal(src, pl.Counting(p)) {
				t.Fatalf("partition %d: no survivor loses it, yet sources %q != counting %q", p, src, pl.Counting(p))
			}
		}
	}
	if shrunk == 0 || pl.Holds(0, "node-3") || len(pl.Drops("node-3")) != 0 || pl.Status("node-3").Holds != 0 {
		t.Fatalf("removed node still holds (shrunk %d)", shrunk)
	}
	t.Logf("remove of node-3: %d partitions down to %d replicas until re-replicated", shrunk, cfg.N-1)
	checkSettled(t, mustPlacement(t, cfg, m, completePulls(pl, h)))
}

func TestPlacementWipedNode(t *testing.T) {
	cfg := DefaultConfig()
	m5 := cluster(StateMember, nodeNames(5)...)
	t5 := mustNew(t, cfg, nodeNames(5))
	h := settled(t5, m5)
	// node-2 lost its disk and came back under a new epoch; its old holding
	// is still the newest one in gossip.
	m := m5.Set(rec("node-2", StateMember, "e-fresh", 0))
	pl := mustPlacement(t, cfg, m, h)
	if pl.Target().Version() != t5.Version() {
		t.Fatal("an epoch change moved the target")
	}
	var owned []int
	for p := range cfg.Partitions {
		prim := t5.Primaries(p)
		if pl.Holds(p, "node-2") || pl.IsCounting(p, "node-2") {
			t.Fatalf("partition %d: stale-epoch holding counts", p)
		}
		if !slices.Equal(pl.Counting(p), minus(prim, []string{"node-2"})) || !slices.Equal(sorted(pl.Writes(p)), sorted(prim)) {
			t.Fatalf("partition %d: counting %q writes %q", p, pl.Counting(p), pl.Writes(p))
		}
		if slices.Contains(prim, "node-2") {
			owned = append(owned, p)
			if !slices.Equal(pl.Sources(p, "node-2"), pl.Counting(p)) {
				t.Fatalf("partition %d: sources %q", p, pl.Sources(p, "node-2"))
			}
		}
	}
	if !slices.Equal(pl.Pulls("node-2"), owned) {
		t.Fatalf("wiped node pulls %d partitions, want all %d it owns", len(pl.Pulls("node-2")), len(owned))
	}
	// A holding under the new epoch, even at a lower version, counts once it
	// wins the merge; Set raises past the stale one.
	checkSettled(t, mustPlacement(t, cfg, m, completePulls(pl, h)))
	low := h.Merge(Holdings{"node-2": {Epoch: "e-fresh", Version: 0, Parts: FullBitmap(cfg.Partitions)}})
	if mustPlacement(t, cfg, m, low).Holds(owned[0], "node-2") {
		t.Error("a lower-version holding won the merge")
	}
}

func TestPlacementBitmapSizeMismatch(t *testing.T) {
	cfg := DefaultConfig()
	m := cluster(StateMember, nodeNames(3)...)
	h := Holdings{}
	for _, id := range nodeNames(3) {
		h = h.Set(id, epochOf(id), FullBitmap(cfg.Partitions))
	}
	h = h.Set("node-1", epochOf("node-1"), FullBitmap(cfg.Partitions*2))
	pl := mustPlacement(t, cfg, m, h)
	if pl.Holds(0, "node-1") || len(pl.Pulls("node-1")) != cfg.Partitions || len(pl.Counting(0)) != 2 {
		t.Errorf("a bitmap of another partition count was not ignored")
	}
}

// TestPlacementDeterminism builds the same inputs in different orders and
// gossip splits.
func TestPlacementDeterminism(t *testing.T) {
	cfg := DefaultConfig()
	t5 := mustNew(t, cfg, nodeNames(5))
	records := cluster(StateMember, nodeNames(5)...).All()
	records[2].State = StateLeaving
	records = append(records, rec("node-6", StateJoining, epochOf("node-6"), 1), rec("node-7", StateRemoved, "x", 4))
	h := settled(t5, cluster(StateMember, nodeNames(5)...))
	h = h.Set("node-6", epochOf("node-6"), NewBitmap(cfg.Partitions).With(1).With(7))
	base := mustPlacement(t, cfg, NewMembership(records...), h)

	rapid.Check(t, func(rt *rapid.T) {
		shuffled := rapid.Permutation(records).Draw(rt, "records")
		cut := rapid.IntRange(0, len(shuffled)).Draw(rt, "cut")
		m := NewMembership(shuffled[cut:]...).Merge(NewMembership(shuffled[:cut]...))
		hh := Holdings{}
		for _, id := range rapid.Permutation(slices.Sorted(maps.Keys(h))).Draw(rt, "holders") {
			hh = hh.Merge(Holdings{id: h[id]})
		}
		pl := mustPlacement(rt, cfg, m, hh)
		if pl.Version() != base.Version() {
			rt.Fatalf("version %s != %s", pl.Version(), base.Version())
		}
		for p := range cfg.Partitions {
			if !slices.Equal(pl.Counting(p), base.Counting(p)) || !slices.Equal(pl.Writes(p), base.Writes(p)) ||
				!slices.Equal(pl.Fallbacks(p), base.Fallbacks(p)) || !slices.Equal(pl.Sources(p, "x"), base.Sources(p, "x")) {
				rt.Fatalf("partition %d differs", p)
			}
		}
		for _, id := range nodeNames(7) {
			if !slices.Equal(pl.Pulls(id), base.Pulls(id)) || !slices.Equal(pl.Drops(id), base.Drops(id)) {
				rt.Fatalf("%s: pulls or drops differ", id)
			}
		}
	})
}

func TestPlacementVersion(t *testing.T) {
	cfg := DefaultConfig()
	m := cluster(StateMember, nodeNames(4)...)
	h := settled(mustNew(t, cfg, nodeNames(4)), m)
	v := mustPlacement(t, cfg, m, h).Version()
	if len(v) != 16 || mustPlacement(t, cfg, m, maps.Clone(h)).Version() != v {
		t.Fatalf("version %q not stable", v)
	}
	mem, _ := m.Get("node-2")
	moveAddr := mem
	moveAddr.Addr = "elsewhere:1"
	joined := mem
	joined.State = StateJoining
	for name, pl := range map[string]*Placement{
		"state":     mustPlacement(t, cfg, m.Set(joined), h),
		"epoch":     mustPlacement(t, cfg, m.Set(rec("node-2", StateMember, "new", 0)), h),
		"holding":   mustPlacement(t, cfg, m, h.Set("node-2", epochOf("node-2"), NewBitmap(cfg.Partitions))),
		"tombstone": mustPlacement(t, cfg, m.Set(rec("node-9", StateRemoved, "", 0)), h),
		"n":         mustPlacement(t, Config{Partitions: 1024, N: 2, VirtualNodes: 200, Load: 1.05}, m, h),
	} {
		if pl.Version() == v {
			t.Errorf("%s change kept version %s", name, v)
		}
	}
	// Addresses are not placement: the version stays.
	if got := mustPlacement(t, cfg, m.Set(moveAddr), h).Version(); got != v {
		t.Errorf("address change moved the version")
	}
}

func TestPlacementUpdate(t *testing.T) {
	cfg := DefaultConfig()
	m5 := cluster(StateMember, nodeNames(5)...)
	h := settled(mustNew(t, cfg, nodeNames(5)), m5)
	pl := mustPlacement(t, cfg, m5, h)
	for name, tc := range map[string]struct {
		m       Membership
		h       Holdings
		reuse   bool
		wantErr error
	}{
		"holdings": {m5, h.Set("node-1", epochOf("node-1"), NewBitmap(cfg.Partitions)), true, nil},
		"epoch":    {m5.Set(rec("node-2", StateMember, "new", 0)), h, true, nil},
		"joined":   {m5.Set(rec("node-2", StateJoining, epochOf("node-2"), 0)), h, true, nil},
		"join":     {m5.Set(rec("node-6", StateJoining, "e", 0)), h, false, nil},
		"leave":    {m5.Set(rec("node-2", StateLeaving, epochOf("node-2"), 0)), h, false, nil},
		"empty":    {cluster(StateRemoved, nodeNames(5)...), h, false, ErrNoMembers},
		"invalid":  {m5.Set(Member{ID: "node-1", State: 9}), h, false, ErrInvalidMember},
	} {
		upd, err := pl.Update(tc.m, tc.h)
		if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
			t.Errorf("%s: %v, want %v", name, err, tc.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		want := mustPlacement(t, cfg, tc.m, tc.h)
		if upd.Version() != want.Version() || (upd.Target() == pl.Target()) != tc.reuse {
			t.Errorf("%s: version %s want %s; table reused %v", name, upd.Version(), want.Version(), upd.Target() == pl.Target())
		}
	}
}

func TestPlacementAccessors(t *testing.T) {
	cfg := DefaultConfig()
	m := cluster(StateMember, nodeNames(4)...)
	h := settled(mustNew(t, cfg, nodeNames(4)), m)
	pl := mustPlacement(t, cfg, m, h)
	if !pl.Membership().Equal(m) || !pl.Holdings().Equal(h) {
		t.Error("inputs not kept")
	}
	got := pl.Holdings()
	delete(got, "node-1")
	if _, ok := pl.Holdings()["node-1"]; !ok {
		t.Error("Holdings returned the shared map")
	}
	owned := slices.IndexFunc(seq(cfg.Partitions), func(p int) bool { return pl.Target().IsPrimary(p, "node-1") })
	h["node-1"] = Holding{}
	if !pl.Holds(owned, "node-1") {
		t.Error("the placement shares the caller's map")
	}
	if pl.Pulls("nobody") != nil || pl.Drops("nobody") != nil || pl.Status("nobody") != (NodeStatus{}) {
		t.Error("unknown node has pulls, drops or status")
	}
	// A holder asking for sources gets the others only.
	p := 0
	src := pl.Sources(p, pl.Counting(p)[0])
	if slices.Contains(src, pl.Counting(p)[0]) || len(src) != len(pl.Counting(p))-1 {
		t.Errorf("sources for a holder: %q", src)
	}
}

func TestPlacementZeroAllocs(t *testing.T) {
	cfg := DefaultConfig()
	m := cluster(StateMember, nodeNames(5)...).Set(rec("node-6", StateJoining, epochOf("node-6"), 0))
	pl := mustPlacement(t, cfg, m, settled(mustNew(t, cfg, nodeNames(5)), cluster(StateMember, nodeNames(5)...)))
	for name, f := range map[string]func(){
		"Counting":      func() { sink += len(pl.Counting(sink & 1023)) },
		"Writes":        func() { sink += len(pl.Writes(sink & 1023)) },
		"Fallbacks":     func() { sink += len(pl.Fallbacks(sink & 1023)) },
		"Sources":       func() { sink += len(pl.Sources(sink&1023, "node-6")) },
		"Pulls":         func() { sink += len(pl.Pulls("node-6")) },
		"Drops":         func() { sink += len(pl.Drops("node-1")) },
		"IsCounting":    func() { sink += b2i(pl.IsCounting(sink&1023, "node-2")) },
		"IsWriteTarget": func() { sink += b2i(pl.IsWriteTarget(sink&1023, "node-6")) },
		"Holds":         func() { sink += b2i(pl.Holds(sink&1023, "node-3")) },
		"Settled":       func() { sink += b2i(pl.Settled()) },
		"Version":       func() { sink += len(pl.Version()) },
		"Status":        func() { sink += pl.Status("node-4").Pulls },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per call, want 0", name, n)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestPlacementProperty checks the definitions against random memberships
// and holdings, with an independent computation of Counting.
func TestPlacementProperty(t *testing.T) {
	pool := []string{"n1", "n2", "n3", "n4", "n5", "n6", "n11"}
	rapid.Check(t, func(t *rapid.T) {
		cfg := Config{Partitions: 128, N: rapid.IntRange(1, 4).Draw(t, "n"), VirtualNodes: 40, Load: 1.25}
		var records []Member
		for i, id := range pool {
			if !rapid.Bool().Draw(t, "present "+id) && i > 0 {
				continue
			}
			st := State(rapid.IntRange(1, 4).Draw(t, "state "+id))
			if i == 0 && !st.InRing() {
				st = StateMember // at least one ring member
			}
			records = append(records, rec(id, st, rapid.SampledFrom([]string{"a", "b"}).Draw(t, "epoch "+id), 1))
		}
		m := NewMembership(records...)
		h := Holdings{}
		for _, id := range append(pool, "ghost") {
			size := cfg.Partitions
			switch rapid.IntRange(0, 9).Draw(t, "holding "+id) {
			case 0:
				continue
			case 1:
				size = 64 // another partition count: ignored
			}
			b := NewBitmap(size)
			switch rapid.IntRange(0, 2).Draw(t, "shape "+id) {
			case 0:
				b = FullBitmap(size)
			case 1:
				for i := range b.words {
					b.words[i] = rapid.Uint64().Draw(t, "word")
				}
			}
			h = h.Set(id, rapid.SampledFrom([]string{"a", "a", "b"}).Draw(t, "holding epoch "+id), b)
		}
		pl, err := NewPlacement(cfg, m, h)
		if err != nil {
			t.Fatalf("NewPlacement: %v", err)
		}
		tb := pl.Target()
		if !slices.Equal(tb.Members(), m.RingMembers()) {
			t.Fatalf("target %q, ring %q", tb.Members(), m.RingMembers())
		}
		// Independent: who holds, and the candidates in counting order.
		holds := func(id string, p int) bool {
			mem, ok := m.Get(id)
			hd, has := h[id]
			return ok && has && mem.State != StateRemoved && hd.Epoch == mem.Epoch &&
				hd.Parts.Len() == cfg.Partitions && hd.Parts.Has(p)
		}
		var leaving []string
		for _, mem := range m.All() {
			if mem.State == StateLeaving {
				leaving = append(leaving, mem.ID)
			}
		}
		settledAll := true
		pulls, drops := map[string][]int{}, map[string][]int{}
		for p := range cfg.Partitions {
			list, prim := tb.PreferenceList(p), tb.Primaries(p)
			var want []string
			for _, id := range slices.Concat(list, leaving) {
				if len(want) < cfg.N && holds(id, p) {
					want = append(want, id)
				}
			}
			c, w, f := pl.Counting(p), pl.Writes(p), pl.Fallbacks(p)
			if !slices.Equal(c, want) {
				t.Fatalf("partition %d: counting %q, want %q", p, c, want)
			}
			if len(c) > cfg.N || len(slices.Compact(sorted(c))) != len(c) {
				t.Fatalf("partition %d: counting %q too long or not distinct", p, c)
			}
			if len(slices.Compact(sorted(w))) != len(w) || len(minus(c, w)) != 0 || len(minus(prim, w)) != 0 || !slices.Equal(w[:len(c)], c) {
				t.Fatalf("partition %d: writes %q vs counting %q primaries %q", p, w, c, prim)
			}
			if len(minus(w, slices.Concat(c, prim))) != 0 {
				t.Fatalf("partition %d: writes %q beyond counting and primaries", p, w)
			}
			if len(minus(f, w)) != len(f) || !slices.Equal(f, minus(list, w)) {
				t.Fatalf("partition %d: fallbacks %q, writes %q", p, f, w)
			}
			for _, id := range c {
				if !pl.IsCounting(p, id) || !pl.IsWriteTarget(p, id) {
					t.Fatalf("partition %d: Is* disagree for %s", p, id)
				}
			}
			all := true
			for _, x := range prim {
				if !holds(x, p) {
					all = false
					pulls[x] = append(pulls[x], p)
					src := pl.Sources(p, x)
					losing := minus(c, prim)
					if len(losing) > 0 && !slices.Equal(src, losing) || len(losing) == 0 && !slices.Equal(src, minus(c, []string{x})) {
						t.Fatalf("partition %d: sources for %s %q (counting %q)", p, x, src, c)
					}
				}
			}
			settledAll = settledAll && all
			for _, mem := range m.All() {
				if all && holds(mem.ID, p) && !slices.Contains(prim, mem.ID) {
					drops[mem.ID] = append(drops[mem.ID], p)
				}
			}
		}
		if pl.Settled() != settledAll {
			t.Fatalf("settled %v, want %v", pl.Settled(), settledAll)
		}
		for _, id := range append(pool, "ghost") {
			if !slices.Equal(pl.Pulls(id), pulls[id]) || !slices.Equal(pl.Drops(id), drops[id]) {
				t.Fatalf("%s: pulls %v drops %v, want %v and %v", id, pl.Pulls(id), pl.Drops(id), pulls[id], drops[id])
			}
		}
		// Order of the inputs does not matter.
		again := mustPlacement(t, cfg, NewMembership(rapid.Permutation(records).Draw(t, "perm")...), maps.Clone(h))
		if again.Version() != pl.Version() {
			t.Fatal("version depends on input order")
		}
		// Update from a placement of the same ring (reusing its table) or of
		// another ring gives the same placement.
		for _, prev := range []*Placement{
			mustPlacement(t, cfg, cluster(StateJoining, m.RingMembers()...), nil),
			mustPlacement(t, cfg, cluster(StateMember, "other"), h),
		} {
			upd, err := prev.Update(m, h)
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			if upd.Version() != pl.Version() || (upd.Target() == prev.Target()) != slices.Equal(prev.Target().Members(), m.RingMembers()) {
				t.Fatalf("Update: version %s, want %s", upd.Version(), pl.Version())
			}
			for p := range cfg.Partitions {
				if !slices.Equal(upd.Fallbacks(p), pl.Fallbacks(p)) {
					t.Fatalf("Update: partition %d fallbacks differ", p)
				}
			}
		}
	})
}

func BenchmarkNewPlacement(b *testing.B) {
	cfg := DefaultConfig()
	for _, k := range []int{5, 16} {
		// A join in progress: k-1 settled members and one joiner.
		old := cluster(StateMember, nodeNames(k-1)...)
		h := settled(mustNew(b, cfg, nodeNames(k-1)), old)
		m := old.Set(rec("node-"+strconv.Itoa(k), StateJoining, "e", 0))
		b.Run(strconv.Itoa(k)+"members", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NewPlacement(cfg, m, h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// Update with the same ring members skips New: the cost of a holdings
	// change (a pull finished) during a handoff.
	for _, k := range []int{5, 16} {
		old := cluster(StateMember, nodeNames(k-1)...)
		h := settled(mustNew(b, cfg, nodeNames(k-1)), old)
		m := old.Set(rec("node-"+strconv.Itoa(k), StateJoining, "e", 0))
		pl := mustPlacement(b, cfg, m, h)
		h2 := h.Set("node-"+strconv.Itoa(k), "e", NewBitmap(cfg.Partitions).With(pl.Pulls("node-" + strconv.Itoa(k))[0]))
		b.Run("Update/"+strconv.Itoa(k)+"members", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pl.Update(m, h2); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("New/16members", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := New(cfg, nodeNames(16)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
