//go:build linux

package launch

import "syscall"

// setDeathSignal makes the kernel send the child SIGTERM when its parent
// thread dies, a second guard beside the front end's signal handler.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGTERM }
