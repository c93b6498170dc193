//go:build !linux

package faults

import "syscall"

// sysProcAttr: no parent-death signal outside Linux; cleanups kill the demo
// processes.
func sysProcAttr() *syscall.SysProcAttr { return nil }
