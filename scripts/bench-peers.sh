#!/usr/bin/env bash
# Runs bench/ (headcount against its peers, interleaved on one Redis) on a
# fresh standalone redis-server of its own, stopped whatever the outcome.
#
#   scripts/bench-peers.sh [FLAGS...]   e.g. -rounds 3 -only connect-50
#
# The flags go to `go run .` in bench/; see `cd bench && go run . -h`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/go/bin"

# redis-up.sh also starts a 3-master cluster: unused here, idle.
state=$root/.redis-test/peers-$$
trap '"$root/scripts/redis-down.sh" "$state" || true' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
"$root/scripts/redis-up.sh" "$state" >/dev/null
# shellcheck source=/dev/null
source "$state/env"
cd "$root/bench"
go run . -redis "$HEADCOUNT_REDIS_ADDR" "$@"
