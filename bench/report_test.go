package bench

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteReport(t *testing.T) {
	r := Result{NP: 4, Tasks: 1000, TasksPerS: 123456, Host: "node7", Cores: 2, GoVersion: "go1.26",
		LatencyRounds: 3, LatencyP50us: 100, LatencyP99us: 300, LatencyP999us: 300, LatencyMaxUs: 300,
		Latencies: []time.Duration{100 * time.Microsecond, 200 * time.Microsecond, 300 * time.Microsecond}}
	dir := filepath.Join(t.TempDir(), "out")
	require.NoError(t, r.WriteReport(dir, "rankfarm bench --np 4"))
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	require.NoError(t, err)
	assert.Contains(t, string(md), "`rankfarm bench --np 4` on node7 (2 cores, go1.26)")
	assert.Contains(t, string(md), "| 4 | 1000 | 123456 | 100 µs | 300 µs |")
	for _, f := range []string{"result.json", "latency.png", "latency.svg"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
		assert.Positive(t, fi.Size(), f)
	}
}
