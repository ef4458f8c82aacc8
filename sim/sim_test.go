package sim

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/rankpool"
)

// model is the cost model of most tests.
func model(c Config) Config {
	c.Latency = 2 * time.Microsecond
	c.Overhead = time.Microsecond
	c.PerByte = 2
	return c
}

func TestRunShapes(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		ranks     int
		workers   int
		depth     int
		perWorker int // every worker runs exactly this many tasks; 0: not checked
	}{
		{name: "one rank runs tasks itself", cfg: Config{Ranks: 1, Tasks: 10, TaskTime: time.Second}, ranks: 1, workers: 1, perWorker: 10},
		{name: "np 2 is rank 0 and one worker", cfg: Config{Ranks: 2, Tasks: 10, TaskTime: time.Second}, ranks: 2, workers: 1, depth: 1, perWorker: 10},
		{name: "one worker asked: one rank", cfg: Config{Workers: 1, Tasks: 3, TaskTime: time.Second}, ranks: 1, workers: 1, perWorker: 3},
		{name: "np 8, fan-out 2", cfg: Config{Ranks: 8, Fanout: 2, Tasks: 400, TaskTime: 10 * time.Millisecond}, ranks: 8, workers: 4, depth: 3, perWorker: 100},
		{name: "1000 workers, fan-out 8", cfg: Config{Workers: 1000, Fanout: 8, Tasks: 5000, TaskTime: time.Second}, workers: 1000, depth: 4, perWorker: 5},
		{name: "uneven nodes", cfg: Config{Ranks: 100, RanksPerNode: 7, Fanout: 4, Tasks: 2000, TaskTime: time.Second}, ranks: 100},
		{name: "no tasks", cfg: Config{Workers: 10}, workers: 10, depth: 1},
		{name: "no-op tasks", cfg: Config{Workers: 300, Tasks: 100000}, workers: 300, depth: 2},
		{name: "exponential", cfg: Config{Workers: 100, Tasks: 3000, TaskTime: time.Second, Dist: DistExponential}, workers: 100, depth: 2},
		{name: "lognormal", cfg: Config{Workers: 100, Tasks: 3000, TaskTime: time.Second, Dist: DistLognormal, Sigma: 1.5}, workers: 100, depth: 2},
		{name: "slots, small batches, payloads", cfg: Config{Workers: 50, Fanout: 3, Tasks: 3000, TaskTime: time.Millisecond, ArgBytes: 100, ValueBytes: 1000,
			Pool: rankpool.Config{Slots: 4, Prefetch: 3, MaxBatch: 5}}, workers: 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := model(tt.cfg)
			cfg.PerWorker = true
			rep, err := Run(context.Background(), cfg)
			require.NoError(t, err) // Run checks that every task resolved exactly once
			if tt.ranks > 0 {
				assert.Equal(t, tt.ranks, rep.Ranks)
			}
			if tt.workers > 0 {
				assert.Equal(t, tt.workers, rep.Workers)
			}
			if tt.depth > 0 {
				assert.Equal(t, tt.depth, rep.Depth)
			}
			total := 0
			for _, n := range rep.TasksPerWorker {
				total += n
			}
			assert.Equal(t, cfg.Tasks, total)
			if tt.perWorker > 0 {
				assert.Equal(t, tt.perWorker, rep.TasksPerWorkerMin)
				assert.Equal(t, tt.perWorker, rep.TasksPerWorkerMax)
			}
			assert.GreaterOrEqual(t, rep.Shutdown, rep.Makespan)
			if cfg.Tasks > 0 && cfg.TaskTime > 0 {
				assert.GreaterOrEqual(t, rep.Makespan, rep.Ideal)
				assert.InDelta(t, rep.Efficiency, rep.Ideal/rep.Makespan, 1e-9)
				assert.LessOrEqual(t, rep.UtilizationMakespan, 1.0)
				assert.LessOrEqual(t, rep.Utilization, 1.0+1e-9)
			}
		})
	}
}

func TestRunIsDeterministic(t *testing.T) {
	cfg := model(Config{Workers: 500, Fanout: 4, RanksPerNode: 16, Tasks: 5000, TaskTime: 50 * time.Millisecond, Dist: DistLognormal, Seed: 7})
	a, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	b, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	a.Wall, b.Wall, a.PeakRSS, b.PeakRSS = 0, 0, 0, 0
	assert.Equal(t, a, b)
	cfg.Seed = 8
	c, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	assert.NotEqual(t, a.Makespan, c.Makespan, "another seed, other draws")
}

