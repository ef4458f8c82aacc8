package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mark records each run of task i in a file of dir of its own process
// (runs.PID, one line per run, appended) and returns 2i. The runs files
// count the tasks that ran more than once; one file per process keeps the
// appends of processes on different hosts of a network filesystem apart.
var mark = frontend.NewApp2("e2e.mark", func(_ context.Context, dir string, i int) (int, error) {
	f, err := os.OpenFile(filepath.Join(dir, "runs."+strconv.Itoa(os.Getpid())), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, err
	}
	_, err = f.WriteString(strconv.Itoa(i) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	time.Sleep(300 * time.Microsecond)
	return 2 * i, err
})

// rankPID finds the process of the given MPI rank below the launcher pid.
func rankPID(t *testing.T, launcher, rank int) int {
	t.Helper()
	// Open MPI and MPICH tell a rank its number in different variables.
	var want [][]byte
	for _, name := range rankVars {
		want = append(want, []byte("\x00"+name+"="+strconv.Itoa(rank)+"\x00"))
	}
	for _, d := range descendants(launcher) {
		pid, _ := strconv.Atoi(strings.Fields(d)[0])
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		env = append([]byte{0}, env...)
		for _, w := range want {
			if bytes.Contains(env, w) {
				return pid
			}
		}
	}
	t.Fatalf("no process of rank %d below %d: %v", rank, launcher, descendants(launcher))
	return 0
}

// runCounts reads the runs files of dir (runs, and runs.* of mark): how
// many times each task ran.
func runCounts(t *testing.T, dir string) map[int]int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "runs*"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no runs file in %s", dir)
	counts := map[int]int{}
	for _, name := range files {
		f, err := os.Open(name)
		require.NoError(t, err)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			i, err := strconv.Atoi(sc.Text())
			require.NoError(t, err, "%s: line %q", name, sc.Text())
			counts[i]++
		}
		require.NoError(t, sc.Err())
		require.NoError(t, f.Close())
	}
	return counts
}

// TestBlockFaults injects each fault into a block busy with 10,000 tasks and
// checks that every task resolves exactly once with the right value, on the
// replacement block. It logs a row of the fault table for each.
func TestBlockFaults(t *testing.T) {
	tests := []struct {
		name   string
		inject func(t *testing.T, launcher int)
	}{
		{"worker rank SIGKILL", func(t *testing.T, launcher int) {
			require.NoError(t, syscall.Kill(rankPID(t, launcher, 2), syscall.SIGKILL))
		}},
		{"rank 0 SIGKILL", func(t *testing.T, launcher int) {
			require.NoError(t, syscall.Kill(rankPID(t, launcher, 0), syscall.SIGKILL))
		}},
		{"mpirun SIGKILL", func(t *testing.T, launcher int) {
			require.NoError(t, syscall.Kill(launcher, syscall.SIGKILL))
		}},
		{"rank 0 hangs (SIGSTOP)", func(t *testing.T, launcher int) {
			require.NoError(t, syscall.Kill(rankPID(t, launcher, 0), syscall.SIGSTOP))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t, 3*time.Minute)
			ex, err := frontend.Start(ctx, frontend.Options{NP: 4, PeerTimeout: 2 * time.Second, ReconnectGrace: time.Second, Logger: quietLog()})
			require.NoError(t, err)
			defer func() { assert.NoError(t, ex.Close()) }()
			launcher := ex.Blocks()[0].PID
			const n = 10000
			r := runMarked(ctx, t, ex, n, func() { tt.inject(t, launcher) }, nil)
			twice, recovered := r.twice, r.recovered
			st := ex.Stats()
			assert.Equal(t, int64(n), st.Done)
			assert.GreaterOrEqual(t, st.BlockRestarts, int64(1), "a replacement block ran the rest")
			assert.NotEqual(t, launcher, ex.Blocks()[0].PID)
			t.Logf("fault table: | %s | %d tasks | 1 fault | 0 lost | %d ran twice (in flight on the lost block) | %d requeued | recovered in %v |",
				tt.name, n, twice, st.Requeued, recovered.Round(10*time.Millisecond))
			assert.LessOrEqual(t, int64(twice), st.Requeued, "only tasks in flight on the lost block may run twice")
		})
	}
}

