#!/usr/bin/env bash
# cluster.sh: a local quorumkv cluster of separate `quorumkv serve` processes,
# for demos, benchmarks and fault tests (stop, kill or pause one node, start it
# again, make it leave).
#
#   scripts/cluster.sh start [--nodes 3] [--base-port 8090] [--dir DIR] [-- SERVE-FLAGS...]
#   scripts/cluster.sh stop [--dir DIR]
#   scripts/cluster.sh stop-node nK [--dir DIR]     # SIGTERM, graceful; still a member
#   scripts/cluster.sh kill-node nK [--dir DIR]     # SIGKILL, a crash; still a member
#   scripts/cluster.sh pause-node nK [--dir DIR]    # SIGSTOP, a hung process
#   scripts/cluster.sh resume-node nK [--dir DIR]   # SIGCONT
#   scripts/cluster.sh start-node nK [--dir DIR]    # (re)start; joins through a live node
#   scripts/cluster.sh leave-node nK [--dir DIR]    # quorumkv cluster leave; waits for the exit
#   scripts/cluster.sh status [--dir DIR]
#
# start builds the binary into DIR (default ./quorumkv-cluster) and starts n1..nK
# with HTTP on 127.0.0.1:BASE..BASE+K-1 and gossip on BASE+100..BASE+100+K-1:
# n1 creates the cluster, the others --join n1. It waits until every node
# answers GET /readyz and the cluster has settled (every node a member, no
# partition transfer pending). Flags after `--` go to every `quorumkv serve`
# (for example -- --n 3 --w 3 --log-level debug). DIR holds the binary, the
# settings (cluster.env), and per node: nK.pid, nK.log and data/nK.
set -euo pipefail

readonly READY_TIMEOUT=${CLUSTER_READY_TIMEOUT:-30}  # seconds to wait for /readyz and settling
readonly STOP_TIMEOUT=${CLUSTER_STOP_TIMEOUT:-15}    # seconds to wait after SIGTERM
readonly LEAVE_TIMEOUT=${CLUSTER_LEAVE_TIMEOUT:-120} # seconds to wait for a leaving node to exit
readonly GOSSIP_OFFSET=100                           # gossip port = HTTP port + 100

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root

