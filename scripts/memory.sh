#!/usr/bin/env bash
# memory.sh: issue 6's memory goal: resident memory per node of a 3-node
# cluster (N=3) holding --keys 1 KiB JSON documents, with the cache
# size stated.
#
#   scripts/memory.sh [--keys 1000000] [--cache-size BYTES] [--connections 64] [--threads 2]
#                     [--base-port P] [--dir DIR] [--keep] [--out DIR]
#
# It starts a 3-node cluster with scripts/cluster.sh start --nodes 3
# --base-port P --dir DIR -- --n 3 --cache-size BYTES (P defaults to the
# first P from 20000 up with P..P+2 and P+100..P+102 free by `ss -ltn`; DIR
# to a new temporary directory, removed at the end unless --keep;
# --cache-size defaults to 134217728, the default of `quorumkv serve`, and
# accepts a suffix KiB, MiB or GiB). Then it:
#   1. writes --keys keys bench/k00000000 .. as 1 KiB JSON documents with
#      w=2 through n1 (wrk with scripts/wrk/load.lua, every key once; n1
#      coordinates every write, n2 and n3 are its replicas), printing
#      progress every 10 s. At ~2,000 writes/s, 1,000,000 keys take about
#      8-9 minutes and about 4 GB of disk;
#   2. waits until the cluster has settled: no hints pending on any node
#      (GET /v1/admin/node) and the nodes' write counters still, then 10 s
#      more;
#   3. reads VmRSS and VmHWM from /proc/<pid>/status of every node (pids
#      in DIR/nK.pid) and du -sh of every data directory;
#   4. reads every key once with r=2 through n1 (load.lua with
#      WRK_METHOD=GET), then reads the memory figures again.
# It prints per node RSS and peak RSS in MiB after start, after the load and
# after the read pass, with the cache size (--cache-size: the object cache
# and Pebble's block cache); with --out DIR, also as DIR/memory.md. The
# goal: under 300 MiB resident per node at 1,000,000 keys. Try it quickly
# with --keys 20000.
#
# Needs: go, curl, ss (iproute2) and wrk (Debian/Ubuntu package `wrk`,
# /usr/bin/wrk). Heavy on a small machine: run it alone. The cluster is
# stopped on exit, Ctrl-C included.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root
readonly wrk_dir=$repo_root/scripts/wrk
readonly SETTLE_TIMEOUT=${MEMORY_SETTLE_TIMEOUT:-600} # seconds to wait for hints to drain

die() {
	printf 'memory.sh: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,35s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
	exit "${1:-0}"
}

# shellcheck source=wrk/lib.sh
source "$wrk_dir/lib.sh"

keys=1000000
cache_size=134217728
connections=64
threads=2
base_port=
dir=
keep=0
out=
while (($# > 0)); do
	case $1 in
	--keys) keys=${2:?--keys needs a value}; shift 2 ;;
	--cache-size) cache_size=${2:?--cache-size needs a value}; shift 2 ;;
	--connections) connections=${2:?--connections needs a value}; shift 2 ;;
	--threads) threads=${2:?--threads needs a value}; shift 2 ;;
	--base-port) base_port=${2:?--base-port needs a value}; shift 2 ;;
	--dir) dir=${2:?--dir needs a value}; shift 2 ;;
	--keep) keep=1; shift ;;
	--out) out=${2:?--out needs a value}; shift 2 ;;
	--*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
	-h | --help) usage 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
case $cache_size in
*GiB) cache_size=$((${cache_size%GiB} << 30)) ;;
*MiB) cache_size=$((${cache_size%MiB} << 20)) ;;
*KiB) cache_size=$((${cache_size%KiB} << 10)) ;;
esac
[[ $cache_size =~ ^[0-9]+$ ]] || die "--cache-size $cache_size: want bytes, or a number with KiB, MiB or GiB"
for v in keys connections threads; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--$v ${!v}: want a positive number"
done
[[ -z $base_port || $base_port =~ ^[1-9][0-9]*$ ]] || die "--base-port $base_port: want a port"

need_wrk
command -v go >/dev/null || die "go is not installed"
command -v curl >/dev/null || die "curl is not installed"

made_dir=0
if [[ -z $dir ]]; then
	dir=$(mktemp -d "${TMPDIR:-/tmp}/quorumkv-memory.XXXXXX")
	made_dir=1
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cluster_started=0
wrk_pid=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -z $wrk_pid ]] || kill -INT "$wrk_pid" 2>/dev/null || true
	if ((cluster_started)); then
		"$repo_root/scripts/cluster.sh" stop --dir "$dir" >/dev/null || echo "memory.sh: could not stop the cluster in $dir" >&2
	fi
	if ((keep || !made_dir)); then
		echo "cluster directory kept: $dir"
	else
		rm -rf "$dir"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ -n $base_port ]] || base_port=$(free_base_port 3)
