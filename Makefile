# make test   install redis-server and gcc if missing, start a shared standalone
#             server and 3-master cluster, go vet, go test -race, stop them.
# make bench  same servers, benchmarks only.
# make bench-peers  headcount against Centrifuge's Redis presence and a
#             trivial EVALSHA on a fresh Redis (bench/, a module of its
#             own); ARGS go to it, e.g. ARGS="-rounds 3 -only read-1000".
# PKGS narrows the packages, e.g. make test PKGS=./internal/redistest/
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin

PKGS ?= ./...

.PHONY: test bench bench-peers install-redis

test: install-redis
	scripts/test.sh test $(PKGS)

bench: install-redis
	scripts/test.sh bench $(PKGS)

bench-peers: install-redis
	scripts/bench-peers.sh $(ARGS)

# Installs redis-server (and redis-cli), and gcc (go test -race needs cgo),
# with apt-get when not in PATH: as root directly, otherwise through sudo.
install-redis:
	@pkgs=; \
	if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then pkgs=redis-server; fi; \
	if ! command -v gcc >/dev/null 2>&1; then pkgs="$$pkgs gcc"; fi; \
	if [ -n "$$pkgs" ]; then \
		if [ "$$(id -u)" -eq 0 ]; then sudo=; \
		elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
		else echo "$$pkgs not installed, and installing needs root or sudo: apt-get install -y $$pkgs" >&2; exit 1; fi; \
		echo "not found: installing$$pkgs with apt-get"; \
		$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y $$pkgs; \
	fi

# make e2e-browser  headless Chromium (Debian's chromium and chromium-driver,
#                   installed with apt-get if missing) drives the page of
#                   `go run ./demo -nodes 2`: joins a room, chats, crashes a
#                   node, checks that another tab's chat says "bob left:
#                   node crashed", and saves screenshots of the counts,
#                   members and chat in demo/e2e/out/. Not part of make
#                   test or CI.
.PHONY: e2e-browser
e2e-browser:
	demo/e2e/browser.sh