die() {
	printf 'cluster.sh: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
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
	if ! [[ $base_port =~ ^[1-9][0-9]*$ ]] || ((base_port + GOSSIP_OFFSET + nodes - 1 > 65535)); then
		die "--base-port $base_port: want a port with room for $nodes nodes and their gossip ports (+$GOSSIP_OFFSET)"
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
gossip_port_of() { echo $((base_port + GOSSIP_OFFSET + ${1#n} - 1)); }
addr_of() { echo "127.0.0.1:$(port_of "$1")"; }

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

# paused reports whether pid is stopped (SIGSTOP).
paused() {
	local state
	[[ -r /proc/$1/stat ]] || return 1
	read -r _ _ state _ <"/proc/$1/stat" || return 1
	[[ $state == T ]]
}

# join_list prints the gossip addresses of the running nodes other than $1,
# comma-separated: a starting node joins the cluster through them. It is
# empty when no other node runs: the first start of n1 creates the cluster,
# and a node that is a member already finds the others itself.
join_list() {
	local i list=""
	for ((i = 1; i <= nodes; i++)); do
		[[ n$i != "$1" ]] || continue
		[[ -n $(pid_of "n$i") ]] || continue
		list+="${list:+,}127.0.0.1:$(gossip_port_of "n$i")"
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
	curl -fsS -o /dev/null --max-time 1 "http://$(addr_of "$1")/readyz" 2>/dev/null
}

# settled reports whether node $1 sees the cluster settled: no partition
# transfer pending, nobody joining or leaving, and each of the nodes named
# in the other arguments a member.
settled() {
	local node=$1 body states other
	shift
	body=$(curl -fsS --max-time 2 "http://$(addr_of "$node")/v1/cluster" 2>/dev/null) || return 1
	[[ $body == *'"settled":true'* ]] || return 1
	states=$(grep -o '"states":{[^}]*}' <<<"$body") || return 1
	[[ $states != *'"joining"'* && $states != *'"leaving"'* ]] || return 1
	for other in "$@"; do
		[[ $states == *"\"$other\":\"member\""* ]] || return 1
	done
}

start_node() {
	local node=$1 pid join
	pid=$(pid_of "$node")
	[[ -z $pid ]] || die "$node is already running (pid $pid)"
	[[ -x $dir/quorumkv ]] || die "no binary in $dir (run start first)"
	mkdir -p "$dir/data"
	join=$(join_list "$node")
	printf '%s starting %s%s\n' "$(date -u +%FT%TZ)" "$node" "${join:+ (joining through $join)}" >>"$dir/$node.log"
	nohup "$dir/quorumkv" serve --node-id "$node" \
		--http-addr "$(addr_of "$node")" \
		--gossip-addr "127.0.0.1:$(gossip_port_of "$node")" \
		${join:+--join "$join"} \
		--data-dir "$dir/data/$node" \
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
	printf '%s ready at http://%s (pid %s)\n' "$node" "$(addr_of "$node")" "$pid"
}

# wait_settled waits until every node named sees the cluster settled with
# all of them members.
wait_settled() {
	local node deadline=$((SECONDS + READY_TIMEOUT))
	for node in "$@"; do
		until settled "$node" "$@"; do
			((SECONDS < deadline)) || die "$node does not see the cluster settled within ${READY_TIMEOUT}s (see $dir/$node.log and: $dir/quorumkv cluster status --addr $(addr_of "$node"))"
			sleep 0.2
		done
	done
}

# running_nodes prints the running, not paused nodes, space-separated.
running_nodes() {
	local i pid out=()
	for ((i = 1; i <= nodes; i++)); do
		pid=$(pid_of "n$i")
		[[ -z $pid ]] || paused "$pid" || out+=("n$i")
	done
	echo "${out[*]}"
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
	kill -s CONT "$pid" 2>/dev/null || true # a paused node handles SIGTERM only once resumed
	while alive "$pid"; do
		((SECONDS < deadline)) || die "$node (pid $pid) still running ${STOP_TIMEOUT}s after SIG$sig"
		sleep 0.1
	done
	rm -f "$dir/$node.pid"
	echo "$node stopped (SIG$sig)"
}

cmd_start() {
	local i all
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
	# n1 first: on a new cluster it creates it, and the others join it.
	start_node n1
	wait_ready n1
	for ((i = 2; i <= nodes; i++)); do
		start_node "n$i"
	done
	all=(n1)
	for ((i = 2; i <= nodes; i++)); do
		wait_ready "n$i"
		all+=("n$i")
	done
	wait_settled "${all[@]}"
	echo "cluster of $nodes nodes up and settled; logs and data in $dir"
}

# signal_node sends a signal to a running node without waiting.
signal_node() {
	local node=$1 sig=$2 what=$3 pid
	pid=$(pid_of "$node")
	[[ -n $pid ]] || die "$node is not running"
	kill -s "$sig" "$pid"
	echo "$node $what (SIG$sig, pid $pid)"
}

# leave_node makes a node leave the cluster and waits for its process to
# exit, which it does once it has handed its partitions over.
leave_node() {
	local node=$1 pid deadline=$((SECONDS + LEAVE_TIMEOUT))
	pid=$(pid_of "$node")
	[[ -n $pid ]] || die "$node is not running (a dead node is removed instead: $dir/quorumkv cluster remove $node --addr <a live node>)"
	"$dir/quorumkv" cluster leave --addr "$(addr_of "$node")" || exit 1
	while alive "$pid"; do
		((SECONDS < deadline)) || die "$node (pid $pid) still running ${LEAVE_TIMEOUT}s after the leave (see $dir/$node.log)"
		sleep 0.2
	done
	rm -f "$dir/$node.pid"
	echo "$node left the cluster and exited (it is removed: its data directory cannot start again)"
}

cmd_stop() {
	local i
	for ((i = 1; i <= nodes; i++)); do
		stop_node "n$i" TERM
	done
}

cmd_status() {
	local i node pid state asked=""
	for ((i = 1; i <= nodes; i++)); do
		node=n$i
		pid=$(pid_of "$node")
		if [[ -z $pid ]]; then
			state=stopped
		elif paused "$pid"; then
			state=paused
		elif ready "$node"; then
			state=ready
			[[ -n $asked ]] || asked=$node
		else
			state="running, not ready"
		fi
		printf '%-4s %-22s gossip %-22s pid %-8s %s\n' "$node" "$(addr_of "$node")" "127.0.0.1:$(gossip_port_of "$node")" "${pid:--}" "$state"
	done
	if [[ -n $asked && -x $dir/quorumkv ]]; then
		printf '\n'
		"$dir/quorumkv" cluster status --addr "$(addr_of "$asked")" || true
	fi
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
	stop-node | kill-node | start-node | leave-node | pause-node | resume-node)
		((${#positional[@]} == 1)) || die "$cmd takes one node, like n3"
		load_env
		check_node "${positional[0]}"
		case $cmd in
		stop-node) stop_node "${positional[0]}" TERM ;;
		kill-node) stop_node "${positional[0]}" KILL ;;
		pause-node) signal_node "${positional[0]}" STOP paused ;;
		resume-node) signal_node "${positional[0]}" CONT resumed ;;
		leave-node) leave_node "${positional[0]}" ;;
		start-node)
			start_node "${positional[0]}"
			wait_ready "${positional[0]}"
			# shellcheck disable=SC2046 # running_nodes prints plain node ids
			wait_settled $(running_nodes)
			;;
		esac
		;;
	help | -h | --help) usage 0 ;;
	*) die "unknown command '$cmd' (start, stop, stop-node, kill-node, pause-node, resume-node, start-node, leave-node, status)" ;;
	esac
}

main "$@"
