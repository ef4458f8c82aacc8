package qlink

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/serialize"
)

// The queue's two ends are link.Conns.
var (
	_ link.Conn = (*Front)(nil)
	_ link.Conn = (*Block)(nil)
)

func TestRoundTrip(t *testing.T) {
	f, _ := openFront(t, nil)
	b := joinBlock(t, f.Dir(), "b0")
	srv, served := startEcho(t, b, 100, 0)

	hello, err := f.WaitBlock(testCtx(t, 10*time.Second))
	require.NoError(t, err)
	assert.Equal(t, "b0", hello.Block)
	assert.Equal(t, int32(2), hello.Ranks)
	assert.Equal(t, uint16(serialize.ProtocolVersion), hello.Version)

	ctx := testCtx(t, 30*time.Second)
	d := newDriver(f)
	require.NoError(t, d.run(ctx, 1, 5000, nil))
	d.requireExactlyOnce(t, 1, 5000)
	assert.Len(t, srv.ranIDs(), 5000)

	// Shutdown: the block acknowledges, then the Front does.
	require.NoError(t, f.Send(&serialize.Shutdown{Reason: "done"}))
	require.NoError(t, <-served)
	m, err := f.Recv(ctx)
	require.NoError(t, err)
	require.Equal(t, serialize.KindShutdown, m.Kind())
	require.NoError(t, b.Close())

	st := f.Stats()
	assert.Equal(t, 1, st.Blocks)
	assert.Zero(t, st.Lost)
	assert.Zero(t, st.Refused)
	assert.Zero(t, st.Ignored)
	assert.Positive(t, st.FilesWritten)

	// Close removes the directory it made.
	require.NoError(t, f.Close())
	assert.NoDirExists(t, f.Dir())
	_, err = f.Recv(ctx)
	assert.ErrorIs(t, err, link.ErrClosed)
	assert.ErrorIs(t, f.Send(&serialize.TaskBatch{}), link.ErrClosed)
}

// TestOwnerOnly: whatever the umask, Open makes the queue directory and
// its subdirectories 0700 (its missing parents too) and both ends write
// their files 0600.
func TestOwnerOnly(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "a", "queue")
	log, _ := newLogger(t)
	f, err := Open(testCtx(t, 10*time.Second), dir, fastOptions(log))
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	b := joinBlock(t, dir, "b0")
	_, err = f.WaitBlock(testCtx(t, 10*time.Second))
	require.NoError(t, err)
	require.NoError(t, b.Send(&serialize.Credit{N: 1}))
	require.NoError(t, f.Send(&serialize.TaskBatch{Tasks: []serialize.Task{{ID: 1, App: "echo"}}}))
	m, err := b.Recv(testCtx(t, 10*time.Second))
	require.NoError(t, err)
	require.Equal(t, serialize.KindTaskBatch, m.Kind())

	want := map[string]os.FileMode{filepath.Dir(dir): 0o700}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			want[path] = 0o700
		} else {
			want[path] = 0o600
		}
		return nil
	}))
	assert.Contains(t, want, filepath.Join(dir, runFile))
	assert.Contains(t, want, filepath.Join(b.claimDir, taskFileName('t', 1)))
	for path, mode := range want {
		fi, err := os.Stat(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // a heartbeat moved on
		}
		require.NoError(t, err)
		assert.Equal(t, mode, fi.Mode().Perm(), path)
	}
}

func TestShutdownWithNoBlock(t *testing.T) {
	f, _ := openFront(t, nil)
	require.NoError(t, f.Send(&serialize.Shutdown{Reason: "done"}))
	m, err := f.Recv(testCtx(t, 10*time.Second))
	require.NoError(t, err)
	assert.Equal(t, serialize.KindShutdown, m.Kind())
}

