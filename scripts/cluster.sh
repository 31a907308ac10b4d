#!/usr/bin/env bash
# cluster.sh: a local quorumkv cluster of separate `quorumkv serve` processes,
# for demos, benchmarks and fault tests (stop or kill one node, start it again).
#
#   scripts/cluster.sh start [--nodes 3] [--base-port 8090] [--dir DIR] [-- SERVE-FLAGS...]
#   scripts/cluster.sh stop [--dir DIR]
#   scripts/cluster.sh stop-node nK [--dir DIR]     # SIGTERM, graceful
#   scripts/cluster.sh kill-node nK [--dir DIR]     # SIGKILL, a crash
#   scripts/cluster.sh start-node nK [--dir DIR]
#   scripts/cluster.sh status [--dir DIR]
#
# start builds the binary into DIR (default ./quorumkv-cluster), starts n1..nK
# on 127.0.0.1:BASE..BASE+K-1 with every node in --peers, and waits until each
# answers GET /readyz. Flags after `--` go to every `quorumkv serve` (for
# example -- --n 3 --w 3 --log-level debug). DIR holds the binary, the
# settings (cluster.env), and per node: nK.pid, nK.log and data/nK.
set -euo pipefail

readonly READY_TIMEOUT=${CLUSTER_READY_TIMEOUT:-30}  # seconds to wait for /readyz
readonly STOP_TIMEOUT=${CLUSTER_STOP_TIMEOUT:-15}    # seconds to wait after SIGTERM

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root

die() {
	printf 'cluster.sh: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
	exit "${1:-0}"
}

# Settings, from the command line and (after start) from DIR/cluster.env.
dir=./quorumkv-cluster
nodes=3
base_port=8090
serve_args=()

# parse_opts parses the options common to every subcommand; it sets
# positional to what is left.
positional=()
parse_opts() {
	while (($# > 0)); do
		case $1 in
		--nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
		--nodes=*) nodes=${1#*=}; shift ;;
		--base-port) base_port=${2:?--base-port needs a value}; shift 2 ;;
		--base-port=*) base_port=${1#*=}; shift ;;
		--dir) dir=${2:?--dir needs a value}; shift 2 ;;
		--dir=*) dir=${1#*=}; shift ;;
		-h | --help) usage 0 ;;
		--) shift; serve_args=("$@"); break ;;
		-*) die "unknown option $1 (see --help)" ;;
		*) positional+=("$1"); shift ;;
		esac
	done
	if ! [[ $nodes =~ ^[1-9][0-9]*$ ]]; then
		die "--nodes $nodes: want a positive number"
	fi
	if ! [[ $base_port =~ ^[1-9][0-9]*$ ]] || ((base_port + nodes - 1 > 65535)); then
		die "--base-port $base_port: want a port with room for $nodes nodes"
	fi
}

# use_dir makes dir absolute (it must exist).
use_dir() {
	[[ -d $dir ]] || die "no cluster in $dir (run: scripts/cluster.sh start --dir $dir)"
	dir=$(cd "$dir" && pwd)
}

load_env() {
	use_dir
	[[ -f $dir/cluster.env ]] || die "no cluster in $dir (run: scripts/cluster.sh start --dir $dir)"
	# shellcheck source=/dev/null
	source "$dir/cluster.env"
}

