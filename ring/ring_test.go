package ring

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
	"pgregory.net/rapid"
)

// nodeNames returns node-1 ... node-k.
func nodeNames(k int) []string {
	out := make([]string, k)
	for i := range out {
		out[i] = "node-" + strconv.Itoa(i+1)
	}
	return out
}

func mustNew(t testing.TB, cfg Config, members []string) *Table {
	t.Helper()
	tb, err := New(cfg, members)
	if err != nil {
		t.Fatalf("New(%+v, %q): %v", cfg, members, err)
	}
	return tb
}

func TestPartitionOfGolden(t *testing.T) {
	// PartitionOf is a wire contract: clients compute it, and every stored key
	// lives in the partition it names. These values must never change.
	for _, tc := range []struct {
		partitions  int
		bucket, key string
		want        int
	}{
		{1024, "users", "alice", 62},
		{1024, "", "", 872},
		{1024, "b", "k", 260},
		{7, "bucket", "key", 0},
	} {
		if got := PartitionOf(tc.partitions, tc.bucket, tc.key); got != tc.want {
			t.Errorf("PartitionOf(%d, %q, %q) = %d, want %d", tc.partitions, tc.bucket, tc.key, got, tc.want)
		}
	}
}

func TestPartitionOfSpec(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		partitions := rapid.IntRange(1, 1<<20).Draw(t, "partitions")
		bucket := rapid.String().Draw(t, "bucket")
		key := rapid.String().Draw(t, "key")
		want := int(xxhash.Sum64String(bucket+"\x00"+key) % uint64(partitions))
		if got := PartitionOf(partitions, bucket, key); got != want {
			t.Fatalf("PartitionOf = %d, want %d", got, want)
		}
	})
	// The separator keeps the bucket/key boundary in the hash input.
	if PartitionOf(1<<16, "ab", "c") == PartitionOf(1<<16, "a", "bc") {
		t.Errorf(`("ab","c") and ("a","bc") share a partition out of 65536`)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	d := DefaultConfig()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"min partitions", func(c *Config) { c.Partitions = 8 }, true},
		{"max partitions", func(c *Config) { c.Partitions = 1 << 16 }, true},
		{"n=1", func(c *Config) { c.N = 1 }, true},
		{"one virtual node", func(c *Config) { c.VirtualNodes = 1 }, true},
		{"load just over 1", func(c *Config) { c.Load = 1.0001 }, true},
		{"zero value", func(c *Config) { *c = Config{} }, false},
		{"partitions 7", func(c *Config) { c.Partitions = 7 }, false},
		{"partitions too many", func(c *Config) { c.Partitions = 1<<16 + 1 }, false},
		{"n=0", func(c *Config) { c.N = 0 }, false},
		{"n<0", func(c *Config) { c.N = -3 }, false},
		{"virtual nodes 0", func(c *Config) { c.VirtualNodes = 0 }, false},
		{"virtual nodes too many", func(c *Config) { c.VirtualNodes = 1<<12 + 1 }, false},
		{"load 1", func(c *Config) { c.Load = 1 }, false},
		{"load 0.5", func(c *Config) { c.Load = 0.5 }, false},
		{"load NaN", func(c *Config) { c.Load = math.NaN() }, false},
		{"load +Inf", func(c *Config) { c.Load = math.Inf(1) }, false},
	} {
		c := d
		tc.edit(&c)
		err := c.Validate()
		if tc.ok && err != nil {
			t.Errorf("%s: Validate(%+v) = %v, want nil", tc.name, c, err)
		}
		if !tc.ok && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate(%+v) = %v, want ErrInvalidConfig", tc.name, c, err)
		}
	}
}

