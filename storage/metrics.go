package storage

import (
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// engineEvents counts the Pebble events that explain a slow write: stalls
// (too many memtables or L0 files waiting for flushes and compactions) and
// disk operations slower than Pebble's threshold.
type engineEvents struct {
	stalls     atomic.Int64
	stallStart atomic.Int64 // UnixNano of the stall in progress, 0 if none
	stallNanos atomic.Int64 // in stalls that have ended
	diskSlow   atomic.Int64
}

// listener returns the Pebble event listener that feeds e and logs the
// events an operator should see; flushes and compactions are only counted
// (Metrics), since they happen every few seconds under load.
func (e *engineEvents) listener(log *slog.Logger) *pebble.EventListener {
	return &pebble.EventListener{
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			e.stalls.Add(1)
			e.stallStart.Store(time.Now().UnixNano())
			log.Warn("writes stalled", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			if start := e.stallStart.Swap(0); start != 0 {
				d := time.Now().UnixNano() - start
				e.stallNanos.Add(d)
				log.Warn("writes resumed", "stalled", time.Duration(d).Round(time.Microsecond))
			}
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			e.diskSlow.Add(1)
			log.Warn("slow disk operation", "op", info.OpType.String(), "path", info.Path, "duration", info.Duration.Round(time.Millisecond))
		},
	}
}

// stallSeconds returns the time spent in write stalls, the one in progress
// included.
func (e *engineEvents) stallSeconds() float64 {
	d := e.stallNanos.Load()
	if start := e.stallStart.Load(); start != 0 {
		d += time.Now().UnixNano() - start
	}
	return time.Duration(d).Seconds()
}

var storageDescs = struct {
	walFsync, stalls, stallSeconds, diskSlow, flushes, compactions, compactionSeconds,
	compactionDebt, l0Sublevels, levelTables, levelBytes, memtableBytes,
	blockHits, blockMisses, objectHits, objectMisses, objectBytes *prometheus.Desc
}{
	walFsync:          desc("wal_fsync_duration_seconds", "Time the write-ahead log's fsyncs took; a synced write waits for one.", nil),
	stalls:            desc("write_stalls_total", "Times Pebble stopped writes because flushes or compactions fell behind (too many memtables or L0 sublevels).", nil),
	stallSeconds:      desc("write_stall_seconds_total", "Time writes spent stopped in write stalls.", nil),
	diskSlow:          desc("disk_slow_total", "Disk operations slower than Pebble's threshold (each is also logged).", nil),
	flushes:           desc("flushes_total", "Memtables flushed to L0 tables.", nil),
	compactions:       desc("compactions_total", "Compactions finished.", nil),
	compactionSeconds: desc("compaction_seconds_total", "Time spent in compactions (summed over concurrent ones).", nil),
	compactionDebt:    desc("compaction_debt_bytes", "Bytes Pebble estimates it must compact to bring the LSM into shape.", nil),
	l0Sublevels:       desc("l0_sublevels", "L0 sublevels; writes stall at 20 (Pebble's L0StopWritesThreshold).", nil),
	levelTables:       desc("level_tables", "Tables per LSM level.", []string{"level"}),
	levelBytes:        desc("level_bytes", "Table bytes per LSM level.", []string{"level"}),
	memtableBytes:     desc("memtable_bytes", "Bytes allocated to memtables, the one being written and those waiting to flush.", nil),
	blockHits:         desc("block_cache_hits_total", "Table block reads served by Pebble's block cache.", nil),
	blockMisses:       desc("block_cache_misses_total", "Table block reads that went to the file.", nil),
	objectHits:        desc("object_cache_hits_total", "Object lookups served by the decoded-object cache.", nil),
	objectMisses:      desc("object_cache_misses_total", "Object lookups that went to Pebble.", nil),
	objectBytes:       desc("object_cache_bytes", "Bytes the decoded-object cache accounts for (twice the stored size plus overhead per entry).", nil),
}

func desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc("quorumkv_storage_"+name, help, labels, nil)
}

// Collector returns a Prometheus collector of the storage engine's
// metrics. Each scrape takes Pebble's metrics once (a few microseconds
// under the DB's mutex).
func (s *Store) Collector() prometheus.Collector { return storeCollector{s} }

type storeCollector struct{ s *Store }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	if c.s.closed.Load() {
		return
	}
	d := &storageDescs
	m := c.s.db.Metrics()
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	if h := m.LogWriter.FsyncLatency; h != nil {
		if hist, err := seconds(d.walFsync, h); err == nil {
			ch <- hist
		}
	}
	ev := &c.s.events
	counter(d.stalls, float64(ev.stalls.Load()))
	counter(d.stallSeconds, ev.stallSeconds())
	counter(d.diskSlow, float64(ev.diskSlow.Load()))
	counter(d.flushes, float64(m.Flush.Count))
	counter(d.compactions, float64(m.Compact.Count))
	counter(d.compactionSeconds, m.Compact.Duration.Seconds())
	gauge(d.compactionDebt, float64(m.Compact.EstimatedDebt))
	gauge(d.l0Sublevels, float64(m.Levels[0].Sublevels))
	for i, l := range m.Levels {
		level := strconv.Itoa(i)
		gauge(d.levelTables, float64(l.TablesCount), level)
		gauge(d.levelBytes, float64(l.TablesSize), level)
	}
	gauge(d.memtableBytes, float64(m.MemTable.Size))
	counter(d.blockHits, float64(m.BlockCache.Hits))
	counter(d.blockMisses, float64(m.BlockCache.Misses))
	hits, misses, bytes := c.s.objects.stats()
	counter(d.objectHits, float64(hits))
	counter(d.objectMisses, float64(misses))
	gauge(d.objectBytes, float64(bytes))
}

// seconds returns Pebble's histogram h of nanoseconds (registered under no
// name) as a constant histogram of seconds named by desc.
func seconds(desc *prometheus.Desc, h prometheus.Histogram) (prometheus.Metric, error) {
	var pb dto.Metric
	if err := h.Write(&pb); err != nil {
		return nil, err
	}
	hist := pb.GetHistogram()
	buckets := make(map[float64]uint64, len(hist.GetBucket()))
	for _, b := range hist.GetBucket() {
		buckets[b.GetUpperBound()/1e9] = b.GetCumulativeCount()
	}
	return prometheus.NewConstHistogram(desc, hist.GetSampleCount(), hist.GetSampleSum()/1e9, buckets)
}
