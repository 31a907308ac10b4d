package bench

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quorumkv/quorumkv/client"
)

// Histogram bounds, microseconds: 1µs to a minute, 3 significant digits.
const (
	histMin = 1
	histMax = int64(time.Minute / time.Microsecond)
	histSig = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSig) }

// errKind classifies a failed operation.
type errKind int

const (
	errTimeout errKind = iota // the client's deadline passed (Timeout), or a network timeout
	errQuorum                 // 503 quorum_not_met: fewer than R or W replicas answered
	errOther                  // anything else: refused connections, 4xx, 5xx, decoding
	numErrKinds
)

func classify(err error) errKind {
	var q *client.QuorumError
	var ne net.Error
	switch {
	case errors.As(err, &q):
		return errQuorum
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return errTimeout
	}
	return errOther
}

// opStats is one operation type's latencies and errors, over the current
// progress interval and over the whole measurement. HdrHistograms are not
// safe for concurrent use: mu guards them.
type opStats struct {
	mu       sync.Mutex
	interval *hdrhistogram.Histogram
	total    *hdrhistogram.Histogram
	ivErrs   int64
	errs     [numErrKinds]int64
}

func newOpStats() *opStats { return &opStats{interval: newHist(), total: newHist()} }

// record adds one successful operation's latency.
func (s *opStats) record(d time.Duration) {
	us := max(d.Microseconds(), histMin)
	s.mu.Lock()
	_ = s.interval.RecordValue(min(us, histMax))
	_ = s.total.RecordValue(min(us, histMax))
	s.mu.Unlock()
}

// fail counts one failed operation.
func (s *opStats) fail(k errKind) {
	s.mu.Lock()
	s.ivErrs++
	s.errs[k]++
	s.mu.Unlock()
}

// tick returns the interval's histogram and error count and starts a new
// interval, along with the totals so far.
func (s *opStats) tick() (iv *hdrhistogram.Histogram, ivErrs int64, totalOps, totalErrs int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	iv, ivErrs = s.interval, s.ivErrs
	s.interval, s.ivErrs = newHist(), 0
	for _, e := range s.errs {
		totalErrs += e
	}
	return iv, ivErrs, s.total.TotalCount(), totalErrs
}

// latency is a histogram summary in milliseconds (microsecond resolution).
type latency struct {
	P50, P95, P99, P999, Max float64
}

func summarize(h *hdrhistogram.Histogram) latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return latency{
		P50:  ms(h.ValueAtQuantile(50)),
		P95:  ms(h.ValueAtQuantile(95)),
		P99:  ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)),
		Max:  ms(h.Max()),
	}
}
