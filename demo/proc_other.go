//go:build !linux

package main

import "syscall"

// nodeProcAttr: elsewhere a node stays in the supervisor's process group,
// so that a Ctrl-C in the terminal reaches it too.
func nodeProcAttr() *syscall.SysProcAttr { return nil }
