package antientropy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/quorumkv/quorumkv/storage"
)

// Config tunes a Runner. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// Interval is the pause between the end of one round and the start of
	// the next, jittered by ±25% so that nodes do not synchronize. In a
	// round every partition this node keeps is compared with one live peer
	// replica, a different one each round. Default 1m.
	Interval time.Duration
	// ExchangeRate bounds exchanges that descend into a partition (its
	// roots differed), per second. Comparing roots is batched, 256
	// partitions per request, and limited by ByteRate only. Default 20.
	ExchangeRate float64
	// ByteRate bounds the protocol bytes sent and received, per second.
	// Default 8 MiB.
	ByteRate float64
	// RebuildInterval is how often each partition's tree is recomputed from
	// its data, to find changes that bypassed the write path. Rebuilds are
	// spread evenly over the interval, one partition at a time. Default
	// 24h.
	RebuildInterval time.Duration
	// TombstoneGrace is how long a tombstone is kept at least. It must
	// exceed the longest a hint can wait (storage.HintConfig.MaxSlowAge)
	// so that no delayed hint can bring back what a purged tombstone
	// deleted. Default 6h.
	TombstoneGrace time.Duration
	// PurgeBatch bounds the tombstones of one partition considered per
	// purge pass. Default 1024.
	PurgeBatch int
	// Batch bounds the keys per Read or Apply request. Default 256.
	Batch int
	// CallTimeout is the deadline of one protocol request. Default 10s.
	CallTimeout time.Duration
	// BusyWait is the longest an exchange waits for foreground load to
	// drop (Cluster.Busy) before it goes ahead anyway, so that repair is
	// slowed, never starved. Default 10s.
	BusyWait time.Duration
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Interval:        time.Minute,
		ExchangeRate:    20,
		ByteRate:        8 << 20,
		RebuildInterval: 24 * time.Hour,
		TombstoneGrace:  6 * time.Hour,
		PurgeBatch:      1024,
		Batch:           256,
		CallTimeout:     10 * time.Second,
		BusyWait:        10 * time.Second,
		Logger:          slog.Default(),
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Interval <= 0 {
		c.Interval = d.Interval
	}
	if c.ExchangeRate <= 0 {
		c.ExchangeRate = d.ExchangeRate
	}
	if c.ByteRate <= 0 {
		c.ByteRate = d.ByteRate
	}
	if c.RebuildInterval <= 0 {
		c.RebuildInterval = d.RebuildInterval
	}
	if c.TombstoneGrace <= 0 {
		c.TombstoneGrace = d.TombstoneGrace
	}
	if c.PurgeBatch <= 0 {
		c.PurgeBatch = d.PurgeBatch
	}
	if c.Batch <= 0 {
		c.Batch = d.Batch
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = d.CallTimeout
	}
	if c.BusyWait <= 0 {
		c.BusyWait = d.BusyWait
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return c
}

// Cluster is what a Runner needs to know about the cluster, from this
// node's current view.
type Cluster interface {
	// Partitions lists the partitions whose data this node keeps.
	Partitions() []uint32
	// Replicas lists the other nodes that keep partition p.
	Replicas(p uint32) []string
	// Members lists every other member that has not been removed.
	Members() []string
	// Alive reports whether the failure detector considers node up.
	Alive(node string) bool
	// Settled reports whether no transfer of p is pending.
	Settled(p uint32) bool
	// Busy reports whether foreground load is high enough that background
	// work should wait.
	Busy() bool
	// Call sends a protocol request to node (see Remote).
	Call(ctx context.Context, node, op string, body []byte) ([]byte, error)
}

// rootBatch is how many partitions' roots one request compares.
const rootBatch = 256

// Runner runs a node's anti-entropy: exchange rounds, tree rebuilds and
// tombstone purges.
type Runner struct {
	cfg     Config
	cluster Cluster
	store   Store
	local   Local
	log     *slog.Logger

	exchanges *rate.Limiter
	bytes     *rate.Limiter

	mu    sync.Mutex
	locks map[uint32]*sync.Mutex // one exchange, rebuild or purge per partition at a time
	stale map[uint32]bool        // not rebuilt yet since the store opened with stale trees
	rng   *rand.Rand

	rounds    atomic.Uint64
	lastRound atomic.Int64 // Unix nanoseconds
	stats     counters
}

