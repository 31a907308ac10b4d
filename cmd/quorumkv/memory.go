package main

import (
	"runtime/debug"

	"github.com/quorumkv/quorumkv/storage"
)

// memoryOverhead is what a node needs beyond its storage cache: request
// buffers, goroutine stacks, the placement tables and Pebble's own
// structures (measured with scripts/memory.sh, docs/performance.md).
const memoryOverhead = 128 << 20

// limitMemory sets the Go runtime's soft memory limit to the storage
// caches of the nodes this process runs plus memoryOverhead, and returns
// it; unless GOMEMLIMIT is set, which the runtime already applied (then it
// returns 0). Why: in a CGO_ENABLED=0 build Pebble's block cache lives in
// the Go heap, and under GOGC's default the heap may grow to twice what is
// live before a collection, so a 128 MiB cache alone could cost 256 MiB
// resident. Near the limit the collector runs sooner instead; below it
// GOGC applies as usual.
func limitMemory(lookupEnv func(string) (string, bool), cacheSizes ...int64) int64 {
	if _, ok := lookupEnv("GOMEMLIMIT"); ok {
		return 0
	}
	limit := int64(memoryOverhead)
	for _, c := range cacheSizes {
		if c <= 0 {
			c = storage.DefaultConfig().CacheSize
		}
		limit += c
	}
	debug.SetMemoryLimit(limit)
	return limit
}
