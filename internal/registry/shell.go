package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rankfarm/rankfarm/internal/cloexec"
	"github.com/vmihailenco/msgpack/v5"
)

// MaxShellOutput bounds what the shell app keeps of a command's stdout (the
// first bytes) and stderr (the last bytes) when it captures them.
const MaxShellOutput = 1 << 20

// shellErrTail is how much of stderr a failed shell command's error carries.
const shellErrTail = 2 << 10

// shellWaitDelay is how long the shell app waits, after the command's end or
// its kill, for stray processes outside its group holding its output pipes.
const shellWaitDelay = 2 * time.Second

// Variables the shell app sets for each command.
const (
	EnvTaskRank    = "RANKFARM_RANK"    // the world rank of the worker that runs the command
	EnvTaskAttempt = "RANKFARM_ATTEMPT" // 0 on the first run, then 1, 2, … on retries
)

// ShellResult is the value of the shell app. It travels as a msgpack array.
type ShellResult struct {
	//lint:ignore U1000 read by msgpack: it makes the value an array
	_msgpack struct{} `msgpack:",as_array"`
	// Exit is the command's exit status.
	Exit int
	// Stdout is the command's standard output, cut to MaxShellOutput bytes;
	// empty when it went to a file.
	Stdout string
	// Stderr is the command's standard error; only its last MaxShellOutput
	// bytes are kept. Empty when it went to a file.
	Stderr string
}

// ShellSpec describes one command of the shell app: the command line, where
// its output goes, its environment and its working directory. It travels as
// a msgpack array.
type ShellSpec struct {
	//lint:ignore U1000 read by msgpack: it makes the value an array
	_msgpack struct{} `msgpack:",as_array"`
	// Cmd is the command line, run with /bin/sh -c.
	Cmd string
	// Stdout and Stderr name files for the command's standard output and
	// standard error; "" captures the stream in the ShellResult, bounded by
	// MaxShellOutput. A relative path is relative to Dir. The same path for
	// both sends both to one file, like >file 2>&1. Missing parent
	// directories are created.
	Stdout, Stderr string
	// Append appends to the Stdout and Stderr files instead of truncating
	// them.
	Append bool
	// Env holds variables set for the command on top of the task's
	// environment (TaskEnv: the worker's, less its MPI launcher's and the
	// block's variables); they win over those of the same name.
	Env map[string]string
	// Dir is the command's working directory; "" means the worker's.
	Dir string
}

// shell runs one command with /bin/sh -c in its own process group; the
// whole group is killed when ctx ends. Its argument is a string (the command
// line) or a ShellSpec.
func shell(ctx context.Context, args []byte) ([]byte, error) {
	parts, err := SplitArgs(args, 1)
	if err != nil {
		return nil, err
	}
	var spec ShellSpec
	if isMsgpackString(parts[0][0]) {
		err = DecodeArgs(args, &spec.Cmd)
	} else {
		err = DecodeArgs(args, &spec)
	}
	if err != nil {
		return nil, err
	}
	res, err := RunShellSpec(ctx, spec)
	if err != nil {
		return nil, err
	}
	return msgpack.Marshal(&res)
}

// isMsgpackString reports whether c starts a msgpack str.
func isMsgpackString(c byte) bool {
	return (c >= 0xa0 && c <= 0xbf) || (c >= 0xd9 && c <= 0xdb)
}

// RunShell runs command with /bin/sh -c; see RunShellSpec.
func RunShell(ctx context.Context, command string) (ShellResult, error) {
	return RunShellSpec(ctx, ShellSpec{Cmd: command})
}

