package server

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/quorumkv/quorumkv/storage"
)

// fillBlind writes n keys of size bytes through all nodes with 16 writers,
// each write carrying an empty context (no read first).
func (c *testCluster) fillBlind(b *testing.B, n, size int) {
	val := `"` + strings.Repeat("x", size-2) + `"`
	empty := storage.EncodeContext(storage.Context{})
	ch := make(chan int)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			nodes := c.running()
			for i := range ch {
				r, err := c.tryDo(nodes[(i+w)%len(nodes)], "PUT", fmt.Sprintf("/v1/kv/b/key%d", i), val, "X-Context", empty)
				if err != nil || r.status != 204 {
					b.Errorf("fill key%d: %v %d", i, err, r.status)
				}
			}
		})
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
}

// BenchmarkJoinHandoff measures ownership transfer: a fourth node joins a
// three-node cluster holding QUORUMKV_BENCH_KEYS (default 100,000) keys of
// 1 KiB; the time is from its start until every node reports the ring
// settled. Run with -benchtime 1x.
func BenchmarkJoinHandoff(b *testing.B) {
	keys := envInt("QUORUMKV_BENCH_KEYS", 100_000)
	for b.Loop() {
		c := newTestCluster(b, 3, func(cfg *Config) {
			cfg.Ring.Partitions = 1024
			cfg.Handoff.TransferRate = 1 << 30 // measure the mechanism, not the limiter
		})
		c.fillBlind(b, keys, 1024)
		c.ids = append(c.ids, "n4")
		c.dirs["n4"] = c.dirs["n3"] + "-n4"
		start := time.Now()
		c.start("n4")
		c.waitSettled()
		elapsed := time.Since(start)
		bytes := testutil.ToFloat64(c.servers["n4"].Node.metrics.transferBytes)
		b.ReportMetric(elapsed.Seconds(), "s-to-settle")
		b.ReportMetric(bytes/elapsed.Seconds()/(1<<20), "MB/s")
		b.ReportMetric(bytes/(1<<20), "MB-moved")
		c.close()
	}
}

// BenchmarkHealHints measures hinted handoff: five nodes, one cut off while
// 5,000 writes land, then healed; the time is from the heal until no node
// holds a hint.
func BenchmarkHealHints(b *testing.B) {
	for b.Loop() {
		c := newTestCluster(b, 5, func(cfg *Config) { cfg.Ring.Partitions = 1024 })
		c.net.Isolate("n5")
		c.waitDown("n5")
		nodes := c.running()[:4]
		var wg sync.WaitGroup
		ch := make(chan int)
		for w := range 16 {
			wg.Go(func() {
				for i := range ch {
					if r, err := c.tryDo(nodes[(i+w)%4], "PUT", fmt.Sprintf("/v1/kv/b/h%d", i), "1"); err != nil || r.status != 204 {
						b.Errorf("write h%d: %v %d", i, err, r.status)
					}
				}
			})
		}
		for i := range 5000 {
			ch <- i
		}
		close(ch)
		wg.Wait()
		hints := c.pendingHints()
		start := time.Now()
		c.net.Heal()
		eventually(b, "zero pending hints", func() bool { return c.pendingHints() == 0 })
		elapsed := time.Since(start)
		b.ReportMetric(elapsed.Seconds(), "s-heal-to-zero-hints")
		b.ReportMetric(float64(hints), "hints")
		b.ReportMetric(float64(hints)/elapsed.Seconds(), "hints/s")
		c.close()
	}
}
