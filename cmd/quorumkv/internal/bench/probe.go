package bench

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quorumkv/quorumkv/client"
)

// prober runs PBS probes (Bailis et al., "Probabilistically Bounded
// Staleness", VLDB 2012): for a sample of acknowledged writes, reads of the
// key at R at fixed delays after the acknowledgement, each recording
// whether it saw the write. Each read starts at its own delay, whatever
// the others take. Probe reads are not workload operations: they count in
// no latency or throughput figure.
type prober struct {
	r      *runner
	pair   Pair
	every  time.Duration // at most one probe per this
	counts *pbsCounts

	mu      sync.Mutex
	nextAt  time.Time
	active  atomic.Int64
	skipped atomic.Int64 // sampled writes not probed: maxActiveProbes were running
	ctx     context.Context
	wg      sync.WaitGroup
}

// newProber probes at most rate writes per second. Probes run under ctx:
// those started in the measured window finish after it.
func newProber(ctx context.Context, r *runner, p Pair, rate float64) *prober {
	return &prober{ctx: ctx, r: r, pair: p, every: time.Duration(float64(time.Second) / rate), counts: newPBSCounts()}
}

// offer probes the write of key k acknowledged at at, if the sampling rate
// allows one now.
func (p *prober) offer(k int, writeCtx string, at time.Time) {
	if writeCtx == "" {
		return
	}
	p.mu.Lock()
	if at.Before(p.nextAt) {
		p.mu.Unlock()
		return
	}
	p.nextAt = at.Add(p.every)
	p.mu.Unlock()
	if p.active.Add(1) > maxActiveProbes {
		p.active.Add(-1)
		p.skipped.Add(1)
		return
	}
	p.wg.Go(func() {
		defer p.active.Add(-1)
		p.probe(k, writeCtx, at)
	})
}

// probe reads key k once at each of probeDelays after at.
func (p *prober) probe(k int, writeCtx string, at time.Time) {
	var wg sync.WaitGroup
	for i, d := range probeDelays {
		wg.Go(func() {
			if p.r.clk.SleepUntil(p.ctx, at.Add(d)) != nil {
				return
			}
			res, err := p.r.c.Get(p.ctx, p.r.cfg.Bucket, keyName(k), client.R(p.pair.R), client.Timeout(p.r.cfg.Timeout))
			if errors.Is(err, client.ErrNotFound) {
				err = nil
			}
			if p.ctx.Err() != nil {
				return
			}
			if err != nil {
				p.counts.add(i, false, true)
				return
			}
			fresh, err := covers(res.Context, writeCtx)
			p.counts.add(i, fresh, err != nil)
		})
	}
	wg.Wait()
}

// wait waits for the probes in flight.
func (p *prober) wait() { p.wg.Wait() }
