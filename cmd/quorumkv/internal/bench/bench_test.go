package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// testSeed seeds every random draw of these tests; printed so that a
// failure can be replayed.
const testSeed = 20261126

func testRand(t *testing.T) *rand.Rand {
	t.Logf("seed %d", testSeed)
	return rand.New(rand.NewPCG(testSeed, 0))
}

func TestZipfianShape(t *testing.T) {
	const records, draws = 10000, 400000
	rng := testRand(t)
	z := newZipfian(records, zipfConstant)
	counts := make([]int, records)
	for range draws {
		i := z.next(rng)
		if i < 0 || i >= records {
			t.Fatalf("draw %d outside [0, %d)", i, records)
		}
		counts[i]++
	}
	// P(i) = 1/((i+1)^θ · ζ(n, θ)). Gray's algorithm (YCSB's) is exact
	// for items 0 and 1 and approximate after them (items 2-4 come out
	// some 10-20% too often), so: 0 and 1 within 3%, the next ones within
	// 25% and decreasing.
	for i := range 5 {
		want := draws / (math.Pow(float64(i+1), zipfConstant) * z.zetan)
		tol := 0.03
		if i >= 2 {
			tol = 0.25
		}
		if got := float64(counts[i]); math.Abs(got-want) > tol*want {
			t.Errorf("item %d drawn %v times, want %.0f ±%.0f%%", i, got, want, tol*100)
		}
		if i > 0 && counts[i] >= counts[i-1] {
			t.Errorf("item %d drawn %d times, item %d %d: not decreasing", i, counts[i], i-1, counts[i-1])
		}
	}
	// The head is heavy, the tail light: the 1% most popular items take
	// about 58% of the draws (Σ_{i≤100} 1/i^0.99 / ζ(10000, 0.99)).
	head := 0
	for _, c := range counts[:records/100] {
		head += c
	}
	if share := float64(head) / draws; share < 0.5 || share > 0.65 {
		t.Errorf("the first 1%% of items took %.3f of the draws, want about 0.58", share)
	}
	if counts[records-1] > counts[0]/1000 {
		t.Errorf("the last item drawn %d times, the first %d: not skewed", counts[records-1], counts[0])
	}
}

func TestUniformShape(t *testing.T) {
	const records, draws, buckets = 1000, 200000, 10
	rng := testRand(t)
	u := newKeyChooser(Uniform, records)
	var counts [buckets]int
	for range draws {
		i := u.next(rng)
		if i < 0 || i >= records {
			t.Fatalf("draw %d outside [0, %d)", i, records)
		}
		counts[i*buckets/records]++
	}
	for b, c := range counts {
		if want := draws / buckets; math.Abs(float64(c-want)) > 0.03*float64(want) {
			t.Errorf("bucket %d drawn %d times, want %d ±3%%", b, c, want)
		}
	}
}

func TestWorkloadMix(t *testing.T) {
	const draws = 200000
	rng := testRand(t)
	for _, w := range []Workload{WorkloadA, WorkloadB, WorkloadC, WorkloadF, WorkloadWrite} {
		m, err := w.mix()
		if err != nil {
			t.Fatal(err)
		}
		var counts [numOps]int
		for range draws {
			counts[m.choose(rng)]++
		}
		for o := range numOps {
			got := float64(counts[o]) / draws
			if math.Abs(got-m[o]) > 0.005 || (m[o] == 0 && counts[o] > 0) {
				t.Errorf("workload %s: %s share %.4f, want %.2f", w, o, got, m[o])
			}
		}
	}
	if _, err := Workload("e").mix(); err == nil {
		t.Error("workload e accepted")
	}
}

// fakeClock moves only when told to: SleepUntil jumps to the time asked
// for, advance adds to it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(ctx context.Context, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	return ctx.Err()
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestScheduleDue(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	s := newSchedule(&fakeClock{now: t0}, t0, 400)
	for i, want := range []time.Duration{0, 2500 * time.Microsecond, 5 * time.Millisecond, 2500 * time.Millisecond} {
		n := []int64{0, 1, 2, 1000}[i]
		if got := s.due(n).Sub(t0); got != want {
			t.Errorf("due(%d) = +%v, want +%v", n, got, want)
		}
	}
}

