package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/mpiexec"
	"github.com/rankfarm/rankfarm/mpiexec/mpi"
	"github.com/rankfarm/rankfarm/rankpool"
	"github.com/rankfarm/rankfarm/sim"
)

// rankVars name the variable in which the launcher tells a rank its MPI
// world rank: Open MPI's, then MPICH's (Hydra's PMI).
var rankVars = []string{"OMPI_COMM_WORLD_RANK", "PMI_RANK"}

// worldRank is the MPI world rank of this process, as the launcher tells it
// (Open MPI or MPICH), or -1.
func worldRank() int64 {
	for _, name := range rankVars {
		if r, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil {
			return r
		}
	}
	return -1
}

// Apps that tell which rank ran them.
var (
	// tagged returns i*rankBase + the rank that ran it.
	tagged = frontend.NewApp1("e2e.tagged", func(_ context.Context, i int64) (int64, error) {
		return i*rankBase + worldRank(), nil
	})
	// napTimes sleeps d and returns the rank that ran it and when it
	// started and ended (Unix nanoseconds).
	napTimes = frontend.NewApp1("e2e.nap-times", func(_ context.Context, d time.Duration) ([3]int64, error) {
		start := time.Now().UnixNano()
		time.Sleep(d)
		return [3]int64{worldRank(), start, time.Now().UnixNano()}, nil
	})
)

const rankBase = 1000

// withEnv is a launcher that adds variables to every rank's environment.
type withEnv struct {
	launch.Launcher
	env map[string]string
}

func (l withEnv) Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error) {
	all := map[string]string{}
	for k, v := range env {
		all[k] = v
	}
	for k, v := range l.env {
		all[k] = v
	}
	return l.Launcher.Command(np, exe, args, all)
}

// startTree starts a block of np ranks whose tree has the given fan-out.
func startTree(t *testing.T, np, fanout int) *frontend.Executor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ex, err := frontend.Start(ctx, frontend.Options{
		NP:           np,
		Launcher:     withEnv{launch.MPIRun{}, map[string]string{mpiexec.EnvFanout: strconv.Itoa(fanout)}},
		StartTimeout: 3 * time.Minute,
	})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, ex.Close()) })
	return ex
}

// TestThreeLevelTree runs 200,000 tasks (20,000 under MPICH) through 64
// ranks with fan-out 8:
// rank 0, 7 sub-masters and 56 workers. Every task resolves exactly once,
// with its own value, and only workers of the tree run tasks.
func TestThreeLevelTree(t *testing.T) {
	const np, fanout = 64, 8
	if mpi.Family == string(launch.MPICH) && os.Getenv("RANKFARM_E2E_MPICH_TREE64") == "" {
		// Failed twice in a row on 2 cores (2026-12-06): while the 64
		// MPICH ranks start, their busy polling starves this front end
		// for over 30 s, so the shared block's link times out and rank
		// 0's handshakes time out even when it dials again. The open
		// "one binary for any MPI" issue (its item 3) tracks it.
		t.Skip("64 MPICH ranks starve the front end on this machine; RANKFARM_E2E_MPICH_TREE64=1 runs it")
	}
	n := 200_000
	if mpi.Family == string(launch.MPICH) {
		// Debian's MPICH sends over UCX, where a message above 8 KiB (the
		// batches between rank 0 and the sub-masters) takes a rendezvous
		// that needs the receiver to run: with 64 ranks on a few cores
		// that is 10 to 20 times slower than Open MPI's single copy. The
		// tree is the same; fewer tasks keep the test to a minute or two.
		n = 20_000
	}
	topo, err := rankpool.NewTopology(np, nil, fanout)
	require.NoError(t, err)
	require.Equal(t, 2, topo.Depth(), "three levels: rank 0, sub-masters, workers")
	isWorker := map[int64]bool{}
	for r := range np {
		if topo.Place(r).Role == rankpool.RoleWorker {
			isWorker[int64(r)] = true
		}
	}

	ex := startTree(t, np, fanout)
	bs := ex.Blocks()
	require.Len(t, bs, 1)
	assert.Equal(t, topo.Workers(), bs[0].Workers, "the block offers its workers' slots, not its sub-masters'")
	ctx := testCtx(t, 10*time.Minute)
	futs := make([]*frontend.Future[int64], n)
	for i := range futs {
		futs[i] = tagged.Call(ex, frontend.V(int64(i)))
	}
	seen := make(map[uint64]bool, n)
	perRank := map[int64]int{}
	for i, f := range futs {
		v, err := f.Get(ctx)
		require.NoError(t, err, "task %d", i)
		require.Equal(t, int64(i), v/rankBase, "task %d came back with another task's value", i)
		rank := v % rankBase
		require.True(t, isWorker[rank], "task %d ran on rank %d, which is not a worker", i, rank)
		perRank[rank]++
		require.False(t, seen[f.ID()], "task id %d twice", f.ID())
		seen[f.ID()] = true
	}
	assert.Len(t, seen, n)
	t.Logf("%d tasks on %d of %d workers; per worker: %v", n, len(perRank), len(isWorker), perRank)
	st := ex.Stats()
	assert.Equal(t, int64(n), st.Done)
	assert.Zero(t, st.Failed)
}

