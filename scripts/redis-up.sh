#!/usr/bin/env bash
# Starts one standalone redis-server and a 3-master Redis Cluster (no
# replicas) on free loopback ports, for a test run.
#
#   scripts/redis-up.sh STATE_DIR
#
# Writes into STATE_DIR:
#   pids       "PID PORT" of every redis-server started (also failed attempts)
#   env        export lines for HEADCOUNT_REDIS_ADDR and
#              HEADCOUNT_REDIS_CLUSTER_ADDRS (also printed on stdout)
#   <name>/    each server's --dir and redis.log
# The servers keep running after this script exits; stop them with
# scripts/redis-down.sh STATE_DIR. On failure, whatever was started is
# stopped before exiting non-zero.
#
# Ports are picked at random below the kernel's ephemeral port range, so
# neither they nor the cluster bus ports (port+10000) collide with outgoing
# connections; a port that turns out to be taken is retried with another.
set -euo pipefail

state=${1:?usage: $0 STATE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$state"
state=$(cd "$state" && pwd)
: >"$state/pids"

die() {
	echo "redis-up: $*" >&2
	"$here/redis-down.sh" "$state" >&2 || true
	exit 1
}

for tool in redis-server redis-cli; do
	command -v "$tool" >/dev/null 2>&1 ||
		die "$tool not found in PATH: run \`make test\` (installs it with apt-get) or \`apt-get install -y redis-server\`"
done

rcli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}" 2>&1 | tr -d '\r'; }

# port_taken PORT: something accepts connections on 127.0.0.1:PORT.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready PORT PID: poll until the redis-server with PID answers on PORT
# (checked via INFO's process_id, not just any server on the port).
wait_ready() {
	local port=$1 pid=$2 deadline=$((SECONDS + 10))
	while ((SECONDS < deadline)); do
		kill -0 "$pid" 2>/dev/null || return 1
		if rcli "$port" info server | grep -qx "process_id:$pid"; then
			return 0
		fi
		sleep 0.01
	done
	return 1
}

# start_server NAME cluster|standalone: prints the port it listens on.
start_server() {
	local name=$1 kind=$2 dir="$state/$1" port pid args
	mkdir -p "$dir"
	for _ in $(seq 1 20); do
		# Default ephemeral range starts at 32768: keep port and bus port below.
		port=$((15000 + RANDOM % 7000))
		if port_taken "$port" || { [[ $kind == cluster ]] && port_taken $((port + 10000)); }; then
			continue
		fi
		args=(--port "$port" --bind 127.0.0.1 --save "" --appendonly no
			--protected-mode no --daemonize no --dir "$dir")
		if [[ $kind == cluster ]]; then
			rm -f "$dir/nodes.conf"
			args+=(--cluster-enabled yes --cluster-config-file "$dir/nodes.conf"
				--cluster-node-timeout 2000 --cluster-announce-ip 127.0.0.1)
		fi
		: >"$dir/redis.log"
		redis-server "${args[@]}" </dev/null >>"$dir/redis.log" 2>&1 &
		pid=$!
		echo "$pid $port" >>"$state/pids"
		if wait_ready "$port" "$pid"; then
			echo "$port"
			return 0
		fi
		kill -9 "$pid" 2>/dev/null || true
		if ! grep -q "Address already in use" "$dir/redis.log"; then
			echo "redis-up: redis-server $name on port $port did not start; log:" >&2
			tail -n 30 "$dir/redis.log" >&2
			return 1
		fi
	done
	echo "redis-up: no free port for $name after 20 attempts" >&2
	return 1
}

# Cluster nodes first: a master only reports cluster_state:ok 2s after it
# started, so the standalone server starts during that wait.
cports=()
for i in 0 1 2; do
	cports+=("$(start_server "cluster-$i" cluster)") || die "could not start cluster node $i"
done
sport=$(start_server standalone standalone) || die "could not start the standalone server"

for i in 0 1 2; do
	p=${cports[$i]}
	out=$(rcli "$p" cluster set-config-epoch $((i + 1)))
	[[ $out == OK ]] || die "CLUSTER SET-CONFIG-EPOCH on port $p: $out"
	lo=$((i * 16384 / 3)) hi=$(((i + 1) * 16384 / 3 - 1))
	out=$(rcli "$p" cluster addslotsrange "$lo" "$hi")
	if [[ $out == *"nknown subcommand"* ]]; then # Redis < 7.0
		out=$(rcli "$p" cluster addslots $(seq "$lo" "$hi"))
	fi
	[[ $out == OK ]] || die "CLUSTER ADDSLOTS $lo-$hi on port $p: $out"
done
for p in "${cports[@]:1}"; do
	out=$(rcli "${cports[0]}" cluster meet 127.0.0.1 "$p")
	[[ $out == OK ]] || die "CLUSTER MEET 127.0.0.1 $p: $out"
done

cluster_ok() {
	local p info
	for p in "${cports[@]}"; do
		info=$(rcli "$p" cluster info)
		grep -qx "cluster_state:ok" <<<"$info" &&
			grep -qx "cluster_known_nodes:3" <<<"$info" &&
			grep -qx "cluster_slots_ok:16384" <<<"$info" || return 1
	done
}
deadline=$((SECONDS + 30))
until cluster_ok; do
	((SECONDS < deadline)) || die "cluster on ports ${cports[*]} not ok after 30s: $(rcli "${cports[0]}" cluster info | head -n 8 | tr '\n' ' ')"
	sleep 0.02
done

caddrs=$(printf '127.0.0.1:%s,' "${cports[@]}")
{
	echo "export HEADCOUNT_REDIS_ADDR=127.0.0.1:$sport"
	echo "export HEADCOUNT_REDIS_CLUSTER_ADDRS=${caddrs%,}"
} | tee "$state/env"
