package registry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

func TestBuiltinsRegistered(t *testing.T) {
	for _, name := range []string{AppNoop, AppEcho, AppSleep, AppShell} {
		_, ok := Default.Lookup(name)
		assert.True(t, ok, name)
	}
}

func TestNoop(t *testing.T) {
	for _, a := range [][]byte{nil, args(t), args(t, 1, "x", []int{2})} {
		res := Default.Run(context.Background(), serialize.Task{App: AppNoop, Args: a}, 0)
		require.Equal(t, serialize.ErrNone, res.Err)
		assert.Equal(t, []byte{0xc0}, res.Value)
	}
}

func TestEcho(t *testing.T) {
	tests := []struct {
		name string
		args []byte
		ok   bool
	}{
		{"int", args(t, 42), true},
		{"string", args(t, "hello"), true},
		{"struct-ish", args(t, map[string]any{"a": []any{1, "b", nil}}), true},
		{"nil", args(t, nil), true},
		{"none", args(t), false},
		{"two", args(t, 1, 2), false},
		{"garbage", []byte{0xc1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Default.Run(context.Background(), serialize.Task{App: AppEcho, Args: tt.args}, 0)
			if !tt.ok {
				assert.Equal(t, serialize.ErrArgs, res.Err, res.Msg)
				return
			}
			require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
			assert.Equal(t, tt.args[1:], res.Value, "the raw element, byte for byte")
			if len(res.Value) > 0 {
				assert.Same(t, &tt.args[1], &res.Value[0], "not copied, not re-encoded")
			}
		})
	}
}

func TestSleep(t *testing.T) {
	start := time.Now()
	res := Default.Run(context.Background(), serialize.Task{App: AppSleep, Args: args(t, 0.05)}, 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
	assert.Equal(t, []byte{0xc0}, res.Value)

	// An integer number of seconds is fine too.
	res = Default.Run(context.Background(), serialize.Task{App: AppSleep, Args: args(t, 0)}, 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)

	// It honours its context: cancelled at once.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start = time.Now()
	res = Default.Run(ctx, serialize.Task{App: AppSleep, Args: args(t, 10.0)}, 0)
	assert.Equal(t, serialize.ErrApp, res.Err)
	assert.Contains(t, res.Msg, "sleep interrupted")
	assert.Less(t, time.Since(start), time.Second)

	// Walltime.
	res = Default.Run(context.Background(), serialize.Task{App: AppSleep, Args: args(t, 10.0), Walltime: int64(30 * time.Millisecond)}, 0)
	assert.Equal(t, serialize.ErrWalltime, res.Err)

	for _, bad := range [][]byte{args(t, -1.0), args(t, "x"), args(t, 1e12), args(t)} {
		res = Default.Run(context.Background(), serialize.Task{App: AppSleep, Args: bad}, 0)
		assert.Equal(t, serialize.ErrArgs, res.Err, res.Msg)
	}
}

func runShell(t *testing.T, ctx context.Context, command string, walltime time.Duration) (serialize.Result, ShellResult) {
	t.Helper()
	res := Default.Run(ctx, serialize.Task{App: AppShell, Args: args(t, command), Walltime: int64(walltime)}, 0)
	var sr ShellResult
	if res.Err == serialize.ErrNone {
		require.NoError(t, msgpack.Unmarshal(res.Value, &sr))
	}
	return res, sr
}

func TestShell(t *testing.T) {
	tests := []struct {
		name    string
		command string
		wantErr serialize.ErrKind
		want    ShellResult
		msg     []string
	}{
		{name: "stdout", command: "echo hello; echo oops >&2", want: ShellResult{Stdout: "hello\n", Stderr: "oops\n"}},
		{name: "true", command: "true", want: ShellResult{}},
		{name: "exit status", command: "echo bad thing happened >&2; exit 3", wantErr: serialize.ErrApp, msg: []string{"exit status 3", "bad thing happened"}},
		{name: "killed by a signal", command: "kill -9 $$", wantErr: serialize.ErrApp, msg: []string{"signal: killed"}},
		{name: "not found", command: "no-such-command-rankfarm", wantErr: serialize.ErrApp, msg: []string{"exit status 127", "not found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, sr := runShell(t, context.Background(), tt.command, 0)
			require.Equal(t, tt.wantErr, res.Err, res.Msg)
			if tt.wantErr == serialize.ErrNone {
				assert.Equal(t, tt.want, sr)
				return
			}
			for _, m := range tt.msg {
				assert.Contains(t, res.Msg, m)
			}
		})
	}
	for _, bad := range [][]byte{args(t, 1), args(t), args(t, "a", "b")} {
		res := Default.Run(context.Background(), serialize.Task{App: AppShell, Args: bad}, 0)
		assert.Equal(t, serialize.ErrArgs, res.Err, res.Msg)
	}
}

func TestShellOutputBound(t *testing.T) {
	res, sr := runShell(t, context.Background(), "head -c 3000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero | tr '\\0' b >&2", 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	assert.Less(t, len(sr.Stdout), MaxShellOutput+100)
	assert.True(t, strings.HasPrefix(sr.Stdout, "aaaa"))
	assert.Contains(t, sr.Stdout, "bytes dropped")
	assert.Less(t, len(sr.Stderr), MaxShellOutput+100)
	assert.True(t, strings.HasSuffix(sr.Stderr, "bbbb"))

	// Many small writes keep the tail too.
	tb := &tailBuffer{max: 8}
	for _, s := range []string{"abc", "defg", "hij", "klmnopqrstu", "vw"} {
		_, _ = tb.Write([]byte(s))
	}
	assert.Equal(t, "opqrstuvw"[1:], string(tb.buf))
	hb := &headBuffer{max: 5}
	for _, s := range []string{"abc", "defg", "hij"} {
		_, _ = hb.Write([]byte(s))
	}
	assert.Equal(t, "abcde", string(hb.buf))
	assert.Equal(t, int64(5), hb.dropped)
}

// TestShellKillsGroup checks that when the task's context ends, the whole
// process group dies, background children included.
func TestShellKillsGroup(t *testing.T) {
	for _, how := range []string{"cancel", "walltime"} {
		t.Run(how, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			command := "sleep 60 & echo $! > " + pidFile + "; wait"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wall := time.Duration(0)
			if how == "cancel" {
				go func() {
					waitForFile(t, pidFile)
					cancel()
				}()
			} else {
				wall = 300 * time.Millisecond
			}
			start := time.Now()
			res, _ := runShell(t, ctx, command, wall)
			assert.NotEqual(t, serialize.ErrNone, res.Err)
			if how == "walltime" {
				assert.Equal(t, serialize.ErrWalltime, res.Err)
			} else {
				assert.Contains(t, res.Msg, "killed")
			}
			assert.Less(t, time.Since(start), 10*time.Second)
			waitForFile(t, pidFile)
			b, err := os.ReadFile(pidFile)
			require.NoError(t, err)
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			require.NoError(t, err)
			assert.Eventually(t, func() bool {
				return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || isZombie(pid)
			}, 5*time.Second, 20*time.Millisecond, "the background sleep %d survived", pid)
			// The walltime path abandons its handler goroutine; let it finish.
			time.Sleep(100 * time.Millisecond)
		})
	}
}

func waitForFile(t *testing.T, path string) {
	for range 500 {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 && strings.HasSuffix(string(b), "\n") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s never appeared", path)
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] == 'Z'
}