func TestSendRefusesWhatDoesNotTravel(t *testing.T) {
	f, _ := openFront(t, nil)
	b := joinBlock(t, f.Dir(), "b0")
	var nilBatch *serialize.TaskBatch
	for _, m := range []serialize.Message{nil, nilBatch, &serialize.Credit{N: 1}, &serialize.Hello{}} {
		assert.Error(t, f.Send(m), "front end: %v", m)
	}
	for _, m := range []serialize.Message{nil, nilBatch, &serialize.TaskBatch{}, &serialize.Welcome{}} {
		assert.Error(t, b.Send(m), "block: %v", m)
	}
	assert.NoError(t, f.Send(&serialize.Heartbeat{}))
	assert.NoError(t, b.Send(&serialize.Heartbeat{}))
}

// TestTwoBlocksNoTaskTwice serves one queue with two blocks: every task
// runs on exactly one of them.
func TestTwoBlocksNoTaskTwice(t *testing.T) {
	f, _ := openFront(t, nil)
	a := joinBlock(t, f.Dir(), "a")
	b := joinBlock(t, f.Dir(), "b")
	sa, _ := startEcho(t, a, 300, 0)
	sb, _ := startEcho(t, b, 300, 0)
	require.Eventually(t, func() bool { return f.Stats().Blocks == 2 }, 10*time.Second, time.Millisecond)

	const n = 20000
	d := newDriver(f)
	require.NoError(t, d.run(testCtx(t, time.Minute), 1, n, nil))
	d.requireExactlyOnce(t, 1, n)

	ran := append(sa.ranIDs(), sb.ranIDs()...)
	slices.Sort(ran)
	require.Len(t, ran, n, "tasks run in all")
	for i, id := range ran {
		require.Equal(t, uint64(i+1), id, "every task ran exactly once")
	}
	t.Logf("block a ran %d tasks, block b %d", len(sa.ranIDs()), len(sb.ranIDs()))
}

// fakeBlock plays a block at the filesystem level: it joins (heartbeat,
// claim directory, Hello), then does only what the test makes it do.
type fakeBlock struct {
	t    testing.TB
	root string
	id   string
	run  RunID
	seq  uint64
}

func newFakeBlock(t testing.TB, root, id string) *fakeBlock {
	_, run, err := readRunInfo(root)
	require.NoError(t, err)
	fb := &fakeBlock{t: t, root: root, id: id, run: run}
	require.NoError(t, os.WriteFile(filepath.Join(root, dirHB, beatName(id, 0)), nil, 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(root, dirClaimed, id), 0o700))
	fb.write(&serialize.Hello{Version: serialize.ProtocolVersion, Block: id})
	return fb
}

func (fb *fakeBlock) write(msgs ...serialize.Message) {
	fb.seq++
	data, err := AppendFile(nil, serialize.NewCodec(serialize.Options{}), KindUp, fb.run, msgs)
	require.NoError(fb.t, err)
	name := resultFileName(fb.id, fb.seq)
	require.NoError(fb.t, writeAtomic(filepath.Join(fb.root, dirTmp, name), filepath.Join(fb.root, dirResults, name), data))
}

// claimAll claims every task file in the queue and returns their names.
func (fb *fakeBlock) claimAll() []string {
	names, err := listDir(filepath.Join(fb.root, dirTasks))
	require.NoError(fb.t, err)
	var got []string
	for _, n := range names {
		if _, ok := parseTaskFile(n); ok {
			require.NoError(fb.t, os.Rename(filepath.Join(fb.root, dirTasks, n), filepath.Join(fb.root, dirClaimed, fb.id, n)))
			got = append(got, n)
		}
	}
	return got
}

