package antientropy

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are a Runner's running totals. Stats reads them; the Prometheus
// metrics are functions over them, so there is one source for both.
type counters struct {
	rounds, exchanges, differing, leaves, pulled, pushed, sent, received,
	rebuilds, fixed, purged, errors, backoffs atomic.Uint64
}

// Stats are a Runner's totals since it started.
type Stats struct {
	Rounds      uint64 `json:"rounds"`       // completed rounds
	Exchanges   uint64 `json:"exchanges"`    // partitions compared with a peer
	Differing   uint64 `json:"differing"`    // of which the roots differed
	Leaves      uint64 `json:"leaves"`       // differing leaves
	Pulled      uint64 `json:"pulled"`       // keys repaired here
	Pushed      uint64 `json:"pushed"`       // keys repaired at peers
	BytesSent   uint64 `json:"bytes_sent"`   // protocol bytes sent
	BytesRecv   uint64 `json:"bytes_recv"`   // protocol bytes received
	Rebuilds    uint64 `json:"rebuilds"`     // trees rebuilt
	LeavesFixed uint64 `json:"leaves_fixed"` // leaves a rebuild found wrong
	Purged      uint64 `json:"purged"`       // tombstones purged
	Errors      uint64 `json:"errors"`       // failed exchanges
	Backoffs    uint64 `json:"backoffs"`     // waits for foreground load
}

// Stats returns the totals so far.
func (r *Runner) Stats() Stats {
	c := &r.stats
	return Stats{
		Rounds: c.rounds.Load(), Exchanges: c.exchanges.Load(), Differing: c.differing.Load(),
		Leaves: c.leaves.Load(), Pulled: c.pulled.Load(), Pushed: c.pushed.Load(),
		BytesSent: c.sent.Load(), BytesRecv: c.received.Load(), Rebuilds: c.rebuilds.Load(),
		LeavesFixed: c.fixed.Load(), Purged: c.purged.Load(), Errors: c.errors.Load(), Backoffs: c.backoffs.Load(),
	}
}

// Register registers the Runner's metrics.
func (r *Runner) Register(reg prometheus.Registerer) error {
	c := &r.stats
	counter := func(name, help string, v *atomic.Uint64, labels prometheus.Labels) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "quorumkv_antientropy_" + name, Help: help, ConstLabels: labels,
		}, func() float64 { return float64(v.Load()) })
	}
	cs := []prometheus.Collector{
		counter("rounds_total", "Completed anti-entropy rounds (every kept partition compared with a peer).", &c.rounds, nil),
		counter("exchanges_total", "Partitions compared with a peer replica.", &c.exchanges, nil),
		counter("exchanges_differing_total", "Compared partitions whose tree roots differed.", &c.differing, nil),
		counter("leaves_differing_total", "Differing tree leaves found by exchanges.", &c.leaves, nil),
		counter("keys_repaired_total", "Keys an exchange changed, by direction: pulled (here) or pushed (at the peer).", &c.pulled, prometheus.Labels{"direction": "pulled"}),
		counter("keys_repaired_total", "Keys an exchange changed, by direction: pulled (here) or pushed (at the peer).", &c.pushed, prometheus.Labels{"direction": "pushed"}),
		counter("bytes_total", "Exchange protocol bytes, by direction.", &c.sent, prometheus.Labels{"direction": "sent"}),
		counter("bytes_total", "Exchange protocol bytes, by direction.", &c.received, prometheus.Labels{"direction": "received"}),
		counter("rebuilds_total", "Partition trees recomputed from data.", &c.rebuilds, nil),
		counter("leaves_fixed_total", "Tree leaves a rebuild found disagreeing with the data (changes that bypassed the write path).", &c.fixed, nil),
		counter("tombstones_purged_total", "Tombstones purged.", &c.purged, nil),
		counter("errors_total", "Failed exchanges.", &c.errors, nil),
		counter("backoffs_total", "Waits for foreground load to drop before an exchange.", &c.backoffs, nil),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "quorumkv_antientropy_last_round_timestamp_seconds",
			Help: "When this node last completed a full anti-entropy round (Unix seconds; 0: never).",
		}, func() float64 { return float64(r.lastRound.Load()) / 1e9 }),
	}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return err
		}
	}
	return nil
}
