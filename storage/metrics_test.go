package storage

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// TestCollectorReportsEngineWork checks that the storage metrics follow
// what the store did: synced writes are fsyncs, a flush is a flush and an
// L0 table, lookups are object cache hits and misses.
func TestCollectorReportsEngineWork(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collector())

	before := gather(t, reg)
	for i := range 20 {
		put(t, s, Key{Partition: 1, Bucket: "b", Key: string(rune('a' + i))}, Context{}, "v")
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(Key{Partition: 1, Bucket: "b", Key: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(Key{Partition: 1, Bucket: "b", Key: "zz"}); err != ErrNotFound {
		t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
	}
	after := gather(t, reg)

	grew := func(name string) {
		t.Helper()
		if after[name] <= before[name] {
			t.Errorf("%s: %v before, %v after; want it to grow", name, before[name], after[name])
		}
	}
	fsync := "quorumkv_storage_wal_fsync_duration_seconds"
	grew(fsync)
	if mean := after[fsync+"_sum"] / after[fsync]; mean <= 0 || mean > 10 {
		t.Errorf("mean fsync of %v s: not in seconds", mean)
	}
	grew("quorumkv_storage_flushes_total")
	grew("quorumkv_storage_object_cache_hits_total")
	grew("quorumkv_storage_object_cache_misses_total")
	if after[`quorumkv_storage_level_tables{level="0"}`] < 1 {
		t.Errorf("no L0 table after a flush: %v", after)
	}
	if after["quorumkv_storage_write_stalls_total"] != 0 {
		t.Errorf("write stalls: %v", after["quorumkv_storage_write_stalls_total"])
	}
	if n := testutil.CollectAndCount(s.Collector()); n < 20 {
		t.Errorf("%d metrics collected, want every family", n)
	}

	s.Close()
	if n := testutil.CollectAndCount(s.Collector()); n != 0 {
		t.Errorf("a closed store reported %d metrics", n)
	}
}

// gather returns every sample of reg by name (with its labels, if any); a
// histogram counts its observations.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += `{` + l.GetName() + `="` + l.GetValue() + `"}`
			}
			out[name] = value(m)
			if h := m.GetHistogram(); h != nil {
				out[name+"_sum"] = h.GetSampleSum()
			}
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}
