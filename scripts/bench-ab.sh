#!/usr/bin/env bash
# bench-ab.sh OLD-REV PKG BENCH [ROUNDS]: runs one Go benchmark of PKG
# alternately at OLD-REV (in a temporary git worktree) and at the working
# tree, ROUNDS times each (default 5), on the same Redis, and prints every
# round's metrics, so that a change's cost is measured in one run rather
# than across days. Example, the cost of presence to count-only
# connections (d827714 is the last commit before presence):
#
#   BENCHTIME=20000x scripts/bench-ab.sh d827714 ./wsconn/ BenchmarkStrictConnectDisconnect 7
#
# BENCHTIME is the -benchtime of each run (default 1x).
set -euo pipefail
old=$1 pkg=$2 bench=$3 rounds=${4:-5}
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tmp/old" >/dev/null 2>&1 || true; "$root/scripts/redis-down.sh" "$tmp/redis" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$root" worktree add --detach "$tmp/old" "$old" >/dev/null
"$root/scripts/redis-up.sh" "$tmp/redis" >/dev/null
# shellcheck disable=SC1091
source "$tmp/redis/env"
for i in $(seq "$rounds"); do
	# Each side goes first in every other round: a drift of the machine or
	# of Redis within a round then favours neither.
	order="old new"
	[ $((i % 2)) = 0 ] && order="new old"
	for side in $order; do
		dir=$root
		[ "$side" = old ] && dir=$tmp/old
		line=$(cd "$dir" && go test -run '^$' -bench "^${bench}\$" -benchtime "${BENCHTIME:-1x}" -count 1 "$pkg" 2>/dev/null | grep "^${bench}" || true)
		echo "round $i $side: ${line:-failed}"
	done
done
