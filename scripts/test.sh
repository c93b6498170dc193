#!/usr/bin/env bash
# Runs the tests (or benchmarks) against one standalone redis-server and one
# 3-master Redis Cluster shared by every package of the run.
#
#   scripts/test.sh test  [PACKAGES...]   go vet + go test -race (default ./...)
#   scripts/test.sh bench [PACKAGES...]   benchmarks only
#
# The servers are started by scripts/redis-up.sh into .redis-test/run-<pid>/
# and stopped by pid from an EXIT trap, whatever the outcome. Their addresses
# reach the tests through HEADCOUNT_REDIS_ADDR and
# HEADCOUNT_REDIS_CLUSTER_ADDRS (see internal/redistest). The exit status is
# that of go vet / go test.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

mode=${1:-test}
shift || true
pkgs=("$@")
((${#pkgs[@]})) || pkgs=(./...)
case $mode in
test | bench) ;;
*)
	echo "usage: $0 test|bench [PACKAGES...]" >&2
	exit 2
	;;
esac

for tool in go redis-server redis-cli gcc; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "test.sh: $tool not found in PATH (make test installs redis-server and gcc with apt-get; go test -race needs gcc)" >&2
		exit 1
	fi
done

root=.redis-test
# Stop servers of earlier runs that died without running their EXIT trap.
for dir in "$root"/run-*; do
	[[ -d $dir ]] || continue
	kill -0 "${dir##*/run-}" 2>/dev/null || scripts/redis-down.sh "$dir"
done

if [[ $mode == test ]]; then
	go vet "${pkgs[@]}" # needs no servers: fail fast before starting them
	# Compile every test binary first: on a cold build cache the compiler
	# would otherwise share the two CPUs with tests that check convergence
	# deadlines (threshold + heartbeat + 1s).
	# Quiet unless it fails: then what go test printed (a package that
	# does not build, a TestMain that exits) is shown.
	if ! out=$(go test -race -count=1 -run '^$' "${pkgs[@]}" 2>&1); then
		printf '%s\n' "$out" | grep -v -e '^ok ' -e 'no test files' >&2
		exit 1
	fi
fi

state="$root/run-$$"
child=
cleanup() {
	local rc=$?
	if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
		kill -TERM -- "-$child" 2>/dev/null || true # go test and its test binaries
		wait "$child" 2>/dev/null || true
	fi
	scripts/redis-down.sh "$state" || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

start=$SECONDS
scripts/redis-up.sh "$state" >/dev/null
# shellcheck source=/dev/null
source "$state/env"
echo "test.sh: redis standalone $HEADCOUNT_REDIS_ADDR, cluster $HEADCOUNT_REDIS_CLUSTER_ADDRS (up in $((SECONDS - start))s)"

# go test runs in its own process group (set -m) and the shell waits for it
# with the interruptible `wait`, so that a SIGTERM/SIGINT/SIGHUP sent to this
# script stops the tests and the servers at once instead of after the run.
set -m
if [[ $mode == test ]]; then
	go test -race -count=1 -timeout 14m "${pkgs[@]}" &
else
	# -p 1: one package's benchmarks at a time, so they do not share the
	# CPUs and the Redis servers with another package's.
	go test -p 1 -run '^$' -bench . -benchmem -count=1 "${pkgs[@]}" &
fi
child=$!
set +m
wait "$child"
