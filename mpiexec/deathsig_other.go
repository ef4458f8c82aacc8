//go:build !linux

package mpiexec

// dieWithParent does nothing where the kernel has no parent-death signal.
func dieWithParent() {}
