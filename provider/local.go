package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rankfarm/rankfarm/launch"
)

// Local runs blocks on this machine: each block's launch command runs as a
// process group of its own (launch.Start), with the front end's environment
// and BlockSpec.Env on top, after BlockSpec.WorkerInit when there is one.
// The resource fields of BlockSpec (nodes, partition …) are not used.
type Local struct {
	// Stdout and Stderr receive the blocks' output. When nil, the output
	// goes to RUNDIR/<block>.out and .err, or, without a run directory, to
	// this process's own.
	Stdout, Stderr io.Writer
	// Grace is how long Cancel lets a block end after SIGTERM before it
	// sends SIGKILL; 0 means 5 s.
	Grace time.Duration

	mu    sync.Mutex
	procs map[string]*localJob
}

type localJob struct {
	proc      *launch.Process
	tail      *tailBuffer
	files     []*os.File
	cancelled bool
}

// Name implements Provider.
func (*Local) Name() string { return "local" }

// Submit implements Provider: it starts the block's launch command.
func (l *Local) Submit(ctx context.Context, spec BlockSpec) (Job, error) {
	if err := spec.validate(false); err != nil {
		return Job{}, err
	}
	argv := spec.Command
	if init := strings.TrimSpace(spec.WorkerInit); init != "" {
		argv = append([]string{"/bin/sh", "-c", init + "\nexec \"$@\"", "sh"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	for k, v := range spec.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	job := Job{Block: spec.Name}
	lj := &localJob{tail: &tailBuffer{max: 2 << 10}}
	stdout, stderr := l.Stdout, l.Stderr
	if stdout == nil || stderr == nil {
		if spec.RunDir != "" {
			base := filepath.Join(spec.RunDir, spec.Name)
			for _, f := range []struct {
				w    *io.Writer
				path *string
				name string
			}{{&stdout, &job.Stdout, base + ".out"}, {&stderr, &job.Stderr, base + ".err"}} {
				if *f.w != nil {
					continue
				}
				file, err := os.OpenFile(f.name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					lj.closeFiles()
					return Job{}, fmt.Errorf("provider: local: block %s: %w", spec.Name, err)
				}
				lj.files = append(lj.files, file)
				*f.w, *f.path = file, f.name
			}
		}
		if stdout == nil {
			stdout = os.Stdout
		}
		if stderr == nil {
			stderr = os.Stderr
		}
	}
	cmd.Stdout = stdout
	cmd.Stderr = io.MultiWriter(stderr, lj.tail)
	proc, err := launch.Start(ctx, cmd)
	if err != nil {
		lj.closeFiles()
		return Job{}, fmt.Errorf("provider: local: block %s: %w", spec.Name, err)
	}
	lj.proc = proc
	job.ID = "local-" + strconv.Itoa(proc.Pid())
	go func() {
		<-proc.Done()
		lj.closeFiles()
	}()
	l.mu.Lock()
	if l.procs == nil {
		l.procs = make(map[string]*localJob)
	}
	l.procs[job.ID] = lj
	l.mu.Unlock()
	return job, nil
}

func (lj *localJob) closeFiles() {
	for _, f := range lj.files {
		_ = f.Close()
	}
}

// Status implements Provider. A job that this Local did not start is
// Unknown.
func (l *Local) Status(_ context.Context, jobs []Job) (map[string]JobStatus, error) {
	res := make(map[string]JobStatus, len(jobs))
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, j := range jobs {
		lj, ok := l.procs[j.ID]
		if !ok {
			res[j.ID] = JobStatus{State: Unknown, Message: "no block of this process runs as " + j.ID}
			continue
		}
		select {
		case <-lj.proc.Done():
		default:
			res[j.ID] = JobStatus{State: Running, Message: "running as process group " + strconv.Itoa(lj.proc.Pid())}
			continue
		}
		err := lj.proc.Wait(context.Background())
		st := JobStatus{}
		switch {
		case lj.cancelled:
			st.State, st.Message = Cancelled, "cancelled"
			if err != nil {
				st.Message += " (" + err.Error() + ")"
			}
		case err == nil:
			st.State, st.Message = Done, "exit status 0"
		default:
			st.State, st.Message, st.Tail = Failed, err.Error(), lj.tail.String()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					st.Message = "killed by signal " + ws.Signal().String()
				}
			}
		}
		res[j.ID] = st
	}
	return res, nil
}

// Cancel implements Provider: SIGTERM to each job's process group, SIGKILL
// after Grace. It waits for the jobs to end, or for ctx.
func (l *Local) Cancel(ctx context.Context, jobs []Job) error {
	grace := l.Grace
	if grace <= 0 {
		grace = 5 * time.Second
	}
	var stops []*launch.Process
	l.mu.Lock()
	for _, j := range jobs {
		lj, ok := l.procs[j.ID]
		if !ok {
			continue
		}
		select {
		case <-lj.proc.Done():
		default:
			lj.cancelled = true
		}
		stops = append(stops, lj.proc)
	}
	l.mu.Unlock()
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, p := range stops {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = p.Stop(grace)
			}()
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("provider: local: cancel: %w", ctx.Err())
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimRight(string(t.buf), "\n")
}
