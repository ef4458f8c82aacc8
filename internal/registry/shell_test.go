package registry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// runSpec runs spec through the registry as the shell app's argument.
func runSpec(t *testing.T, spec ShellSpec, walltime time.Duration) (serialize.Result, ShellResult) {
	t.Helper()
	res := Default.Run(context.Background(), serialize.Task{App: AppShell, Args: args(t, spec), Walltime: int64(walltime), Attempt: 2}, 5)
	var sr ShellResult
	if res.Err == serialize.ErrNone {
		require.NoError(t, msgpack.Unmarshal(res.Value, &sr))
	}
	return res, sr
}

func TestShellExitCodes(t *testing.T) {
	tests := []struct {
		command string
		wantErr serialize.ErrKind
		msg     []string
	}{
		{"exit 0", serialize.ErrNone, nil},
		{"exit 1", serialize.ErrApp, []string{"exit status 1"}},
		{"echo why >&2; exit 42", serialize.ErrApp, []string{"exit status 42", "why"}},
		{"exit 255", serialize.ErrApp, []string{"exit status 255"}},
		{"no-such-command-rankfarm", serialize.ErrApp, []string{"exit status 127"}},
		{"kill -TERM $$", serialize.ErrApp, []string{"signal: terminated"}},
	}
	for _, tt := range tests {
		for _, form := range []string{"string", "spec"} {
			t.Run(form+"/"+tt.command, func(t *testing.T) {
				var res serialize.Result
				if form == "string" {
					res, _ = runShell(t, context.Background(), tt.command, 0)
				} else {
					res, _ = runSpec(t, ShellSpec{Cmd: tt.command}, 0)
				}
				require.Equal(t, tt.wantErr, res.Err, res.Msg)
				for _, m := range tt.msg {
					assert.Contains(t, res.Msg, m)
				}
			})
		}
	}
}

// TestRunShellSpecResult checks the exit status in the ShellResult that
// RunShellSpec fills in beside its error.
func TestRunShellSpecResult(t *testing.T) {
	res, err := RunShellSpec(context.Background(), ShellSpec{Cmd: "echo out; echo err >&2; exit 7"})
	require.Error(t, err)
	assert.Equal(t, ShellResult{Exit: 7, Stdout: "out\n", Stderr: "err\n"}, res)
	assert.Equal(t, "shell: exit status 7: err", err.Error())
}

