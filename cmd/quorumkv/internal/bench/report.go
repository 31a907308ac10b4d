package bench

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"
)

// progressLine is one operation type's figures over one interval.
type progressLine struct {
	elapsed   time.Duration // since the measured window began
	op        op
	errs      int64 // in the interval
	totalErrs int64
	rate      float64 // successful ops/s in the interval
	cumRate   float64 // successful ops/s since the window began
	lat       latency // of the interval
}

func writeProgress(w io.Writer, l progressLine) {
	lat := "no operation completed"
	if l.rate > 0 {
		lat = fmt.Sprintf("p50 %s  p95 %s  p99 %s  max %s", fmtMs(l.lat.P50), fmtMs(l.lat.P95), fmtMs(l.lat.P99), fmtMs(l.lat.Max))
	}
	fmt.Fprintf(w, "%6.1fs %-6s %8.0f ops/s (cum %8.0f)  errors %d (total %d)  %s\n",
		l.elapsed.Seconds(), l.op, l.rate, l.cumRate, l.errs, l.totalErrs, lat)
}

// fmtMs prints milliseconds with three significant digits or so.
func fmtMs(ms float64) string {
	switch {
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	case ms < 100:
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
}

// staleText is the stale share with its counts, "-" when nothing was
// checked.
func staleText(r Result) string {
	if r.StaleShare == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f%% (%d/%d)", *r.StaleShare*100, r.StaleReads, r.ReadsChecked)
}

// pbsText is t99.9 with its probe count, and "unresolved" when too few
// probes were made to tell 99.9% from 100%.
func pbsText(r Result) string {
	if r.PBST999 == "" {
		return "-"
	}
	s := fmt.Sprintf("%s (%d probes", r.PBST999, r.PBSProbes)
	if !r.PBSResolved {
		s += fmt.Sprintf(", <%d: unresolved", pbsResolving)
	}
	return s + ")"
}

// writeSummary prints one row per combination.
func writeSummary(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "N\tR\tW\tWORKLOAD\tOPS/S\tP50\tP95\tP99\tP99.9\tERRORS (t/q/o)\tSTALE\tPBS t99.9\tSIBLINGS (mean/max)")
	for _, r := range results {
		mark := ""
		if r.Interrupted {
			mark = " (interrupted)"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%.0f%s\t%s\t%s\t%s\t%s\t%d (%d/%d/%d)\t%s\t%s\t%.2f/%d\n",
			r.N, r.R, r.W, r.Workload, r.OpsPerSec, mark, fmtMs(r.P50Ms), fmtMs(r.P95Ms), fmtMs(r.P99Ms), fmtMs(r.P999Ms),
			r.Errors, r.ErrorsTimeout, r.ErrorsQuorum, r.ErrorsOther, staleText(r), pbsText(r), r.SiblingsMean, r.SiblingsMax)
	}
	tw.Flush()
}

// writeFiles writes results.csv, results.json and chart.svg into dir.
func writeFiles(dir string, results []Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	write := func(name string, fn func(io.Writer) error) error {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		return errors.Join(fn(f), f.Close())
	}
	return errors.Join(
		write("results.csv", func(w io.Writer) error { return writeCSV(w, results) }),
		write("results.json", func(w io.Writer) error { return writeJSON(w, results) }),
		write("chart.svg", func(w io.Writer) error { return writeChart(w, results) }),
	)
}

func writeJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

// csvHeader names the CSV columns: the configuration, the figures of all
// operations, per operation type, and the fresh share at each probe delay.
func csvHeader() []string {
	h := []string{"n", "r", "w", "workload", "distribution", "routing", "records", "value_size", "concurrency", "rate", "update_context", "seed",
		"started", "seconds", "interrupted", "ops", "ops_per_sec", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms",
		"errors", "errors_timeout", "errors_quorum", "errors_other"}
	for o := range numOps {
		for _, f := range []string{"ops", "ops_per_sec", "p50_ms", "p99_ms", "p999_ms", "errors"} {
			h = append(h, o.String()+"_"+f)
		}
	}
	h = append(h, "not_found", "siblings_mean", "siblings_max", "reads_checked", "stale_reads", "stale_share",
		"probe_rate", "pbs_probes", "pbs_skipped", "pbs_t999", "pbs_t999_ms", "pbs_resolved")
	for _, d := range probeDelays {
		h = append(h, fmt.Sprintf("pbs_fresh_%gms", float64(d)/float64(time.Millisecond)))
	}
	return h
}

func writeCSV(w io.Writer, results []Result) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(csvHeader())
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	ms := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	opt := func(v *float64) string {
		if v == nil {
			return ""
		}
		return f(*v)
	}
	for _, r := range results {
		row := []string{i(int64(r.N)), i(int64(r.R)), i(int64(r.W)), r.Workload, r.Distribution, r.Routing,
			i(int64(r.Records)), i(int64(r.ValueSize)), i(int64(r.Concurrency)), f(r.Rate), r.UpdateCtx, strconv.FormatUint(r.Seed, 10),
			r.Started, f(r.Seconds), strconv.FormatBool(r.Interrupted), i(r.Ops), f(r.OpsPerSec),
			ms(r.P50Ms), ms(r.P95Ms), ms(r.P99Ms), ms(r.P999Ms), ms(r.MaxMs),
			i(r.Errors), i(r.ErrorsTimeout), i(r.ErrorsQuorum), i(r.ErrorsOther)}
		for o := range numOps {
			cells := make([]string, 6) // empty for an operation the workload has not
			for _, p := range r.PerOp {
				if p.Op == o.String() {
					cells = []string{i(p.Ops), f(p.OpsPerSec), ms(p.P50Ms), ms(p.P99Ms), ms(p.P999Ms), i(p.Errors)}
				}
			}
			row = append(row, cells...)
		}
		row = append(row, i(r.NotFound), f(r.SiblingsMean), i(r.SiblingsMax), i(r.ReadsChecked), i(r.StaleReads), opt(r.StaleShare),
			f(r.ProbeRate), i(r.PBSProbes), i(r.PBSSkipped), r.PBST999, opt(r.PBST999Ms), strconv.FormatBool(r.PBSResolved))
		for k := range probeDelays {
			cell := ""
			if k < len(r.PBS) && r.PBS[k].Probes > 0 {
				cell = f(r.PBS[k].FreshShare())
			}
			row = append(row, cell)
		}
		_ = cw.Write(row)
	}
	cw.Flush()
	return cw.Error()
}