// quietLog logs warnings and errors to the test binary's stderr only when
// RANKFARM_E2E_LOG is set.
func quietLog() *slog.Logger {
	if os.Getenv("RANKFARM_E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestFrontEndKilledResumesFromCheckpoint kills the front end with SIGKILL
// mid-workflow and starts it again on the same checkpoint: the tasks that
// had finished come from the checkpoint and do not run again.
func TestFrontEndKilledResumesFromCheckpoint(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	bin := filepath.Join(t.TempDir(), "resumer")
	build := exec.Command("go", append(append([]string{"build"}, launch.Built.GoBuildFlags()...), "-o", bin, "./testdata/resumer")...)
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	dir := t.TempDir()
	const n = 10000

	first := exec.CommandContext(ctx, bin, "-dir", dir, "-n", strconv.Itoa(n))
	first.Stderr = os.Stderr
	require.NoError(t, first.Start())
	// Kill it once a third of the tasks ran.
	for {
		data, _ := os.ReadFile(filepath.Join(dir, "runs"))
		if bytes.Count(data, []byte("\n")) >= n/3 {
			break
		}
		require.NoError(t, ctx.Err())
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, first.Process.Kill())
	_ = first.Wait()
	// The block notices its front end is gone and goes away on its own.
	left := func() (out []string) {
		for _, d := range descendants(os.Getpid()) {
			if strings.HasSuffix(d, " resumer") {
				out = append(out, d)
			}
		}
		return out
	}
	require.Eventually(t, func() bool { return len(left()) == 0 }, time.Minute, 100*time.Millisecond,
		"processes left after the front end was killed: %v", left())
	ranBefore := len(runCounts(t, dir))

	second := exec.CommandContext(ctx, bin, "-dir", dir, "-n", strconv.Itoa(n))
	second.Stderr = os.Stderr
	out, err := second.Output()
	require.NoError(t, err)
	var memoized int
	_, err = fmt.Sscanf(string(out), "memoized %d", &memoized)
	require.NoError(t, err, "output %q", out)

	counts := runCounts(t, dir)
	twice := 0
	for i := range n {
		require.GreaterOrEqual(t, counts[i], 1, "task %d never ran", i)
		if counts[i] > 1 {
			twice++
		}
	}
	t.Logf("fault table: | front end SIGKILL, restart on the checkpoint | %d tasks | 1 fault | 0 lost | %d ran twice | %d of %d that had run came from the checkpoint |",
		n, twice, memoized, ranBefore)
	assert.Positive(t, memoized)
	assert.Equal(t, n-memoized, twice+(n-ranBefore), "every task not in the checkpoint ran once more, no other")
}

// proxy forwards TCP connections from its address to target, and can cut
// them all and refuse new ones for a while: a network fault between rank 0
// and the front end.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	downTo time.Time
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { _ = ln.Close(); p.cut(0) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			down := time.Now().Before(p.downTo)
			p.mu.Unlock()
			if down {
				_ = c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
			go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
		}
	}()
	return p
}

// cut closes every forwarded connection and refuses new ones for d.
func (p *proxy) cut(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.downTo = time.Now().Add(d)
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// TestLinkCutAndHealed cuts the TCP link between rank 0 and the front end
// for three seconds: rank 0 dials again, proves the token again, and the
// session resumes; no task is dropped or run twice, and no block is lost.
func TestLinkCutAndHealed(t *testing.T) {
	tcpOnly(t)
	ctx := testCtx(t, 3*time.Minute)
	// Pick a free port first, so the proxy can point at it; another
	// process may take it before the executor listens on it, so try again
	// on a fresh one then.
	var px *proxy
	var ex *frontend.Executor
	var err error
	for try := 0; ; try++ {
		hold, lerr := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, lerr)
		addr := hold.Addr().String()
		require.NoError(t, hold.Close())
		px = newProxy(t, addr)
		ex, err = frontend.Start(ctx, frontend.Options{NP: 4, ListenAddr: addr, BlockAddr: px.ln.Addr().String(),
			ReconnectGrace: 20 * time.Second, Logger: quietLog()})
		if err == nil || try == 4 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		t.Logf("port %s taken meanwhile: %v; another", addr, err)
	}
	require.NoError(t, err)
	defer func() { assert.NoError(t, ex.Close()) }()
	const n = 10000
	r := runMarked(ctx, t, ex, n, func() { px.cut(3 * time.Second) }, nil)
	twice, recovered := r.twice, r.recovered
	st := ex.Stats()
	t.Logf("fault table: | link cut for 3 s | %d tasks | 1 fault | 0 lost | %d ran twice | %d requeued | done %v after the cut |",
		n, twice, st.Requeued, recovered.Round(10*time.Millisecond))
	assert.Zero(t, twice, "no task runs twice")
	assert.Zero(t, st.BlockRestarts, "the block was not replaced")
	assert.Zero(t, st.Requeued)
}

// TestTLSLink runs tasks over a TLS link pinned by the per-run
// certificate's fingerprint.
func TestTLSLink(t *testing.T) {
	tcpOnly(t)
	ctx := testCtx(t, 2*time.Minute)
	ex, err := frontend.Start(ctx, frontend.Options{NP: 2, TLS: true, Logger: quietLog()})
	require.NoError(t, err)
	defer func() { assert.NoError(t, ex.Close()) }()
	futs := make([]*frontend.Future[int64], 1000)
	for i := range futs {
		futs[i] = inc.Call(ex, frontend.V(int64(i)))
	}
	for i, f := range futs {
		v, err := f.Get(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(i+1), v)
	}
	// A plain TCP client gets nowhere: the listener speaks only TLS.
	c, err := net.Dial("tcp", ex.Addr())
	require.NoError(t, err)
	_, _ = c.Write([]byte("hello\n"))
	buf := make([]byte, 64)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(buf)
	assert.Error(t, err, "refused")
	_ = c.Close()
}

// markedRun is what runMarked saw: how many tasks ran more than once, and
// how long after the fault the last one resolved.
type markedRun struct {
	twice     int
	recovered time.Duration
}

// runMarked calls mark n times on ex; once a fifth of the tasks are done it
// runs fault (when there is one). Every task must resolve with its value
// and have run at least once. onErr, when set, runs before a failed task
// fails the test (to log what the link saw).
func runMarked(ctx context.Context, t *testing.T, ex *frontend.Executor, n int, fault, onErr func()) markedRun {
	t.Helper()
	dir := t.TempDir()
	return runMarkedIn(ctx, t, ex, dir, dir, n, fault, onErr)
}

// runMarkedIn is runMarked with the runs files in dir, read back from
// readDir (the same directory seen from where it is stored, for a network
// filesystem whose client caches may show a file short for a moment).
func runMarkedIn(ctx context.Context, t *testing.T, ex *frontend.Executor, dir, readDir string, n int, fault, onErr func()) markedRun {
	t.Helper()
	futs := make([]*frontend.Future[int], n)
	for i := range futs {
		futs[i] = mark.Call(ex, frontend.V(dir), frontend.V(i))
	}
	var injected time.Time
	if fault != nil {
		for i := range n / 5 {
			_, err := futs[i].Get(ctx)
			require.NoError(t, err)
		}
		injected = time.Now()
		fault()
	}
	for i, f := range futs {
		v, err := f.Get(ctx)
		if err != nil && onErr != nil {
			onErr()
		}
		require.NoError(t, err, "task %d", i)
		require.Equal(t, 2*i, v, "task %d", i)
	}
	var r markedRun
	if fault != nil {
		r.recovered = time.Since(injected)
	}
	counts := runCounts(t, readDir)
	for i := range n {
		require.GreaterOrEqual(t, counts[i], 1, "task %d never ran", i)
		if counts[i] > 1 {
			r.twice++
		}
	}
	return r
}