// TestSimulatorAgreesWithMPIRun runs the same shape under mpirun and in the
// simulator: np 4 with fan-out 2, a three-level tree (rank 0; sub-master 1
// and worker 2 below it; worker 3 below 1), and 200 tasks of 20 ms. The
// simulator's tasks take the mean time the real ones took (on a busy,
// oversubscribed machine a 20 ms sleep may take longer), so what is compared
// is the scheduling. They agree when each worker's task count is within 10%
// of the simulator's (100) and the makespans are within 10% of each other.
func TestSimulatorAgreesWithMPIRun(t *testing.T) {
	const np, fanout, n = 4, 2, 200
	const task = 20 * time.Millisecond
	topo, err := rankpool.NewTopology(np, nil, fanout)
	require.NoError(t, err)
	require.Equal(t, 2, topo.Depth())

	ex := startTree(t, np, fanout)
	ctx := testCtx(t, 2*time.Minute)
	// Warm the block up (every rank has announced its credit), so the
	// measurement starts with a running tree as the simulation does.
	_, err = napTimes.Call(ex, frontend.V(time.Duration(0))).Get(ctx)
	require.NoError(t, err)

	start := time.Now()
	futs := make([]*frontend.Future[[3]int64], n)
	for i := range futs {
		futs[i] = napTimes.Call(ex, frontend.V(task))
	}
	perRank := map[int]int{}
	var ran time.Duration
	for i, f := range futs {
		v, err := f.Get(ctx)
		require.NoError(t, err, "task %d", i)
		perRank[int(v[0])]++
		ran += time.Duration(v[2] - v[1])
	}
	makespan := time.Since(start).Seconds()
	mean := ran / n

	rep, err := sim.Run(context.Background(), sim.Config{
		Ranks: np, Fanout: fanout, Tasks: n, TaskTime: mean,
		Latency: sim.DefaultLatency, Overhead: sim.DefaultOverhead, PerByte: sim.DefaultPerByte,
		PerWorker: true,
	})
	require.NoError(t, err)
	require.Equal(t, topo.Workers(), rep.Workers)

	t.Logf("tasks took %v on average (asked %v)", mean, task)
	t.Logf("makespan: mpirun %.4f s, simulator %.4f s (ideal %.4f s)", makespan, rep.Makespan, rep.Ideal)
	t.Logf("tasks per worker: mpirun %v, simulator %v", perRank, rep.TasksPerWorker)
	for r, want := range rep.TasksPerWorker {
		if want == 0 {
			assert.Zero(t, perRank[r], "rank %d is a relay", r)
			continue
		}
		assert.InDelta(t, want, perRank[r], 0.1*float64(want), "tasks on rank %d", r)
	}
	assert.InEpsilon(t, rep.Makespan, makespan, 0.10, fmt.Sprintf("makespan: mpirun %.4f s, simulator %.4f s", makespan, rep.Makespan))
}
