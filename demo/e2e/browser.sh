#!/usr/bin/env bash
# make e2e-browser: headless Chromium loads the page of `go run ./demo -nodes 2`,
# joins a room as alice, chats, opens bot connections, joins as bob on node2
# in a second tab, crashes node2, and saves three screenshots of alice's tab,
# in which the live counts, the members and the chat are visible (not run by
# CI):
#
#   demo/e2e/out/1-joined.png   7 connections in lobby: alice on node1, 5 bots
#                               and bob on node2; 7 members; "bob joined"
#   demo/e2e/out/2-crashed.png  node2 SIGKILLed: its 6 still counted, flagged
#   demo/e2e/out/3-reaped.png   after the dead-instance threshold: 1 left, and
#                               "bob left: node crashed" in the chat (it fails
#                               if that line is not there within threshold +
#                               heartbeat + 3s of the crash)
#
# Installs Debian's chromium and chromium-driver with apt-get when missing.
# OUT=dir changes where the screenshots go.
set -euo pipefail

cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin"
out=${OUT:-demo/e2e/out}

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
	if [[ $(id -u) -eq 0 ]]; then sudo=; elif command -v sudo >/dev/null 2>&1; then sudo=sudo; else
		echo "browser.sh: chromium and chromium-driver are missing, and installing them needs root or sudo" >&2
		exit 1
	fi
	echo "browser.sh: installing chromium and chromium-driver with apt-get"
	$sudo apt-get update
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi

tmp=$(mktemp -d)
demo=
cleanup() {
	local rc=$?
	if [[ -n $demo ]] && kill -0 "$demo" 2>/dev/null; then
		kill -TERM -- "-$demo" 2>/dev/null || true # go run and the demo it started
		wait "$demo" 2>/dev/null || true
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT

# Build first, so that the wait below is not spent compiling.
go build -o /dev/null ./demo ./demo/e2e/browser
set -m # go run in its own process group, stopped as one
go run ./demo -nodes 2 -addr 127.0.0.1:0 -threshold 4s >"$tmp/demo.log" 2>&1 &
demo=$!
set +m

url=
for _ in $(seq 1 600); do
	url=$(sed -n 's/^headcount demo: .*open \(http:[^ ]*\)$/\1/p' "$tmp/demo.log")
	[[ -n $url ]] && break
	kill -0 "$demo" 2>/dev/null || break
	sleep 0.1
done
if [[ -z $url ]]; then
	echo "browser.sh: the demo did not start:" >&2
	cat "$tmp/demo.log" >&2
	exit 1
fi
echo "browser.sh: demo at $url"
if ! go run ./demo/e2e/browser -url "$url" -out "$out"; then
	echo "browser.sh: the demo's output:" >&2
	cat "$tmp/demo.log" >&2
	exit 1
fi
echo "browser.sh: screenshots in $out/"