// A worker that falls behind the rate starts each operation later than
// intended, and the latency counts from the intended start: the waiting
// shows (no coordinated omission). Without a rate, latency is the
// operation's own time.
func TestLatencyFromIntendedStart(t *testing.T) {
	const opTime = 25 * time.Millisecond
	for _, tt := range []struct {
		rate     float64
		wantOps  int64
		wantMax  time.Duration // the last operation's latency
		wantP50  time.Duration
		interval time.Duration
	}{
		// 100/s: due every 10ms, each takes 25ms, so operation i starts at
		// 25i ms and is due at 10i ms: latency 25+15i ms. Due times in the
		// 1s window: 100 operations.
		{rate: 100, wantOps: 100, wantMax: opTime + 99*15*time.Millisecond},
		// Unlimited: back to back, 1s/25ms = 40 operations of 25ms.
		{rate: 0, wantOps: 40, wantMax: opTime},
	} {
		t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
		clk := &fakeClock{now: t0}
		r := &runner{cfg: DefaultConfig(), clk: clk, keys: uniform(10), mix: mix{opRead: 1}}
		var due []time.Time
		r.exec = func(context.Context, *measurement, *worker, op, int, bool) error {
			due = append(due, clk.Now())
			clk.advance(opTime)
			return nil
		}
		m := &measurement{sched: newSchedule(clk, t0, tt.rate), start: t0, end: t0.Add(time.Second)}
		for o := range numOps {
			m.ops[o] = newOpStats()
		}
		r.cfg.Seed = testSeed
		r.work(context.Background(), m, 0)
		h := m.ops[opRead].total
		if h.TotalCount() != tt.wantOps {
			t.Errorf("rate %v: %d operations, want %d", tt.rate, h.TotalCount(), tt.wantOps)
		}
		if got := time.Duration(h.Max()) * time.Microsecond; math.Abs(float64(got-tt.wantMax)) > 0.001*float64(tt.wantMax) {
			t.Errorf("rate %v: max latency %v, want %v", tt.rate, got, tt.wantMax)
		}
		if tt.rate > 0 && len(due) > 3 && due[3].Sub(t0) != 3*opTime {
			t.Errorf("rate %v: the 4th operation started at +%v, want +%v", tt.rate, due[3].Sub(t0), 3*opTime)
		}
	}
}

// Operations due before the measured window (the warmup) are not counted.
func TestWarmupNotCounted(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	clk := &fakeClock{now: t0}
	r := &runner{cfg: DefaultConfig(), clk: clk, keys: uniform(10), mix: mix{opRead: 1}}
	r.exec = func(context.Context, *measurement, *worker, op, int, bool) error {
		clk.advance(10 * time.Millisecond)
		return nil
	}
	m := &measurement{sched: newSchedule(clk, t0, 0), start: t0.Add(500 * time.Millisecond), end: t0.Add(time.Second)}
	for o := range numOps {
		m.ops[o] = newOpStats()
	}
	r.work(context.Background(), m, 0)
	if n := m.ops[opRead].total.TotalCount(); n != 50 {
		t.Errorf("%d operations counted, want 50 (the second half)", n)
	}
}

func ctxToken(vv map[string]uint64, dots ...storage.Dot) string {
	var c storage.Context
	for _, a := range []string{"n1.1", "n2.1", "n3.1"} {
		if n := vv[a]; n > 0 {
			c.VV = append(c.VV, storage.Entry{Actor: a, Counter: n})
		}
	}
	return storage.EncodeContext(c.Join(storage.Context{Dots: dots}))
}

func TestStaleClassification(t *testing.T) {
	write := ctxToken(map[string]uint64{"n1.1": 3}, storage.Dot{Actor: "n2.1", Counter: 5})
	for _, tt := range []struct {
		name  string
		read  string
		fresh bool
	}{
		{"the same versions", write, true},
		{"a later version", ctxToken(map[string]uint64{"n1.1": 4, "n2.1": 5}), true},
		{"concurrent siblings, the write among them", ctxToken(map[string]uint64{"n1.1": 3, "n3.1": 9}, storage.Dot{Actor: "n2.1", Counter: 5}), true},
		{"the version before", ctxToken(map[string]uint64{"n1.1": 3}), false},
		{"another replica's version", ctxToken(map[string]uint64{"n1.1": 3, "n2.1": 4}), false},
		{"absent (404 of a key never written)", "", false},
	} {
		got, err := covers(tt.read, write)
		if err != nil || got != tt.fresh {
			t.Errorf("%s: covers = %v, %v; want %v", tt.name, got, err, tt.fresh)
		}
	}
	if _, err := covers("not-a-context", write); err == nil {
		t.Error("a mangled read context was accepted")
	}
	if got, err := covers(write, ""); err != nil || !got {
		t.Errorf("every read covers the empty context: %v, %v", got, err)
	}
}