// TestRunNearIdealForLongTasks: with tasks far longer than the messages
// cost, every worker stays busy and the makespan is the ideal plus the time
// to fill the tree.
func TestRunNearIdealForLongTasks(t *testing.T) {
	for _, workers := range []int{1, 64, 4096} {
		rep, err := Run(context.Background(), model(Config{Workers: workers, Tasks: 10 * workers, TaskTime: time.Second}))
		require.NoError(t, err)
		assert.InDelta(t, 10.0, rep.Ideal, 1e-9)
		assert.Less(t, rep.Makespan, 10.01, "workers %d", workers)
		assert.Greater(t, rep.Utilization, 0.999, "workers %d", workers)
		assert.Greater(t, rep.UtilizationMakespan, 0.999, "workers %d", workers)
		assert.Equal(t, 10, rep.TasksPerWorkerMin)
		assert.Equal(t, 10, rep.TasksPerWorkerMax)
	}
}

// TestRunUtilizationWhenWorkRunsOut: 9.5 tasks per worker leave half the
// workers without a tenth; that is the end of the work, not idleness.
func TestRunUtilizationWhenWorkRunsOut(t *testing.T) {
	rep, err := Run(context.Background(), model(Config{Workers: 1000, Tasks: 9500, TaskTime: time.Second}))
	require.NoError(t, err)
	assert.InDelta(t, 10.0, rep.Ideal, 1e-9)
	assert.Greater(t, rep.Utilization, 0.999)
	assert.InDelta(t, 0.95, rep.UtilizationMakespan, 0.001)
	assert.Equal(t, 9, rep.TasksPerWorkerMin)
	assert.Equal(t, 10, rep.TasksPerWorkerMax)
}

// TestRunFindsTheRank0Bottleneck: with no-op tasks and expensive bytes,
// rank 0 is busy all the time and the throughput is its capacity.
func TestRunFindsTheRank0Bottleneck(t *testing.T) {
	cfg := model(Config{Workers: 2000, Tasks: 200000})
	cfg.PerByte = 200
	rep, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	assert.Greater(t, rep.Rank0Busy, 0.95)
	assert.InEpsilon(t, rep.Rank0Capacity, rep.Throughput, 0.05)
	assert.Greater(t, rep.Rank0Busy, rep.BusiestSubMasterBusy)
}

func TestRunCostsScaleTheMakespan(t *testing.T) {
	base := model(Config{Ranks: 2, Tasks: 1})
	fast, err := Run(context.Background(), base)
	require.NoError(t, err)
	base.Latency = time.Millisecond
	slow, err := Run(context.Background(), base)
	require.NoError(t, err)
	// Six crossings: the first credit climbs two links, the task comes
	// down two and its result climbs two.
	assert.InDelta(t, fast.Makespan+6*(time.Millisecond-2*time.Microsecond).Seconds(), slow.Makespan, 1e-9)
}

func TestRunRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"negative workers", Config{Workers: -1}},
		{"negative tasks", Config{Tasks: -1}},
		{"negative latency", Config{Latency: -time.Second}},
		{"negative per-byte", Config{PerByte: -1}},
		{"huge arguments", Config{ArgBytes: 1 << 30}},
		{"too many workers", Config{Workers: 1 << 30}},
		{"unknown distribution", Config{Dist: 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), tt.cfg)
			require.Error(t, err)
		})
	}
}

func TestRunStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, model(Config{Workers: 1000, Tasks: 1_000_000, TaskTime: time.Millisecond}))
	require.ErrorIs(t, err, context.Canceled)
}

func TestParseDist(t *testing.T) {
	for _, d := range []Dist{DistConstant, DistExponential, DistLognormal} {
		got, err := ParseDist(d.String())
		require.NoError(t, err)
		assert.Equal(t, d, got)
	}
	_, err := ParseDist("uniform")
	require.Error(t, err)
	assert.Equal(t, "Dist(9)", Dist(9).String())
}

func TestWorldFor(t *testing.T) {
	for _, tc := range []struct{ workers, rpn, fanout int }{
		{1, 0, 0}, {2, 0, 0}, {63, 0, 0}, {64, 0, 0}, {65, 0, 0}, {1000, 0, 2}, {4097, 0, 0}, {5000, 16, 4}, {12345, 1, 8}, {1 << 20, 0, 64},
	} {
		topo, err := WorldFor(tc.workers, tc.rpn, tc.fanout)
		require.NoError(t, err)
		assert.Equal(t, tc.workers, topo.Workers(), "%+v", tc)
	}
}

func TestPeakRSS(t *testing.T) {
	assert.Positive(t, PeakRSS())
}
