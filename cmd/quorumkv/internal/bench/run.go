package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quorumkv/quorumkv/client"
)

// defaultN is the replica count assumed when the cluster does not say.
const defaultN = 3

// maxWorkerContexts bounds each worker's map of causal contexts.
const maxWorkerContexts = 4096

// maxActiveProbes bounds the PBS probes in flight; a write offered while
// that many run is not probed.
const maxActiveProbes = 64

// runner is one bench run: the client, the keyspace and what every
// combination shares.
type runner struct {
	cfg   Config
	c     *client.Client
	out   io.Writer
	log   *slog.Logger
	clk   clock
	n     int
	keys  keyChooser
	mix   mix
	track *tracker
	seq   atomic.Uint64 // sequence number of the next written document
	// exec runs one operation: execOp, or a fake in tests.
	exec func(ctx context.Context, m *measurement, w *worker, o op, k int, counted bool) error
}

// Run runs the sweep: it loads the keyspace (Config.Load), then measures
// each R/W combination in turn, printing progress lines to out, a summary
// row per combination and, with Config.Out, the result files. When ctx
// ends it stops at once, keeps what was measured (the interrupted
// combination marked so), writes it, and returns it with ctx's error.
// log receives the client's warnings (nil: discarded).
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) ([]Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	n, nFrom, err := resolveN(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := cfg.checkQuorums(n); err != nil {
		return nil, err
	}
	routing := client.KeyAware
	if cfg.RoundRobin {
		routing = client.RoundRobin
	}
	c, err := client.New(cfg.Endpoints, client.WithRouting(routing), client.WithLogger(log))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	m, _ := cfg.Workload.mix()
	r := &runner{cfg: cfg, c: c, out: out, log: log, clk: realClock{}, n: n,
		keys: newKeyChooser(cfg.Distribution, cfg.Records), mix: m, track: newTracker(cfg.Records)}
	r.exec = r.execOp
	fmt.Fprintf(out, "quorumkv bench: workload %s (%s), %s keys over %d records, %d-byte values, %d workers, %s, %s routing, N=%d (%s), seed %d\n",
		cfg.Workload, m, cfg.Distribution, cfg.Records, cfg.ValueSize, cfg.Concurrency, rateString(cfg.Rate), routing, n, nFrom, cfg.Seed)

	if cfg.Load {
		r.load(ctx)
	}
	var results []Result
	for _, p := range cfg.Pairs {
		if ctx.Err() != nil {
			break
		}
		res := r.measure(ctx, p)
		results = append(results, res)
		fmt.Fprintln(out)
		writeSummary(out, []Result{res})
		fmt.Fprintln(out)
	}
	if len(results) > 1 {
		writeSummary(out, results)
	}
	if cfg.Out != "" && len(results) > 0 {
		if err := writeFiles(cfg.Out, results); err != nil {
			return results, err
		}
		fmt.Fprintf(out, "results in %s (results.csv, results.json, chart.svg)\n", cfg.Out)
	}
	if err := ctx.Err(); err != nil {
		return results, fmt.Errorf("interrupted (%w); the results above are what was measured", err)
	}
	return results, nil
}

func rateString(rate float64) string {
	if rate == 0 {
		return "unlimited rate"
	}
	return fmt.Sprintf("%g ops/s", rate)
}

func (m mix) String() string {
	var parts []string
	for o := range numOps {
		if m[o] > 0 {
			parts = append(parts, fmt.Sprintf("%g%% %s", m[o]*100, o))
		}
	}
	return strings.Join(parts, ", ")
}

// resolveN returns the cluster's N and where it came from: GET /v1/cluster
// on the first endpoint that answers it, else cfg.N, else defaultN. A
// cfg.N that differs from the cluster's is refused.
func resolveN(ctx context.Context, cfg Config) (int, string, error) {
	clusterN, err := fetchN(ctx, cfg.Endpoints, cfg.Timeout)
	switch {
	case err == nil && cfg.N != 0 && cfg.N != clusterN:
		return 0, "", fmt.Errorf("--n %d, but the cluster runs with N=%d (GET /v1/cluster)", cfg.N, clusterN)
	case err == nil:
		return clusterN, "from /v1/cluster", nil
	case cfg.N != 0:
		return cfg.N, "as given; /v1/cluster: " + err.Error(), nil
	}
	return defaultN, "assumed; /v1/cluster: " + err.Error(), nil
}

// fetchN reads N from GET /v1/cluster, trying each endpoint in turn.
func fetchN(ctx context.Context, endpoints []string, timeout time.Duration) (int, error) {
	hc := &http.Client{Timeout: timeout}
	defer hc.CloseIdleConnections()
	var errs []error
	for _, e := range endpoints {
		base := e
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
		n, err := func() (int, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/v1/cluster", nil)
			if err != nil {
				return 0, err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return 0, fmt.Errorf("%s answered %s", e, resp.Status)
			}
			var v struct {
				N int `json:"n"`
			}
			if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&v); err != nil || v.N < 1 {
				return 0, fmt.Errorf("%s: no cluster view (not a quorumkv node?)", e)
			}
			return v.N, nil
		}()
		if err == nil {
			return n, nil
		}
		errs = append(errs, err)
	}
	return 0, errors.Join(errs...)
}

// document is a JSON document of exactly size bytes (size >=
// MinValueSize) that carries a write's sequence number.
func document(seq uint64, worker, size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"worker":`...)
	b = strconv.AppendInt(b, int64(worker), 10)
	b = append(b, `,"pad":"`...)
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

var jsonType = client.ContentType("application/json")

// load writes every key once with W=N, with as many writers as workers.
func (r *runner) load(ctx context.Context) {
	start := time.Now()
	var next atomic.Int64
	var errs [numErrKinds]atomic.Int64
	var wg sync.WaitGroup
	for w := range r.cfg.Concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= r.cfg.Records || ctx.Err() != nil {
					return
				}
				doc := document(r.seq.Add(1), w, r.cfg.ValueSize)
				res, err := r.c.Put(ctx, r.cfg.Bucket, keyName(i), doc, client.W(r.n), client.Timeout(r.cfg.Timeout), jsonType)
				if err != nil {
					if ctx.Err() == nil {
						errs[classify(err)].Add(1)
					}
					continue
				}
				r.track.acked(i, res.Context, r.clk.Now())
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	fmt.Fprintf(r.out, "loaded %d keys with W=%d in %v (%.0f writes/s); errors: %d timeout, %d quorum, %d other\n",
		min(int(next.Load()), r.cfg.Records), r.n, took.Round(time.Millisecond), float64(r.cfg.Records)/took.Seconds(),
		errs[errTimeout].Load(), errs[errQuorum].Load(), errs[errOther].Load())
}

// measurement is one R/W combination in progress.
type measurement struct {
	pair       Pair
	sched      *schedule
	start, end time.Time // the measured window: operations due in it count
	ops        [numOps]*opStats
	compared   atomic.Int64
	stale      atomic.Int64
	notFound   atomic.Int64
	reads      atomic.Int64 // successful counted reads, for the sibling mean
	siblings   atomic.Int64 // siblings those reads returned
	maxSibs    atomic.Int64
	badCtx     atomic.Int64 // contexts that did not decode
	probe      *prober
}

// measure runs one combination: warmup, then the measured window.
func (r *runner) measure(ctx context.Context, p Pair) Result {
	now := r.clk.Now()
	m := &measurement{pair: p, sched: newSchedule(r.clk, now, r.cfg.Rate)}
	m.start = now.Add(r.cfg.Warmup)
	m.end = m.start.Add(r.cfg.Duration)
	for o := range numOps {
		m.ops[o] = newOpStats()
	}
	if r.cfg.ProbeRate > 0 {
		m.probe = newProber(ctx, r, p, r.cfg.ProbeRate)
	}
	fmt.Fprintf(r.out, "\nR=%d W=%d: warmup %v, then %v measured\n", p.R, p.W, r.cfg.Warmup, r.cfg.Duration)

	stop := make(chan struct{})
	var rep sync.WaitGroup
	rep.Go(func() { r.progress(m, stop) })
	var workers sync.WaitGroup
	for w := range r.cfg.Concurrency {
		workers.Go(func() { r.work(ctx, m, w) })
	}
	workers.Wait()
	if m.probe != nil {
		m.probe.wait()
	}
	close(stop)
	rep.Wait()

	end := m.end
	interrupted := ctx.Err() != nil
	if interrupted {
		if now := r.clk.Now(); now.Before(end) {
			end = now
		}
		if end.Before(m.start) {
			end = m.start
		}
	}
	return r.result(m, end.Sub(m.start), interrupted)
}

// worker is one worker's state.
type worker struct {
	id   int
	rng  *rand.Rand
	ctxs map[int]string // key index → context of this worker's last read or write of it
}

// remember keeps the context of the worker's last read or write of key i.
func (w *worker) remember(i int, ctx string) {
	if ctx == "" {
		return
	}
	if _, ok := w.ctxs[i]; !ok && len(w.ctxs) >= maxWorkerContexts {
		for k := range w.ctxs { // evict an arbitrary key
			delete(w.ctxs, k)
			break
		}
	}
	w.ctxs[i] = ctx
}

// work runs operations until the schedule reaches the end of the
// measurement or ctx ends.
func (r *runner) work(ctx context.Context, m *measurement, id int) {
	// Each worker of each combination draws its own stream from the seed.
	w := &worker{id: id, rng: rand.New(rand.NewPCG(r.cfg.Seed, uint64(id)<<16|uint64(m.pair.R)<<8|uint64(m.pair.W))),
		ctxs: map[int]string{}}
	for {
		due, err := m.sched.wait(ctx)
		if err != nil || !due.Before(m.end) {
			return
		}
		o := r.mix.choose(w.rng)
		k := r.keys.next(w.rng)
		r.do(ctx, m, w, o, k, due)
	}
}

// do runs one operation due at due and records it if it is in the
// measured window, its latency counted from due.
func (r *runner) do(ctx context.Context, m *measurement, w *worker, o op, k int, due time.Time) {
	counted := !due.Before(m.start)
	err := r.exec(ctx, m, w, o, k, counted)
	done := r.clk.Now()
	if !counted || ctx.Err() != nil { // a cancelled run is not the cluster's failure
		return
	}
	if err != nil {
		m.ops[o].fail(classify(err))
		return
	}
	m.ops[o].record(done.Sub(due))
}

// execOp runs one operation against the cluster. counted says whether it
// is in the measured window (its staleness and probes count).
func (r *runner) execOp(ctx context.Context, m *measurement, w *worker, o op, k int, counted bool) error {
	key := keyName(k)
	opts := []client.CallOption{client.R(m.pair.R), client.W(m.pair.W), client.Timeout(r.cfg.Timeout)}
	switch o {
	case opRead:
		before, hadWrite := r.track.latest(k) // acknowledged before the read began
		res, err := r.c.Get(ctx, r.cfg.Bucket, key, opts...)
		if errors.Is(err, client.ErrNotFound) {
			err = nil
			if counted {
				m.notFound.Add(1)
			}
		}
		if err != nil {
			return err
		}
		w.remember(k, res.Context)
		if counted {
			m.readDone(res, before, hadWrite)
		}
		return nil
	case opUpdate:
		if c, ok := r.updateContext(w, k); ok {
			opts = append(opts, client.WithContext(c))
		}
		res, err := r.c.Put(ctx, r.cfg.Bucket, key, document(r.seq.Add(1), w.id, r.cfg.ValueSize), append(opts, jsonType)...)
		if err != nil {
			return err
		}
		r.acked(m, w, k, res.Context, counted)
		return nil
	case opRMW:
		res, err := r.c.Update(ctx, r.cfg.Bucket, key, func([]client.Sibling) ([]byte, error) {
			// The documents are synthetic: the new one replaces every
			// sibling read. A real application merges them here.
			return document(r.seq.Add(1), w.id, r.cfg.ValueSize), nil
		}, append(opts, jsonType)...)
		if err != nil {
			return err
		}
		r.acked(m, w, k, res.Context, counted)
		return nil
	}
	return fmt.Errorf("unknown operation %d", o)
}

// updateContext is the context an update of key k carries, if any (see
// Config.PlainUpdates and Config.WorkerContexts).
func (r *runner) updateContext(w *worker, k int) (string, bool) {
	if r.cfg.PlainUpdates {
		return "", false
	}
	c, ok := w.ctxs[k]
	if r.cfg.WorkerContexts {
		return c, ok
	}
	if a, had := r.track.latest(k); had {
		return joinContexts(c, a.ctx), true
	}
	return c, ok
}

// acked handles an acknowledged write of key k.
func (r *runner) acked(m *measurement, w *worker, k int, ctx string, counted bool) {
	at := r.clk.Now()
	r.track.acked(k, ctx, at)
	w.remember(k, ctx)
	if counted && m.probe != nil {
		m.probe.offer(k, ctx, at)
	}
}

// readDone counts a successful read: its siblings and, when a write of the
// key was acknowledged before it began, whether it saw that write.
func (m *measurement) readDone(res *client.Result, before ack, hadWrite bool) {
	m.reads.Add(1)
	n := int64(len(res.Siblings))
	m.siblings.Add(n)
	for cur := m.maxSibs.Load(); n > cur && !m.maxSibs.CompareAndSwap(cur, n); cur = m.maxSibs.Load() {
	}
	if !hadWrite {
		return
	}
	ok, err := covers(res.Context, before.ctx)
	if err != nil {
		m.badCtx.Add(1)
		return
	}
	m.compared.Add(1)
	if !ok {
		m.stale.Add(1)
	}
}

// progress prints one line per operation type every Interval of the
// measured window, until stop is closed.
func (r *runner) progress(m *measurement, stop <-chan struct{}) {
	wait := time.NewTimer(time.Until(m.start))
	defer wait.Stop()
	select {
	case <-stop:
		return
	case <-wait.C:
	}
	// Operations due before the window do not count, so the histograms
	// start empty here.
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			if now.After(m.end.Add(r.cfg.Interval / 2)) {
				return // only stragglers of the window remain; the summary has them
			}
			elapsed := now.Sub(m.start)
			for o := range numOps {
				if r.mix[o] == 0 {
					continue
				}
				iv, ivErrs, totalOps, totalErrs := m.ops[o].tick()
				writeProgress(r.out, progressLine{
					elapsed: elapsed, op: o, errs: ivErrs, totalErrs: totalErrs,
					rate:    float64(iv.TotalCount()) / now.Sub(last).Seconds(),
					cumRate: float64(totalOps) / elapsed.Seconds(),
					lat:     summarize(iv),
				})
			}
			last = now
		}
	}
}
