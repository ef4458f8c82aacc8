package mpi

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Where the node's doorbell pages live (see rf_bells_setup in raw_cgo.go,
// which names them bellPrefix + the maker's pid + "-" + a random part).
const (
	bellDir    = "/dev/shm"
	bellPrefix = "rankfarm-bells-"
)

// sweepBells removes the doorbell pages in dir that blocks left behind. A
// page is unlinked as soon as every rank of its node has mapped it, so it
// outlives its block only when a rank died during start-up; it is stale
// once the process that made it (the pid in its name) is gone. Only files
// of the calling user are touched. It returns how many it removed.
func sweepBells(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	removed := 0
	for _, ent := range ents {
		name := ent.Name()
		rest, ok := strings.CutPrefix(name, bellPrefix)
		if !ok || !ent.Type().IsRegular() {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		info, err := ent.Info()
		if err != nil {
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Getuid() {
			continue
		}
		if processAlive(pid) {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			removed++
		}
	}
	return removed
}

// processAlive reports whether a process with pid exists (one of another
// user counts too).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
