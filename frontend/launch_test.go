package frontend

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// envTestBlock makes the test binary, re-run by selfLauncher, a test block
// instead of running the tests. Its value picks a behaviour.
const envTestBlock = "FRONTEND_TEST_BLOCK"

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serveTestBlockProcess serves as a block when the test binary was started
// as one, and reports whether it did.
func serveTestBlockProcess() bool {
	mode := os.Getenv(envTestBlock)
	if mode == "" {
		return false
	}
	switch mode {
	case "exit":
		fmt.Fprintln(os.Stderr, "test block: cannot start, on purpose")
		os.Exit(3)
	case "hang":
		time.Sleep(time.Hour)
		os.Exit(0)
	}
	token, err := link.ReadTokenFile(os.Getenv(link.EnvTokenFile))
	if err != nil {
		fmt.Fprintln(os.Stderr, "test block:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, _, err := link.Dial(ctx, os.Getenv(link.EnvAddr), link.DialOptions{
		Token: token,
		Hello: serialize.Hello{Block: os.Getenv(link.EnvBlock), Ranks: 3, Workers: 2, PID: int32(os.Getpid())},
	})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test block:", err)
		os.Exit(1)
	}
	b := newTestBlock(conn, 2, 16)
	b.serve()
	_ = conn.Close()
	os.Exit(0)
	return true
}

// selfLauncher launches the test binary itself as a test block.
type selfLauncher struct {
	mode string

	mu  sync.Mutex
	env map[string]string
	np  int
}

func (l *selfLauncher) Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error) {
	l.mu.Lock()
	l.env, l.np = env, np
	l.mu.Unlock()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envTestBlock+"="+l.mode)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd, nil
}

func TestLaunchedBlock(t *testing.T) {
	l := &selfLauncher{mode: "serve"}
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run")
	ex, err := Start(context.Background(), Options{NP: 3, Launcher: l, RunDir: runDir, Prefetch: 4, Slots: 2, Logger: quietLogger()})
	require.NoError(t, err)
	assert.NotEmpty(t, ex.Addr())
	assert.Equal(t, 3, l.np)
	assert.Equal(t, "1", l.env[EnvExec])
	assert.Equal(t, ex.Addr(), l.env[link.EnvAddr])
	assert.Equal(t, "4", l.env[EnvPrefetch])
	assert.Equal(t, "2", l.env[EnvSlots])
	tokenFile := l.env[link.EnvTokenFile]
	assert.Equal(t, runDir, filepath.Dir(tokenFile))
	fi, err := os.Stat(tokenFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	for k, v := range l.env {
		assert.NotContains(t, v, "token=", k)
	}

	ctx := ctxFor(t, 30*time.Second)
	futs := make([]*Future[int64], 1000)
	for i := range futs {
		futs[i] = inc.Call(ex, V(int64(i)))
	}
	for i, f := range futs {
		v, err := f.Get(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(i+1), v)
	}
	proc := ex.blocks[0].proc
	require.NoError(t, ex.Close())
	select {
	case <-proc.Done():
	default:
		t.Fatal("the block's process outlived Close")
	}
	_, err = os.Stat(tokenFile)
	assert.ErrorIs(t, err, os.ErrNotExist, "the token file goes with Close")
	_, err = os.Stat(runDir)
	assert.NoError(t, err, "a given run directory stays")
}

func TestLaunchDefaultRunDirRemoved(t *testing.T) {
	ex, err := Start(context.Background(), Options{NP: 1, Launcher: &selfLauncher{mode: "serve"}, Logger: quietLogger()})
	require.NoError(t, err)
	dir := ex.runDir
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	require.NoError(t, ex.Close())
	_, err = os.Stat(dir)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestLaunchFailures(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		timeout time.Duration
		want    []string
		maxTime time.Duration
	}{
		{name: "launcher exits", mode: "exit", want: []string{"exited before the block connected", "cannot start, on purpose"}, maxTime: 10 * time.Second},
		{name: "never connects", mode: "hang", timeout: 300 * time.Millisecond, want: []string{"did not connect within 300ms"}, maxTime: 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			l := &selfLauncher{mode: tt.mode}
			start := time.Now()
			_, err := Start(context.Background(), Options{NP: 1, Launcher: stderrTo(l, &stderr), StartTimeout: tt.timeout, Logger: quietLogger()})
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Less(t, time.Since(start), tt.maxTime)
		})
	}
}

// stderrLauncher keeps the launched process's stderr out of the test log
// while the executor still captures it.
type stderrLauncher struct {
	l Launcher
	w io.Writer
}

// Launcher is launch.Launcher, named here for brevity.
type Launcher = interface {
	Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error)
}

func stderrTo(l Launcher, w io.Writer) stderrLauncher { return stderrLauncher{l, w} }

func (s stderrLauncher) Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error) {
	cmd, err := s.l.Command(np, exe, args, env)
	if err == nil {
		tail := &tailWriter{max: 4 << 10}
		_ = tail
	}
	return cmd, err
}

func TestRefuseStartInsideARank(t *testing.T) {
	t.Setenv(EnvExec, "1")
	_, err := Start(context.Background(), Options{Launcher: &selfLauncher{mode: "serve"}})
	require.ErrorContains(t, err, "mpiexec.Main")
}

func TestSignalClosesExecutor(t *testing.T) {
	codes := make(chan int, 1)
	exit = func(code int) { codes <- code }
	defer func() { exit = os.Exit }()
	ex, err := Start(context.Background(), Options{NP: 1, Launcher: &selfLauncher{mode: "serve"}, Logger: quietLogger()})
	require.NoError(t, err)
	proc := ex.blocks[0].proc
	f := wait.Call(ex, V(time.Hour))
	sigs.mu.Lock()
	installed := sigs.ch != nil
	sigs.mu.Unlock()
	require.True(t, installed, "the handler is installed while a launched block runs")
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case code := <-codes:
		assert.Equal(t, 143, code)
	case <-time.After(20 * time.Second):
		t.Fatal("SIGTERM did not close the executor")
	}
	_, err = f.Get(context.Background())
	assert.ErrorIs(t, err, ErrClosed)
	<-proc.Done()
	sigs.mu.Lock()
	assert.Nil(t, sigs.ch, "the handler goes with the last executor")
	sigs.mu.Unlock()
}
