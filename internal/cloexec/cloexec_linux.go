//go:build linux

package cloexec

import (
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// MarkAll sets the close-on-exec flag of every open descriptor but 0, 1 and
// 2. On Linux it is one close_range(3, ~0U, CLOSE_RANGE_CLOEXEC); where the
// kernel lacks it (before 5.11: ENOSYS or EINVAL) or a seccomp filter
// refuses it (EPERM), it walks /proc/self/fd and sets the flag on each
// descriptor with fcntl.
func MarkAll() error {
	err := closeRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if werr := walk(procFDs); werr != nil {
		return fmt.Errorf("cloexec: close_range: %w; walking %s: %w", err, procFDs, werr)
	}
	return nil
}

// procFDs lists this process's descriptors.
const procFDs = "/proc/self/fd"

// closeRange is unix.CloseRange, replaced in tests.
var closeRange = unix.CloseRange

func setCloseOnExec(fd int) {
	_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
}
