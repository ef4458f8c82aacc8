package e2e

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/internal/qlink"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/mpiexec"
)

// startQueueBlock launches a block of np ranks of this test binary under
// mpirun, told to serve the queue in dir, as a user launches `rankfarm exec
// --queue DIR` in a batch job.
func startQueueBlock(t *testing.T, dir, name string, np int) *launch.Process {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd, err := launch.MPIRun{}.Command(np, exe, nil, map[string]string{
		mpiexec.EnvExec:  "1",
		qlink.EnvQueue:   dir,
		"RANKFARM_BLOCK": name,
	})
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	p, err := launch.Start(context.Background(), cmd)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	return p
}

// TestQueueSharedByTwoBlocks serves one queue with two mpirun blocks: with
// no fault no task runs twice; then rank 0 of one block is killed with
// SIGKILL mid-batch, its claims come back and finish on the other block, and
// every task resolves exactly once with its value.
func TestQueueSharedByTwoBlocks(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	front, err := qlink.Open(ctx, filepath.Join(t.TempDir(), "queue"), qlink.FrontOptions{
		Heartbeat:    250 * time.Millisecond,
		BlockTimeout: 2 * time.Second,
		Logger:       quietLog(),
	})
	require.NoError(t, err)
	ex, err := frontend.Start(ctx, frontend.Options{Conn: front, Logger: quietLog()})
	require.NoError(t, err)
	defer func() { assert.NoError(t, ex.Close()) }()
	a := startQueueBlock(t, front.Dir(), "qa", 3)
	b := startQueueBlock(t, front.Dir(), "qb", 3)
	require.Eventually(t, func() bool { return front.Stats().Blocks == 2 }, time.Minute, 10*time.Millisecond)

	run := func(t *testing.T, n int, fault func()) (twice int) {
		return runMarked(ctx, t, ex, n, fault, func() { dumpQueue(t, ex, front) }).twice
	}

	t.Run("no fault", func(t *testing.T) {
		assert.Zero(t, run(t, 10000, nil), "no task ran twice")
		assert.Zero(t, front.Stats().Lost)
	})
	t.Run("rank 0 SIGKILL", func(t *testing.T) {
		var injected time.Time
		twice := run(t, 10000, func() {
			injected = time.Now()
			require.NoError(t, syscall.Kill(rankPID(t, a.Pid(), 0), syscall.SIGKILL))
		})
		st := front.Stats()
		assert.Equal(t, 1, st.Lost, "the killed block was declared lost")
		assert.LessOrEqual(t, int64(twice), st.Requeued, "only its claimed tasks ran again")
		t.Logf("fault table: | queue, rank 0 SIGKILL, second block on the queue | 10000 tasks | 1 fault | 0 lost | %d ran twice | %d put back | recovered in %v |",
			twice, st.Requeued, time.Since(injected).Round(10*time.Millisecond))
		select {
		case <-a.Done():
		case <-time.After(time.Minute):
			t.Error("the killed block's mpirun did not exit")
		}
	})
	select {
	case <-b.Done():
		t.Error("the surviving block stopped")
	default:
	}
}

// dumpQueue logs the queue directory and the Front's counters, to tell
// where the tasks of a failed run were.
func dumpQueue(t *testing.T, ex *frontend.Executor, front *qlink.Front) {
	t.Logf("executor: %+v %+v", ex.Stats(), ex.Blocks())
	t.Logf("queue stats: %+v", front.Stats())
	_ = filepath.WalkDir(front.Dir(), func(path string, d os.DirEntry, err error) error {
		if err == nil {
			if info, ierr := d.Info(); ierr == nil {
				t.Logf("queue: %s %d bytes", path, info.Size())
			}
		}
		return nil
	})
}
