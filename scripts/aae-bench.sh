#!/usr/bin/env bash
# aae-bench.sh: the anti-entropy benchmarks of docs/performance.md
# ("Anti-entropy"), with the median of 5 runs of every figure.
#
#   scripts/aae-bench.sh [KEYS]      # default 1000000 keys per replica
#
# 1. BenchmarkExchange: one full exchange round between two replicas of KEYS
#    objects (1 KiB JSON) for d = 0, 1, 100, 10000 differing keys,
#    -benchtime 1x -count 5. Building the two replicas takes a few minutes
#    at 1,000,000 keys and about 2.5 GB in $TMPDIR; they are removed at the
#    end. QUORUMKV_AAE_D=... overrides the list of d.
# 2. BenchmarkWrite: synced Puts with and without the hash trees, 1 and 64
#    writers, -benchtime 2s, five separate runs of the test binary so that
#    tree=on and tree=off alternate (-count 5 would run each five times in a
#    row, and a burst of load from elsewhere would hit one of them only).
#
# Raw output and the medians go to a new directory under $TMPDIR (printed
# at the end), or to $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/.."

keys=${1:-1000000}
out=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/aae-bench.XXXXXX")}
mkdir -p "$out"

# medians FILE: for every benchmark and unit, the median and range of the
# values in FILE (go test -bench output).
medians() {
	awk '/^Benchmark/ { for (i = 3; i < NF; i += 2) print $1 "\t" $(i+1) "\t" $i }' "$1" |
		sort -t "$(printf '\t')" -k1,1 -k2,2 -k3,3g |
		awk -F '\t' '
			function flush() {
				if (n) printf "%-40s %-18s median %-14s runs %s–%s (%d)\n", key, unit, v[int((n + 1) / 2)], v[1], v[n], n
				n = 0
			}
			$1 != key || $2 != unit { flush(); key = $1; unit = $2 }
			{ v[++n] = $3 }
			END { flush() }'
}

go version | tee "$out/go-version.txt"

QUORUMKV_AAE_KEYS=$keys go test -run '^$' -bench Exchange -benchtime 1x -count 5 -timeout 3h ./antientropy/ 2>&1 |
	tee "$out/exchange.txt"

go test -c -o "$out/antientropy.test" ./antientropy/
for i in 1 2 3 4 5; do
	(cd "$out" && ./antientropy.test -test.run '^$' -test.bench Write -test.benchtime 2s) 2>&1 | tee -a "$out/write.txt"
done

{
	echo "== exchange ($keys keys)"
	medians "$out/exchange.txt"
	echo "== write"
	medians "$out/write.txt"
} | tee "$out/medians.txt"
echo "results in $out"
