package bench

import (
	"fmt"
	"sync"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// ack is an acknowledged write: its X-Context and when the client saw the
// acknowledgement.
type ack struct {
	ctx string
	at  time.Time
}

// tracker keeps the most recently acknowledged write of every key.
type tracker struct {
	locks [256]sync.Mutex // striped by key index
	last  []ack
}

func newTracker(records int) *tracker { return &tracker{last: make([]ack, records)} }

// acked records a write of key i acknowledged at at, unless a later one
// is already known (concurrent writers finish out of order).
func (t *tracker) acked(i int, ctx string, at time.Time) {
	if ctx == "" {
		return
	}
	mu := &t.locks[i%len(t.locks)]
	mu.Lock()
	if at.After(t.last[i].at) {
		t.last[i] = ack{ctx, at}
	}
	mu.Unlock()
}

// latest returns the last acknowledged write of key i; ok is false when
// none is known.
func (t *tracker) latest(i int) (a ack, ok bool) {
	mu := &t.locks[i%len(t.locks)]
	mu.Lock()
	a = t.last[i]
	mu.Unlock()
	return a, a.ctx != ""
}

// covers reports whether a read's context covers a write's: the read saw
// the write, or a write that superseded it. A read that does not, although
// the write was acknowledged before the read began, is stale.
func covers(readCtx, writeCtx string) (bool, error) {
	w, err := storage.DecodeContext(writeCtx)
	if err != nil {
		return false, fmt.Errorf("a write's context: %w", err)
	}
	r, err := storage.DecodeContext(readCtx)
	if err != nil {
		return false, fmt.Errorf("a read's context: %w", err)
	}
	return r.Descends(w), nil
}

// joinContexts joins two context tokens (either may be empty); if one does
// not decode, the other is returned.
func joinContexts(a, b string) string {
	ca, errA := storage.DecodeContext(a)
	cb, errB := storage.DecodeContext(b)
	switch {
	case errA != nil:
		return b
	case errB != nil:
		return a
	}
	return storage.EncodeContext(ca.Join(cb))
}

// staleness counts reads that had an acknowledged write to compare with.
type staleness struct {
	Compared int64 // reads that began after some write of their key was acknowledged
	Stale    int64 // of which did not cover that write
}

// Share is Stale/Compared, or nil when nothing was compared.
func (s staleness) Share() *float64 {
	if s.Compared == 0 {
		return nil
	}
	v := float64(s.Stale) / float64(s.Compared)
	return &v
}

// probeDelays are the PBS probe reads' delays after a write's
// acknowledgement.
var probeDelays = []time.Duration{
	0, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	200 * time.Millisecond, 500 * time.Millisecond,
}

const (
	// pbsTarget is the share of fresh probes t99.9 asks for.
	pbsTarget = 0.999
	// pbsResolving is the number of probes at a delay that can tell 99.9%
	// from 100%: with fewer, one stale read is already below the target,
	// and none says little.
	pbsResolving = 1000
)

// PBSPoint is what the probe reads at one delay found.
type PBSPoint struct {
	DelayMs float64 `json:"delay_ms"`
	Probes  int64   `json:"probes"` // probe reads that answered
	Fresh   int64   `json:"fresh"`  // of which covered the write
	Failed  int64   `json:"failed"` // probe reads that failed (not in Probes)
}

// FreshShare is Fresh/Probes, 0 without probes.
func (p PBSPoint) FreshShare() float64 {
	if p.Probes == 0 {
		return 0
	}
	return float64(p.Fresh) / float64(p.Probes)
}

// pbsCounts accumulates probe outcomes per delay.
type pbsCounts struct {
	mu     sync.Mutex
	points []PBSPoint
}

func newPBSCounts() *pbsCounts {
	c := &pbsCounts{points: make([]PBSPoint, len(probeDelays))}
	for i, d := range probeDelays {
		c.points[i].DelayMs = float64(d) / float64(time.Millisecond)
	}
	return c
}

// add records the outcome of the probe read at probeDelays[i].
func (c *pbsCounts) add(i int, fresh, failed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := &c.points[i]
	switch {
	case failed:
		p.Failed++
	case fresh:
		p.Probes++
		p.Fresh++
	default:
		p.Probes++
	}
}

func (c *pbsCounts) snapshot() []PBSPoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]PBSPoint(nil), c.points...)
}

// t999 returns the smallest delay at which at least 99.9% of the probe
// reads were fresh; ok is false when no delay reached it (">500ms") or
// there were no probes. resolved reports whether that delay (or, when none
// reached the target, the last one) had enough probes for 99.9% to mean
// something: at least 1000, so that a single stale read shows.
func t999(points []PBSPoint) (delayMs float64, ok, resolved bool) {
	if len(points) == 0 || points[0].Probes == 0 {
		return 0, false, false
	}
	for _, p := range points {
		if p.Probes > 0 && p.FreshShare() >= pbsTarget {
			return p.DelayMs, true, p.Probes >= pbsResolving
		}
	}
	last := points[len(points)-1]
	return 0, false, last.Probes >= pbsResolving
}
