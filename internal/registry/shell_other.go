//go:build !linux

package registry

import (
	"os/exec"
	"syscall"
)

func setDeathSignal(*syscall.SysProcAttr) {}

// waitAndKillGroup waits for the started cmd, then kills what it left
// running in its process group.
func waitAndKillGroup(cmd *exec.Cmd) error {
	err := cmd.Wait()
	_ = killGroup(cmd)
	return err
}