// TestLostBlockClaimsComeBack: a block claims batches and then falls
// silent. Once its heartbeat is older than the timeout its claims go back
// to the queue and finish on another block, and what it writes afterwards
// is ignored: every task resolves exactly once.
func TestLostBlockClaimsComeBack(t *testing.T) {
	f, logs := openFront(t, func(o *FrontOptions) { o.BlockTimeout = 300 * time.Millisecond })
	ctx := testCtx(t, time.Minute)
	stuck := newFakeBlock(t, f.Dir(), "stuck-1-aaaaaa")
	stuck.write(&serialize.Credit{N: 300})

	d := newDriver(f)
	// Take the credit, send 300 tasks, and let the stuck block claim them.
	for d.credit == 0 {
		m, err := f.Recv(ctx)
		require.NoError(t, err)
		if c, ok := m.(*serialize.Credit); ok {
			d.credit += int64(c.N)
		}
	}
	var tasks []serialize.Task
	for id := uint64(1); id <= 300; id++ {
		tasks = append(tasks, serialize.Task{ID: id, App: "echo", Args: taskArgs(id)})
	}
	require.NoError(t, f.Send(&serialize.TaskBatch{Tasks: tasks[:150]}))
	require.NoError(t, f.Send(&serialize.TaskBatch{Tasks: tasks[150:]}))
	d.credit, d.nextID = 0, 301
	var claimed []string
	require.Eventually(t, func() bool {
		claimed = append(claimed, stuck.claimAll()...)
		return f.Stats().FilesWritten > 0 && len(claimed) == int(f.Stats().FilesWritten)
	}, 10*time.Second, time.Millisecond)
	// It answers one task, then falls silent.
	stuck.write(&serialize.ResultBatch{Credit: 1, Results: []serialize.Result{{ID: 1, Value: taskArgs(1)}}})

	b := joinBlock(t, f.Dir(), "rescuer")
	srv, _ := startEcho(t, b, 50, 0)
	require.NoError(t, d.run(ctx, 1, 300, nil))
	d.requireExactlyOnce(t, 1, 300)
	waitLog(t, logs, "block lost", "stuck-1-aaaaaa")

	st := f.Stats()
	assert.Equal(t, 1, st.Lost)
	assert.Equal(t, int64(299), st.Requeued, "the unanswered tasks went back")
	assert.Len(t, srv.ranIDs(), 299, "the rescuer ran only those")
	assert.NotContains(t, srv.ranIDs(), uint64(1))
	assert.NoDirExists(t, filepath.Join(f.Dir(), dirClaimed, stuck.id))
	assert.FileExists(t, filepath.Join(f.Dir(), dirCtl, "fenced-"+stuck.id))

	// Late results from the lost block are ignored: the next result the
	// front end passes on is the rescuer's answer to a new task.
	stuck.write(&serialize.ResultBatch{Credit: 5, Results: []serialize.Result{{ID: 2, Value: []byte("late")}, {ID: 301, Value: []byte("forged")}}})
	require.Eventually(t, func() bool {
		names, _ := listDir(filepath.Join(f.Dir(), dirResults))
		return len(names) == 0
	}, 10*time.Second, time.Millisecond)
	d.credit = 1
	require.NoError(t, d.run(ctx, 301, 301, nil))
	d.requireExactlyOnce(t, 1, 301)
}

// TestLateDuplicatesIgnored: a result for a task that is not in flight
// (answered already, or never sent) does not reach the executor.
func TestLateDuplicatesIgnored(t *testing.T) {
	f, _ := openFront(t, nil)
	fb := newFakeBlock(t, f.Dir(), "dup-1-bbbbbb")
	require.NoError(t, f.Send(&serialize.TaskBatch{Tasks: []serialize.Task{{ID: 7, App: "echo", Args: taskArgs(7)}}}))
	require.Eventually(t, func() bool { return len(fb.claimAll()) == 1 }, 10*time.Second, time.Millisecond)
	fb.write(&serialize.ResultBatch{Credit: 1, Results: []serialize.Result{{ID: 7, Value: taskArgs(7)}, {ID: 7, Value: taskArgs(7)}, {ID: 99}}})
	fb.write(&serialize.ResultBatch{Credit: 1, Results: []serialize.Result{{ID: 7, Value: taskArgs(7)}}})
	ctx := testCtx(t, 10*time.Second)
	var got []uint64
	var credit uint32
	for credit < 2 {
		m, err := f.Recv(ctx)
		require.NoError(t, err)
		rb := m.(*serialize.ResultBatch)
		credit += rb.Credit
		for _, r := range rb.Results {
			got = append(got, r.ID)
		}
	}
	assert.Equal(t, []uint64{7}, got)
	assert.Equal(t, int64(3), f.Stats().Ignored)
	// The claimed file goes with its last answer.
	require.Eventually(t, func() bool {
		names, _ := listDir(filepath.Join(f.Dir(), dirClaimed, fb.id))
		return len(names) == 0
	}, 10*time.Second, time.Millisecond)
}

