package frontend

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/internal/qlink"
	"github.com/rankfarm/rankfarm/serialize"
)

// modeQueue makes a selfLauncher's process a test block that serves the
// queue named by RANKFARM_QUEUE, as rank 0 does under `rankfarm exec
// --queue`.
const modeQueue = "queue"

func init() {
	if os.Getenv(envTestBlock) != modeQueue {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := qlink.Join(ctx, os.Getenv(qlink.EnvQueue), qlink.BlockOptions{
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
}

// TestLaunchedBlockOverQueue launches a block that talks to the front end
// through a queue directory: no socket, no token, and the run's queue goes
// with Close.
func TestLaunchedBlockOverQueue(t *testing.T) {
	l := &selfLauncher{mode: modeQueue}
	root := filepath.Join(t.TempDir(), "shared")
	ex, err := Start(context.Background(), Options{NP: 3, Launcher: l, QueueDir: root, Prefetch: 4, Logger: quietLogger()})
	require.NoError(t, err)
	assert.Empty(t, ex.Addr(), "no listener")
	assert.Equal(t, "1", l.env[EnvExec])
	assert.Equal(t, "4", l.env[EnvPrefetch])
	assert.NotContains(t, l.env, link.EnvAddr)
	assert.NotContains(t, l.env, link.EnvTokenFile)
	queue := l.env[qlink.EnvQueue]
	require.True(t, strings.HasPrefix(queue, root+string(filepath.Separator)), "the block's queue %s is under %s", queue, root)
	for _, d := range []string{root, filepath.Dir(queue), queue} {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), d)
	}
	bi := ex.Blocks()
	require.Len(t, bi, 1)
	assert.Equal(t, 3, bi[0].Ranks)

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
	assert.NoDirExists(t, filepath.Dir(queue), "the run's queue goes with Close")
	assert.DirExists(t, root, "the given queue directory stays")
}

// TestQueueDirFromEnvironment: RANKFARM_QUEUE_DIR switches an executor to
// the queue without a change to its Options.
func TestQueueDirFromEnvironment(t *testing.T) {
	root := filepath.Join(t.TempDir(), "q")
	t.Setenv(EnvQueueDir, root)
	l := &selfLauncher{mode: modeQueue}
	ex, err := Start(context.Background(), Options{NP: 1, Launcher: l, Logger: quietLogger()})
	require.NoError(t, err)
	defer ex.Close()
	assert.True(t, strings.HasPrefix(l.env[qlink.EnvQueue], root))
	v, err := inc.Call(ex, V(int64(41))).Get(ctxFor(t, 30*time.Second))
	require.NoError(t, err)
	assert.Equal(t, int64(42), v)
}

// TestQueueDirRefused: a queue directory that cannot be one fails Start
// with a clear error, and leaves no process behind.
func TestQueueDirRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	l := &selfLauncher{mode: modeQueue}
	_, err := Start(context.Background(), Options{NP: 1, Launcher: l, QueueDir: file, Logger: quietLogger()})
	require.ErrorContains(t, err, "queue directory")
	assert.Nil(t, l.env, "nothing was launched")
}
