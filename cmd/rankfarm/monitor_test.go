package main

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/monitor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// monitorDB records a small run: two tasks done, one failed.
func monitorDB(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rec, err := monitor.Create(monitor.Path(dir), "test", nil)
	require.NoError(t, err)
	now := time.Now().UnixNano()
	require.True(t, rec.Block(monitor.BlockEvent{Time: now, Block: "b0", Kind: monitor.BlockConnected, Host: "h", Ranks: 3, Workers: 2}))
	var evs []monitor.Event
	for id := uint64(1); id <= 3; id++ {
		evs = append(evs,
			monitor.Event{Time: now, Task: id, Kind: monitor.Submitted, Text: "app"},
			monitor.Event{Time: now + 10, Task: id, Kind: monitor.Dispatched, Block: "b0"})
	}
	evs = append(evs,
		monitor.Event{Time: now + 20, Task: 1, Kind: monitor.Result, Block: "b0", Rank: 1, Start: now + 11, End: now + 19},
		monitor.Event{Time: now + 20, Task: 2, Kind: monitor.Result, Block: "b0", Rank: 2, Start: now + 11, End: now + 19},
		monitor.Event{Time: now + 20, Task: 3, Kind: monitor.Result, Block: "b0", Rank: 1, Start: now + 11, End: now + 19, ErrKind: 1, Text: "no luck"},
		monitor.Event{Time: now + 20, Task: 3, Kind: monitor.Settled, ErrKind: 1, Err: errors.New("task 3 (app) failed: no luck")})
	require.True(t, rec.Sample(monitor.Sample{Time: now + 30, Submitted: 3, Done: 2, Failed: 1, Blocks: 1, Workers: 2}))
	require.NoError(t, rec.Close(evs, 0))
	return dir
}

func TestMonitorJSON(t *testing.T) {
	dir := monitorDB(t)
	code, out, errOut := runCLI(t, "monitor", "--json", dir)
	require.Equal(t, 0, code, errOut)
	var snap monitor.Snapshot
	require.NoError(t, json.Unmarshal([]byte(out), &snap))
	assert.Equal(t, int64(2), snap.Summary.Done)
	assert.Equal(t, int64(1), snap.Summary.Failed)
	require.NotEmpty(t, snap.Failures)
	assert.Contains(t, snap.Failures[0].Error, "no luck")

	// The file itself works too.
	code, _, errOut = runCLI(t, "monitor", "--json", "--run", "1", filepath.Join(dir, monitor.DBName))
	assert.Equal(t, 0, code, errOut)
}

func TestMonitorRejectsBadUse(t *testing.T) {
	code, _, errOut := runCLI(t, "monitor")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "RUNDIR_OR_DB")
	code, _, _ = runCLI(t, "monitor", "--run", "-1", "--json", t.TempDir())
	assert.Equal(t, 2, code)
	code, _, errOut = runCLI(t, "monitor", "--json", filepath.Join(t.TempDir(), "nothing"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no such file")
	code, _, errOut = runCLI(t, "monitor", "--help")
	assert.Equal(t, 0, code)
	for _, flag := range []string{"--addr", "--json", "--run", "--expand"} {
		assert.Contains(t, errOut, flag)
	}
}
