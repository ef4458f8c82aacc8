package qlink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

// The test binary re-runs itself as a block process when these are set.
const (
	envHelperBlock = "QLINK_HELPER_BLOCK" // the queue directory
	envHelperName  = "QLINK_HELPER_NAME"
	envHelperCap   = "QLINK_HELPER_CAPACITY"
	envHelperDelay = "QLINK_HELPER_DELAY" // per task
	envHelperLog   = "QLINK_HELPER_LOG"   // file that gets the ID of every task run, one a line
)

// helperBlockMain serves the queue in dir as a block process, as rank 0
// would, with an echoServer. It logs the IDs of the tasks it ran, a batch at
// a time, before it answers them.
func helperBlockMain(dir string) int {
	capacity, _ := strconv.Atoi(os.Getenv(envHelperCap))
	delay, _ := time.ParseDuration(os.Getenv(envHelperDelay))
	logf, err := os.OpenFile(os.Getenv(envHelperLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := Join(ctx, dir, BlockOptions{Hello: serialize.Hello{Block: os.Getenv(envHelperName), Ranks: 2, Workers: 1, PID: int32(os.Getpid())}, PeerTimeout: time.Minute})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	defer b.Close()
	s := &echoServer{conn: b, capacity: max(capacity, 1), delay: delay}
	recv := func(ctx context.Context) (serialize.Message, error) {
		m, err := b.Recv(ctx)
		if tb, ok := m.(*serialize.TaskBatch); ok {
			var line []byte
			for _, t := range tb.Tasks {
				line = strconv.AppendUint(line, t.ID, 10)
				line = append(line, '\n')
			}
			if _, err := logf.Write(line); err != nil {
				return nil, err
			}
		}
		return m, err
	}
	if err := s.serve(ctx, recv); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 3
	}
	return 0
}

// helperBlock is a block process.
type helperBlock struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startHelper(t *testing.T, dir, name string, capacity int, delay time.Duration) *helperBlock {
	t.Helper()
	h := &helperBlock{log: filepath.Join(t.TempDir(), name+".ids"), done: make(chan error, 1)}
	h.cmd = exec.Command(os.Args[0], "-test.run=^$")
	h.cmd.Env = append(os.Environ(),
		envHelperBlock+"="+dir,
		envHelperName+"="+name,
		envHelperCap+"="+strconv.Itoa(capacity),
		envHelperDelay+"="+delay.String(),
		envHelperLog+"="+h.log,
	)
	h.cmd.Stdout, h.cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, h.cmd.Start())
	go func() { h.done <- h.cmd.Wait() }()
	t.Cleanup(func() {
		_ = h.cmd.Process.Kill()
		<-h.done
	})
	return h
}

// ran reads the IDs the block ran.
func (h *helperBlock) ran(t *testing.T) []uint64 {
	f, err := os.Open(h.log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	defer f.Close()
	var ids []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, err := strconv.ParseUint(sc.Text(), 10, 64)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.NoError(t, sc.Err())
	return ids
}

func (h *helperBlock) wait(t *testing.T) error {
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("block process %d did not exit", h.cmd.Process.Pid)
		return nil
	}
}

// TestTwoBlockProcessesNoTaskTwice: two block processes on one queue, no
// faults: no task runs twice, and each resolves once.
func TestTwoBlockProcessesNoTaskTwice(t *testing.T) {
	f, _ := openFront(t, nil)
	a := startHelper(t, f.Dir(), "a", 200, 0)
	b := startHelper(t, f.Dir(), "b", 200, 0)
	require.Eventually(t, func() bool { return f.Stats().Blocks == 2 }, 30*time.Second, time.Millisecond)

	const n = 50000
	ctx := testCtx(t, 2*time.Minute)
	d := newDriver(f)
	require.NoError(t, d.run(ctx, 1, n, nil))
	d.requireExactlyOnce(t, 1, n)
	require.NoError(t, f.Send(&serialize.Shutdown{Reason: "done"}))
	m, err := f.Recv(ctx)
	require.NoError(t, err)
	require.Equal(t, serialize.KindShutdown, m.Kind(), "acknowledged once both blocks stopped")
	require.NoError(t, a.wait(t))
	require.NoError(t, b.wait(t))

	ranA, ranB := a.ran(t), b.ran(t)
	ran := append(append([]uint64(nil), ranA...), ranB...)
	slices.Sort(ran)
	require.Len(t, ran, n)
	for i, id := range ran {
		require.Equal(t, uint64(i+1), id, "every task ran once")
	}
	t.Logf("block a ran %d tasks, block b %d", len(ranA), len(ranB))
	assert.Zero(t, f.Stats().Lost)
}

// TestKilledBlockClaimsComeBack kills a block process with SIGKILL while it
// is in the middle of its batches: its claims come back and finish on
// another block, and every task resolves exactly once.
func TestKilledBlockClaimsComeBack(t *testing.T) {
	f, logs := openFront(t, func(o *FrontOptions) {
		o.Heartbeat = 50 * time.Millisecond
		o.BlockTimeout = 3 * time.Second
	})
	victim := startHelper(t, f.Dir(), "victim", 200, 2*time.Millisecond)
	_, err := f.WaitBlock(testCtx(t, 30*time.Second))
	require.NoError(t, err)

	const n = 3000
	ctx := testCtx(t, 2*time.Minute)
	d := newDriver(f)
	ran := make(chan error, 1)
	go func() { ran <- d.run(ctx, 1, n, nil) }()
	// The victim logs a batch's IDs as it receives it, then takes 400 ms
	// to run it: once it logged a second batch, it is in the middle of it.
	require.Eventually(t, func() bool { return len(victim.ran(t)) >= 400 }, time.Minute, time.Millisecond)
	require.NoError(t, victim.cmd.Process.Signal(syscall.SIGKILL))
	rescuer := startHelper(t, f.Dir(), "rescuer", 200, 0)
	require.NoError(t, <-ran)
	d.requireExactlyOnce(t, 1, n)
	waitLog(t, logs, "block lost", "victim")

	st := f.Stats()
	assert.Equal(t, 1, st.Lost)
	assert.Positive(t, st.Requeued, "the victim's claims went back to the queue")
	assert.Equal(t, 2, st.Blocks)
	verr := victim.wait(t)
	var ee *exec.ExitError
	require.ErrorAs(t, verr, &ee)
	assert.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal())

	// Every task ran; only the victim's unanswered claims ran twice.
	seen := map[uint64]int{}
	for _, id := range append(victim.ran(t), rescuer.ran(t)...) {
		seen[id]++
	}
	again := 0
	for id := uint64(1); id <= n; id++ {
		require.NotZero(t, seen[id], "task %d never ran", id)
		if seen[id] > 1 {
			again++
		}
	}
	assert.LessOrEqual(t, int64(again), st.Requeued, "tasks run twice were all put back from the victim")
	t.Logf("the victim ran %d tasks, the rescuer %d; %d put back, %d ran twice", len(victim.ran(t)), len(rescuer.ran(t)), st.Requeued, again)
}
