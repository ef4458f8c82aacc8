package e2e

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var echo = frontend.EchoApp[int64]()

func TestHundredThousandNoOps(t *testing.T) {
	ctx := testCtx(t, 5*time.Minute)
	const n = 100000
	futs := make([]*frontend.Future[int64], n)
	for i := range futs {
		futs[i] = echo.Call(shared, frontend.V(int64(i)))
	}
	seen := make(map[uint64]bool, n)
	for i, f := range futs {
		v, err := f.Get(ctx)
		require.NoError(t, err, "task %d", i)
		require.Equal(t, int64(i), v, "task %d", i)
		require.False(t, seen[f.ID()], "task id %d twice", f.ID())
		seen[f.ID()] = true
		// A resolved future stays resolved with the same value.
		select {
		case <-f.Done():
		default:
			t.Fatalf("task %d: Done not closed after Get", i)
		}
	}
	assert.Len(t, seen, n)
}

func TestDiamond(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	top := inc.Call(shared, frontend.V(int64(1)))         // 2
	left := inc.Call(shared, top)                         // 3
	right := add.Call(shared, top, frontend.V(int64(10))) // 12
	bottom := add.Call(shared, left, right)               // 15
	v, err := bottom.Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(15), v)
}

func TestChainOfThousand(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	f := inc.Call(shared, frontend.V(int64(0)))
	for range 999 {
		f = inc.Call(shared, f)
	}
	v, err := f.Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1000), v)
}

func TestFanInOfTenThousand(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	const n = 10000
	futs := make([]*frontend.Future[int64], n)
	for i := range futs {
		futs[i] = inc.Call(shared, frontend.V(int64(i)))
	}
	v, err := sum.Call(shared, frontend.All(futs)).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(n*(n+1)/2), v) // Σ (i+1) for i < n
}

func TestErrors(t *testing.T) {
	ctx := testCtx(t, time.Minute)

	t.Run("panic", func(t *testing.T) {
		_, err := boom.Call(shared, frontend.V("kaboom")).Get(ctx)
		require.Error(t, err)
		assert.ErrorIs(t, err, frontend.ErrPanic)
		var te *frontend.TaskError
		require.ErrorAs(t, err, &te)
		assert.Contains(t, te.Msg, "boom: kaboom")
		assert.Contains(t, te.Stack, "e2e", "the stack names the panicking app's package")
	})
	t.Run("app error", func(t *testing.T) {
		_, err := fail.Call(shared, frontend.V("x")).Get(ctx)
		var te *frontend.TaskError
		require.ErrorAs(t, err, &te)
		assert.Contains(t, err.Error(), "failed on purpose: x")
	})
	t.Run("walltime", func(t *testing.T) {
		_, err := nap.Call(shared, frontend.V(3*time.Second), frontend.Walltime(200*time.Millisecond)).Get(ctx)
		assert.ErrorIs(t, err, frontend.ErrWalltime)
	})
	t.Run("unknown app", func(t *testing.T) {
		_, err := missing.Call(shared, frontend.V(int64(1))).Get(ctx)
		assert.ErrorIs(t, err, frontend.ErrUnknownApp)
		assert.Contains(t, err.Error(), "e2e.no-such-app")
	})
	t.Run("failing dependency", func(t *testing.T) {
		bad := fail.Call(shared, frontend.V("dep"))
		dependant := add.Call(shared, bad, frontend.V(int64(1)))
		_, err := dependant.Get(ctx)
		var de *frontend.DependencyError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, bad.ID(), de.DepID, "the error names the failed task")
		assert.Contains(t, err.Error(), "e2e.fail")
	})
	t.Run("ranks survive", func(t *testing.T) {
		// After panics, errors and a walltime, every rank still works.
		futs := make([]*frontend.Future[int64], 1000)
		for i := range futs {
			futs[i] = echo.Call(shared, frontend.V(int64(i)))
		}
		for i, f := range futs {
			v, err := f.Get(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(i), v)
		}
	})
}

func TestRetries(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	v, err := flaky.Call(shared, frontend.V(2), frontend.Retries(2)).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, v, "the app saw attempt 2")
	_, err = flaky.Call(shared, frontend.V(2), frontend.Retries(1)).Get(ctx)
	var te *frontend.TaskError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, 2, te.Attempts)
}

