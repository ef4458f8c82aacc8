package frontend

import (
	"context"
	"iter"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStreamInBoundedMemory streams tasks from an iterator through Map and
// checks that the live heap stays bounded whatever the stream's length: it
// is sampled (after a GC) every tenth of the stream and must not grow past
// the first sample by more than the map window's worth. The default is 3·10^5
// tasks; RANKFARM_STREAM_TASKS=100000000 streams the 10^8 of the figures.
func TestStreamInBoundedMemory(t *testing.T) {
	n := int64(300_000)
	if testing.Short() || raceEnabled {
		n = 100_000
	}
	if s := os.Getenv("RANKFARM_STREAM_TASKS"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		require.NoError(t, err)
		n = v
	}
	_, conn := startTestBlock(t, 2, 4096, nil)
	ex, err := Start(context.Background(), Options{Conn: conn, Logger: quietLogger()})
	require.NoError(t, err)
	defer func() { assert.NoError(t, ex.Close()) }()

	in := iter.Seq[int64](func(yield func(int64) bool) {
		for i := range n {
			if !yield(i) {
				return
			}
		}
	})
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var samples []uint64
	var want, got int64
	start := time.Now()
	for v, err := range inc.Map(context.Background(), ex, in) {
		require.NoError(t, err)
		if v != want+1 {
			require.Equal(t, want+1, v, "results in the order of the stream")
		}
		want++
		got++
		if got%(n/10) == 0 {
			samples = append(samples, heap())
		}
	}
	require.Equal(t, n, got)
	elapsed := time.Since(start)
	var peak uint64
	for _, s := range samples {
		peak = max(peak, s)
	}
	t.Logf("%d tasks streamed in %v (%.0f/s); live heap after GC every tenth: %v MiB (peak %.1f MiB)",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), mib(samples), float64(peak)/(1<<20))
	// The window of DefaultMapWindow calls at about 250 B each, twice over
	// for slack: the bound does not depend on n.
	const slack = 2 * DefaultMapWindow * 256
	for i, s := range samples {
		assert.LessOrEqual(t, s, samples[0]+slack, "sample %d: the heap grew with the stream", i)
	}
}

func mib(xs []uint64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x*10/(1<<20)) / 10
	}
	return out
}
