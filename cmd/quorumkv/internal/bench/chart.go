package bench

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
)

// The chart is a small hand-written SVG: two panels of bars, latency
// percentiles (log scale) and stale share with PBS t99.9, one group per R/W
// combination. A chart library would pull in fonts and image packages for
// this much.
const (
	chartW, chartH   = 960, 440
	panelTop         = 80
	panelBottom      = chartH - 80
	latLeft, latRght = 70, 590
	stLeft, stRight  = 660, 930
)

var pctColors = [4]string{"#9ecae1", "#4292c6", "#08519c", "#08306b"}
var pctNames = [4]string{"p50", "p95", "p99", "p99.9"}

func writeChart(w io.Writer, results []Result) error {
	b := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartW, chartH, chartW, chartH)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	if len(results) > 0 {
		r0 := results[0]
		p(`<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", latLeft,
			esc(fmt.Sprintf("quorumkv bench: workload %s, %s over %d keys, %d workers, %s routing, N=%d", r0.Workload,
				r0.Distribution, r0.Records, r0.Concurrency, r0.Routing, r0.N)))
		p(`<text x="%d" y="40" font-size="11" fill="#555">%s</text>`+"\n", latLeft,
			esc(fmt.Sprintf("%d-byte values, %s, %.0fs measured per combination, seed %d, started %s", r0.ValueSize,
				rateString(r0.Rate), r0.Seconds, r0.Seed, r0.Started)))
	}
	latencyPanel(p, results)
	stalePanel(p, results)
	p("</svg>\n")
	return b.Flush()
}

func esc(s string) string { return html.EscapeString(s) }

// latencyPanel draws p50..p99.9 per combination on a log scale.
func latencyPanel(p func(string, ...any), results []Result) {
	p(`<text x="%d" y="%d" font-weight="bold">Latency (ms, log scale)</text>`+"\n", latLeft, panelTop-22)
	lo, hi := math.Inf(1), 0.0
	for _, r := range results {
		for _, v := range []float64{r.P50Ms, r.P95Ms, r.P99Ms, r.P999Ms} {
			if v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	dLo, dHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dHi == dLo {
		dHi++
	}
	y := func(v float64) float64 {
		if v <= 0 {
			return panelBottom
		}
		f := (math.Log10(v) - dLo) / (dHi - dLo)
		return panelBottom - math.Max(0, f)*(panelBottom-panelTop)
	}
	for d := dLo; d <= dHi; d++ {
		v := math.Pow(10, d)
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", latLeft, latRght, y(v), y(v))
		p(`<text x="%d" y="%.1f" text-anchor="end" dy="4">%s</text>`+"\n", latLeft-6, y(v), tickLabel(v))
	}
	axes(p, latLeft, latRght)
	groups(p, results, latLeft, latRght, func(i int, x0, gw float64) {
		r := results[i]
		bw := gw * 0.8 / 4
		for k, v := range []float64{r.P50Ms, r.P95Ms, r.P99Ms, r.P999Ms} {
			x := x0 + gw*0.1 + float64(k)*bw
			p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>R=%d W=%d %s %s</title></rect>`+"\n",
				x, y(v), bw-1, panelBottom-y(v), pctColors[k], r.R, r.W, pctNames[k], fmtMs(v))
			if k == 3 {
				p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", x+bw/2, y(v)-3, fmtMs(v))
			}
		}
		t := fmt.Sprintf("%.0f ops/s", r.OpsPerSec)
		if r.Errors > 0 {
			t += fmt.Sprintf(", %d errors", r.Errors)
		}
		p(`<text x="%.1f" y="%d" text-anchor="middle" font-size="10">%s</text>`+"\n", x0+gw/2, panelBottom+30, esc(t))
	})
	for k, name := range pctNames {
		x := latLeft + 10 + k*70
		p(`<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			x, chartH-28, pctColors[k], x+16, chartH-18, name)
	}
}

// stalePanel draws the stale share per combination, labelled with PBS
// t99.9 and the probe count.
func stalePanel(p func(string, ...any), results []Result) {
	p(`<text x="%d" y="%d" font-weight="bold">Stale reads (%%) and PBS t99.9</text>`+"\n", stLeft, panelTop-22)
	hi := 0.0
	for _, r := range results {
		if r.StaleShare != nil {
			hi = max(hi, *r.StaleShare*100)
		}
	}
	top := niceCeil(hi)
	y := func(v float64) float64 { return panelBottom - v/top*(panelBottom-panelTop) }
	for k := 0; k <= 4; k++ {
		v := top * float64(k) / 4
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", stLeft, stRight, y(v), y(v))
		p(`<text x="%d" y="%.1f" text-anchor="end" dy="4">%s%%</text>`+"\n", stLeft-6, y(v), trimFloat(v))
	}
	axes(p, stLeft, stRight)
	groups(p, results, stLeft, stRight, func(i int, x0, gw float64) {
		r := results[i]
		cx := x0 + gw/2
		label, ly := "no reads checked", float64(panelBottom)
		if r.StaleShare != nil {
			v := *r.StaleShare * 100
			ly = y(v)
			p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#e6550d"/>`+"\n", x0+gw*0.25, ly, gw*0.5, panelBottom-ly)
			label = fmt.Sprintf("%.2f%%", v)
		}
		p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", cx, ly-3, esc(label))
		t := "-"
		if r.PBST999 != "" {
			t = r.PBST999
			if !r.PBSResolved {
				t += "*"
			}
		}
		p(`<text x="%.1f" y="%d" text-anchor="middle" font-size="10">t99.9</text>`+"\n", cx, panelBottom+30)
		p(`<text x="%.1f" y="%d" text-anchor="middle" font-size="10">%s</text>`+"\n", cx, panelBottom+42, esc(t))
	})
	p(`<text x="%d" y="%d" font-size="10">* fewer than %d probes: 99.9%% not resolved</text>`+"\n", stLeft, chartH-18, pbsResolving)
}

// axes draws the x and y axis lines of a panel.
func axes(p func(string, ...any), left, right int) {
	p(`<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, right, panelBottom, panelBottom)
	p(`<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, left, panelTop, panelBottom)
}

// groups lays out one group per result between left and right, labels it
// with its R/W, and calls draw with its x and width.
func groups(p func(string, ...any), results []Result, left, right int, draw func(i int, x0, gw float64)) {
	if len(results) == 0 {
		return
	}
	gw := float64(right-left) / float64(len(results))
	for i, r := range results {
		x0 := float64(left) + float64(i)*gw
		draw(i, x0, gw)
		p(`<text x="%.1f" y="%d" text-anchor="middle">R=%d W=%d</text>`+"\n", x0+gw/2, panelBottom+16, r.R, r.W)
	}
}

func tickLabel(v float64) string {
	if v >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	return trimFloat(v)
}

func trimFloat(v float64) string { return fmt.Sprintf("%g", math.Round(v*1e4)/1e4) }

// niceCeil rounds a percentage up to 1, 2 or 5 times a power of ten (at
// least 0.1%), for the stale panel's scale.
func niceCeil(v float64) float64 {
	if v <= 0.1 {
		return 0.1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*e {
			return m * e
		}
	}
	return 10 * e
}
