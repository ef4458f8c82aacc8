//go:build linux

package mpiexec

import (
	"os"
	"syscall"
)

// dieWithParent asks the kernel to kill this rank when the process that
// started it (mpirun, its daemon, or srun's step) dies: with the launcher
// gone the job cannot finalize, and a rank left behind would hang there.
func dieWithParent() {
	const prSetPdeathsig = 1
	parent := os.Getppid()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetPdeathsig, uintptr(syscall.SIGKILL), 0)
	if os.Getppid() != parent { // it died before the call took effect
		os.Exit(1)
	}
}
