//go:build !linux

package e2e

import "syscall"

// sysProcAttr: outside Linux there is no parent-death signal; the cleanups
// kill the nodes.
func sysProcAttr() *syscall.SysProcAttr { return nil }