// TestBadTaskFileFailsItsTasks: a task file that is corrupt when a block
// claims it is moved aside, the block goes on, and the front end fails its
// tasks (with their credit back) instead of waiting for them for ever.
func TestBadTaskFileFailsItsTasks(t *testing.T) {
	f, _ := openFront(t, nil)
	require.NoError(t, f.Send(&serialize.TaskBatch{Tasks: []serialize.Task{{ID: 1, App: "echo"}, {ID: 2, App: "echo"}}}))
	var name string
	require.Eventually(t, func() bool {
		names, _ := listDir(filepath.Join(f.Dir(), dirTasks))
		if len(names) == 1 {
			name = names[0]
		}
		return name != ""
	}, 10*time.Second, time.Millisecond)
	path := filepath.Join(f.Dir(), dirTasks, name)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, writeAtomic(path+".tmp", path, data[:len(data)-5]))

	b := joinBlock(t, f.Dir(), "b0")
	_, served := startEcho(t, b, 10, 0)
	ctx := testCtx(t, 10*time.Second)
	var lost *serialize.ResultBatch
	for lost == nil {
		m, err := f.Recv(ctx)
		require.NoError(t, err)
		if rb, ok := m.(*serialize.ResultBatch); ok {
			lost = rb
		}
	}
	assert.Equal(t, uint32(2), lost.Credit, "their credit comes back")
	require.Len(t, lost.Results, 2)
	for _, r := range lost.Results {
		assert.Equal(t, serialize.ErrLost, r.Err)
		assert.Contains(t, r.Msg, "truncated")
		assert.Contains(t, r.Msg, filepath.Join(f.Dir(), dirBad))
	}
	bad, _ := listDir(filepath.Join(f.Dir(), dirBad))
	assert.Len(t, bad, 2, "the file and its .why")

	// The block still serves.
	d := newDriver(f)
	d.credit = 10
	require.NoError(t, d.run(ctx, 3, 100, nil))
	d.requireExactlyOnce(t, 3, 100)
	select {
	case err := <-served:
		t.Fatalf("the block stopped: %v", err)
	default:
	}
}

// TestForeignFilesMovedAside drops garbage, a future-version file and a
// file of another run into the queue: each is refused with a clear error
// and moved aside, and the queue keeps working.
func TestForeignFilesMovedAside(t *testing.T) {
	f, logs := openFront(t, nil)
	b := joinBlock(t, f.Dir(), "b0")
	startEcho(t, b, 100, 0)
	_, err := f.WaitBlock(testCtx(t, 10*time.Second))
	require.NoError(t, err)

	future := mustFile(t, KindDown, &serialize.TaskBatch{Tasks: []serialize.Task{{ID: 1000, App: "echo"}}})
	future[4] = FileVersion + 1
	otherRun := mustFile(t, KindDown, &serialize.TaskBatch{Tasks: []serialize.Task{{ID: 1001, App: "echo"}}})
	truncated := mustFile(t, KindUp, &serialize.Credit{N: 1000})
	drop := map[string][]byte{
		filepath.Join(dirResults, "r-nobody-0000000000000001.rfq"): []byte("garbage"),
		filepath.Join(dirResults, "junk.txt"):                      []byte("junk"),
		filepath.Join(dirResults, "r-ghost-0000000000000001.rfq"):  truncated[:len(truncated)-1],
		filepath.Join(dirTasks, taskFileName('t', 1<<40)):          future,
		filepath.Join(dirTasks, taskFileName('t', 1<<41)):          otherRun,
	}
	for name, data := range drop {
		require.NoError(t, writeAtomic(filepath.Join(f.Dir(), dirTmp, "x"), filepath.Join(f.Dir(), name), data))
	}
	require.Eventually(t, func() bool {
		names, _ := listDir(filepath.Join(f.Dir(), dirBad))
		return len(names) == 2*len(drop)
	}, 10*time.Second, time.Millisecond, "each file and its .why in bad/")
	waitLog(t, logs, "refused a file", "junk.txt", "not a result file name")
	waitLog(t, logs, "refused a file", "r-nobody", "not a rankfarm batch file")
	waitLog(t, logs, "refused a file", "r-ghost", "truncated")
	bad, _ := listDir(filepath.Join(f.Dir(), dirBad))
	var whys []string
	for _, n := range bad {
		if strings.HasSuffix(n, ".why") {
			w, err := os.ReadFile(filepath.Join(f.Dir(), dirBad, n))
			require.NoError(t, err)
			whys = append(whys, string(w))
		}
	}
	assert.Contains(t, strings.Join(whys, ""), "newer than this build reads")
	assert.Contains(t, strings.Join(whys, ""), "of another run")

	d := newDriver(f)
	require.NoError(t, d.run(testCtx(t, 30*time.Second), 1, 1000, nil))
	d.requireExactlyOnce(t, 1, 1000)
	assert.Zero(t, f.Stats().Lost)

	// Close keeps bad/ for inspection.
	require.NoError(t, f.Close())
	assert.DirExists(t, filepath.Join(f.Dir(), dirBad))
	assert.NoDirExists(t, filepath.Join(f.Dir(), dirTasks))
}