func TestShellSpecFiles(t *testing.T) {
	dir := t.TempDir()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		return string(b)
	}

	// Relative paths are relative to Dir; missing directories are created.
	res, sr := runSpec(t, ShellSpec{Cmd: "echo to-out; echo to-err >&2; pwd", Stdout: "logs/a.out", Stderr: "logs/a.err", Dir: dir}, 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	assert.Equal(t, ShellResult{}, sr, "nothing captured")
	assert.Equal(t, "to-out\n"+dir+"\n", read("logs/a.out"))
	assert.Equal(t, "to-err\n", read("logs/a.err"))

	// The same file for both, like >file 2>&1; truncated on the next run.
	both := filepath.Join(dir, "both")
	for range 2 {
		res, _ = runSpec(t, ShellSpec{Cmd: "echo 1; echo 2 >&2; echo 3", Stdout: both, Stderr: both}, 0)
		require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	}
	assert.Equal(t, "1\n2\n3\n", read("both"))

	// Append.
	for i := range 3 {
		res, _ = runSpec(t, ShellSpec{Cmd: "echo " + strconv.Itoa(i), Stdout: "app", Dir: dir, Append: true}, 0)
		require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	}
	assert.Equal(t, "0\n1\n2\n", read("app"))

	// Stdout to a file, stderr captured, and the other way round.
	res, sr = runSpec(t, ShellSpec{Cmd: "echo o; echo e >&2", Stdout: "o1", Dir: dir}, 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	assert.Equal(t, ShellResult{Stderr: "e\n"}, sr)
	res, sr = runSpec(t, ShellSpec{Cmd: "echo o; echo e >&2", Stderr: "e1", Dir: dir}, 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	assert.Equal(t, ShellResult{Stdout: "o\n"}, sr)

	// A failure carries the tail of the stderr file, this run's only.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "e2"), []byte("an earlier run's error\n"), 0o600))
	res, _ = runSpec(t, ShellSpec{Cmd: "echo first >&2; echo the real reason >&2; exit 3", Stderr: "e2", Dir: dir, Append: true}, 0)
	require.Equal(t, serialize.ErrApp, res.Err)
	assert.Equal(t, "shell: exit status 3: first\nthe real reason", res.Msg)
	res, _ = runSpec(t, ShellSpec{Cmd: "head -c 10000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 4", Stderr: "e3", Dir: dir}, 0)
	require.Equal(t, serialize.ErrApp, res.Err)
	assert.True(t, strings.HasSuffix(res.Msg, "xxxEND"), res.Msg)
	assert.Less(t, len(res.Msg), shellErrTail+100)

	// An output file that cannot be opened fails the task before it runs.
	marker := filepath.Join(dir, "ran")
	res, _ = runSpec(t, ShellSpec{Cmd: "touch " + marker, Stdout: dir}, 0)
	require.Equal(t, serialize.ErrApp, res.Err)
	assert.Contains(t, res.Msg, "output file")
	assert.NoFileExists(t, marker)
}

func TestShellSpecEnvAndDir(t *testing.T) {
	t.Setenv("RANKFARM_TOKEN_FILE", "/secret")
	t.Setenv("RANKFARM_EXEC", "1")
	t.Setenv("SHELL_TEST_INHERITED", "yes")
	dir := t.TempDir()
	res, sr := runSpec(t, ShellSpec{
		Cmd: `echo "$A|$B|$SHELL_TEST_INHERITED|${RANKFARM_EXEC-unset}|${RANKFARM_TOKEN_FILE-unset}|$RANKFARM_RANK|$RANKFARM_ATTEMPT|$(pwd)"`,
		Env: map[string]string{"A": "a value", "B": "x=y", "SHELL_TEST_INHERITED": "overridden"},
		Dir: dir,
	}, 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	assert.Equal(t, "a value|x=y|overridden|unset|unset|5|2|"+dir+"\n", sr.Stdout)

	for _, bad := range []map[string]string{{"": "x"}, {"A=B": "x"}, {"A": "nul\x00"}} {
		res, _ = runSpec(t, ShellSpec{Cmd: "true", Env: bad}, 0)
		assert.Equal(t, serialize.ErrArgs, res.Err, res.Msg)
	}
	res, _ = runSpec(t, ShellSpec{Cmd: "true", Dir: filepath.Join(dir, "missing")}, 0)
	assert.Equal(t, serialize.ErrApp, res.Err, res.Msg)
	assert.Contains(t, res.Msg, "missing")
}

// marked returns the pids of live (not zombie) processes whose command line
// holds marker.
func marked(marker string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(b), marker) && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestShellWalltimeLeavesNoOrphan runs a command whose child starts a
// grandchild in the background and waits; the walltime kills the whole
// group, and no process of it is left.
func TestShellWalltimeLeavesNoOrphan(t *testing.T) {
	marker := fmt.Sprintf("%d.%06d", 3000+rand.IntN(1000), rand.IntN(1000000)) // a sleep no one else runs
	pidFile := filepath.Join(t.TempDir(), "pid")
	command := fmt.Sprintf("sh -c 'sleep %s & echo $! > %s; wait' & sleep %s; wait", marker, pidFile, marker)
	res, _ := runSpec(t, ShellSpec{Cmd: command}, 300*time.Millisecond)
	require.Equal(t, serialize.ErrWalltime, res.Err, res.Msg)
	waitForFile(t, pidFile)
	require.Eventually(t, func() bool { return len(marked(marker)) == 0 }, 10*time.Second, 20*time.Millisecond,
		"processes of the killed command are left: %v", marked(marker))
	time.Sleep(100 * time.Millisecond) // let the abandoned handler goroutine end
}

// TestShellExitKillsLeftovers checks that what a command leaves running in
// the background is killed when its shell exits.
func TestShellExitKillsLeftovers(t *testing.T) {
	marker := fmt.Sprintf("%d.%06d", 3000+rand.IntN(1000), rand.IntN(1000000))
	dir := t.TempDir()
	res, _ := runSpec(t, ShellSpec{Cmd: "sleep " + marker + " >/dev/null 2>&1 & echo started", Stdout: "out", Dir: dir}, 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	// SIGKILL is sent to the group before the task returns; the kernel
	// may take a moment to tear the process down.
	assert.Eventually(t, func() bool { return len(marked(marker)) == 0 }, 10*time.Second, 10*time.Millisecond,
		"the background sleep outlived its task")
}

func TestShellLargeOutputs(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 20
	cmd := fmt.Sprintf("head -c %d /dev/zero | tr '\\0' a; head -c %d /dev/zero | tr '\\0' b >&2", size, size)
	// To files: every byte is kept, none travels in the result.
	res, sr := runSpec(t, ShellSpec{Cmd: cmd, Stdout: "big.out", Stderr: "big.err", Dir: dir}, 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	assert.Equal(t, ShellResult{}, sr)
	assert.Less(t, len(res.Value), 16)
	for _, name := range []string{"big.out", "big.err"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, int64(size), fi.Size(), name)
	}
	// Captured: bounded on both streams, so the result fits a message.
	res, sr = runSpec(t, ShellSpec{Cmd: cmd}, 0)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	assert.Less(t, len(res.Value), 2*MaxShellOutput+200)
	assert.True(t, strings.HasPrefix(sr.Stdout, "aaaa"))
	assert.Contains(t, sr.Stdout, fmt.Sprintf("[rankfarm: %d more bytes dropped]", size-MaxShellOutput))
	assert.True(t, strings.HasSuffix(sr.Stderr, "bbbb"))
	assert.Contains(t, sr.Stderr, fmt.Sprintf("[rankfarm: %d earlier bytes dropped]", size-MaxShellOutput))
}

func TestShellBadSpec(t *testing.T) {
	for _, bad := range [][]byte{
		args(t, []any{"only", "three", "fields"}),
		args(t, []any{1, "", "", false, nil, ""}),
		args(t, true),
	} {
		res := Default.Run(context.Background(), serialize.Task{App: AppShell, Args: bad}, 0)
		assert.Equal(t, serialize.ErrArgs, res.Err, res.Msg)
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "''"},
		{"plain", "plain"},
		{"a/b.c-d_e:f=g@h%i+j,k", "a/b.c-d_e:f=g@h%i+j,k"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"$HOME", "'$HOME'"},
		{"a;b|c&d", "'a;b|c&d'"},
		{"new\nline", "'new\nline'"},
		{"*", "'*'"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			q := ShellQuote(tt.in)
			assert.Equal(t, tt.want, q)
			// The shell reads it back as the one word it was.
			res, err := RunShell(context.Background(), "printf %s "+q)
			require.NoError(t, err)
			assert.Equal(t, tt.in, res.Stdout)
		})
	}
}

// envShellHelper makes the test binary, re-run by TestShellDiesWithWorker,
// a stand-in worker that runs one command and waits to be killed.
const envShellHelper = "REGISTRY_TEST_SHELL_HELPER"

func init() {
	if cmd := os.Getenv(envShellHelper); cmd != "" {
		go func() { _, _ = RunShell(context.Background(), cmd) }()
		time.Sleep(time.Minute)
		os.Exit(0)
	}
}

// TestShellDiesWithWorker kills a worker (SIGKILL, no chance to clean up)
// while its command runs: the kernel kills the command's shell with it.
// (What the shell started itself is left: only a worker alive can kill the
// group.)
func TestShellDiesWithWorker(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux's")
	}
	marker := fmt.Sprintf("%d.%06d", 3000+rand.IntN(1000), rand.IntN(1000000))
	worker := exec.Command(os.Args[0], "-test.run=^$")
	worker.Env = append(os.Environ(), envShellHelper+"=exec sleep "+marker)
	require.NoError(t, worker.Start())
	require.Eventually(t, func() bool { return len(marked(marker)) == 1 }, 10*time.Second, 10*time.Millisecond, "the command never started")
	require.NoError(t, worker.Process.Kill())
	_ = worker.Wait()
	require.Eventually(t, func() bool { return len(marked(marker)) == 0 }, 10*time.Second, 10*time.Millisecond,
		"the command outlived its worker: %v", marked(marker))
}
