package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSimJSON(t *testing.T) {
	code, out, errOut := runCLI(t, "sim", "--workers", "100", "--fanout", "8", "--tasks", "1000", "--task-seconds", "0.5",
		"--task-dist", "exponential", "--latency", "5us", "--per-byte", "1ns", "--ranks-per-node", "16", "--seed", "3", "--json")
	require.Equal(t, 0, code, errOut)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	for _, key := range []string{"workers", "tasks", "utilization", "makespan_s", "ideal_s", "rank0_msgs_per_s", "peak_rss_bytes", "wall_s"} {
		assert.Contains(t, rep, key)
	}
	assert.EqualValues(t, 100, rep["workers"])
	assert.EqualValues(t, 1000, rep["tasks"])
	assert.InDelta(t, 1e-9, rep["per_byte_s"], 1e-15)
}

func TestSimTable(t *testing.T) {
	code, out, errOut := runCLI(t, "sim", "--workers", "10", "--tasks", "100", "--task-seconds", "0")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "makespan")
	assert.Contains(t, out, "rank 0")
}

func TestSimRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--workers", "0"},
		{"--tasks", "-1"},
		{"--task-dist", "uniform"},
		{"--per-byte", "fast"},
		{"--per-byte", "-1ns"},
		{"--task-seconds", "-1"},
		{"--latency", "-1s"},
		{"extra"},
	} {
		code, _, errOut := runCLI(t, append([]string{"sim"}, args...)...)
		assert.Equal(t, 2, code, "%v: %s", args, errOut)
	}
}

func TestParsePerByte(t *testing.T) {
	tests := []struct {
		in   string
		want float64
	}{{"2", 2}, {"0.1ns", 0.1}, {"500ps", 0.5}, {"1us", 1000}, {"1µs", 1000}, {"0s", 0}}
	for _, tt := range tests {
		got, err := parsePerByte(tt.in)
		require.NoError(t, err, tt.in)
		assert.InDelta(t, tt.want, got, 1e-12, tt.in)
	}
	for _, bad := range []string{"", "x", "-1", "2s", "NaN", "Inf"} {
		_, err := parsePerByte(bad)
		assert.Error(t, err, bad)
	}
}