// New returns a Runner over this node's store. Start it with Run.
func New(cfg Config, cluster Cluster, store Store) *Runner {
	cfg = cfg.withDefaults()
	return &Runner{
		cfg:       cfg,
		cluster:   cluster,
		store:     store,
		local:     Local{Store: store},
		log:       cfg.Logger.With("component", "antientropy"),
		exchanges: rate.NewLimiter(rate.Limit(cfg.ExchangeRate), max(1, int(cfg.ExchangeRate))),
		bytes:     rate.NewLimiter(rate.Limit(cfg.ByteRate), max(1, int(cfg.ByteRate))),
		locks:     map[uint32]*sync.Mutex{},
		stale:     map[uint32]bool{},
		rng:       rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

// Local returns the Replica that answers peers' protocol requests.
func (r *Runner) Local() Local { return r.local }

// Run runs rounds, rebuilds and purges until ctx ends. If the store's
// trees may be stale, every partition is rebuilt first, one at a time,
// while the others keep exchanging.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if r.store.TreeStale() {
		parts := r.cluster.Partitions()
		r.mu.Lock()
		for _, p := range parts {
			r.stale[p] = true
		}
		r.mu.Unlock()
		wg.Go(func() { r.rebuildStale(ctx, parts) })
	}
	wg.Go(func() { r.rebuildLoop(ctx) })
	t := time.NewTimer(r.jitter(r.cfg.Interval) / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res := r.round(ctx, r.cluster.Partitions(), false)
		if ctx.Err() != nil {
			return
		}
		if res.Errors > 0 {
			r.log.Warn("anti-entropy round incomplete", "exchanges", res.Exchanges, "errors", res.Errors)
		}
		if n := r.purge(ctx); n > 0 {
			r.log.Info("purged tombstones", "count", n)
		}
		t.Reset(r.jitter(r.cfg.Interval))
	}
}

// Repair exchanges the given partitions (all this node keeps if parts is
// empty) with every live peer replica now, and returns what it did. With
// rebuild, each partition's tree is first recomputed from its data.
func (r *Runner) Repair(ctx context.Context, parts []uint32, rebuild bool) (Result, error) {
	kept := r.cluster.Partitions()
	if len(parts) == 0 {
		parts = kept
	}
	for _, p := range parts {
		if !slices.Contains(kept, p) {
			return Result{}, fmt.Errorf("%w: partition %d", ErrNotReplica, p)
		}
	}
	if rebuild {
		for _, p := range parts {
			if err := ctx.Err(); err != nil {
				return Result{}, err
			}
			if _, err := r.Rebuild(p); err != nil {
				return Result{}, err
			}
		}
	}
	res := r.round(ctx, parts, true)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if res.Errors > 0 {
		return res, fmt.Errorf("antientropy: %d of %d exchanges failed (see the node's log)", res.Errors, res.Exchanges+res.Errors)
	}
	return res, nil
}

