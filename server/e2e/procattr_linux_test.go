//go:build linux

package e2e

import "syscall"

// sysProcAttr makes the kernel kill a node if the test process dies without
// running its cleanups (a panic, a test timeout), so that no node outlives
// the test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