save_env() {
	{
		printf 'nodes=%q\n' "$nodes"
		printf 'base_port=%q\n' "$base_port"
		printf 'serve_args=('
		((${#serve_args[@]} == 0)) || printf '%q ' "${serve_args[@]}"
		printf ')\n'
	} >"$dir/cluster.env"
}

port_of() { echo $((base_port + ${1#n} - 1)); }

check_node() {
	if ! [[ $1 =~ ^n[1-9][0-9]*$ ]] || ((${1#n} > nodes)); then
		die "unknown node '$1': this cluster has n1..n$nodes"
	fi
}

# alive reports whether pid runs (a zombie, killed but not yet reaped, does
# not count).
alive() {
	local state
	kill -0 "$1" 2>/dev/null || return 1
	if [[ -r /proc/$1/stat ]]; then
		read -r _ _ state _ <"/proc/$1/stat" || return 1
		[[ $state != Z ]] || return 1
	fi
}

peers() {
	local i list=""
	for ((i = 1; i <= nodes; i++)); do
		list+="${list:+,}n$i=127.0.0.1:$(port_of "n$i")"
	done
	echo "$list"
}

# pid_of prints the pid of a running node, or nothing. It checks that the
# pid still belongs to that node, not to a process that reused it.
pid_of() {
	local pidfile=$dir/$1.pid pid
	[[ -f $pidfile ]] || return 0
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	alive "$pid" || return 0
	if [[ -r /proc/$pid/cmdline ]]; then
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--node-id $1 " || return 0
	fi
	echo "$pid"
}

ready() {
	curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$(port_of "$1")/readyz" 2>/dev/null
}

start_node() {
	local node=$1 pid
	pid=$(pid_of "$node")
	[[ -z $pid ]] || die "$node is already running (pid $pid)"
	[[ -x $dir/quorumkv ]] || die "no binary in $dir (run start first)"
	mkdir -p "$dir/data"
	printf '%s starting at %s\n' "$(date -u +%FT%TZ)" "$node" >>"$dir/$node.log"
	nohup "$dir/quorumkv" serve --node-id "$node" \
		--http-addr "127.0.0.1:$(port_of "$node")" \
		--data-dir "$dir/data/$node" \
		--peers "$(peers)" \
		${serve_args[@]+"${serve_args[@]}"} \
		</dev/null >>"$dir/$node.log" 2>&1 &
	echo $! >"$dir/$node.pid"
}

wait_ready() {
	local node=$1 pid deadline=$((SECONDS + READY_TIMEOUT))
	pid=$(<"$dir/$node.pid")
	until ready "$node"; do
		if ! alive "$pid"; then
			echo "cluster.sh: $node exited during startup; last lines of $dir/$node.log:" >&2
			tail -n 5 "$dir/$node.log" >&2
			exit 1
		fi
		((SECONDS < deadline)) || die "$node not ready within ${READY_TIMEOUT}s (see $dir/$node.log)"
		sleep 0.1
	done
	printf '%s ready at http://127.0.0.1:%s (pid %s)\n' "$node" "$(port_of "$node")" "$pid"
}

# stop_node sends sig to a node and, for SIGTERM, waits for it to exit.
stop_node() {
	local node=$1 sig=${2:-TERM} pid deadline=$((SECONDS + STOP_TIMEOUT))
	pid=$(pid_of "$node")
	if [[ -z $pid ]]; then
		echo "$node is not running"
		rm -f "$dir/$node.pid"
		return 0
	fi
	kill -s "$sig" "$pid"
	while alive "$pid"; do
		((SECONDS < deadline)) || die "$node (pid $pid) still running ${STOP_TIMEOUT}s after SIG$sig"
		sleep 0.1
	done
	rm -f "$dir/$node.pid"
	echo "$node stopped (SIG$sig)"
}

cmd_start() {
	local i
	command -v go >/dev/null || die "go is not installed"
	command -v curl >/dev/null || die "curl is not installed"
	for ((i = 1; i <= nodes; i++)); do
		[[ -z $(pid_of "n$i") ]] || die "n$i is already running in $dir (run: scripts/cluster.sh stop --dir $dir)"
	done
	mkdir -p "$dir"
	use_dir
	echo "building $dir/quorumkv"
	(cd "$repo_root" && CGO_ENABLED=0 go build -o "$dir/quorumkv" ./cmd/quorumkv)
	save_env
	for ((i = 1; i <= nodes; i++)); do
		start_node "n$i"
	done
	for ((i = 1; i <= nodes; i++)); do
		wait_ready "n$i"
	done
	echo "cluster of $nodes nodes up; logs and data in $dir"
}

cmd_stop() {
	local i
	for ((i = 1; i <= nodes; i++)); do
		stop_node "n$i" TERM
	done
}

cmd_status() {
	local i node pid state
	for ((i = 1; i <= nodes; i++)); do
		node=n$i
		pid=$(pid_of "$node")
		if [[ -z $pid ]]; then
			state=stopped
		elif ready "$node"; then
			state=ready
		else
			state="running, not ready"
		fi
		printf '%-4s %-22s pid %-8s %s\n' "$node" "127.0.0.1:$(port_of "$node")" "${pid:--}" "$state"
	done
}

main() {
	(($# > 0)) || usage 2
	local cmd=$1
	shift
	parse_opts "$@"
	case $cmd in
	start)
		((${#positional[@]} == 0)) || die "start takes no arguments"
		cmd_start
		;;
	stop | status)
		((${#positional[@]} == 0)) || die "$cmd takes no arguments"
		load_env
		"cmd_$cmd"
		;;
	stop-node | kill-node | start-node)
		((${#positional[@]} == 1)) || die "$cmd takes one node, like n3"
		load_env
		check_node "${positional[0]}"
		case $cmd in
		stop-node) stop_node "${positional[0]}" TERM ;;
		kill-node) stop_node "${positional[0]}" KILL ;;
		start-node)
			start_node "${positional[0]}"
			wait_ready "${positional[0]}"
			;;
		esac
		;;
	help | -h | --help) usage 0 ;;
	*) die "unknown command '$cmd' (start, stop, stop-node, kill-node, start-node, status)" ;;
	esac
}

main "$@"
