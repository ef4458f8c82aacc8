package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fullResult is a synthetic Result with every part.
func fullResult() Result {
	return Result{NP: 4, Tasks: 1000, TasksPerS: 123456, ThroughputS: 0.0081, Workers: 3,
		Machine: Machine{Host: "node7", Cores: 2, GoVersion: "go1.26", CPUModel: "Xeon 9000", OS: "Debian GNU/Linux 12 (bookworm)",
			MPI: "Open MPI 4.1.4", Date: "2026-01-02T03:04:05Z"},
		Parts:         append([]string(nil), AllParts...),
		LatencyRounds: 3, LatencyP50us: 100, LatencyP99us: 300, LatencyP999us: 2500, LatencyMaxUs: 12000,
		Latencies: []time.Duration{100 * time.Microsecond, 200 * time.Microsecond, 12 * time.Millisecond},
		Efficiency: []Efficiency{
			{TaskMs: 1000, Tasks: 9, Workers: 3, MakespanS: 3.02, IdealS: 3, Efficiency: 3 / 3.02},
			{TaskMs: 1, Tasks: 6000, Workers: 3, MakespanS: 2.5, IdealS: 2, Efficiency: 0.8},
		},
		Scaling: []Scale{
			{NP: 4, Workers: 3, Tasks: 500, TasksPerS: 90000, LatencyP50us: 250, LatencyP99us: 600, Efficiency10ms: 0.95},
			{NP: 2, Workers: 1, Tasks: 500, TasksPerS: 30000, LatencyP50us: 400, LatencyP99us: 900, Efficiency10ms: 0.98},
		},
		Memory:           []MemoryPoint{{Pending: 1000, HeapBytes: 300000, BytesPerTask: 300}, {Pending: 100000, HeapBytes: 33554432, BytesPerTask: 335.54432}},
		PendingTaskBytes: 335.54432,
	}
}

func TestMarkdown(t *testing.T) {
	md := fullResult().Markdown("rankfarm bench --np 4")
	for _, want := range []string{
		"`rankfarm bench --np 4` on node7: 2 cores (Xeon 9000), Debian GNU/Linux 12 (bookworm), Open MPI 4.1.4, go1.26, tcp link, 2026-01-02:",
		"| 4 | 3 | 1,000 | 123,456 | 100 µs | 300 µs | 2.50 ms | 12.00 ms |",
		"| 1 s | 9 | 3 | 3.000 s | 3.020 s | 99.3 % |",
		"| 1 ms | 6,000 | 3 | 2.000 s | 2.500 s | 80.0 % |",
		"| 2 | 1 | 30,000 | 400 µs | 900 µs | 98.0 % |",
		"| 100,000 | 32.0 MiB | 336 |",
		"| 1,000 | 293 KiB | 300 |",
		"0 wrong or failed",
	} {
		assert.Contains(t, md, want)
	}
	// Every table's rows have as many cells as its header.
	for _, table := range strings.Split(md, "\n\n")[1:] {
		lines := strings.Split(strings.TrimSpace(table), "\n")
		if !strings.HasPrefix(lines[0], "|") {
			continue
		}
		for _, l := range lines[1:] {
			assert.Equal(t, strings.Count(lines[0], "|"), strings.Count(l, "|"), "%q in\n%s", l, table)
		}
	}
}

func TestMarkdownLeavesOutPartsNotRun(t *testing.T) {
	r := fullResult()
	r.Parts = []string{PartMemory}
	r.Efficiency, r.Scaling = nil, nil
	md := r.Markdown("rankfarm bench --parts memory")
	assert.NotContains(t, md, "tasks/s")
	assert.NotContains(t, md, "sleep task")
	assert.Contains(t, md, "bytes per pending task")
}

func TestWriteReport(t *testing.T) {
	tests := []struct {
		name  string
		r     func() Result
		plots []string
	}{
		{"every part", fullResult, []string{"latency", "efficiency", "scaling", "memory"}},
		{"one of each", func() Result {
			r := fullResult()
			r.Efficiency, r.Scaling, r.Memory = r.Efficiency[:1], r.Scaling[:1], r.Memory[:1]
			r.Latencies = r.Latencies[:1]
			return r
		}, []string{"latency", "efficiency", "scaling", "memory"}},
		{"memory only", func() Result {
			r := fullResult()
			r.Parts, r.Latencies, r.Efficiency, r.Scaling = []string{PartMemory}, nil, nil, nil
			return r
		}, []string{"memory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.r()
			assert.Equal(t, tt.plots, r.Plots())
			dir := filepath.Join(t.TempDir(), "out")
			require.NoError(t, r.WriteReport(dir, "rankfarm bench --np 4"))
			md, err := os.ReadFile(filepath.Join(dir, "results.md"))
			require.NoError(t, err)
			assert.Equal(t, r.Markdown("rankfarm bench --np 4"), string(md))
			files := []string{"result.json", "results.md"}
			for _, p := range tt.plots {
				files = append(files, p+".png", p+".svg")
			}
			for _, f := range files {
				fi, err := os.Stat(filepath.Join(dir, f))
				require.NoError(t, err, f)
				assert.Positive(t, fi.Size(), f)
			}
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Len(t, entries, len(files), "no other files")
			png, err := os.ReadFile(filepath.Join(dir, tt.plots[0]+".png"))
			require.NoError(t, err)
			assert.Equal(t, "\x89PNG", string(png[:4]))
			svg, err := os.ReadFile(filepath.Join(dir, tt.plots[0]+".svg"))
			require.NoError(t, err)
			assert.Contains(t, string(svg), "<svg")
		})
	}
}

// TestJSONNames pins the JSON names that scripts read.
func TestJSONNames(t *testing.T) {
	var b strings.Builder
	require.NoError(t, fullResult().WriteJSON(&b))
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(b.String()), &m))
	for _, k := range []string{"np", "tasks", "tasks_per_s", "throughput_s", "latency_rounds", "latency_p50_us", "latency_p99_us",
		"latency_p999_us", "latency_max_us", "host", "cores", "go_version", "cpu_model", "os", "mpi", "date", "errors",
		"workers", "parts", "efficiency", "scaling", "memory", "pending_task_bytes"} {
		assert.Contains(t, m, k)
	}
	assert.NotContains(t, m, "Latencies")
	eff := m["efficiency"].([]any)[0].(map[string]any)
	for _, k := range []string{"task_ms", "tasks", "workers", "makespan_s", "ideal_s", "efficiency", "errors"} {
		assert.Contains(t, eff, k)
	}
	sc := m["scaling"].([]any)[0].(map[string]any)
	for _, k := range []string{"np", "workers", "tasks", "tasks_per_s", "latency_p50_us", "latency_p99_us", "efficiency_10ms", "errors"} {
		assert.Contains(t, sc, k)
	}
	mem := m["memory"].([]any)[0].(map[string]any)
	for _, k := range []string{"pending", "heap_bytes", "bytes_per_task"} {
		assert.Contains(t, mem, k)
	}
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	require.NoError(t, fullResult().WriteTable(&b))
	for _, want := range []string{"123456 tasks/s", "p99.9 2500 µs", "efficiency of 6000 sleep tasks of 1 ms, 3 worker slots: 0.800",
		"np 2, 1 worker slots: 30000 tasks/s", "100000 pending tasks: 32.0 MiB of heap, 336 bytes each", "errors: 0"} {
		assert.Contains(t, b.String(), want)
	}
}
