//go:build !linux

package cloexec

import (
	"fmt"
	"syscall"
)

// MarkAll sets the close-on-exec flag of every open descriptor but 0, 1 and
// 2: it walks /dev/fd and sets the flag on each descriptor with fcntl.
func MarkAll() error {
	if err := walk("/dev/fd"); err != nil {
		return fmt.Errorf("cloexec: %w", err)
	}
	return nil
}

func setCloseOnExec(fd int) { syscall.CloseOnExec(fd) }