func TestValidateNodeID(t *testing.T) {
	for _, id := range []string{"a", "node-1", "Node_1.eu-west", "0", strings.Repeat("x", 64)} {
		if err := ValidateNodeID(id); err != nil {
			t.Errorf("ValidateNodeID(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range []string{"", strings.Repeat("x", 65), "a b", "a|b", "a/b", "a\x00", "é", "a:1", "node-1|"} {
		err := ValidateNodeID(id)
		if !errors.Is(err, ErrInvalidNodeID) {
			t.Errorf("ValidateNodeID(%q) = %v, want ErrInvalidNodeID", id, err)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(id)) || !strings.Contains(err.Error(), "[A-Za-z0-9._-]") {
			t.Errorf("ValidateNodeID(%q) = %q: should name the id and the rule", id, err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct {
		name    string
		cfg     Config
		members []string
		want    error
		msg     []string // substrings the error must contain
	}{
		{"nil members", cfg, nil, ErrNoMembers, nil},
		{"empty members", cfg, []string{}, ErrNoMembers, nil},
		{"duplicate", cfg, []string{"a", "b", "a"}, ErrDuplicateMember, []string{`"a"`}},
		{"empty id", cfg, []string{"a", ""}, ErrInvalidNodeID, nil},
		{"65-char id", cfg, []string{strings.Repeat("a", 65)}, ErrInvalidNodeID, nil},
		{"space", cfg, []string{"a b"}, ErrInvalidNodeID, []string{`"a b"`}},
		{"pipe", cfg, []string{"a|b"}, ErrInvalidNodeID, []string{`"a|b"`}},
		{"slash", cfg, []string{"a/b"}, ErrInvalidNodeID, []string{`"a/b"`}},
		{"bad config", Config{}, []string{"a"}, ErrInvalidConfig, nil},
		{"too few partitions", Config{Partitions: 16, N: 3, VirtualNodes: 200, Load: 1.05},
			[]string{"a", "b", "c"}, ErrInvalidConfig, []string{"16 partitions", "3 members", "at least 24"}},
		{"1024 partitions, 129 members", cfg, nodeNames(129), ErrInvalidConfig,
			[]string{"1024 partitions", "129 members", "at least 1032"}},
	} {
		tb, err := New(tc.cfg, tc.members)
		if tb != nil || !errors.Is(err, tc.want) {
			t.Errorf("%s: New = %v, %v; want nil, %v", tc.name, tb, err, tc.want)
			continue
		}
		for _, s := range tc.msg {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q does not contain %q", tc.name, err, s)
			}
		}
	}
	// The boundary itself is accepted.
	mustNew(t, cfg, nodeNames(128))
	mustNew(t, Config{Partitions: 24, N: 3, VirtualNodes: 200, Load: 1.05}, []string{"a", "b", "c"})
}

// TestPlacementPanicRecovered pins the trial-ring behaviour: a config for
// which consistent panics makes New return ErrPlacement instead.
//
// With Load > 1 and Partitions >= members, consistent's capacity,
// members × ceil(Load × floor(P/members)), always covers P; what remains is its
// walk, which gives up after len(points)-1 points. With one virtual node per
// member it can miss the only member with room (and with one member it never
// looks at all).
func TestPlacementPanicRecovered(t *testing.T) {
	cfg := Config{Partitions: 8, N: 1, VirtualNodes: 1, Load: 1.0001}

	// The library itself panics on this input.
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "not enough room") {
				t.Errorf("consistent.New recovered %v, want the not-enough-room panic", r)
			}
		}()
		consistent.New([]consistent.Member{member{"solo", "solo|"}}, consistent.Config{
			Hasher: hasher{}, PartitionCount: 8, ReplicationFactor: 1, Load: 1.0001,
		})
	}()

	tb, err := New(cfg, []string{"solo"})
	if tb != nil || !errors.Is(err, ErrPlacement) {
		t.Fatalf("New = %v, %v; want ErrPlacement", tb, err)
	}
	for _, s := range []string{"8 partitions", "1 members", "not enough room"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}

	// Sweep small rings with one virtual node: New returns (a table or an
	// error) and never panics.
	failed := 0
	for m := 1; m <= 12; m++ {
		for p := 8 * m; p < 8*m+32; p++ {
			_, err := New(Config{Partitions: p, N: 3, VirtualNodes: 1, Load: 1.0001}, nodeNames(m))
			switch {
			case errors.Is(err, ErrPlacement):
				failed++
			case err != nil:
				t.Fatalf("m=%d p=%d: unexpected error %v", m, p, err)
			}
		}
	}
	t.Logf("one virtual node per member: %d of %d rings could not be placed", failed, 12*32)
}

// rawMember is a consistent.Member without the terminator, to show the trap.
type rawMember string

func (m rawMember) String() string { return string(m) }

// TestSimilarNames: ids where one is another plus digits collide on
// consistent's ring without the terminator.
func TestSimilarNames(t *testing.T) {
	members := []string{"node-1", "node-11", "node-111", "node-1111", "node-2"}
	cfg := DefaultConfig()

	// The trap is real: with raw names, node-1's points 11..19 and 110..199
	// are node-11's points 1..19, whoever is added last takes them, and the
	// owners depend on insertion order.
	rawOwners := func(ids ...string) map[string]int {
		ms := make([]consistent.Member, len(ids))
		for i, id := range ids {
			ms[i] = rawMember(id)
		}
		c := consistent.New(ms, consistent.Config{
			Hasher: hasher{}, PartitionCount: cfg.Partitions,
			ReplicationFactor: cfg.VirtualNodes, Load: cfg.Load,
		})
		owned := make(map[string]int)
		for p := range cfg.Partitions {
			owned[c.GetPartitionOwner(p).String()]++
		}
		return owned
	}
	a, b := rawOwners("node-1", "node-11", "node-2"), rawOwners("node-11", "node-1", "node-2")
	if maps.Equal(a, b) {
		t.Errorf("raw names: owners %v independent of order; the trap this package works around is gone?", a)
	}
	t.Logf("raw names, two insertion orders: %v vs %v", a, b)

	// The point names consistent derives (String() + index) are all distinct.
	seen := make(map[string]string)
	for _, id := range members {
		m := member{id: id, name: id + terminator}
		for i := range cfg.VirtualNodes {
			point := m.String() + strconv.Itoa(i)
			if other, ok := seen[point]; ok {
				t.Fatalf("point %q of %s collides with %s", point, id, other)
			}
			seen[point] = id
		}
	}

	tb := mustNew(t, cfg, members)
	owned := make(map[string]int)
	for p := range cfg.Partitions {
		owned[tb.PreferenceList(p)[0]]++
	}
	avg := float64(cfg.Partitions) / float64(len(members))
	for _, id := range members {
		// Owner shares are bounded above by Load; below, with 200 points,
		// measured ≥ 0.85× the average.
		if share := float64(owned[id]) / avg; share < 0.75 {
			t.Errorf("%s owns %d partitions (%.2f× average), want ≥ 0.75×", id, owned[id], share)
		}
	}
	t.Logf("owned partitions: %v", owned)
}

func TestSmallClusters(t *testing.T) {
	cfg := DefaultConfig()
	for k := 1; k <= 4; k++ {
		tb := mustNew(t, cfg, nodeNames(k))
		for p := range cfg.Partitions {
			if got, want := len(tb.Primaries(p)), min(3, k); got != want {
				t.Fatalf("k=%d p=%d: %d primaries, want %d", k, p, got, want)
			}
			if got := len(tb.PreferenceList(p)); got != k {
				t.Fatalf("k=%d p=%d: list length %d, want %d", k, p, got, k)
			}
		}
		var sum float64
		for _, s := range tb.Ownership() {
			sum += s
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Errorf("k=%d: ownership sums to %v", k, sum)
		}
	}
}

func TestVersion(t *testing.T) {
	cfg := DefaultConfig()
	base := mustNew(t, cfg, nodeNames(5))
	// Golden: changing it changes placement for existing clusters, and nodes
	// running old and new code would disagree on every preference list.
	if got, want := base.Version(), "d94d7ed8c168745d"; got != want {
		t.Errorf("Version() = %s, want %s (placement changed)", got, want)
	}
	if again := mustNew(t, cfg, nodeNames(5)); again.Version() != base.Version() {
		t.Errorf("equal inputs: versions %s and %s", base.Version(), again.Version())
	}
	if len(base.Version()) != 16 {
		t.Errorf("Version() = %q, want 16 hex digits", base.Version())
	}

	n1 := cfg
	n1.N = 1
	p2 := cfg
	p2.Partitions = 2048
	others := map[string]*Table{
		"added":      mustNew(t, cfg, nodeNames(6)),
		"removed":    mustNew(t, cfg, nodeNames(4)),
		"replaced":   mustNew(t, cfg, append(nodeNames(4), "node-6")),
		"renamed":    mustNew(t, cfg, append(nodeNames(4), "node-5x")),
		"n":          mustNew(t, n1, nodeNames(5)),
		"partitions": mustNew(t, p2, nodeNames(5)),
	}
	seen := map[string]string{base.Version(): "base"}
	for name, tb := range others {
		if prev, ok := seen[tb.Version()]; ok {
			t.Errorf("%s and %s share version %s", name, prev, tb.Version())
		}
		seen[tb.Version()] = name
	}
}

func TestAccessors(t *testing.T) {
	cfg := DefaultConfig()
	tb := mustNew(t, cfg, []string{"c", "a", "e", "b", "d"})

	if tb.Config() != cfg {
		t.Errorf("Config() = %+v, want %+v", tb.Config(), cfg)
	}
	members := tb.Members()
	if want := []string{"a", "b", "c", "d", "e"}; !slices.Equal(members, want) {
		t.Fatalf("Members() = %q, want %q", members, want)
	}
	members[0] = "zzz"
	if tb.Members()[0] != "a" {
		t.Error("Members() returned the table's own slice")
	}

	for _, key := range []string{"", "k", "user/42"} {
		if got, want := tb.Partition("b", key), PartitionOf(cfg.Partitions, "b", key); got != want {
			t.Errorf("Partition(b, %q) = %d, want %d", key, got, want)
		}
	}

	for p := range cfg.Partitions {
		list, prim := tb.PreferenceList(p), tb.Primaries(p)
		if !slices.Equal(prim, list[:3]) || cap(prim) != 3 || cap(list) != len(list) {
			t.Fatalf("p=%d: Primaries %q (cap %d) is not the capped head of %q (cap %d)",
				p, prim, cap(prim), list, cap(list))
		}
		for i, id := range list {
			if got := tb.IsPrimary(p, id); got != (i < 3) {
				t.Fatalf("p=%d: IsPrimary(%s) = %v at position %d", p, id, got, i)
			}
		}
		if tb.IsPrimary(p, "nobody") {
			t.Fatalf("p=%d: IsPrimary(nobody)", p)
		}
	}

	own := tb.Ownership()
	var sum float64
	for _, id := range tb.Members() {
		sum += own[id]
	}
	if len(own) != 5 || math.Abs(sum-1) > 1e-9 {
		t.Errorf("Ownership() = %v, want 5 shares summing to 1 (got %v)", own, sum)
	}
	own["a"] = 7
	if tb.Ownership()["a"] == 7 {
		t.Error("Ownership() returned the table's own map")
	}
}

func TestView(t *testing.T) {
	tb := mustNew(t, DefaultConfig(), nodeNames(4))
	v := tb.View()
	if v.Version != tb.Version() || v.N != 3 || v.Partitions != 1024 ||
		!slices.Equal(v.Members, tb.Members()) || len(v.Table) != 1024 {
		t.Fatalf("View() header = %s %d %d %q %d", v.Version, v.N, v.Partitions, v.Members, len(v.Table))
	}
	for p, list := range v.Table {
		if !slices.Equal(list, tb.PreferenceList(p)) {
			t.Fatalf("View().Table[%d] = %q, want %q", p, list, tb.PreferenceList(p))
		}
	}
	// The view is the caller's to modify.
	v.Table[0][0], v.Members[0] = "x", "x"
	if tb.PreferenceList(0)[0] == "x" || tb.Members()[0] == "x" {
		t.Error("View() shares memory with the table")
	}
	v.Table[0] = append(v.Table[0], "y")
	if v.Table[1][0] == "y" {
		t.Error("appending to one view list overwrote the next")
	}

	b, err := json.Marshal(tb.View())
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ring_version", "n", "partitions", "members", "preference_lists"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("JSON view lacks %q: %s", f, b[:min(len(b), 200)])
		}
	}
}
