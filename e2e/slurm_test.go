package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/provider"
)

// slurmConf returns the SLURM_CONF of the project's single-node test
// cluster (ci/slurm.sh, which `make test` starts as root), or skips t when
// it is not up. Under CI as root a cluster that is not up fails t.
func slurmConf(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no Slurm")
	}
	script, err := filepath.Abs(filepath.Join("..", "ci", "slurm.sh"))
	require.NoError(t, err)
	if err := exec.Command(script, "status").Run(); err != nil {
		if os.Getenv("CI") != "" && os.Geteuid() == 0 {
			t.Fatalf("the test Slurm is not up (`make test` starts it with ci/slurm.sh start): %v", err)
		}
		t.Skip("the test Slurm is not up: run `sudo ci/slurm.sh start` for this test")
	}
	out, err := exec.Command(script, "env").Output()
	require.NoError(t, err)
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "export SLURM_CONF=")
}

// jobsInQueue returns those of ids that squeue still lists.
func jobsInQueue(t *testing.T, conf string, ids []string) []string {
	t.Helper()
	cmd := exec.Command("squeue", "-h", "-o", "%i")
	cmd.Env = append(os.Environ(), "SLURM_CONF="+conf)
	out, err := cmd.Output()
	require.NoError(t, err)
	var left []string
	for _, line := range strings.Fields(string(out)) {
		for _, id := range ids {
			if line == id {
				left = append(left, id)
			}
		}
	}
	return left
}

// TestSlurmBlocks runs a workflow on blocks that a real Slurm runs: the
// executor submits a job through the Slurm provider, the job starts mpirun,
// rank 0 connects back and 10,000 tasks run; the idle block scales in and
// its job leaves the queue. Then a block's job is cancelled with scancel
// mid-run: the front end notices, and its in-flight tasks finish on a new
// block, each task resolving once with its value. No job is left in the
// queue at the end.
func TestSlurmBlocks(t *testing.T) {
	conf := slurmConf(t)
	ctx := testCtx(t, 5*time.Minute)
	runDir := t.TempDir()
	ex, err := frontend.Start(ctx, frontend.Options{
		Provider: &provider.Slurm{Env: []string{"SLURM_CONF=" + conf}},
		Block:    provider.BlockSpec{RanksPerNode: 3, Walltime: 10 * time.Minute},
		RunDir:   runDir,
		Scaling: frontend.Scaling{Init: 1, Min: 0, Max: 1, IdleTimeout: 2 * time.Second,
			Interval: 200 * time.Millisecond, PollInterval: 500 * time.Millisecond},
		Logger: quietLog(),
	})
	require.NoError(t, err)
	closed := false
	defer func() {
		if !closed {
			assert.NoError(t, ex.Close())
		}
	}()
	var jobs []string
	seen := func() {
		for _, b := range ex.Blocks() {
			if b.Job != "" && !strings.Contains(strings.Join(jobs, ","), b.Job) {
				jobs = append(jobs, b.Job)
			}
		}
	}

	run := func(t *testing.T, n int, fault func()) (twice int) {
		return runMarked(ctx, t, ex, n, fault, nil).twice
	}

	t.Run("10000 tasks, then scale in", func(t *testing.T) {
		start := time.Now()
		assert.Zero(t, run(t, 10000, nil))
		seen()
		t.Logf("10000 tasks on a Slurm block in %v (job submitted at Start)", time.Since(start).Round(time.Millisecond))
		require.Len(t, jobs, 1, "one block, one job")
		require.Eventually(t, func() bool { return len(ex.Blocks()) == 0 }, time.Minute, 50*time.Millisecond, "the idle block scales in")
		require.Eventually(t, func() bool { return len(jobsInQueue(t, conf, jobs)) == 0 }, time.Minute, 200*time.Millisecond, "its job leaves the queue")
		script, err := os.ReadFile(filepath.Join(runDir, "b0.sbatch"))
		require.NoError(t, err, "the job script is kept in the run directory")
		assert.Contains(t, string(script), "#SBATCH")
	})

	// scancel sends SIGTERM to every process of the job (rank 0 starts an
	// orderly shutdown, but the workers may go first); with --signal=KILL
	// the job dies at once. Either way the tasks in flight that were not
	// answered run again on the next block.
	for _, c := range []struct {
		name string
		args []string
		lost bool
	}{
		{"scancel mid-run", nil, false},
		{"scancel --signal=KILL mid-run", []string{"--signal=KILL", "--full"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := ex.Stats()
			var cancelled string
			twice := run(t, 10000, func() {
				bs := ex.Blocks()
				require.Len(t, bs, 1)
				cancelled = bs[0].Job
				seen()
				cmd := exec.Command("scancel", append(c.args, cancelled)...)
				cmd.Env = append(os.Environ(), "SLURM_CONF="+conf)
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "scancel: %s", out)
			})
			seen()
			requeued := ex.Stats().Requeued - before.Requeued
			assert.NotEqual(t, cancelled, jobs[len(jobs)-1], "a new block's job replaced the cancelled one")
			assert.LessOrEqual(t, int64(twice), requeued, "only tasks in flight on the cancelled block ran again")
			if c.lost {
				assert.Positive(t, requeued, "the killed block had tasks in flight")
			}
			t.Logf("fault table: | Slurm job: %s | 10000 tasks | 1 fault | 0 lost | %d ran twice | %d requeued | jobs %v |", c.name, twice, requeued, jobs)
			require.NoError(t, ex.Err())
		})
	}

	require.NoError(t, ex.Close())
	closed = true
	assert.Empty(t, jobsInQueue(t, conf, jobs), "no job is left in the queue")
}
