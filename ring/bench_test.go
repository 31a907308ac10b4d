package ring

import (
	"strconv"
	"testing"
)

// sink keeps benchmark results alive.
var sink int

func TestZeroAllocs(t *testing.T) {
	tb := mustNew(t, DefaultConfig(), nodeNames(5))
	for name, f := range map[string]func(){
		"PartitionOf":    func() { sink += PartitionOf(1024, "users", "user/123456") },
		"Partition":      func() { sink += tb.Partition("users", "user/123456") },
		"PreferenceList": func() { sink += len(tb.PreferenceList(sink & 1023)) },
		"Primaries":      func() { sink += len(tb.Primaries(sink & 1023)) },
		"IsPrimary": func() {
			if tb.IsPrimary(sink&1023, "node-3") {
				sink++
			}
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per call, want 0", name, n)
		}
	}
}

func BenchmarkPartitionOf(b *testing.B) {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user/" + strconv.Itoa(i*7919)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sink += PartitionOf(1024, "users", keys[i&1023])
		i++
	}
}

func BenchmarkPreferenceList(b *testing.B) {
	tb := mustNew(b, DefaultConfig(), nodeNames(5))
	b.ReportAllocs()
	p := 0
	for b.Loop() {
		sink += len(tb.PreferenceList(p & 1023))
		p++
	}
}

func BenchmarkNew(b *testing.B) {
	for _, k := range []int{5, 12} {
		b.Run(strconv.Itoa(k)+"members", func(b *testing.B) {
			members := nodeNames(k)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := New(DefaultConfig(), members); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
