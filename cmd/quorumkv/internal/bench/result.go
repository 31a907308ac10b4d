package bench

import (
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is one R/W combination's figures, with the configuration that
// produced them. Latencies are in milliseconds, from HdrHistograms of
// microseconds; with a rate they count from each operation's intended
// start.
type Result struct {
	N            int     `json:"n"`
	R            int     `json:"r"`
	W            int     `json:"w"`
	Workload     string  `json:"workload"`
	Distribution string  `json:"distribution"`
	Routing      string  `json:"routing"`
	Records      int     `json:"records"`
	ValueSize    int     `json:"value_size"`
	Concurrency  int     `json:"concurrency"`
	Rate         float64 `json:"rate"`           // target ops/s, 0: unlimited
	UpdateCtx    string  `json:"update_context"` // "last" or "none" (plain PUTs)
	Seed         uint64  `json:"seed"`
	Started      string  `json:"started"` // RFC 3339, when the measured window began
	Seconds      float64 `json:"seconds"` // length of the measured window
	Interrupted  bool    `json:"interrupted,omitempty"`

	Figures // of the successful operations of every type

	Errors        int64 `json:"errors"`
	ErrorsTimeout int64 `json:"errors_timeout"`
	ErrorsQuorum  int64 `json:"errors_quorum"`
	ErrorsOther   int64 `json:"errors_other"`

	PerOp []OpResult `json:"per_op"`

	NotFound     int64    `json:"not_found"`     // reads that found no value (counted as successful reads)
	SiblingsMean float64  `json:"siblings_mean"` // siblings per successful read
	SiblingsMax  int64    `json:"siblings_max"`
	ReadsChecked int64    `json:"reads_checked"` // reads that began after a write of their key was acknowledged
	StaleReads   int64    `json:"stale_reads"`   // of which missed that write
	StaleShare   *float64 `json:"stale_share"`   // StaleReads/ReadsChecked; null when nothing was checked

	ProbeRate   float64    `json:"probe_rate"`
	PBS         []PBSPoint `json:"pbs"`
	PBSProbes   int64      `json:"pbs_probes"`   // probe reads that answered at delay 0
	PBSSkipped  int64      `json:"pbs_skipped"`  // sampled writes not probed (too many probes in flight)
	PBST999Ms   *float64   `json:"pbs_t999_ms"`  // null: not reached by 500ms, or no probes
	PBST999     string     `json:"pbs_t999"`     // "2ms", ">500ms", or "" without probes
	PBSResolved bool       `json:"pbs_resolved"` // enough probes (1000 at that delay) to resolve 99.9%
	BadContexts int64      `json:"bad_contexts"` // reads whose context did not decode (not checked)
}

// OpResult is one operation type's figures.
type OpResult struct {
	Op string `json:"op"`
	Figures
	Errors int64 `json:"errors"`
}

// Figures are the throughput and latency percentiles of a set of
// successful operations.
type Figures struct {
	Ops       int64   `json:"ops"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50Ms     float64 `json:"p50_ms"`
	P95Ms     float64 `json:"p95_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p999_ms"`
	MaxMs     float64 `json:"max_ms"`
}

// figuresOf summarizes the latencies h holds, measured over secs seconds.
func figuresOf(h *hdrhistogram.Histogram, secs float64) Figures {
	f := Figures{Ops: h.TotalCount()}
	if secs > 0 {
		f.OpsPerSec = float64(f.Ops) / secs
	}
	lat := summarize(h)
	f.P50Ms, f.P95Ms, f.P99Ms, f.P999Ms, f.MaxMs = lat.P50, lat.P95, lat.P99, lat.P999, lat.Max
	return f
}

// result turns a finished measurement into its Result.
func (r *runner) result(m *measurement, measured time.Duration, interrupted bool) Result {
	cfg := r.cfg
	routing := "key-aware"
	if cfg.RoundRobin {
		routing = "round-robin"
	}
	res := Result{
		N: r.n, R: m.pair.R, W: m.pair.W,
		Workload: string(cfg.Workload), Distribution: string(cfg.Distribution), Routing: routing,
		Records: cfg.Records, ValueSize: cfg.ValueSize, Concurrency: cfg.Concurrency, Rate: cfg.Rate, Seed: cfg.Seed,
		UpdateCtx: updateContext(cfg.PlainUpdates),
		Started:   m.start.UTC().Format(time.RFC3339), Seconds: measured.Seconds(), Interrupted: interrupted,
		NotFound: m.notFound.Load(), SiblingsMax: m.maxSibs.Load(),
		ReadsChecked: m.compared.Load(), StaleReads: m.stale.Load(), BadContexts: m.badCtx.Load(),
		ProbeRate: cfg.ProbeRate,
	}
	all := newHist()
	secs := measured.Seconds()
	for o := range numOps {
		if r.mix[o] == 0 {
			continue
		}
		s := m.ops[o]
		s.mu.Lock()
		all.Merge(s.total)
		f := figuresOf(s.total, secs)
		errs := s.errs
		s.mu.Unlock()
		var nErrs int64
		for _, e := range errs {
			nErrs += e
		}
		res.ErrorsTimeout += errs[errTimeout]
		res.ErrorsQuorum += errs[errQuorum]
		res.ErrorsOther += errs[errOther]
		res.PerOp = append(res.PerOp, OpResult{Op: o.String(), Figures: f, Errors: nErrs})
	}
	res.Errors = res.ErrorsTimeout + res.ErrorsQuorum + res.ErrorsOther
	res.Figures = figuresOf(all, secs)
	if reads := m.reads.Load(); reads > 0 {
		res.SiblingsMean = float64(m.siblings.Load()) / float64(reads)
	}
	res.StaleShare = staleness{Compared: res.ReadsChecked, Stale: res.StaleReads}.Share()
	if m.probe != nil {
		res.PBS = m.probe.counts.snapshot()
		res.PBSProbes = res.PBS[0].Probes
		res.PBSSkipped = m.probe.skipped.Load()
		res.PBST999, res.PBST999Ms, res.PBSResolved = pbsFigure(res.PBS)
	}
	return res
}

// pbsFigure is t999 as reported: the delay as text and number.
func pbsFigure(points []PBSPoint) (text string, ms *float64, resolved bool) {
	d, ok, resolved := t999(points)
	switch {
	case len(points) == 0 || points[0].Probes == 0:
		return "", nil, false
	case !ok:
		return fmt.Sprintf(">%gms", points[len(points)-1].DelayMs), nil, resolved
	}
	return fmt.Sprintf("%gms", d), &d, resolved
}

func updateContext(plain bool) string {
	if plain {
		return "none"
	}
	return "last"
}
