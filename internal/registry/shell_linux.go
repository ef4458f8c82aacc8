package registry

import (
	"errors"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// setDeathSignal makes the kernel kill the shell when the worker that
// started it dies.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }

// waitAndKillGroup waits for the started cmd to exit, kills what it left
// running in its process group while the unreaped shell still holds the
// group's id (so that the id cannot have been reused), then reaps it.
func waitAndKillGroup(cmd *exec.Cmd) error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	_ = killGroup(cmd)
	return cmd.Wait()
}
