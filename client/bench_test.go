package client_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/client"
)

// benchEnv reads an integer knob of the benchmark.
func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkClient measures GET and PUT latency (p50, p99) and throughput
// through the client, round-robin against key-aware routing, on one 5-node
// cluster (N=3, R=W=2, 64 partitions) running in this process, with 32
// concurrent callers. Every sub-benchmark of one run uses the same cluster
// and the same preloaded keys. -count repeats each sub-benchmark in a row on
// that cluster, as it fills up; to interleave, run the test binary several
// times (a new cluster each), alternating which routing goes first:
//
//	go test -c -o client.test ./client/
//	for i in 1 2 3 4 5 6; do
//		first=; [ $((i % 2)) = 0 ] && first=1
//		QUORUMKV_BENCH_KEYAWARE_FIRST=$first ./client.test -test.run '^$' -test.bench BenchmarkClient -test.benchtime 3s
//	done
//
// Knobs: QUORUMKV_BENCH_KEYS (10000 keys), QUORUMKV_BENCH_VALUE (256-byte
// JSON values), QUORUMKV_BENCH_WORKERS (32), QUORUMKV_BENCH_KEYAWARE_FIRST
// (non-empty: key-aware before round-robin).
func BenchmarkClient(b *testing.B) {
	keys := benchEnv("QUORUMKV_BENCH_KEYS", 10000)
	size := benchEnv("QUORUMKV_BENCH_VALUE", 256)
	workers := benchEnv("QUORUMKV_BENCH_WORKERS", 32)
	cl, err := startCluster(5, b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.close()
	value := []byte(`{"pad":"` + strings.Repeat("x", max(size-10, 0)) + `"}`)
	key := func(i int) string { return fmt.Sprintf("key-%07d", i%keys) }

	// Preload every key, so that GETs find a value.
	pre, err := client.New(cl.endpoints())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := runWorkers(workers, keys, func(i int) error {
		_, err := pre.Put(ctx, "bench", key(i), value, client.ContentType("application/json"))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	pre.Close()

	order := []client.Routing{client.RoundRobin, client.KeyAware}
	if os.Getenv("QUORUMKV_BENCH_KEYAWARE_FIRST") != "" {
		order = []client.Routing{client.KeyAware, client.RoundRobin}
	}
	for _, op := range []string{"get", "put"} {
		for _, routing := range order {
			name := map[client.Routing]string{client.RoundRobin: "rr", client.KeyAware: "keyaware"}[routing]
			b.Run("op="+op+"/routing="+name, func(b *testing.B) {
				c, err := client.New(cl.endpoints(), client.WithRouting(routing))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				// Each run (calibration runs included) starts elsewhere in
				// the keys, deterministically.
				offset := int(benchRuns.Add(1)) * 7919 % keys
				do := func(i int) error {
					k := key(offset + i)
					if op == "get" {
						_, err := c.Get(ctx, "bench", k)
						return err
					}
					_, err := c.Put(ctx, "bench", k, value, client.ContentType("application/json"))
					return err
				}
				b.ResetTimer()
				start := time.Now()
				lat, err := runWorkers(workers, b.N, do)
				elapsed := time.Since(start)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				slices.Sort(lat)
				b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
				b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
			})
		}
	}
}

var benchRuns atomic.Int64

// runWorkers calls do(0..n-1) from workers goroutines and returns every
// call's latency; it stops at the first error.
func runWorkers(workers, n int, do func(i int) error) ([]time.Duration, error) {
	var next atomic.Int64
	var failed atomic.Bool
	lats := make([][]time.Duration, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t0 := time.Now()
				if err := do(i); err != nil {
					errs[w] = err
					failed.Store(true)
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return slices.Concat(lats...), nil
}

// percentile of sorted latencies (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
