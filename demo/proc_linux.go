package main

import "syscall"

// nodeProcAttr puts a node in its own process group, so that a Ctrl-C in
// the terminal reaches the supervisor alone, which then stops the nodes
// with SIGTERM; and the kernel sends the node SIGTERM (drain and exit) if
// the supervisor dies without doing so.
func nodeProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
