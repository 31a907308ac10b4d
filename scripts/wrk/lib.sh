# lib.sh: shell helpers shared by scripts/speed.sh and scripts/memory.sh
# (sourced, not run): picking free ports, loading keys with wrk and
# scripts/wrk/load.lua, and reading wrk's output.
# shellcheck shell=bash

# need_wrk fails clearly when wrk is missing.
need_wrk() {
	command -v wrk >/dev/null || die "wrk is not installed (Debian/Ubuntu: apt-get install wrk; it is /usr/bin/wrk from the package 'wrk')"
}

# port_free reports whether nothing listens on TCP port $1 (by ss -ltn).
port_free() {
	! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# free_base_port prints a port P such that P..P+n-1 and P+100..P+100+n-1
# (scripts/cluster.sh's HTTP and gossip ports for n nodes) are all free, trying
# from $2 (default 20000) upwards in steps of 10. A port can still be taken
# between this check and the start; cluster.sh then fails clearly.
free_base_port() {
	local n=$1 p=${2:-20000} i ok
	command -v ss >/dev/null || die "ss (iproute2) is needed to find free ports; pass --base-port"
	for (( ; p + 100 + n <= 65535; p += 10)); do
		ok=1
		for ((i = 0; i < n; i++)); do
			port_free $((p + i)) && port_free $((p + 100 + i)) || { ok=0; break; }
		done
		if ((ok)); then
			echo "$p"
			return 0
		fi
	done
	die "no free base port found"
}

# build_binaries DIR: builds quorumkv and scripts/refserver (CGO_ENABLED=0)
# into DIR, and sets refserver (for start_ref) and quorumkv_bin.
build_binaries() {
	echo "building quorumkv and refserver into $1"
	(cd "$repo_root" && CGO_ENABLED=0 go build -o "$1/quorumkv" ./cmd/quorumkv && CGO_ENABLED=0 go build -o "$1/refserver" ./scripts/refserver)
	refserver=$1/refserver
	quorumkv_bin=$1/quorumkv
}

# start_ref starts "$refserver $@" in the background, appends its pid to the
# array ref_pids and sets ref_addr to the address it printed. Its output
# goes to $log.
start_ref() {
	local log=$1 i
	shift
	"$refserver" "$@" >"$log" 2>&1 &
	ref_pids+=($!)
	for ((i = 0; i < 100; i++)); do
		ref_addr=$(head -n 1 "$log" 2>/dev/null)
		[[ $ref_addr == *:* ]] && return 0
		kill -0 "${ref_pids[-1]}" 2>/dev/null || die "refserver $* exited: $(cat "$log")"
		sleep 0.05
	done
	die "refserver $* printed no address"
}

# stop_started stops what a script started, for its exit trap: the wrk in
# $wrk_pid (if set), the references in ref_pids, and, if $cluster_started,
# the cluster in $cluster_dir.
stop_started() {
	local pid
	[[ -z ${wrk_pid:-} ]] || kill -INT "$wrk_pid" 2>/dev/null || true
	for pid in "${ref_pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${ref_pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if ((cluster_started)); then
		"$repo_root/scripts/cluster.sh" stop --dir "$cluster_dir" >/dev/null ||
			echo "${0##*/}: could not stop the cluster in $cluster_dir" >&2
	fi
}

# metric_sum URL NAME LABELMATCH: the sum of the samples of metric NAME whose
# labels contain LABELMATCH (a plain substring such as op="put"), from a
# Prometheus text endpoint.
metric_sum() {
	curl -fsS --max-time 5 "$1" 2>/dev/null |
		awk -v name="$2" -v match_="$3" '
			index($0, name "{") == 1 && index($0, match_) { s += $NF }
			END { printf "%d\n", s }'
}

# wrk_load URL KEYS THREADS CONNECTIONS OUTFILE [QUERY]: writes keys
# k00000000..k(KEYS-1) once each through URL with scripts/wrk/load.lua (or
# reads each once, with WRK_METHOD=GET in the environment), printing
# progress every 10 s (from the nodes' metrics, given as the space-separated
# URLs in $progress_metrics, if set). It fails when a request failed or when
# no request finished for $LOAD_STALL_TIMEOUT seconds (default 120). wrk's
# output goes to OUTFILE.
wrk_load() {
	local url=$1 keys=$2 threads=$3 conns=$4 out=$5 query=${6:-} done_dir pid last=-1 now stall_since=$SECONDS n start=$SECONDS next=$((SECONDS + 10))
	local stall=${LOAD_STALL_TIMEOUT:-120} method=${WRK_METHOD:-PUT} what=load
	[[ $method == PUT ]] || what=read
	done_dir=$(mktemp -d "${TMPDIR:-/tmp}/wrk-load.XXXXXX")
	WRK_KEYS=$keys WRK_THREADS=$threads WRK_DONE_DIR=$done_dir WRK_QUERY=$query \
		wrk -t"$threads" -c"$conns" -d 24h -s "$wrk_dir/load.lua" "$url" >"$out" 2>&1 &
	pid=$!
	wrk_pid=$pid
	while :; do
		n=$(find "$done_dir" -name 't*' | wc -l)
		((n < threads)) || break
		kill -0 "$pid" 2>/dev/null || break
		sleep 1
		if ((SECONDS >= next)); then
			next=$((SECONDS + 10))
			now=$(load_progress)
			printf '  %s: %s of %s done after %ds\n' "$what" "$now" "$keys" $((SECONDS - start))
			if [[ $now != "$last" ]]; then
				last=$now
				stall_since=$SECONDS
			elif ((SECONDS - stall_since > stall)); then
				kill -INT "$pid" 2>/dev/null || true
				wait "$pid" || true
				wrk_pid=
				rm -rf "$done_dir"
				die "load stalled: no progress for ${stall}s (see $out)"
			fi
		fi
	done
	kill -INT "$pid" 2>/dev/null || true
	wait "$pid" || true
	wrk_pid=
	local ok=0 failed=0 f a b
	for f in "$done_dir"/t*; do
		[[ -e $f ]] || continue
		read -r a b <"$f"
		ok=$((ok + a))
		failed=$((failed + b))
	done
	rm -rf "$done_dir"
	load_ok=$ok
	load_failed=$failed
	load_seconds=$((SECONDS - start))
	printf '  %s: %d keys in %ds (%d failed)\n' "$what" "$ok" "$load_seconds" "$failed"
	((failed == 0 && ok == keys)) || die "$what: $ok of $keys keys done, $failed failed (see $out)"
}

# load_progress prints the number of requests of $method (PUT or GET) the
# nodes in $progress_metrics answered with a 2xx, or "?" without such nodes.
load_progress() {
	local u total=0 op=put
	[[ -n ${progress_metrics:-} ]] || { echo "?"; return; }
	[[ $method == PUT ]] || op=get
	for u in $progress_metrics; do
		total=$((total + $(metric_sum "$u" quorumkv_requests_total "op=\"$op\",status=\"2")))
	done
	echo "$total"
}

# parse_wrk FILE: prints "rps p50_ms p99_ms requests errors" from wrk
# --latency output; errors counts socket errors (connect, read, write,
# timeout) and non-2xx/3xx responses.
parse_wrk() {
	awk '
		function ms(v) {
			if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
			if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
			if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
			if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
			return v + 0
		}
		/^Requests\/sec:/ { rps = $2 }
		/^ +50%/ { p50 = ms($2) }
		/^ +99%/ { p99 = ms($2) }
		/ requests in / { reqs = $1 }
		/Socket errors:/ { for (i = 3; i <= NF; i++) { v = $i; gsub(/,/, "", v); if (v ~ /^[0-9]+$/) errs += v } }
		/Non-2xx or 3xx responses:/ { errs += $NF }
		END { printf "%s %s %s %s %d\n", (rps == "" ? "nan" : rps), (p50 == "" ? "nan" : p50), (p99 == "" ? "nan" : p99), (reqs == "" ? 0 : reqs), errs }
	' "$1"
}
