package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/bench"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBenchUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"np 0", []string{"--np", "0"}, "--np 0: want at least 1"},
		{"negative tasks", []string{"--tasks", "-1"}, "must not be negative"},
		{"negative scale waves", []string{"--scale-waves", "-2"}, "must not be negative"},
		{"unknown part", []string{"--parts", "throughput,disk"}, `--parts "throughput,disk": unknown part "disk"`},
		{"empty parts", []string{"--parts", ""}, "--parts"},
		{"unparsable duration", []string{"--efficiency-durations", "1ms,soon"}, `--efficiency-durations "1ms,soon": duration "soon"`},
		{"duration without unit", []string{"--efficiency-durations", "10"}, `duration "10"`},
		{"zero duration", []string{"--efficiency-durations", "0s"}, "want more than 0"},
		{"negative duration", []string{"--efficiency-durations", "-1ms"}, "want more than 0"},
		{"zero waves", []string{"--efficiency-waves", "0"}, `--efficiency-waves "0"`},
		{"waves not matching durations", []string{"--efficiency-durations", "1ms,2ms,3ms", "--efficiency-waves", "4,5"}, "2 efficiency wave counts for 3 durations"},
		{"scale np 0", []string{"--scale-np", "2,0"}, `--scale-np "2,0": count "0": want at least 1`},
		{"scale np not a number", []string{"--scale-np", "two"}, "not a whole number"},
		{"memory count negative", []string{"--memory-pending", "-5"}, "--memory-pending"},
		{"bad link", []string{"--link", "udp"}, `--link "udp"`},
		{"queue dir over tcp", []string{"--queue-dir", "/tmp/q"}, "--queue-dir needs --link queue"},
		{"unknown flag", []string{"--frobnicate"}, "unknown flag"},
		{"an argument", []string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, append([]string{"bench"}, tt.args...)...)
			assert.Equal(t, 2, code, errOut)
			assert.Contains(t, errOut, tt.msg)
		})
	}
}

func TestBenchHelp(t *testing.T) {
	code, _, errOut := runCLI(t, "bench", "--help")
	require.Equal(t, 0, code)
	for _, flag := range []string{"--np", "--parts", "--tasks", "--latency-rounds", "--efficiency-durations", "--efficiency-waves",
		"--scale-np", "--scale-tasks", "--scale-rounds", "--scale-waves", "--memory-pending", "--json", "--out", "--link",
		"--queue-dir", "--slots", "--prefetch", "--max-prefetch"} {
		assert.Contains(t, errOut, flag)
	}
	assert.Contains(t, errOut, "ceil(tasks / worker slots) x D")
	assert.Contains(t, errOut, "ideal / measured makespan")
}

// buildBenchBinary skips a test that needs MPI in a build without it, and
// builds this command with the MPI binding of the test's own build (as
// make test with MPI=mpich builds it).
func buildBenchBinary(t *testing.T) string {
	t.Helper()
	needMPIRun(t)
	if launch.Built == launch.NoMPI {
		t.Skip("built without MPI (nompi tag or cgo off)")
	}
	bin := filepath.Join(t.TempDir(), "rankfarm")
	build := exec.Command("go", append(append([]string{"build"}, launch.Built.GoBuildFlags()...), "-o", bin, ".")...)
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// TestBenchEndToEnd runs every part of the real command with tiny
// parameters under mpirun and checks its one JSON object and its report.
func TestBenchEndToEnd(t *testing.T) {
	bin := buildBenchBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "report")
	cmd := exec.CommandContext(ctx, bin, "bench", "--np", "2", "--tasks", "200", "--latency-rounds", "50",
		"--efficiency-durations", "1ms,5ms", "--efficiency-waves", "5",
		"--scale-np", "1,2", "--scale-tasks", "100", "--scale-rounds", "20", "--scale-waves", "2",
		"--memory-pending", "100,1000", "--json", "--out", out)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())

	dec := json.NewDecoder(&stdout)
	var res bench.Result
	require.NoError(t, dec.Decode(&res))
	assert.False(t, dec.More(), "one JSON object")
	assert.Equal(t, 2, res.NP)
	assert.Equal(t, 200, res.Tasks)
	assert.Equal(t, 0, res.Errors)
	assert.Equal(t, bench.AllParts, res.Parts)
	assert.Positive(t, res.TasksPerS)
	assert.Equal(t, 50, res.LatencyRounds)
	assert.Positive(t, res.LatencyP50us)
	assert.LessOrEqual(t, res.LatencyP50us, res.LatencyP99us)
	require.Len(t, res.Efficiency, 2)
	for i, e := range res.Efficiency {
		assert.Equal(t, []float64{1, 5}[i], e.TaskMs)
		assert.Equal(t, 1, e.Workers, "np 2: one worker")
		assert.Equal(t, 5, e.Tasks)
		assert.InDelta(t, 5*e.TaskMs/1000, e.IdealS, 1e-9)
		assert.InDelta(t, e.IdealS/e.MakespanS, e.Efficiency, 1e-9)
		assert.Zero(t, e.Errors)
	}
	require.Len(t, res.Scaling, 2)
	for i, s := range res.Scaling {
		assert.Equal(t, []int{1, 2}[i], s.NP)
		assert.Equal(t, 1, s.Workers)
		assert.Positive(t, s.TasksPerS)
		assert.Positive(t, s.LatencyP50us)
		assert.Positive(t, s.Efficiency10ms)
	}
	require.Len(t, res.Memory, 2)
	assert.Equal(t, []int{100, 1000}, []int{res.Memory[0].Pending, res.Memory[1].Pending})
	assert.Positive(t, res.Memory[1].HeapBytes)
	assert.Equal(t, res.Memory[1].BytesPerTask, res.PendingTaskBytes)
	assert.Contains(t, res.Command, "rankfarm bench --np 2")
	assert.NotEmpty(t, res.Host)

	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	require.NoError(t, err)
	assert.Contains(t, string(md), "`rankfarm bench --np 2 --tasks 200")
	assert.Contains(t, string(md), "| sleep task |")
	assert.Contains(t, string(md), "| pending tasks |")
	for _, f := range []string{"result.json", "latency.png", "latency.svg", "efficiency.png", "efficiency.svg",
		"scaling.png", "scaling.svg", "memory.png", "memory.svg"} {
		fi, err := os.Stat(filepath.Join(out, f))
		require.NoError(t, err, f)
		assert.Positive(t, fi.Size(), f)
	}
	assert.Contains(t, stderr.String(), "rankfarm bench: memory")
	assert.False(t, strings.Contains(stderr.String(), "level=ERROR"), stderr.String())
}

// TestBenchSubset runs only some parts: the others leave no trace.
func TestBenchSubset(t *testing.T) {
	bin := buildBenchBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "--np", "2", "--parts", "efficiency,memory", "--efficiency-durations", "1ms",
		"--efficiency-waves", "3", "--memory-pending", "500", "--tasks", "0", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())
	var m map[string]any
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &m))
	assert.Equal(t, []any{"efficiency", "memory"}, m["parts"])
	assert.Len(t, m["efficiency"], 1)
	assert.Len(t, m["memory"], 1)
	assert.NotContains(t, m, "scaling")
	assert.EqualValues(t, 0, m["tasks_per_s"])
	assert.EqualValues(t, 0, m["errors"])
}