// LastRound returns when this node last completed a round in which every
// partition it keeps was compared with a peer without error (zero if
// never).
func (r *Runner) LastRound() time.Time {
	if ns := r.lastRound.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// round compares every partition in parts with one live peer replica (all
// of them with allPeers), descending into those that differ.
func (r *Runner) round(ctx context.Context, parts []uint32, allPeers bool) Result {
	n := r.rounds.Add(1)
	byPeer := map[string][]uint32{}
	for _, p := range parts {
		var live []string
		for _, node := range r.cluster.Replicas(p) {
			if r.cluster.Alive(node) {
				live = append(live, node)
			}
		}
		slices.Sort(live)
		switch {
		case len(live) == 0:
		case allPeers:
			for _, node := range live {
				byPeer[node] = append(byPeer[node], p)
			}
		default:
			// Rotate through the peers round by round, so that every pair
			// is compared within len(live) rounds.
			node := live[(n+uint64(p))%uint64(len(live))]
			byPeer[node] = append(byPeer[node], p)
		}
	}
	var res Result
	for _, node := range slices.Sorted(maps.Keys(byPeer)) {
		ps := byPeer[node]
		r.mu.Lock()
		r.rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		r.mu.Unlock()
		peer := r.remote(node)
		for chunk := range slices.Chunk(ps, rootBatch) {
			if ctx.Err() != nil {
				return res
			}
			res.Add(r.compare(ctx, node, peer, chunk))
		}
	}
	if !allPeers && res.Errors == 0 && ctx.Err() == nil {
		r.lastRound.Store(time.Now().UnixNano())
		r.stats.rounds.Add(1)
	}
	return res
}

// compare compares the roots of parts with peer's and exchanges those that
// differ.
func (r *Runner) compare(ctx context.Context, node string, peer Replica, parts []uint32) Result {
	var res Result
	mine, err := r.local.Roots(ctx, parts)
	if err == nil {
		var theirs []uint64
		cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		theirs, err = peer.Roots(cctx, parts)
		cancel()
		if err == nil {
			for i, p := range parts {
				res.Add(r.exchangeIfDiffers(ctx, node, peer, p, mine[i], theirs[i]))
			}
			return res
		}
	}
	r.log.Warn("comparing roots failed", "peer", node, "partitions", len(parts), "err", err)
	res.Errors += len(parts)
	r.stats.errors.Add(uint64(len(parts)))
	return res
}

func (r *Runner) exchangeIfDiffers(ctx context.Context, node string, peer Replica, p uint32, mine, theirs uint64) Result {
	if mine == NoRoot || theirs == NoRoot || r.isStale(p) {
		// One of us no longer keeps p (the views differ for a moment), or
		// this node's tree of p awaits its startup rebuild.
		return Result{}
	}
	r.stats.exchanges.Add(1)
	res := Result{Exchanges: 1}
	if mine == theirs {
		return res
	}
	res.Differing = 1
	r.stats.differing.Add(1)
	r.waitIdle(ctx)
	if err := r.exchanges.Wait(ctx); err != nil {
		res.Errors = 1
		return res
	}
	unlock := r.lock(p)
	defer unlock()
	x, err := Exchange(ctx, p, r.local, peer, time.Now().Add(-r.cfg.TombstoneGrace).UnixNano(), r.cfg.Batch)
	r.stats.leaves.Add(uint64(x.Leaves))
	r.stats.pulled.Add(uint64(x.Pulled))
	r.stats.pushed.Add(uint64(x.Pushed))
	res.Add(x)
	if err != nil {
		r.log.Warn("exchange failed", "partition", p, "peer", node, "err", err)
		r.stats.errors.Add(1)
		res.Errors++
		return res
	}
	if x.Pulled+x.Pushed > 0 {
		r.log.Info("exchange repaired keys", "partition", p, "peer", node, "leaves", x.Leaves, "keys", x.Keys, "pulled", x.Pulled, "pushed", x.Pushed)
	}
	return res
}

// waitIdle waits, up to BusyWait, while foreground load is high.
func (r *Runner) waitIdle(ctx context.Context) {
	deadline := time.Now().Add(r.cfg.BusyWait)
	backoff := 50 * time.Millisecond
	for r.cluster.Busy() && time.Now().Before(deadline) {
		r.stats.backoffs.Add(1)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// remote returns node's Replica, with every request bounded by CallTimeout
// (or the caller's earlier deadline), metered and paced by ByteRate.
func (r *Runner) remote(node string) Replica {
	return NewRemote(func(ctx context.Context, op string, body []byte) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		defer cancel()
		resp, err := r.cluster.Call(ctx, node, op, body)
		r.stats.sent.Add(uint64(len(body)))
		r.stats.received.Add(uint64(len(resp)))
		r.pace(ctx, len(body)+len(resp))
		return resp, err
	})
}

// pace takes n tokens from the byte limiter. A message larger than a burst
// pays for one burst: it is let through, not refused.
func (r *Runner) pace(ctx context.Context, n int) {
	_ = r.bytes.WaitN(ctx, min(n, r.bytes.Burst()))
}

// lock takes partition p's lock and returns its unlock.
func (r *Runner) lock(p uint32) func() {
	r.mu.Lock()
	m, ok := r.locks[p]
	if !ok {
		m = &sync.Mutex{}
		r.locks[p] = m
	}
	r.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (r *Runner) jitter(d time.Duration) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Duration(float64(d) * (0.75 + r.rng.Float64()/2))
}

// Rebuild recomputes partition p's tree from its data and returns how many
// leaves were wrong.
func (r *Runner) Rebuild(p uint32) (int, error) {
	unlock := r.lock(p)
	defer unlock()
	fixed, err := r.store.RebuildTree(p)
	if err != nil {
		return 0, err
	}
	r.stats.rebuilds.Add(1)
	if fixed > 0 {
		r.stats.fixed.Add(uint64(fixed))
		r.log.Warn("tree rebuild found leaves that disagreed with the data: data changed without the write path (corruption?); exchanges will repair it", "partition", p, "leaves", fixed)
	}
	return fixed, nil
}

// rebuildStale rebuilds parts, and then marks the store's trees fresh.
func (r *Runner) rebuildStale(ctx context.Context, parts []uint32) {
	r.log.Info("rebuilding every partition's tree: the store may hold stale trees", "partitions", len(parts))
	for _, p := range parts {
		if ctx.Err() != nil {
			return
		}
		if _, err := r.Rebuild(p); err != nil {
			r.log.Warn("tree rebuild failed; exchanges of the partition wait for the next start", "partition", p, "err", err)
			continue
		}
		r.mu.Lock()
		delete(r.stale, p)
		r.mu.Unlock()
	}
	r.mu.Lock()
	left := len(r.stale)
	r.mu.Unlock()
	if left == 0 {
		if err := r.store.MarkTreeFresh(); err != nil {
			r.log.Warn("marking trees fresh failed", "err", err)
		}
	}
}

func (r *Runner) isStale(p uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stale[p]
}

// rebuildLoop rebuilds one partition at a time, spreading a full pass over
// RebuildInterval.
func (r *Runner) rebuildLoop(ctx context.Context) {
	var next uint32
	for {
		parts := slices.Sorted(slices.Values(r.cluster.Partitions()))
		wait := r.cfg.RebuildInterval / time.Duration(max(1, len(parts)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if len(parts) == 0 {
			continue
		}
		i, _ := slices.BinarySearch(parts, next)
		p := parts[i%len(parts)]
		next = p + 1
		if _, err := r.Rebuild(p); err != nil && !errors.Is(err, storage.ErrClosed) {
			r.log.Warn("tree rebuild failed", "partition", p, "err", err)
		}
	}
}
