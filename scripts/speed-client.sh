#!/usr/bin/env bash
# speed-client.sh: issue 6's client-side speed goal: GET with R=1 on a
# 5-node cluster through the key-aware Go client, driven by quorumkv bench,
# against (a'): the same tool driving a no-op HTTP server, in the same run.
#
#   scripts/speed-client.sh [--rounds 5] [--duration 10s] [--concurrency 64]
#                           [--records 10000] [--base-port P] [--out DIR]
#
# It builds quorumkv and scripts/refserver (CGO_ENABLED=0) into a temporary
# directory, starts one no-op server (refserver noop) and a 5-node cluster
# with N=3 (scripts/cluster.sh start --nodes 5 -- --n 3; P defaults to the
# first free base port from 20000 up), loads --records 1 KiB JSON documents
# (quorumkv bench's load phase, W=N), then runs --rounds rounds, interleaved:
#   cluster   quorumkv bench --workload c --rw 1/1 --routing key-aware
#             --distribution uniform against the five nodes
#   noop      quorumkv bench --workload c --routing round-robin --load=false
#             against the no-op server ((a'): every GET answered 200 "ok")
# each --duration long after a 2 s warmup, --concurrency workers. It prints
# every run, the medians, and the ratio cluster/(a'). Everything it started
# is stopped on exit.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root
wrk_dir=$repo_root/scripts/wrk

die() {
	printf 'speed-client.sh: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
	exit "${1:-0}"
}

# shellcheck source=wrk/lib.sh
source "$wrk_dir/lib.sh"

rounds=5
duration=10s
concurrency=64
records=10000
base_port=
out=
while (($# > 0)); do
	case $1 in
	--rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
	--duration) duration=${2:?--duration needs a value}; shift 2 ;;
	--concurrency) concurrency=${2:?--concurrency needs a value}; shift 2 ;;
	--records) records=${2:?--records needs a value}; shift 2 ;;
	--base-port) base_port=${2:?--base-port needs a value}; shift 2 ;;
	--out) out=${2:?--out needs a value}; shift 2 ;;
	--*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
	-h | --help) usage 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
for v in rounds concurrency records; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--$v ${!v}: want a positive number"
done
command -v go >/dev/null || die "go is not installed"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/quorumkv-speed-client.XXXXXX")
cluster_dir=$tmp/cluster
ref_pids=()
cluster_started=0

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_started
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build_binaries "$tmp"
bin=$quorumkv_bin

start_ref "$tmp/noop.log" noop --addr 127.0.0.1:0
noop=http://$ref_addr

[[ -n $base_port ]] || base_port=$(free_base_port 5)
cluster_started=1
"$repo_root/scripts/cluster.sh" start --nodes 5 --base-port "$base_port" --dir "$cluster_dir" -- --n 3
endpoints=
for ((i = 0; i < 5; i++)); do endpoints+="${endpoints:+,}http://127.0.0.1:$((base_port + i))"; done

common=(bench --workload c --rw 1/1 --concurrency "$concurrency" --records "$records" --duration "$duration" --warmup 2s --distribution uniform)
echo "loading $records keys"
"$bin" "${common[@]}" --endpoints "$endpoints" --duration 1s --warmup 0s >"$tmp/load.txt" 2>&1 || die "load failed: $(tail -n 3 "$tmp/load.txt")"

# ops FILE: the OPS/S column of quorumkv bench's summary row.
ops() { awk '/^N +R +W / { getline; print $5; exit }' "$1"; }
# errs FILE: the ERRORS column of the summary row.
errs() { awk '/^N +R +W / { getline; print $10; exit }' "$1"; }

printf 'round\ttarget\tops\terrors\n' >"$tmp/runs.tsv"
echo "measuring: $rounds rounds, quorumkv bench workload C, $concurrency workers, $duration each (load average $(cut -d' ' -f1 /proc/loadavg))"
for ((r = 1; r <= rounds; r++)); do
	"$bin" "${common[@]}" --endpoints "$endpoints" --routing key-aware --load=false >"$tmp/$r-cluster.txt" 2>&1 || die "bench failed: $(tail -n 3 "$tmp/$r-cluster.txt")"
	"$bin" "${common[@]}" --endpoints "$noop" --routing round-robin --load=false >"$tmp/$r-noop.txt" 2>&1 || die "bench against noop failed: $(tail -n 3 "$tmp/$r-noop.txt")"
	for t in cluster noop; do
		printf '  round %d %-8s %8s ops/s  errors %s\n' "$r" "$t" "$(ops "$tmp/$r-$t.txt")" "$(errs "$tmp/$r-$t.txt")"
		printf '%d\t%s\t%s\t%s\n' "$r" "$t" "$(ops "$tmp/$r-$t.txt")" "$(errs "$tmp/$r-$t.txt")" >>"$tmp/runs.tsv"
	done
done

summary=$(awk -F '\t' '
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	NR > 1 { k = ++n[$2]; v[$2, k] = $3 + 0; e[$2] += $4 }
	END {
		for (t in n) { for (k = 1; k <= n[t]; k++) a[k] = v[t, k]; m[t] = median(a, n[t]); printf "%s median %.0f ops/s (%.0f-%.0f), errors %d\n", t, m[t], a[1], a[n[t]], e[t] }
		if (m["noop"] > 0) printf "GET r=1, 5 nodes, key-aware / (a'\''): %.2f (goal 0.5)\n", m["cluster"] / m["noop"]
	}' "$tmp/runs.tsv")
echo
echo "quorumkv speed (client), $(date -u +%FT%TZ), $(nproc) CPUs, $(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "$summary"
if [[ -n $out ]]; then
	mkdir -p "$out"
	tr '\t' ',' <"$tmp/runs.tsv" >"$out/client-runs.csv"
	echo "$summary" >"$out/client-summary.txt"
fi
