package launch

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a started launcher command (an mpirun job) in a process group
// of its own.
type Process struct {
	cmd  *exec.Cmd
	pgid int
	done chan struct{}
	err  error // set before done closes

	mu      sync.Mutex // serialises Stop
	stopped bool       // Stop signalled the group before the leader exited
}

// Start starts cmd as the leader of a new process group; on Linux it also
// asks the kernel to send it SIGTERM should this process die first. ctx
// only guards the start: the process lives until it exits or Stop is called.
func Start(ctx context.Context, cmd *exec.Cmd) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	setDeathSignal(cmd.SysProcAttr)
	if cmd.WaitDelay == 0 {
		// Ranks that outlive mpirun must not hold Wait up forever on the
		// output pipes.
		cmd.WaitDelay = 5 * time.Second
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("launch: start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, pgid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id of the launcher (the group's leader).
func (p *Process) Pid() int { return p.pgid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns how it did (nil for exit
// status 0), or ctx's error first.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop ends the process group: SIGTERM to the whole group, then, if the
// leader has not exited after grace, SIGKILL to the group. It waits for the
// leader to exit. It returns how the leader exited if it had already exited
// on its own (nil for status 0); an exit that Stop's signals caused is not
// an error. Stop is safe to call more than once.
func (p *Process) Stop(grace time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
	default:
		p.stopped = true
		_ = p.signalGroup(syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-p.done:
			t.Stop()
		case <-t.C:
			_ = p.signalGroup(syscall.SIGKILL)
			<-p.done
		}
	}
	// Stragglers of the group (ranks that ignored SIGTERM) go too.
	_ = p.signalGroup(syscall.SIGKILL)
	if p.stopped {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
			(ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) {
			return nil
		}
	}
	return p.err
}

func (p *Process) signalGroup(sig syscall.Signal) error {
	err := syscall.Kill(-p.pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}
