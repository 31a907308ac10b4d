package main

import (
	"runtime/debug"
	"testing"
)

func TestLimitMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1)) // restore
	none := func(string) (string, bool) { return "", false }
	if got, want := limitMemory(none, 64<<20, 0), int64(64<<20+128<<20+memoryOverhead); got != want {
		t.Fatalf("limit for a 64 MiB and a default cache: %d, want %d", got, want)
	}
	if cur := debug.SetMemoryLimit(-1); cur != int64(64<<20+128<<20+memoryOverhead) {
		t.Fatalf("runtime limit %d after limitMemory", cur)
	}
	debug.SetMemoryLimit(1 << 40)
	set := func(k string) (string, bool) { return "1GiB", k == "GOMEMLIMIT" }
	if got := limitMemory(set, 64<<20); got != 0 {
		t.Fatalf("with GOMEMLIMIT set: %d, want 0 (left alone)", got)
	}
	if cur := debug.SetMemoryLimit(-1); cur != 1<<40 {
		t.Fatalf("GOMEMLIMIT set, yet the limit changed to %d", cur)
	}
}
