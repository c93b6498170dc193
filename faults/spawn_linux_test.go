package faults

import "syscall"

// sysProcAttr has the kernel kill a demo process when the thread that
// started it exits: the spawner's, which lives until TestMain ends, or the
// whole test binary if it crashes or times out.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