// TestAnotherUsersFilesRefused (as root): well-formed files that another
// user put into the queue, a result file with a Hello and a task file of
// the run, are refused for their owner and moved aside, and the queue keeps
// working; a subdirectory that another user owns stops a block joining.
func TestAnotherUsersFilesRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make files another user owns")
	}
	const nobody = 65534
	t.Run("files", func(t *testing.T) {
		f, logs := openFront(t, nil)
		b := joinBlock(t, f.Dir(), "b0")
		startEcho(t, b, 100, 0)
		_, err := f.WaitBlock(testCtx(t, 10*time.Second))
		require.NoError(t, err)

		codec := serialize.NewCodec(serialize.Options{})
		up, err := AppendFile(nil, codec, KindUp, f.Run(), []serialize.Message{
			&serialize.Hello{Version: serialize.ProtocolVersion, Block: "intruder", Ranks: 2, Workers: 1},
			&serialize.Credit{N: 1000},
		})
		require.NoError(t, err)
		down, err := AppendFile(nil, codec, KindDown, f.Run(), []serialize.Message{
			&serialize.TaskBatch{Tasks: []serialize.Task{{ID: 1 << 40, App: "echo"}}},
		})
		require.NoError(t, err)
		for name, data := range map[string][]byte{
			filepath.Join(dirResults, resultFileName("intruder-1-abcdef", 1)): up,
			filepath.Join(dirTasks, taskFileName('t', 1<<42)):                 down,
		} {
			tmp := filepath.Join(f.Dir(), dirTmp, "intruder")
			require.NoError(t, os.WriteFile(tmp, data, 0o600))
			require.NoError(t, os.Chown(tmp, nobody, nobody))
			require.NoError(t, os.Rename(tmp, filepath.Join(f.Dir(), name)))
		}
		require.Eventually(t, func() bool {
			names, _ := listDir(filepath.Join(f.Dir(), dirBad))
			return len(names) == 4
		}, 10*time.Second, time.Millisecond, "each file and its .why in bad/")
		waitLog(t, logs, "refused a file", "r-intruder", "owned by another user")
		bad, _ := listDir(filepath.Join(f.Dir(), dirBad))
		for _, n := range bad {
			if strings.HasSuffix(n, ".why") {
				why, err := os.ReadFile(filepath.Join(f.Dir(), dirBad, n))
				require.NoError(t, err)
				assert.Contains(t, string(why), "belongs to uid 65534", n)
			}
		}
		assert.Equal(t, 1, f.Stats().Blocks, "the intruder's Hello was not taken")

		d := newDriver(f)
		require.NoError(t, d.run(testCtx(t, 30*time.Second), 1, 1000, nil))
		d.requireExactlyOnce(t, 1, 1000)
		assert.Zero(t, f.Stats().Lost)
		assert.Zero(t, f.Stats().Ignored, "the intruder's task never ran")
	})
	t.Run("a subdirectory", func(t *testing.T) {
		f, _ := openFront(t, nil)
		require.NoError(t, os.Chown(filepath.Join(f.Dir(), dirTasks), nobody, nobody))
		log, _ := newLogger(t)
		_, err := Join(testCtx(t, 10*time.Second), f.Dir(), BlockOptions{Logger: log})
		require.ErrorIs(t, err, ErrNotOwner)
		assert.Contains(t, err.Error(), "uid 65534")
	})
}

