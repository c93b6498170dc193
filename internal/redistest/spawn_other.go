//go:build !linux

package redistest

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; servers are still
// stopped by test cleanups and Main.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func removeStaleDirs() {}
