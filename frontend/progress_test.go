package frontend

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// noLeaks checks, once the test's cleanups have closed its executor and
// block, that no goroutine the test started is left (the bar's included).
func noLeaks(t *testing.T) {
	t.Helper()
	current := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, current) })
}

// TestProgressShowsEveryTask runs a thousand tasks, some of which fail,
// with the bar writing to a buffer (not a terminal), and checks the line
// Close draws last.
func TestProgressShowsEveryTask(t *testing.T) {
	noLeaks(t)
	var out testutil.SyncBuffer
	ex, _ := newTestExecutor(t, 4, 64, Options{Progress: &out}, nil)
	ctx := ctxFor(t, 60*time.Second)

	const n, failing = 1000, 37
	futs := make([]*Future[int64], 0, n)
	for i := range n - failing {
		futs = append(futs, inc.Call(ex, V(int64(i))))
	}
	for range failing - 1 {
		futs = append(futs, fail.Call(ex, V("on purpose")))
	}
	futs = append(futs, inc.Call(ex, futs[len(futs)-1])) // fails with its dependency
	failed := 0
	for _, f := range futs {
		if _, err := f.Get(ctx); err != nil {
			failed++
		}
	}
	require.Equal(t, failing, failed)
	require.NoError(t, ex.Close())

	last := lastLine(out.String())
	t.Logf("the last render: %q", last)
	assert.True(t, strings.HasPrefix(last, "tasks 1000/1000 ["), last)
	assert.Contains(t, last, "] 37 failed  0 running  ")
	assert.Contains(t, last, "/s  elapsed ")
	assert.Contains(t, last, "["+strings.Repeat("=", progressBarWidth-2)+"]", "a full bar")
	assert.NotContains(t, out.String(), "\x1b[", "no cursor movement on a writer that is not a terminal")

	fmt.Fprintln(ex.ProgressWriter(), "after Close")
	assert.True(t, strings.HasSuffix(out.String(), last+"\nafter Close\n"), "after Close the writer writes straight through")
}

// TestProgressGrowingTotal draws the bar as on a terminal (redrawn every
// poll) while the program submits in two rounds, and prints a line of the
// program's own through ProgressWriter.
func TestProgressGrowingTotal(t *testing.T) {
	noLeaks(t)
	defer func(f func(io.Writer) bool) { progressTerminal = f }(progressTerminal)
	progressTerminal = func(io.Writer) bool { return true }
	var out testutil.SyncBuffer
	ex, _ := newTestExecutor(t, 2, 16, Options{Progress: &out}, nil)
	ctx := ctxFor(t, 60*time.Second)

	round := func(k int) {
		futs := make([]*Future[int64], k)
		for i := range futs {
			futs[i] = inc.Call(ex, V(int64(i)))
		}
		for _, f := range futs {
			_, err := f.Get(ctx)
			require.NoError(t, err)
		}
	}
	round(300)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "tasks 300/300 [") },
		30*time.Second, 10*time.Millisecond, "a redraw shows the first round done")
	fmt.Fprintln(ex.ProgressWriter(), "between the rounds")
	round(200)
	require.NoError(t, ex.Close())

	s := out.String()
	var mid string
	for l := range strings.Lines(s) {
		if strings.HasPrefix(l, "tasks 300/300 [") {
			mid = l
			break
		}
	}
	assert.Contains(t, mid, "0 failed  0 running  ")
	assert.Contains(t, mid, "ETA 0s", "all that was submitted is done, but the bar is not complete")
	assert.NotContains(t, mid, "elapsed")
	last := lastLine(s)
	assert.True(t, strings.HasPrefix(last, "tasks 500/500 ["), last)
	assert.Contains(t, last, "elapsed")
	i := strings.Index(s, "between the rounds\n")
	require.GreaterOrEqual(t, i, 0, "the program's line is printed")
	assert.Less(t, i, strings.Index(s, last), "above the bar's last render")
	assert.Equal(t, 1, strings.Count(s, "between the rounds"))
}

// TestProgressCloseCutsTasksShort closes an executor with tasks still
// running: they fail as closed, and the bar ends complete.
func TestProgressCloseCutsTasksShort(t *testing.T) {
	noLeaks(t)
	var out testutil.SyncBuffer
	ex, b := newTestExecutor(t, 4, 16, Options{Progress: &out}, nil)
	ctx := ctxFor(t, 30*time.Second)
	for i := range 10 {
		_, err := inc.Call(ex, V(int64(i))).Get(ctx)
		require.NoError(t, err)
	}
	long := []*Future[int64]{wait.Call(ex, V(time.Hour)), wait.Call(ex, V(time.Hour)), wait.Call(ex, V(time.Hour))}
	require.Eventually(t, func() bool { return b.outstanding.Load() == 3 }, 30*time.Second, time.Millisecond)
	require.NoError(t, ex.Close())
	for _, f := range long {
		_, err := f.Get(ctx)
		require.ErrorIs(t, err, ErrClosed)
	}
	last := lastLine(out.String())
	assert.True(t, strings.HasPrefix(last, "tasks 13/13 ["), last)
	assert.Contains(t, last, "] 3 failed  0 running  ")
}

// TestProgressOff checks that without Progress there is no bar, and that
// an executor that ran no task draws none.
func TestProgressOff(t *testing.T) {
	noLeaks(t)
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	assert.Nil(t, ex.prog)
	assert.Equal(t, os.Stderr, ex.ProgressWriter())

	var out testutil.SyncBuffer
	idle, _ := newTestExecutor(t, 2, 8, Options{Progress: &out}, nil)
	require.NoError(t, idle.Close())
	assert.Empty(t, out.String())
}

func TestProgressText(t *testing.T) {
	for _, c := range []struct {
		snap progressSnap
		want string
	}{
		{progressSnap{failed: 3, running: 96, rate: 1234.4, left: 2468}, "3 failed  96 running  1234/s  ETA 2.0s"},
		{progressSnap{rate: 2.54, left: 254}, "0 failed  0 running  2.5/s  ETA 1m40s"},
		{progressSnap{running: 8, left: 8}, "0 failed  8 running  0.0/s  ETA ?"},
		{progressSnap{rate: 50}, "0 failed  0 running  50/s  ETA 0s"},
		{progressSnap{failed: 1, rate: 812.3, elapsed: 83 * time.Second, final: true}, "1 failed  0 running  812/s  elapsed 1m23s"},
	} {
		assert.Equal(t, c.want, c.snap.String())
	}
	assert.Empty(t, (*progressSnap)(nil).String())
}