// TestRefusedDirectories: a queue that others may enter, that another user
// owns, that holds other files, or that a live front end serves.
func TestRefusedDirectories(t *testing.T) {
	log, _ := newLogger(t)
	ctx := testCtx(t, 30*time.Second)
	t.Run("open to others", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "q")
		require.NoError(t, os.Mkdir(dir, 0o755))
		require.NoError(t, os.Chmod(dir, 0o755))
		_, err := Open(ctx, dir, fastOptions(log))
		require.ErrorIs(t, err, ErrOpenMode)
		assert.Contains(t, err.Error(), "chmod 700")
		_, err = Join(ctx, dir, BlockOptions{Logger: log})
		require.ErrorIs(t, err, ErrOpenMode)
	})
	t.Run("another user's", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to make a directory another user owns")
		}
		dir := filepath.Join(t.TempDir(), "q")
		require.NoError(t, os.Mkdir(dir, 0o700))
		require.NoError(t, os.Chown(dir, 65534, 65534))
		_, err := Open(ctx, dir, fastOptions(log))
		require.ErrorIs(t, err, ErrNotOwner)
		assert.Contains(t, err.Error(), "uid 65534")
		_, err = Join(ctx, dir, BlockOptions{Logger: log})
		require.ErrorIs(t, err, ErrNotOwner)
	})
	t.Run("not a queue", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.Chmod(dir, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "thesis.tex"), nil, 0o600))
		_, err := Open(ctx, dir, fastOptions(log))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "thesis.tex")
		assert.FileExists(t, filepath.Join(dir, "thesis.tex"))
	})
	t.Run("in use", func(t *testing.T) {
		f, _ := openFront(t, nil)
		_, err := Open(ctx, f.Dir(), fastOptions(log))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "in use")
		// The first front end is unharmed.
		require.NoError(t, f.Send(&serialize.Shutdown{}))
		_, err = f.Recv(ctx)
		require.NoError(t, err)
	})
	t.Run("a dead run's leftovers", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "q")
		old, err := Open(ctx, dir, fastOptions(log))
		require.NoError(t, err)
		oldRun := old.Run()
		// Leave the queue as a crashed front end would: its goroutines
		// stop, its files stay.
		old.mu.Lock()
		old.closing = true
		old.mu.Unlock()
		close(old.stopW)
		old.wgW.Wait()
		close(old.done)
		old.wgP.Wait()
		require.NoError(t, os.WriteFile(filepath.Join(dir, dirTasks, taskFileName('t', 1)), []byte("stale"), 0o600))

		f, err := Open(ctx, dir, fastOptions(log))
		require.NoError(t, err)
		defer f.Close()
		assert.NotEqual(t, oldRun, f.Run())
		names, _ := listDir(filepath.Join(dir, dirTasks))
		assert.Empty(t, names, "the dead run's tasks are cleared")
	})
}

// TestBlockStopsWhenFrontEndLeaves: a block whose front end closed the
// queue fails its Recv with ErrFrontGone.
func TestBlockStopsWhenFrontEndLeaves(t *testing.T) {
	f, _ := openFront(t, nil)
	b := joinBlock(t, f.Dir(), "b0")
	_, served := startEcho(t, b, 10, 0)
	_, err := f.WaitBlock(testCtx(t, 10*time.Second))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	select {
	case err := <-served:
		require.ErrorIs(t, err, ErrFrontGone)
		require.ErrorIs(t, err, link.ErrClosed)
	case <-time.After(30 * time.Second):
		t.Fatal("the block did not notice its front end left")
	}
}