cluster_started=1
"$repo_root/scripts/cluster.sh" start --nodes 3 --base-port "$base_port" --dir "$dir" -- --n 3 --cache-size "$cache_size"
n1=127.0.0.1:$base_port
nodes=(n1 n2 n3)
addr_of() { echo "127.0.0.1:$((base_port + ${1#n} - 1))"; }
progress_metrics="http://$n1/metrics"

# mem NODE FIELD: FIELD (VmRSS or VmHWM) of the node's process, in MiB.
mem() {
	local pid
	pid=$(<"$dir/$1.pid")
	awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null || echo "?"
}

declare -A rss hwm disk
# snapshot STAGE: records RSS, peak RSS and disk use of every node.
snapshot() {
	local n
	for n in "${nodes[@]}"; do
		rss[$1,$n]=$(mem "$n" VmRSS)
		hwm[$1,$n]=$(mem "$n" VmHWM)
		disk[$1,$n]=$(du -sh "$dir/data/$n" 2>/dev/null | cut -f1)
		printf '  %s %-10s RSS %8s MiB  peak %8s MiB  disk %s\n' "$n" "$1" "${rss[$1,$n]}" "${hwm[$1,$n]}" "${disk[$1,$n]}"
	done
}

# settle waits until no node has hints pending and the nodes' counts of
# replica writes stopped moving, then 10 s more.
settle() {
	local n body pending deadline=$((SECONDS + SETTLE_TIMEOUT)) before after
	echo "waiting for the cluster to settle (no hints pending, replica writes done)"
	while :; do
		pending=0
		for n in "${nodes[@]}"; do
			body=$(curl -fsS --max-time 5 "http://$(addr_of "$n")/v1/admin/node") || die "$n does not answer /v1/admin/node"
			[[ $body =~ \"pending_hints\":([0-9]+) ]] || die "no pending_hints in $n's /v1/admin/node: $body"
			pending=$((pending + BASH_REMATCH[1]))
		done
		before=$(write_count)
		sleep 2
		after=$(write_count)
		((pending > 0 || before != after)) || break
		((SECONDS < deadline)) || die "the cluster did not settle within ${SETTLE_TIMEOUT}s ($pending hints pending)"
	done
	sleep 10
}

# write_count sums every node's storage-level write counters (replica calls
# and requests), enough to see whether writes still arrive.
write_count() {
	local n total=0
	for n in "${nodes[@]}"; do
		total=$((total + $(metric_sum "http://$(addr_of "$n")/metrics" quorumkv_requests_total '') + $(metric_sum "http://$(addr_of "$n")/metrics" quorumkv_replica_calls_total '')))
	done
	echo "$total"
}

echo "memory after start (--cache-size $((cache_size >> 20)) MiB per node):"
snapshot start

echo "loading $keys keys of 1 KiB JSON into bucket bench through n1 (w=2)"
wrk_load "http://$n1" "$keys" "$threads" "$connections" "$dir/load.txt" "w=2"
load_s=$load_seconds
settle
echo "memory after the load:"
snapshot load

echo "reading every key once through n1 (r=2)"
WRK_METHOD=GET wrk_load "http://$n1" "$keys" "$threads" "$connections" "$dir/read.txt" "r=2"
read_s=$load_seconds
echo "memory after the read pass:"
snapshot read

report() {
	local n
	echo "quorumkv memory, $(date -u +%FT%TZ), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo_root" diff --quiet 2>/dev/null || echo '+dirty')"
	echo "3 nodes, N=3, $keys keys of 1 KiB JSON written with w=2 through n1 in ${load_s}s, read once with r=2 in ${read_s}s; --cache-size $cache_size bytes ($((cache_size >> 20)) MiB) per node"
	echo
	echo "| node | cache MiB | RSS start MiB | RSS after load MiB | RSS after read MiB | peak RSS (VmHWM) MiB | data dir after load | after read |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for n in "${nodes[@]}"; do
		echo "| $n | $((cache_size >> 20)) | ${rss[start,$n]} | ${rss[load,$n]} | ${rss[read,$n]} | ${hwm[read,$n]} | ${disk[load,$n]} | ${disk[read,$n]} |"
	done
}
echo
report | tee "$dir/memory.md"
if [[ -n $out ]]; then
	mkdir -p "$out"
	cp "$dir/memory.md" "$out/memory.md"
	echo "wrote $out/memory.md"
fi