// An update carries what the application knows of its key: by default the
// worker's own context joined with the latest acknowledged write.
func TestUpdateContext(t *testing.T) {
	own := ctxToken(map[string]uint64{"n1.1": 3})
	latest := ctxToken(map[string]uint64{"n2.1": 5})
	r := &runner{track: newTracker(4)}
	w := &worker{ctxs: map[int]string{1: own}}
	if _, ok := r.updateContext(w, 2); ok {
		t.Fatal("a context for a key nobody has seen")
	}
	if c, ok := r.updateContext(w, 1); !ok || c != own {
		t.Fatalf("before any acknowledged write: %q, %v; want the worker's own", c, ok)
	}
	r.track.acked(1, latest, time.Now())
	r.track.acked(2, latest, time.Now())
	c, ok := r.updateContext(w, 1)
	for _, part := range []string{own, latest} {
		if got, err := covers(c, part); !ok || err != nil || !got {
			t.Fatalf("joined context %q does not cover %q: %v %v", c, part, got, err)
		}
	}
	if c, ok := r.updateContext(w, 2); !ok || c == "" {
		t.Fatalf("a key only another worker wrote: %q, %v", c, ok)
	}
	r.cfg.WorkerContexts = true
	if c, _ := r.updateContext(w, 1); c != own {
		t.Fatalf("WorkerContexts: %q, want the worker's own", c)
	}
	r.cfg.PlainUpdates = true
	if _, ok := r.updateContext(w, 1); ok {
		t.Fatal("PlainUpdates sent a context")
	}
	if got := joinContexts("garbage", latest); got != latest {
		t.Fatalf("join with a mangled context: %q", got)
	}
}

func TestTrackerKeepsTheLatestAck(t *testing.T) {
	tr := newTracker(4)
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	if _, ok := tr.latest(1); ok {
		t.Fatal("a write known before any")
	}
	tr.acked(1, "second", t0.Add(time.Second))
	tr.acked(1, "first", t0) // acknowledged earlier, reported later
	tr.acked(1, "", t0.Add(time.Hour))
	if a, ok := tr.latest(1); !ok || a.ctx != "second" {
		t.Errorf("latest = %+v, %v; want the write acknowledged last", a, ok)
	}
	if s := (staleness{}).Share(); s != nil {
		t.Errorf("share of nothing = %v, want nil", *s)
	}
	if s := (staleness{Compared: 8, Stale: 2}).Share(); s == nil || *s != 0.25 {
		t.Errorf("share = %v, want 0.25", s)
	}
}

// points builds PBS counts: probes per delay and the fresh ones.
func points(probes int64, fresh ...int64) []PBSPoint {
	c := newPBSCounts()
	out := c.snapshot()
	for i := range out {
		out[i].Probes = probes
		out[i].Fresh = fresh[min(i, len(fresh)-1)]
	}
	return out
}

func TestPBSAggregation(t *testing.T) {
	for _, tt := range []struct {
		name     string
		pts      []PBSPoint
		text     string
		resolved bool
	}{
		{"fresh at once", points(2000, 2000), "0ms", true},
		{"fresh from 5ms", points(2000, 1900, 1990, 1997, 1998, 2000), "5ms", true},
		{"one stale in 1000 is 99.9%", points(1000, 990, 999), "1ms", true},
		{"never", points(5000, 4000, 4500, 4900, 4980), ">500ms", true},
		{"too few to resolve", points(40, 40), "0ms", false},
		{"too few, never", points(40, 30, 39), ">500ms", false},
		{"no probes", points(0, 0), "", false},
	} {
		text, ms, resolved := pbsFigure(tt.pts)
		if text != tt.text || resolved != tt.resolved || (ms == nil) != (text == "" || text[0] == '>') {
			t.Errorf("%s: %q %v %v; want %q resolved %v", tt.name, text, ms, resolved, tt.text, tt.resolved)
		}
	}
	c := newPBSCounts()
	c.add(0, true, false)
	c.add(0, false, false)
	c.add(0, false, true)
	if p := c.snapshot()[0]; p.Probes != 2 || p.Fresh != 1 || p.Failed != 1 || p.FreshShare() != 0.5 {
		t.Errorf("counts %+v", p)
	}
}

func TestDocument(t *testing.T) {
	for _, size := range []int{MinValueSize, 100, 1024, 65536} {
		d := document(1<<63, 1023, size)
		var v struct {
			Seq    uint64 `json:"seq"`
			Worker int    `json:"worker"`
		}
		if len(d) != size || json.Unmarshal(d, &v) != nil || v.Seq != 1<<63 || v.Worker != 1023 {
			t.Errorf("size %d: %d bytes %q", size, len(d), d[:min(len(d), 60)])
		}
	}
}

