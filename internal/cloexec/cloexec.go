// Package cloexec marks every descriptor of the process close-on-exec, so
// that a program the process starts inherits none of them.
//
// A rank of a block holds descriptors it did not open itself: the MPI
// library's sockets and pipes (its launcher's, its daemon's, its peers'),
// and under MPICH's Hydra a dozen of the proxy's own, many of them without
// the close-on-exec flag. A command a task starts would inherit them all
// and keep them open for as long as it runs (a task's sleep holding Open
// MPI's listening sockets), and an MPI program among them would find its
// rank's launcher connections. Go opens its own descriptors close-on-exec;
// MarkAll makes the others so too. os/exec gives a child only stdin,
// stdout, stderr and its ExtraFiles, which it passes on explicitly: marking
// never takes a descriptor from a child that was meant to have it.
package cloexec

import (
	"os"
	"strconv"
)

// walk marks close-on-exec every descriptor from 3 up that dir (a listing
// of the process's descriptors: /proc/self/fd, /dev/fd) names. A descriptor
// closed since the listing is skipped without error.
func walk(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd < 3 {
			continue
		}
		setCloseOnExec(fd) // the listing's own descriptor too: it is already
	}
	return nil
}
