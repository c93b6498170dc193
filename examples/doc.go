// Package examples holds the README's quick starts as complete programs,
// one per adapter, in the directories below it:
//
//	go run ./examples/nethttp   # net/http, adapters/nethttp
//	go run ./examples/echo      # echo v4, adapters/echo
//	go run ./examples/gorilla   # gorilla/mux, adapters/gorilla
//	go run ./examples/gin       # gin, adapters/gin
//	go run ./examples/chi       # chi v5, adapters/chi
//
// Each serves a WebSocket echo at /ws/{room}, counted in the room, and the
// counts at /presence; -redis (or $REDIS_ADDR, default localhost:6379)
// names the Redis server and -addr (default :8080) the listen address.
// SIGINT or SIGTERM shuts the server down, then the tracker.
//
// The programs differ only in their routes function; main and run are the
// same text in all of them. The part of each main.go between the comments
// "quickstart:start" and "quickstart:end" is a code block of the README's
// Quick start section, verbatim.
//
// The tests (go test ./examples/, part of make test) build every program,
// run it against the test Redis, connect a client, read its count from
// /presence, stop it with SIGTERM and check that it exits cleanly; they
// also check that a busy port makes it fail with a message, and that the
// README's code blocks match the programs.
package examples
