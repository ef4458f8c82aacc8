package cloexec

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// inheritable opens a pipe without close-on-exec, as C libraries do, and
// returns its two descriptors.
func inheritable(t *testing.T) [2]int {
	t.Helper()
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], 0))
	t.Cleanup(func() {
		_ = unix.Close(p[0])
		_ = unix.Close(p[1])
	})
	for _, fd := range p {
		require.Zero(t, fdFlags(t, fd)&unix.FD_CLOEXEC, "fd %d starts inheritable", fd)
	}
	return p
}

func fdFlags(t *testing.T, fd int) int {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	require.NoError(t, err)
	return fl
}

// childFDs lists the descriptors a child started with os/exec holds.
func childFDs(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("/bin/ls", "/proc/self/fd").Output()
	require.NoError(t, err)
	return strings.Fields(string(out))
}

func TestMarkAll(t *testing.T) {
	tests := []struct {
		name       string
		closeRange func(first, last, flags uint) error
	}{
		{"close_range", unix.CloseRange},
		{"no close_range (ENOSYS): walk /proc/self/fd", func(uint, uint, uint) error { return unix.ENOSYS }},
		{"no CLOSE_RANGE_CLOEXEC (EINVAL): walk", func(uint, uint, uint) error { return unix.EINVAL }},
		{"refused by seccomp (EPERM): walk", func(uint, uint, uint) error { return unix.EPERM }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := closeRange
			closeRange = tt.closeRange
			t.Cleanup(func() { closeRange = old })
			p := inheritable(t)
			assert.Contains(t, childFDs(t), strconv.Itoa(p[1]), "the pipe leaks into a child before MarkAll")

			require.NoError(t, MarkAll())
			for _, fd := range p {
				assert.NotZero(t, fdFlags(t, fd)&unix.FD_CLOEXEC, "fd %d", fd)
			}
			for _, fd := range []int{0, 1, 2} {
				assert.Zero(t, fdFlags(t, fd)&unix.FD_CLOEXEC, "fd %d is left alone", fd)
			}
			// ls holds 0, 1, 2 and the directory it lists.
			assert.NotContains(t, childFDs(t), strconv.Itoa(p[0]))
			assert.NotContains(t, childFDs(t), strconv.Itoa(p[1]))
		})
	}
}

func TestMarkAllLeavesExtraFiles(t *testing.T) {
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], 0))
	r, w := os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
	defer r.Close()
	require.NoError(t, MarkAll())
	cmd := exec.Command("/bin/sh", "-c", "echo given >&3")
	cmd.ExtraFiles = []*os.File{w}
	err := cmd.Run()
	require.NoError(t, w.Close())
	require.NoError(t, err, "a descriptor passed on purpose still reaches the child")
	buf := make([]byte, 16)
	n, err := r.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "given\n", string(buf[:n]))
}

func TestWalkMissingDir(t *testing.T) {
	assert.Error(t, walk("/no/such/fd/dir"))
}
