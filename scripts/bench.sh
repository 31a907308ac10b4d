#!/usr/bin/env bash
# bench.sh: run `quorumkv bench` (the load generator, see docs/benchmarking.md)
# against a fresh local cluster, optionally with one replica slowed or down.
#
#   scripts/bench.sh [--nodes 3] [--n 3] [--base-port 8590] [--fault none|slow|down]
#                    [--slow 20/100] [--fault-node nK] [--endpoints URL,...] [--keep]
#                    [--] [BENCH-FLAGS...]
#
# It builds the binary (CGO_ENABLED=0), starts a cluster of --nodes nodes with
# N=--n on fresh data directories under a new temporary directory, with
# scripts/cluster.sh (HTTP on 127.0.0.1:BASE.., gossip on BASE+100..), runs
#   quorumkv bench --endpoints <every node> --n N BENCH-FLAGS...
# and stops the cluster when it ends, fails or is interrupted. With
# --endpoints it starts nothing and benchmarks the cluster there (no --fault).
# Every flag it does not know goes to quorumkv bench (see quorumkv bench
# --help): --workload, --rw, --duration, --rate, ... Results go to --out, by
# default bench-results/<date>-<fault> in the current directory.
#
# --fault, applied once the bench has loaded the keyspace (before the first
# combination's warmup):
#   none   nothing (the default)
#   slow   SIGSTOP/SIGCONT --fault-node (default the last node) in a loop:
#          stopped STOP_MS out of every PERIOD_MS (--slow, default 20/100), a
#          replica that stalls like one with GC pauses or a noisy neighbour
#   down   SIGKILL --fault-node: a crashed replica (it stays a member). With
#          --nodes greater than N, a live fallback stands in for it (sloppy
#          quorum); with --nodes equal to N, R=N or W=N cannot be met
# --keep keeps the temporary directory (binary, cluster logs and data).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root

die() {
	printf 'bench.sh: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,30s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
	exit "${1:-0}"
}

nodes=3
n=3
base_port=8590
fault=none
slow=20/100
fault_node=
endpoints=
keep=false
bench_args=()
while (($# > 0)); do
	case $1 in
	--nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
	--nodes=*) nodes=${1#*=}; shift ;;
	--n) n=${2:?--n needs a value}; shift 2 ;;
	--n=*) n=${1#*=}; shift ;;
	--base-port) base_port=${2:?--base-port needs a value}; shift 2 ;;
	--base-port=*) base_port=${1#*=}; shift ;;
	--fault) fault=${2:?--fault needs a value}; shift 2 ;;
	--fault=*) fault=${1#*=}; shift ;;
	--slow) slow=${2:?--slow needs a value}; shift 2 ;;
	--slow=*) slow=${1#*=}; shift ;;
	--fault-node) fault_node=${2:?--fault-node needs a value}; shift 2 ;;
	--fault-node=*) fault_node=${1#*=}; shift ;;
	--endpoints) endpoints=${2:?--endpoints needs a value}; shift 2 ;;
	--endpoints=*) endpoints=${1#*=}; shift ;;
	--keep) keep=true; shift ;;
	-h | --help) usage 0 ;;
	--) shift; bench_args+=("$@"); break ;;
	*) bench_args+=("$1"); shift ;;
	esac
done

