package taskfarm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// markLines returns n command lines, each of which appends its number to
// the file runs in dir, then runs tail (a shell snippet, may be "").
func markLines(dir string, n int, tail func(i int) string) []Line {
	lines := make([]Line, n)
	for i := range lines {
		cmd := fmt.Sprintf("echo %d >> %s", i+1, filepath.Join(dir, "runs"))
		if tail != nil {
			if s := tail(i + 1); s != "" {
				cmd += "; " + s
			}
		}
		lines[i] = Line{N: i + 1, Text: cmd}
	}
	return lines
}

// runCounts reads dir/runs: how many times each line ran.
func runCounts(t *testing.T, dir string) map[int]int {
	t.Helper()
	counts := map[int]int{}
	f, err := os.Open(filepath.Join(dir, "runs"))
	if os.IsNotExist(err) {
		return counts
	}
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		i, err := strconv.Atoi(sc.Text())
		require.NoError(t, err, "line %q", sc.Text())
		counts[i]++
	}
	require.NoError(t, sc.Err())
	return counts
}

// farm runs tasks once on a fresh in-process block with the journal at
// path ("" for none).
func farm(t *testing.T, tasks []Task, journal string, cfg Config) Summary {
	t.Helper()
	ex := startLocal(t, 3)
	var st JournalState
	var j *Journal
	if journal != "" {
		var err error
		j, st, err = OpenJournal(journal, false, quiet())
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := Run(ctx, ex, tasks, st, j, cfg)
	require.NoError(t, err)
	require.NoError(t, ex.Close())
	if j != nil {
		require.NoError(t, j.Close())
	}
	return sum
}

func TestFarmRunsEveryLineOnceAndResumes(t *testing.T) {
	dir := t.TempDir()
	journal := filepath.Join(dir, "cmds"+JournalSuffix)
	const n = 300
	// Lines 100 and 200 fail the first time (no marker file yet).
	lines := markLines(dir, n, func(i int) string {
		if i%100 == 0 {
			m := filepath.Join(dir, "ok"+strconv.Itoa(i))
			return fmt.Sprintf("test -e %s || { touch %s; echo line %d fails >&2; exit 9; }", m, m, i)
		}
		return ""
	})
	tasks, err := Expand(lines, nil, "", false)
	require.NoError(t, err)

	var errs testutil.SyncBuffer
	sum := farm(t, tasks, journal, Config{KeepGoing: true, Stderr: &errs})
	assert.Equal(t, Summary{Total: n, Succeeded: n - 3, Failed: 3}, clean(sum))
	assert.False(t, sum.OK())
	require.Len(t, sum.Failures, 3)
	assert.Contains(t, errs.String(), "exit status 9: line 100 fails")
	assert.Equal(t, 9, exitStatus(sum.Failures[0].Err))
	counts := runCounts(t, dir)
	for i := 1; i <= n; i++ {
		assert.Equal(t, 1, counts[i], "line %d", i)
	}

	// Again: only the failed lines run, and now they succeed.
	sum = farm(t, tasks, journal, Config{KeepGoing: true})
	assert.Equal(t, Summary{Total: n, Skipped: n - 3, Succeeded: 3}, clean(sum))
	assert.True(t, sum.OK())
	counts = runCounts(t, dir)
	for i := 1; i <= n; i++ {
		want := 1
		if i%100 == 0 {
			want = 2
		}
		assert.Equal(t, want, counts[i], "line %d", i)
	}

	// And again: nothing runs.
	sum = farm(t, tasks, journal, Config{})
	assert.Equal(t, Summary{Total: n, Skipped: n}, clean(sum))
	assert.True(t, sum.OK())
	assert.Len(t, runCounts(t, dir), n)
}

// clean drops a Summary's failures and time, for comparisons.
func clean(s Summary) Summary {
	s.Failures, s.Elapsed = nil, 0
	return s
}

func TestFarmStopsAfterAFailure(t *testing.T) {
	dir := t.TempDir()
	const n = 400
	lines := markLines(dir, n, func(i int) string {
		if i == 20 {
			return "exit 4"
		}
		return ""
	})
	tasks, err := Expand(lines, nil, "", false)
	require.NoError(t, err)
	sum := farm(t, tasks, "", Config{Window: 8})
	assert.Equal(t, 1, sum.Failed)
	assert.Positive(t, sum.NotRun)
	assert.Equal(t, n, sum.Succeeded+sum.Failed+sum.NotRun)
	assert.False(t, sum.OK())
	ran := len(runCounts(t, dir))
	assert.Equal(t, sum.Succeeded+sum.Failed, ran)
	// Up to a window's worth is handed out when line 20 fails, and the
	// failure's outcome may reach the farm after the successes of up to a
	// window's worth of later lines, each of which frees a slot: after
	// that, nothing new starts. Far from the 400 lines.
	assert.LessOrEqual(t, ran, 20+2*8, "no more than about a window's worth starts after the failure")
	var b strings.Builder
	sum.Write(&b)
	assert.Contains(t, b.String(), "stopped after a failure")
}

func TestFarmRetriesWalltimeAndOutput(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	lines := []Line{
		{N: 1, Text: `echo "attempt $RANKFARM_ATTEMPT"; [ "$RANKFARM_ATTEMPT" -ge 2 ]`},
		{N: 2, Text: `echo "to stdout $RANKFARM_TASK"; echo "to stderr" >&2`},
		{N: 3, Text: "sleep 30"},
	}
	tasks, err := Expand(lines, nil, "", false)
	require.NoError(t, err)

	// Captured output goes to the writers.
	var stdout, stderr testutil.SyncBuffer
	sum := farm(t, tasks, "", Config{KeepGoing: true, Retries: 2, Walltime: 300 * time.Millisecond, Stdout: &stdout, Stderr: &stderr, Dir: dir})
	assert.Equal(t, Summary{Total: 3, Succeeded: 2, Failed: 1}, clean(sum))
	assert.Contains(t, stdout.String(), "attempt 2\n")
	assert.NotContains(t, stdout.String(), "attempt 0")
	assert.Contains(t, stdout.String(), "to stdout 2\n")
	assert.Contains(t, stderr.String(), "to stderr\n")
	require.Len(t, sum.Failures, 1)
	assert.Equal(t, 3, sum.Failures[0].Task.Seq)
	assert.Contains(t, stderr.String(), "walltime")
	assert.Equal(t, -1, exitStatus(sum.Failures[0].Err))

	// With OutputDir, to files named by task number.
	stdout, stderr = testutil.SyncBuffer{}, testutil.SyncBuffer{}
	sum = farm(t, tasks[:2], "", Config{Retries: 2, OutputDir: out, Stdout: &stdout, Stderr: &stderr})
	assert.True(t, sum.OK())
	assert.Empty(t, stdout.String())
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err)
		return string(b)
	}
	assert.Equal(t, "attempt 2\n", read("1.out"), "the last attempt's output")
	assert.Equal(t, "to stdout 2\n", read("2.out"))
	assert.Equal(t, "to stderr\n", read("2.err"))
}