// TestBlockPeerTimeout: a front end whose heartbeat stalls (a hung or
// killed front end leaves its files behind) makes the block stop.
func TestBlockPeerTimeout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	require.NoError(t, os.Mkdir(dir, 0o700))
	for _, d := range subdirs {
		require.NoError(t, os.Mkdir(filepath.Join(dir, d), 0o700))
	}
	run := RunID{9}
	info, err := json.Marshal(runInfo{Format: FileVersion, Run: run.String(), Heartbeat: int64(10 * time.Millisecond), MinPoll: int64(time.Millisecond), MaxPoll: int64(10 * time.Millisecond)})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, runFile), info, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, dirCtl, "front-"+beatName(run.String(), 3)), nil, 0o600))

	log, _ := newLogger(t)
	b, err := Join(testCtx(t, 10*time.Second), dir, BlockOptions{PeerTimeout: 200 * time.Millisecond, Logger: log})
	require.NoError(t, err)
	defer b.Close()
	_, err = b.Recv(testCtx(t, 30*time.Second))
	require.ErrorIs(t, err, link.ErrPeerTimeout)
	require.ErrorIs(t, err, link.ErrClosed)
}

// TestFencedBlockStops: a block whose heartbeat file the front end removed
// (it was declared lost) stops with ErrLost at its next beat.
func TestFencedBlockStops(t *testing.T) {
	f, _ := openFront(t, nil)
	b := joinBlock(t, f.Dir(), "b0")
	_, served := startEcho(t, b, 10, 0)
	_, err := f.WaitBlock(testCtx(t, 10*time.Second))
	require.NoError(t, err)
	f.mu.Lock()
	rec := f.blocks[b.ID()]
	f.mu.Unlock()
	f.fence(serialize.NewCodec(serialize.Options{}), rec, "the test says so")
	select {
	case err := <-served:
		require.ErrorIs(t, err, ErrLost)
	case <-time.After(30 * time.Second):
		t.Fatal("the fenced block did not stop")
	}
}

// TestJoinWaitsForTheFrontEnd: a block may start before its front end.
func TestJoinWaitsForTheFrontEnd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	require.NoError(t, os.Mkdir(dir, 0o700))
	log, _ := newLogger(t)
	joined := make(chan error, 1)
	go func() {
		b, err := Join(testCtx(t, 30*time.Second), dir, BlockOptions{Hello: serialize.Hello{Block: "early"}, Logger: log})
		if err == nil {
			err = b.Close()
		}
		joined <- err
	}()
	f, err := Open(testCtx(t, 10*time.Second), dir, fastOptions(log))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, <-joined)
	h, err := f.WaitBlock(testCtx(t, 10*time.Second))
	require.NoError(t, err)
	assert.Equal(t, "early", h.Block)

	_, err = Join(testCtx(t, 50*time.Millisecond), filepath.Join(t.TempDir(), "none"), BlockOptions{Logger: log})
	require.Error(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	empty := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.Mkdir(empty, 0o700))
	_, err = Join(ctx, empty, BlockOptions{Logger: log})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "no front end opened the queue")
}

// TestNoBlockTimeout: with NoBlockTimeout, a Front whose every block left
// ends its link.
func TestNoBlockTimeout(t *testing.T) {
	f, _ := openFront(t, func(o *FrontOptions) { o.NoBlockTimeout = 100 * time.Millisecond })
	b := joinBlock(t, f.Dir(), "b0")
	_, err := f.WaitBlock(testCtx(t, 10*time.Second))
	require.NoError(t, err)
	require.NoError(t, b.Close())
	_, err = f.Recv(testCtx(t, 30*time.Second))
	require.ErrorIs(t, err, ErrNoBlock)
	require.ErrorIs(t, err, link.ErrClosed)
}

