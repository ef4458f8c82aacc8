package mpi

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSweepBells(t *testing.T) {
	// A process that has ended: its pid names a stale page.
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	dead := cmd.Process.Pid
	require.False(t, processAlive(dead), "pid %d was reused at once", dead)
	alive := os.Getpid()

	dir := t.TempDir()
	files := []struct {
		name string
		kept bool
	}{
		{bellPrefix + strconv.Itoa(dead) + "-1f2e", false},
		{bellPrefix + strconv.Itoa(alive) + "-1f2e", true},
		{bellPrefix + "notapid-1f2e", true},
		{bellPrefix + strconv.Itoa(dead), true}, // not the pattern: no random part
		{bellPrefix + "-5-1f2e", true},
		{"vader_segment.vm.0.1.0", true},
	}
	for _, f := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f.name), []byte("x"), 0o600))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, bellPrefix+strconv.Itoa(dead)+"-dir"), 0o700))

	assert.Equal(t, 1, sweepBells(dir))
	for _, f := range files {
		_, err := os.Stat(filepath.Join(dir, f.name))
		if f.kept {
			assert.NoError(t, err, "%s must stay", f.name)
		} else {
			assert.ErrorIs(t, err, os.ErrNotExist, "%s must go", f.name)
		}
	}
	assert.DirExists(t, filepath.Join(dir, bellPrefix+strconv.Itoa(dead)+"-dir"), "only regular files go")
	assert.Zero(t, sweepBells(filepath.Join(dir, "missing")), "a missing directory is no error")
}
