package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// endpoint is one thing the demo serves, as -h and the page list it.
type endpoint struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	What   string `json:"what"`
}

// nodeEndpoints is what a node serves (alone, or behind the supervisor's
// /node/{i}/).
var nodeEndpoints = []endpoint{
	{"GET", "/", "the page: chat, each room's members, and live connection counts"},
	{"GET", "/ws/{room}?user=U&tenant=T", "chat WebSocket (JSON events), counted in the room and the tenant; U is also the user in the room's members"},
	{"GET", "/api/presence?room=R&tenant=T", "connection counts as JSON, cluster-wide and on this node (no parameters: this node's rooms); with room=, &members=1 adds distinct users and member lists"},
	{"GET", "/api/events?room=R&room=S", "the rooms' members, then each join and leave (with its reason: closed, drained, crashed), as Server-Sent Events"},
	{"GET", "/api/info", "this node's settings and endpoints, as JSON"},
	{"GET", "/metrics", "Prometheus metrics of this node (headcount_*, Go runtime, process)"},
}

// supervisorEndpoints is what the supervisor of -nodes serves on -addr.
var supervisorEndpoints = []endpoint{
	{"GET", "/", "the page, over every node"},
	{"GET", "/api/info", "the settings, the nodes and their state, and these endpoints, as JSON"},
	{"GET", "/metrics", "Prometheus metrics: the supervisor's, and every running node's headcount_* labelled node=\"ID\""},
	{"ANY", "/node/{i}/...", "node i's endpoints above, proxied (HTTP and WebSocket)"},
	{"POST", "/node/{i}/crash", "kill node i (SIGKILL): its counts stay in Redis until reaped"},
	{"POST", "/node/{i}/restart", "start node i again, with the same instance ID"},
}

// printEndpoints writes es as an aligned list.
func printEndpoints(w io.Writer, es []endpoint) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range es {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.Method, e.Path, e.What)
	}
	_ = tw.Flush()
}