func TestParsePairs(t *testing.T) {
	got, err := ParsePairs("1/1, 2/2,1/3,3/1")
	if err != nil || len(got) != 4 || got[2] != (Pair{1, 3}) {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "2", "2/", "0/1", "1/x", "1/1,,2/2"} {
		if _, err := ParsePairs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	cfg := DefaultConfig()
	cfg.Pairs = []Pair{{4, 1}}
	if err := cfg.checkQuorums(3); err == nil {
		t.Error("R=4 accepted with N=3")
	}
	cfg = DefaultConfig()
	cfg.ValueSize, cfg.Workload, cfg.Concurrency = 10, "z", 0
	err = cfg.Validate()
	for _, want := range []string{"value size", "workload", "concurrency"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want a complaint about %s", err, want)
		}
	}
}

func sampleResults() []Result {
	share := 0.0125
	ms := 5.0
	pts := points(1200, 1100, 1150, 1199, 1200)
	return []Result{
		{N: 3, R: 1, W: 1, Workload: "a", Distribution: "zipfian", Routing: "key-aware", Records: 100, ValueSize: 1024,
			Concurrency: 8, Seed: 7, UpdateCtx: "last", Seconds: 2, Figures: Figures{Ops: 4000, OpsPerSec: 2000, P50Ms: 1.5, P95Ms: 3, P99Ms: 4.25,
				P999Ms: 9, MaxMs: 12}, Errors: 3, ErrorsTimeout: 1, ErrorsQuorum: 2,
			PerOp:        []OpResult{{Op: "read", Figures: Figures{Ops: 2000, P50Ms: 1}}, {Op: "update", Figures: Figures{Ops: 2000, P50Ms: 2}, Errors: 3}},
			ReadsChecked: 1600, StaleReads: 20, StaleShare: &share, ProbeRate: 20, PBS: pts, PBSProbes: 1200,
			PBST999: "5ms", PBST999Ms: &ms, PBSResolved: true},
		{N: 3, R: 2, W: 2, Workload: "a", Distribution: "zipfian", Routing: "key-aware", Records: 100, ValueSize: 1024,
			Concurrency: 8, Seed: 7, UpdateCtx: "last", Seconds: 2, Figures: Figures{Ops: 3000, OpsPerSec: 1500}, Interrupted: true},
	}
}

func TestCSVAndJSON(t *testing.T) {
	res := sampleResults()
	var b bytes.Buffer
	if err := writeCSV(&b, res); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("%d CSV rows, want a header and 2", len(rows))
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for name, want := range map[string][2]string{
		"r": {"1", "2"}, "ops_per_sec": {"2000", "1500"}, "p99_ms": {"4.250", "0.000"}, "errors_quorum": {"2", "0"},
		"stale_share": {"0.0125", ""}, "pbs_t999": {"5ms", ""}, "pbs_t999_ms": {"5", ""}, "update_ops": {"2000", ""},
		"rmw_ops": {"", ""}, "pbs_fresh_0ms": {"0.9166666666666666", ""}, "pbs_fresh_500ms": {"1", ""},
		"interrupted": {"false", "true"}, "seed": {"7", "7"},
	} {
		i, ok := col[name]
		if !ok {
			t.Errorf("no column %s", name)
			continue
		}
		if rows[1][i] != want[0] || rows[2][i] != want[1] {
			t.Errorf("%s = %q, %q; want %q, %q", name, rows[1][i], rows[2][i], want[0], want[1])
		}
	}
	b.Reset()
	if err := writeJSON(&b, res); err != nil {
		t.Fatal(err)
	}
	var back []Result
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || *back[0].StaleShare != 0.0125 || back[1].StaleShare != nil || back[0].PBS[4].Fresh != 1200 ||
		back[0].PerOp[1].Errors != 3 || !back[1].Interrupted {
		t.Errorf("JSON round trip: %+v", back)
	}
	var sum bytes.Buffer
	writeSummary(&sum, res)
	for _, want := range []string{"1.250% (20/1600)", "5ms (1200 probes)", "1500 (interrupted)", "3 (1/2/0)"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
	var svg bytes.Buffer
	if err := writeChart(&svg, res); err != nil || !strings.HasPrefix(svg.String(), "<svg") || !strings.Contains(svg.String(), ">5ms</text>") {
		t.Errorf("chart: %v\n%.300s", err, svg.String())
	}
}
