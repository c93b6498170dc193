#!/usr/bin/env bash
# Stops the redis-server processes listed in STATE_DIR/pids (written by
# scripts/redis-up.sh) and removes STATE_DIR.
#
#   scripts/redis-down.sh STATE_DIR
#
# A pid is only signalled while /proc shows it is still our redis-server on
# its port, so a recycled pid is never hit. Safe to run more than once.
set -euo pipefail

state=${1:?usage: $0 STATE_DIR}
[[ -d $state ]] || exit 0

ours() { # PID PORT
	local cmd
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *redis-server*":$2"* ]]
}

alive=()
if [[ -f $state/pids ]]; then
	while read -r pid port; do
		[[ -n ${pid:-} ]] || continue
		if ours "$pid" "$port"; then
			kill -TERM "$pid" 2>/dev/null || true
			alive+=("$pid $port")
		fi
	done <"$state/pids"
fi

# No data is persisted (--save "", no AOF): they exit at once. Poll, and
# SIGKILL whatever is still there after 5s.
deadline=$((SECONDS + 5))
for entry in "${alive[@]}"; do
	read -r pid port <<<"$entry"
	while ours "$pid" "$port"; do
		if ((SECONDS >= deadline)); then
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.01
	done
done

rm -rf "$state"