func TestIntrudersAreRefused(t *testing.T) {
	tcpOnly(t)
	ctx := testCtx(t, 2*time.Minute)
	var logs testutil.SyncBuffer
	ex, err := frontend.Start(ctx, frontend.Options{NP: 2, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	defer ex.Close()

	intruders := map[string][]byte{
		"garbage":   []byte("GET / HTTP/1.0\r\n\r\nthis is not rankfarm"),
		"huge len":  {0xff, 0xff, 0xff, 0xff, 1, 0, 2},
		"no token":  nil, // connects, reads the challenge, answers nothing sensible
		"bad proof": append([]byte{0, 0, 0, 12, 1, 0, 2}, []byte("\x98\x01\xa0\xc4\x00")...),
	}
	for name, payload := range intruders {
		c, err := net.DialTimeout("tcp", ex.Addr(), 5*time.Second)
		require.NoError(t, err, name)
		if payload != nil {
			_, _ = c.Write(payload)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Read(make([]byte, 4096)) // the challenge, or the close
		_ = c.Close()
	}
	// The real block keeps working.
	for i := range 100 {
		v, err := echo.Call(ex, frontend.V(int64(i))).Get(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(i), v)
	}
	require.Eventually(t, func() bool {
		return strings.Count(logs.String(), "refused") >= 2 || strings.Count(logs.String(), "reject") >= 2
	},
		10*time.Second, 50*time.Millisecond, "refusals are logged; log:\n%s", logs.String())
}

func TestCloseLeavesNoProcess(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	before := descendants(os.Getpid())
	ex, err := frontend.Start(ctx, frontend.Options{NP: 4})
	require.NoError(t, err)
	v, err := inc.Call(ex, frontend.V(int64(41))).Get(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(42), v)
	require.Greater(t, len(descendants(os.Getpid())), len(before), "the block's processes are our descendants")
	require.NoError(t, ex.Close())
	assert.Eventually(t, func() bool { return len(extra(before, descendants(os.Getpid()))) == 0 },
		10*time.Second, 50*time.Millisecond, "left behind: %v", extra(before, descendants(os.Getpid())))
}

func extra(before, after []string) []string {
	var out []string
	for _, p := range after {
		if !slices.Contains(before, p) {
			out = append(out, p)
		}
	}
	return out
}

// TestSignalLeavesNoProcess builds a small front end, starts it, and while its
// block is busy sends it SIGTERM (then, in a second run, SIGINT), and checks
// that it exits and leaves no process behind.
func TestSignalLeavesNoProcess(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sleeper")
	build := exec.Command("go", "build", "-o", bin, "./testdata/sleeper")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			before := descendants(os.Getpid())
			var stdout testutil.SyncBuffer
			cmd := exec.Command(bin)
			cmd.Stdout, cmd.Stderr = &stdout, &stdout
			require.NoError(t, cmd.Start())
			// Wait until the block is up: mpirun's ranks appear below us.
			require.Eventually(t, func() bool { return len(extra(before, descendants(os.Getpid()))) >= 4 },
				60*time.Second, 50*time.Millisecond)
			time.Sleep(500 * time.Millisecond)
			require.NoError(t, cmd.Process.Signal(sig))
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("the front end did not exit after %v; output:\n%s", sig, stdout.String())
			}
			assert.Eventually(t, func() bool { return len(extra(before, descendants(os.Getpid()))) == 0 },
				20*time.Second, 100*time.Millisecond, "left behind after %v: %v", sig, extra(before, descendants(os.Getpid())))
		})
	}
}

var _ = errors.New

// TestBigValues sends results that no batch may hold together and one that
// no message may hold at all: the batches split by bytes, the oversized
// result fails its task alone, and the block goes on.
func TestBigValues(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	const mib = 1 << 20
	var fs []*frontend.Future[[]byte]
	for range 12 {
		fs = append(fs, blob.Call(shared, frontend.V(6*mib)))
	}
	for _, f := range fs {
		v, err := f.Get(ctx)
		require.NoError(t, err)
		assert.Len(t, v, 6*mib)
	}
	_, err := blob.Call(shared, frontend.V(20*mib)).Get(ctx)
	require.ErrorIs(t, err, frontend.ErrApp)
	assert.Contains(t, err.Error(), "more than")

	big := make([]byte, 20*mib)
	_, err = frontend.EchoApp[[]byte]().Call(shared, frontend.V(big)).Get(ctx)
	require.ErrorIs(t, err, frontend.ErrArgs)

	v, err := inc.Call(shared, frontend.V(int64(1))).Get(ctx)
	require.NoError(t, err, "the block still serves")
	assert.Equal(t, int64(2), v)
}
