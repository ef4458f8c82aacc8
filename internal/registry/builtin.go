package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Names of the built-in apps, registered in Default.
const (
	AppNoop  = "noop"  // any arguments; returns nil
	AppEcho  = "echo"  // one argument; returns it unchanged
	AppSleep = "sleep" // one float64, seconds; returns nil
	AppShell = "shell" // one string, a /bin/sh command; returns a ShellResult
)

// MaxShellOutput bounds what the shell app keeps of a command's stdout (the
// first bytes) and stderr (the last bytes).
const MaxShellOutput = 1 << 20

// shellErrTail is how much of stderr a failed shell command's error carries.
const shellErrTail = 2 << 10

// shellWaitDelay is how long the shell app waits, after the command's end or
// its kill, for stray processes holding its output pipes.
const shellWaitDelay = 2 * time.Second

// ShellResult is the value of the shell app. It travels as a msgpack array.
type ShellResult struct {
	//lint:ignore U1000 read by msgpack: it makes the value an array
	_msgpack struct{} `msgpack:",as_array"`
	// Exit is the command's exit status.
	Exit int
	// Stdout is the command's standard output, cut to MaxShellOutput bytes.
	Stdout string
	// Stderr is the command's standard error; only its last MaxShellOutput
	// bytes are kept.
	Stderr string
}

func init() {
	for name, h := range map[string]Handler{
		AppNoop:  noop,
		AppEcho:  echo,
		AppSleep: sleep,
		AppShell: shell,
	} {
		if err := Default.Register(name, h); err != nil {
			panic(err)
		}
	}
}

func noop(context.Context, []byte) ([]byte, error) { return msgpackNil, nil }

// echo returns its one argument's raw bytes, without decoding them.
func echo(_ context.Context, args []byte) ([]byte, error) {
	parts, err := SplitArgs(args, 1)
	if err != nil {
		return nil, err
	}
	return parts[0], nil
}

// maxSleep bounds the sleep app's argument (a year).
const maxSleep = 365 * 24 * time.Hour

func sleep(ctx context.Context, args []byte) ([]byte, error) {
	var secs float64
	if err := DecodeArgs(args, &secs); err != nil {
		return nil, err
	}
	if math.IsNaN(secs) || secs < 0 || secs > maxSleep.Seconds() {
		return nil, ArgsErrorf("sleep: %v is not a number of seconds from 0 to %v", secs, maxSleep.Seconds())
	}
	t := time.NewTimer(time.Duration(secs * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return msgpackNil, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("sleep interrupted: %w", context.Cause(ctx))
	}
}

// shell runs one command with /bin/sh -c in its own process group; the
// whole group is killed when ctx ends.
func shell(ctx context.Context, args []byte) ([]byte, error) {
	var command string
	if err := DecodeArgs(args, &command); err != nil {
		return nil, err
	}
	res, err := RunShell(ctx, command)
	if err != nil {
		return nil, err
	}
	return msgpack.Marshal(&res)
}

// RunShell runs command with /bin/sh -c in a process group of its own and
// returns its exit status and (bounded) output. When ctx ends the whole
// group is killed with SIGKILL. A non-zero exit is an error that carries
// the status and the tail of stderr; the ShellResult is filled in as well.
func RunShell(ctx context.Context, command string) (ShellResult, error) {
	var res ShellResult
	stdout := &headBuffer{max: MaxShellOutput}
	stderr := &tailBuffer{max: MaxShellOutput}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = shellWaitDelay
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		// The command is done but left processes holding its pipes.
		_ = killGroup(cmd)
	}
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	if cmd.ProcessState == nil { // it never started
		return res, fmt.Errorf("shell: %w", err)
	}
	res.Exit = cmd.ProcessState.ExitCode()
	if ctx.Err() != nil {
		return res, fmt.Errorf("shell: killed: %w", context.Cause(ctx))
	}
	if (err != nil && !errors.Is(err, exec.ErrWaitDelay)) || res.Exit != 0 {
		tail := res.Stderr[max(0, len(res.Stderr)-shellErrTail):]
		status := cmd.ProcessState.String()
		if tail == "" {
			return res, fmt.Errorf("shell: %s", status)
		}
		return res, fmt.Errorf("shell: %s: %s", status, bytes.TrimSpace([]byte(tail)))
	}
	return res, nil
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
