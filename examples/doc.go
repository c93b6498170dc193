// Package examples holds the README's quick starts as complete programs,
// in the directories below it:
//
//	go run ./examples/nethttp   # net/http, adapters/nethttp
//	go run ./examples/echo      # echo v4, adapters/echo
//	go run ./examples/gorilla   # gorilla/mux, adapters/gorilla
//	go run ./examples/gin       # gin, adapters/gin
//	go run ./examples/chi       # chi v5, adapters/chi
//	go run ./examples/counter   # page views, package counter
//
// The first five serve a WebSocket echo at /ws/{room}, counted in the
// room, and the counts at /presence; counter adds page views at POST
// /hit/{page} and reads them at GET /views/{page}. In all of them -redis
// (or $REDIS_ADDR, default localhost:6379) names the Redis server and
// -addr (default :8080) the listen address, and SIGINT or SIGTERM shuts
// the server down, then the tracker or counter.
//
// The WebSocket programs differ only in their routes function: main and
// run are the same text in all of them, and counter has the same main.
// The part of each main.go between the comments "quickstart:start" and
// "quickstart:end" is a code block of the README's Quick start section,
// verbatim.
//
// The tests (go test ./examples/, part of make test) build every program,
// run it against the test Redis, connect a client and read its count from
// /presence (for counter: add views through one process and read them
// through another), stop it with SIGTERM and check that it exits cleanly.
// They also check that a taken port makes it fail with a message, and
// that the README's code blocks are the programs' code.
package examples