func TestAbort(t *testing.T) {
	f, _ := openFront(t, nil)
	cause := errors.New("the launcher exited")
	f.Abort(cause)
	_, err := f.Recv(testCtx(t, 10*time.Second))
	require.ErrorIs(t, err, cause)
	require.ErrorIs(t, err, link.ErrClosed)
	_, err = f.WaitBlock(testCtx(t, 10*time.Second))
	require.ErrorIs(t, err, cause)
}

// TestAhead: a joining block brings Ahead extra credit, so that tasks can
// wait in the queue for it; when it leaves, that credit is taken back from
// the credit that comes later.
func TestAhead(t *testing.T) {
	f, _ := openFront(t, func(o *FrontOptions) { o.Ahead = 100 })
	ctx := testCtx(t, 10*time.Second)
	first := newFakeBlock(t, f.Dir(), "first-1-aaaaaa")
	m, err := f.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, &serialize.Credit{N: 100}, m, "the Hello brings Ahead")

	first.write(&serialize.Shutdown{Reason: "bye"})
	second := newFakeBlock(t, f.Dir(), "second-1-bbbbbb")
	m, err = f.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, &serialize.Credit{N: 100}, m, "the next block brings its own")
	second.write(&serialize.Credit{N: 60})
	second.write(&serialize.Credit{N: 60})
	m, err = f.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, &serialize.Credit{N: 20}, m, "the first block's Ahead is taken back")
}

// TestExcessCreditHandedBack: a block that claims a file holding more tasks
// than its credit hands the excess back to the executor as credit, so the
// credit in circulation does not shrink with each such claim (it ran dry
// once, with two blocks idle and tasks waiting in the executor).
func TestExcessCreditHandedBack(t *testing.T) {
	f, _ := openFront(t, nil) // Ahead -1: every credit is counted exactly
	ctx := testCtx(t, 10*time.Second)
	b := joinBlock(t, f.Dir(), "b0")
	_, err := f.WaitBlock(ctx)
	require.NoError(t, err)
	require.NoError(t, b.Send(&serialize.Credit{N: 2}))
	m, err := f.Recv(ctx)
	require.NoError(t, err)
	require.Equal(t, &serialize.Credit{N: 2}, m)

	tasks := make([]serialize.Task, 10)
	for i := range tasks {
		tasks[i] = serialize.Task{ID: uint64(i + 1), App: "noop"}
	}
	require.NoError(t, f.Send(&serialize.TaskBatch{Tasks: tasks}))
	got, err := b.Recv(ctx)
	require.NoError(t, err)
	require.Len(t, got.(*serialize.TaskBatch).Tasks, 10, "the block claims the whole file")
	m, err = f.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, &serialize.Credit{N: 8}, m, "the 8 tasks beyond the credit come back as credit")
}

// TestResultFilesReadInOrder: a listing that shows a block's later result
// file but not the one before it (a rename during readdir) makes the Front
// wait for a later listing instead of skipping the missing file and then
// dropping it as "read before"; only after the block timeout does it give
// the missing file up.
func TestResultFilesReadInOrder(t *testing.T) {
	f := &Front{opt: FrontOptions{BlockTimeout: 50 * time.Millisecond}}
	assert.False(t, f.waitForGap(nil, resultName{seq: 1}), "a new block's Hello")
	assert.True(t, f.waitForGap(nil, resultName{seq: 2}), "a new block's file before its Hello")
	b := &blockRec{lastSeq: 5}
	assert.False(t, f.waitForGap(b, resultName{seq: 6}), "the next file")
	assert.False(t, f.waitForGap(b, resultName{seq: 4}), "a file read before is not a gap")
	assert.True(t, f.waitForGap(b, resultName{seq: 8}), "a gap waits")
	assert.True(t, f.waitForGap(b, resultName{seq: 9}), "and so do the files after it")
	time.Sleep(60 * time.Millisecond)
	assert.False(t, f.waitForGap(b, resultName{seq: 8}), "a gap older than the block timeout is given up")
	assert.True(t, b.gapSince.IsZero())
}