func TestFarmInterrupted(t *testing.T) {
	ex := startLocal(t, 2)
	tasks, err := Expand([]Line{{N: 1, Text: "sleep 30"}, {N: 2, Text: "sleep 30"}, {N: 3, Text: "true"}}, nil, "", false)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	sum, err := Run(ctx, ex, tasks, JournalState{}, nil, Config{KeepGoing: true})
	require.NoError(t, err)
	assert.True(t, sum.Interrupted)
	assert.False(t, sum.OK())
	assert.Equal(t, 3, sum.Succeeded+sum.NotRun, "the sleeps did not finish: not failures")
}

// TestProgressLines checks the plain progress report's lines.
func TestProgressLines(t *testing.T) {
	var b testutil.SyncBuffer
	p := NewLines(&b, time.Millisecond)
	var mu sync.Mutex
	c := Counts{Total: 10, Skipped: 5}
	p.Start(func() Counts { mu.Lock(); defer mu.Unlock(); return c })
	mu.Lock()
	c.Done, c.Failed, c.Running = 3, 1, 2
	mu.Unlock()
	require.Eventually(t, func() bool { return strings.Contains(b.String(), "4/10 done, 1 failed, 2 running") }, 10*time.Second, time.Millisecond)
	p.Stop()
	assert.True(t, strings.HasPrefix(b.String(), "rankfarm run: 10 tasks to run (5 done in an earlier run)\n"), b.String())
}

// TestProgressBar draws the bar into a buffer (mpb draws without a
// terminal when told its output) and checks the counts show.
func TestProgressBar(t *testing.T) {
	var b testutil.SyncBuffer
	p := NewBar(&b)
	c := Counts{Total: 4}
	var mu sync.Mutex
	p.Start(func() Counts { mu.Lock(); defer mu.Unlock(); return c })
	_, err := p.Writer().Write([]byte("a task's output\n"))
	require.NoError(t, err)
	mu.Lock()
	c.Done, c.Failed = 3, 1
	mu.Unlock()
	p.Stop()
	out := b.String()
	assert.Contains(t, out, "a task's output")
	assert.Contains(t, out, "4/4")
	assert.Contains(t, out, "1 failed")
	_, err = p.Writer().Write([]byte("after\n"))
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(b.String(), "after\n"))
}