[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes $nodes: want a positive number"
[[ $n =~ ^[1-9][0-9]*$ ]] && ((n <= nodes)) || die "--n $n: want 1..--nodes ($nodes)"
[[ $fault =~ ^(none|slow|down)$ ]] || die "--fault $fault: want none, slow or down"
[[ $slow =~ ^([1-9][0-9]*)/([1-9][0-9]*)$ ]] && ((BASH_REMATCH[1] < BASH_REMATCH[2])) ||
	die "--slow $slow: want STOP_MS/PERIOD_MS with STOP_MS < PERIOD_MS, like 20/100"
stop_ms=${BASH_REMATCH[1]}
run_ms=$((BASH_REMATCH[2] - stop_ms))
fault_node=${fault_node:-n$nodes}
[[ $fault_node =~ ^n[1-9][0-9]*$ ]] && ((${fault_node#n} <= nodes)) || die "--fault-node $fault_node: want n1..n$nodes"
[[ -z $endpoints || $fault == none ]] || die "--fault needs a cluster this script starts (drop --endpoints)"
command -v go >/dev/null || die "go is not installed"

out_given=false
for a in ${bench_args[@]+"${bench_args[@]}"}; do
	[[ $a != --out && $a != --out=* ]] || out_given=true
done
if ! $out_given; then
	bench_args+=(--out "bench-results/$(date +%Y%m%d-%H%M%S)-$fault")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/quorumkv-bench.XXXXXX")
cluster_dir=$tmp/cluster
started=false
bench_pid=
tail_pid=
fault_pid=
fault_pid_node=

cleanup() {
	local rc=$?
	trap - INT TERM
	if [[ -n $fault_pid ]]; then
		kill "$fault_pid" 2>/dev/null || true
		wait "$fault_pid" 2>/dev/null || true
	fi
	if [[ -n $fault_pid_node ]]; then
		kill -s CONT "$fault_pid_node" 2>/dev/null || true # never leave a node stopped
	fi
	if [[ -n $bench_pid ]] && kill -0 "$bench_pid" 2>/dev/null; then
		kill -s INT "$bench_pid" 2>/dev/null || true
		wait "$bench_pid" 2>/dev/null || true
	fi
	if [[ -n $tail_pid ]]; then
		kill "$tail_pid" 2>/dev/null || true
		wait "$tail_pid" 2>/dev/null || true
	fi
	if $started; then
		"$repo_root/scripts/cluster.sh" stop --dir "$cluster_dir" >/dev/null || echo "bench.sh: stopping the cluster in $cluster_dir failed" >&2
	fi
	if $keep; then
		echo "bench.sh: kept $tmp (binary, cluster logs and data)" >&2
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
# A Ctrl-C reaches the bench too (same process group); it stops, prints and
# writes what it measured. Pass a signal sent to this script alone on to it.
trap 'echo "bench.sh: interrupted; waiting for the bench to write its results" >&2; [[ -z $bench_pid ]] || kill -s INT "$bench_pid" 2>/dev/null || true' INT TERM

echo "building $tmp/quorumkv"
(cd "$repo_root" && CGO_ENABLED=0 go build -o "$tmp/quorumkv" ./cmd/quorumkv)

if [[ -z $endpoints ]]; then
	started=true
	"$repo_root/scripts/cluster.sh" start --nodes "$nodes" --base-port "$base_port" --dir "$cluster_dir" -- --n "$n" --log-level warn
	for ((i = 0; i < nodes; i++)); do
		endpoints+="${endpoints:+,}http://127.0.0.1:$((base_port + i))"
	done
	bench_args=(--n "$n" ${bench_args[@]+"${bench_args[@]}"})
fi

log=$tmp/bench.out
: >"$log"
fault_text=$fault
[[ $fault == none ]] || fault_text+=" ($fault_node)"
echo "fault: $fault_text; running: quorumkv bench --endpoints $endpoints ${bench_args[*]-}"
"$tmp/quorumkv" bench --endpoints "$endpoints" ${bench_args[@]+"${bench_args[@]}"} >"$log" 2>&1 &
bench_pid=$!
tail -n +1 -f --pid="$bench_pid" "$log" &
tail_pid=$!

# The fault starts once the bench has loaded the keyspace: its first
# combination's header ("R=.. W=..: warmup ...") follows the load.
if [[ $fault != none ]]; then
	until grep -q '^R=[0-9]* W=[0-9]*: warmup' "$log"; do
		kill -0 "$bench_pid" 2>/dev/null || break
		sleep 0.1
	done
	pid=$(<"$cluster_dir/$fault_node.pid")
	case $fault in
	down)
		"$repo_root/scripts/cluster.sh" kill-node "$fault_node" --dir "$cluster_dir" >/dev/null
		echo "bench.sh: $fault_node killed (SIGKILL)"
		;;
	slow)
		fault_pid_node=$pid
		stop_s=$(awk -v ms="$stop_ms" 'BEGIN { printf "%.3f", ms / 1000 }')
		run_s=$(awk -v ms="$run_ms" 'BEGIN { printf "%.3f", ms / 1000 }')
		(
			trap 'kill -s CONT "$pid" 2>/dev/null; exit 0' TERM
			while kill -s STOP "$pid" 2>/dev/null; do
				sleep "$stop_s"
				kill -s CONT "$pid" 2>/dev/null || exit 0
				sleep "$run_s"
			done
		) &
		fault_pid=$!
		echo "bench.sh: $fault_node slowed: stopped ${stop_ms} ms of every $((stop_ms + run_ms)) ms"
		;;
	esac
fi

# Wait for the bench, again after a signal interrupted the wait.
rc=0
while :; do
	wait "$bench_pid" && rc=0 || rc=$?
	kill -0 "$bench_pid" 2>/dev/null || break
done
bench_pid=
wait "$tail_pid" 2>/dev/null || true
tail_pid=
exit "$rc"
