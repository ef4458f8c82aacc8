package frontend

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/monitor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMonitorRecordsEveryTask runs successes, a retried task, failures, a
// dependency failure and a task that waits for another, and checks the
// database has each one's life, and that Prometheus serves the counters.
func TestMonitorRecordsEveryTask(t *testing.T) {
	dir := t.TempDir()
	_, conn := startTestBlock(t, 3, 16, nil)
	ex, err := Start(context.Background(), Options{Conn: conn, Logger: quietLogger(), Monitor: dir, MetricsAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	ctx := ctxFor(t, 30*time.Second)

	const n = 500
	futs := make([]*Future[int64], n)
	for i := range futs {
		futs[i] = inc.Call(ex, V(int64(i)))
	}
	retried := flaky.Call(ex, V(t.Name()), V(1), Retries(2))
	failed := fail.Call(ex, V("on purpose"))
	dependant := inc.Call(ex, failed)
	waiter := inc.Call(ex, wait.Call(ex, V(100*time.Millisecond))) // submitted before its dependency can end
	for i, f := range futs {
		v, err := f.Get(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(i+1), v)
	}
	_, err = retried.Get(ctx)
	require.NoError(t, err)
	_, err = failed.Get(ctx)
	require.Error(t, err)
	_, err = dependant.Get(ctx)
	require.ErrorAs(t, err, new(*DependencyError))
	_, err = waiter.Get(ctx)
	require.NoError(t, err)

	// Prometheus, while the executor runs.
	addr := ex.MetricsAddr()
	require.NotEmpty(t, addr)
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Contains(t, string(body), "rankfarm_tasks_submitted_total 505")
	assert.Contains(t, string(body), "rankfarm_tasks_failed_total 2")
	assert.Contains(t, string(body), "rankfarm_blocks 1")
	assert.Contains(t, string(body), "rankfarm_tasks_settled_per_second")

	require.NoError(t, ex.Close())

	r, err := monitor.OpenReader(dir)
	require.NoError(t, err)
	defer r.Close()
	rows := map[uint64]monitor.TaskRow{}
	require.NoError(t, r.Tasks(ctx, 1, func(row *monitor.TaskRow) { rows[row.ID] = *row }))
	require.Len(t, rows, n+5)
	for id := uint64(1); id <= n; id++ {
		row := rows[id]
		assert.Equal(t, monitor.StateDone, row.State, "task %d", id)
		assert.Equal(t, "ft.inc", row.App)
		assert.Equal(t, "local", row.Block)
		assert.True(t, row.Rank >= 1 && row.Rank <= 3, "rank %d", row.Rank)
		assert.True(t, row.Submitted > 0 && row.Dispatched >= row.Submitted && row.Finished >= row.Dispatched, "times of task %d: %+v", id, row)
		assert.True(t, row.Started > 0 && row.Ended >= row.Started)
		assert.Equal(t, uint32(1), row.Attempts)
	}
	assert.Equal(t, uint32(2), rows[n+1].Attempts, "the flaky task ran twice")
	assert.Equal(t, monitor.StateDone, rows[n+1].State)
	assert.Equal(t, monitor.StateFailed, rows[n+2].State)
	assert.Equal(t, "app error", rows[n+2].ErrKind)
	assert.Contains(t, rows[n+2].Error, "failed on purpose")
	assert.Equal(t, monitor.StateFailed, rows[n+3].State)
	assert.Equal(t, "dependency failed", rows[n+3].ErrKind)
	assert.Equal(t, int32(-1), rows[n+3].Rank, "it never ran")
	assert.Positive(t, rows[n+5].Ready, "the waiter became ready when its dependency resolved")

	snap, err := r.Snapshot(ctx, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(n+3), snap.Summary.Done)
	assert.Equal(t, int64(2), snap.Summary.Failed)
	assert.Equal(t, int64(n+5), snap.Summary.Submitted)
	assert.False(t, snap.Summary.Live)
	assert.NotEmpty(t, snap.Series)
	assert.NotEmpty(t, snap.Timeline.Rows)
	kinds := map[string]bool{}
	for _, f := range snap.Failures {
		kinds[f.Kind] = true
	}
	assert.True(t, kinds["app error"] && kinds["dependency failed"], "failures: %+v", snap.Failures)
	var events []string
	for _, b := range snap.Blocks {
		events = append(events, b.Event)
	}
	assert.Equal(t, []string{"connected"}, events)
	assert.FileExists(t, filepath.Join(dir, monitor.DBName))
}

// TestMonitorOffCostsNothing checks that the hooks are no-ops without
// monitoring (a nil *monState).
func TestMonitorOffCostsNothing(t *testing.T) {
	t.Setenv(EnvMonitor, "")
	t.Setenv(EnvMetricsAddr, "")
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	assert.Nil(t, ex.mon)
	assert.Empty(t, ex.MetricsAddr())
	v, err := inc.Call(ex, V(int64(1))).Get(ctxFor(t, 10*time.Second))
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
}

// TestMonitorBadPath fails Start with a clear error.
func TestMonitorBadPath(t *testing.T) {
	_, conn := startTestBlock(t, 1, 1, nil)
	_, err := Start(context.Background(), Options{Conn: conn, Logger: quietLogger(), Monitor: "/proc/no/such/dir/x.db"})
	require.ErrorContains(t, err, "monitoring")
	_ = conn.Close()
}

// BenchmarkRoundTripMonitored is BenchmarkRoundTrip with monitoring on:
// compare the two for the front end's cost of monitoring per task.
func BenchmarkRoundTripMonitored(b *testing.B) {
	ex, _ := newTestExecutor(b, 2, 1024, Options{Monitor: b.TempDir()}, nil)
	b.ReportAllocs()
	fs := make([]*Future[int64], b.N)
	b.ResetTimer()
	for i := range fs {
		fs[i] = inc.Call(ex, V(int64(i)))
	}
	for _, f := range fs {
		if _, err := f.Get(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}