// RunShellSpec runs spec.Cmd with /bin/sh -c in a process group of its own
// and returns its exit status and its (bounded) captured output. The
// command starts as a clean process: with the task's environment (TaskEnv,
// then spec.Env) and no descriptor of the rank's but stdin (/dev/null),
// stdout and stderr, all of this process's descriptors being marked
// close-on-exec (cloexec.MarkAll) just before it starts. When ctx
// ends the whole group is killed with SIGKILL; so is whatever the shell
// leaves running in its group when it exits, so that a command leaves no
// process behind. On Linux the shell also dies with the worker that started
// it, should the worker be killed outright (the processes the shell started
// then outlive it: only a live worker can kill the group). A non-zero exit is an error that carries the status and the tail of
// stderr (read back from the Stderr file when there is one); the
// ShellResult is filled in as well. A spec that cannot be set up (a bad
// variable name, an output file that cannot be opened) is an error before
// anything runs.
func RunShellSpec(ctx context.Context, spec ShellSpec) (ShellResult, error) {
	var res ShellResult
	env, err := shellEnv(ctx, spec.Env)
	if err != nil {
		return res, err
	}
	if spec.Dir != "" {
		if fi, err := os.Stat(spec.Dir); err != nil {
			return res, fmt.Errorf("shell: working directory: %w", err)
		} else if !fi.IsDir() {
			return res, fmt.Errorf("shell: working directory %s is not a directory", spec.Dir)
		}
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", spec.Cmd)
	cmd.Env, cmd.Dir = env, spec.Dir
	out, err := openOutputs(spec)
	if err != nil {
		return res, fmt.Errorf("shell: %w", err)
	}
	defer out.close()
	var stdout *headBuffer
	var stderr *tailBuffer
	if out.stdout != nil {
		cmd.Stdout = out.stdout
	} else {
		stdout = &headBuffer{max: MaxShellOutput}
		cmd.Stdout = stdout
	}
	if out.stderr != nil {
		cmd.Stderr = out.stderr
	} else {
		stderr = &tailBuffer{max: MaxShellOutput}
		cmd.Stderr = stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(cmd.SysProcAttr)
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = shellWaitDelay
	// MPI opens some descriptors after the rank's start without
	// close-on-exec (Open MPI's TCP connections to ranks of other nodes are
	// made on first use): mark them, so that the command gets none. It
	// fails only where neither close_range nor /proc/self/fd works, which
	// the rank already logged at its start: run the command regardless.
	_ = cloexec.MarkAll()
	if err = cmd.Start(); err == nil {
		err = waitAndKillGroup(cmd)
	}
	if stdout != nil {
		res.Stdout = stdout.String()
	}
	if stderr != nil {
		res.Stderr = stderr.String()
	}
	if cmd.ProcessState == nil { // it never started
		return res, fmt.Errorf("shell: %w", err)
	}
	res.Exit = cmd.ProcessState.ExitCode()
	if ctx.Err() != nil {
		return res, fmt.Errorf("shell: killed: %w", context.Cause(ctx))
	}
	if (err != nil && !errors.Is(err, exec.ErrWaitDelay)) || res.Exit != 0 {
		tail := res.Stderr[max(0, len(res.Stderr)-shellErrTail):]
		if stderr == nil {
			tail = out.stderrTail(shellErrTail)
		}
		status := cmd.ProcessState.String()
		if tail = string(bytes.TrimSpace([]byte(tail))); tail == "" {
			return res, fmt.Errorf("shell: %s", status)
		}
		return res, fmt.Errorf("shell: %s: %s", status, tail)
	}
	return res, nil
}

// shellEnv is the task's environment (TaskEnv) plus extra.
func shellEnv(ctx context.Context, extra map[string]string) ([]string, error) {
	names := make([]string, 0, len(extra))
	for k, v := range extra {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, ArgsErrorf("shell: bad environment variable %q", k)
		}
		names = append(names, k)
	}
	sort.Strings(names)
	env := TaskEnv(ctx)
	for _, k := range names {
		env = append(env, k+"="+extra[k]) // exec keeps the last of duplicates
	}
	return env, nil
}

// outputs are the files a command writes its output to.
type outputs struct {
	stdout, stderr *os.File
	// errPath is the stderr file, and errStart where the command's stderr
	// starts in it (-1 when it cannot be read back).
	errPath  string
	errStart int64
}

// openOutputs opens spec's output files, creating missing directories.
func openOutputs(spec ShellSpec) (*outputs, error) {
	out := &outputs{}
	resolve := func(p string) string {
		if p == "" || filepath.IsAbs(p) || spec.Dir == "" {
			return p
		}
		return filepath.Join(spec.Dir, p)
	}
	outPath, errPath := resolve(spec.Stdout), resolve(spec.Stderr)
	var err error
	if outPath != "" {
		if out.stdout, err = openOutput(outPath, spec.Append); err != nil {
			return nil, err
		}
	}
	switch {
	case errPath == "":
	case errPath == outPath:
		out.stderr = out.stdout
	default:
		if out.stderr, err = openOutput(errPath, spec.Append); err != nil {
			out.close()
			return nil, err
		}
	}
	if out.stderr != nil {
		out.errPath = errPath
		if out.errStart, err = out.stderr.Seek(0, io.SeekEnd); err != nil {
			out.errStart = -1 // not a regular file: no tail to read back
		}
	}
	return out, nil
}

func openOutput(path string, appendTo bool) (*os.File, error) {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if appendTo {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	f, err := os.OpenFile(path, flags, 0o666)
	if errors.Is(err, os.ErrNotExist) {
		if merr := os.MkdirAll(filepath.Dir(path), 0o777); merr != nil {
			return nil, fmt.Errorf("output file %s: %w", path, merr)
		}
		f, err = os.OpenFile(path, flags, 0o666)
	}
	if err != nil {
		return nil, fmt.Errorf("output file: %w", err)
	}
	return f, nil
}

// stderrTail reads back the last n bytes the command wrote to its stderr
// file.
func (o *outputs) stderrTail(n int64) string {
	if o.stderr == nil || o.errStart < 0 {
		return ""
	}
	f, err := os.Open(o.errPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	from := max(o.errStart, fi.Size()-n)
	if from >= fi.Size() {
		return ""
	}
	buf := make([]byte, fi.Size()-from)
	k, _ := f.ReadAt(buf, from)
	return string(buf[:k])
}

func (o *outputs) close() {
	if o.stdout != nil {
		_ = o.stdout.Close()
	}
	if o.stderr != nil && o.stderr != o.stdout {
		_ = o.stderr.Close()
	}
}

func killGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// headBuffer keeps the first max bytes written to it and drops the rest.
type headBuffer struct {
	buf     []byte
	max     int
	dropped int64
}

func (b *headBuffer) Write(p []byte) (int, error) {
	room := b.max - len(b.buf)
	if room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	b.dropped += int64(len(p) - min(max(room, 0), len(p)))
	return len(p), nil
}

func (b *headBuffer) String() string {
	if b.dropped > 0 {
		return fmt.Sprintf("%s\n[rankfarm: %d more bytes dropped]\n", b.buf, b.dropped)
	}
	return string(b.buf)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	buf     []byte
	max     int
	dropped int64
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= b.max {
		b.dropped += int64(len(b.buf) + len(p) - b.max)
		b.buf = append(b.buf[:0], p[len(p)-b.max:]...)
		return n, nil
	}
	if over := len(b.buf) + len(p) - b.max; over > 0 {
		b.dropped += int64(over)
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

func (b *tailBuffer) String() string {
	if b.dropped > 0 {
		return fmt.Sprintf("[rankfarm: %d earlier bytes dropped]\n%s", b.dropped, b.buf)
	}
	return string(b.buf)
}

// ShellQuote quotes s as one word for /bin/sh: s itself when it holds only
// characters the shell takes literally, otherwise s in single quotes.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-./:=@%+,", c) >= 0) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
