package taskfarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
)

// EnvTask is the variable that tells a command its task number ({#}).
const EnvTask = "RANKFARM_TASK"

// MaxFailures bounds the failures a Summary lists.
const MaxFailures = 20

// Config tunes Run.
type Config struct {
	// Retries lets a failed command run up to that many more times.
	Retries int
	// Walltime bounds each run of a command; 0 means none. A command past
	// it is killed with its whole process group.
	Walltime time.Duration
	// KeepGoing runs every task whatever fails. Without it the first
	// failure (retries spent) stops the farm: no new task starts, those
	// already handed out finish.
	KeepGoing bool
	// OutputDir, if set, receives each task's stdout and stderr as files
	// SEQ.out and SEQ.err, written by the worker. Otherwise they are
	// captured (bounded) and copied to Stdout and Stderr as each task
	// finishes, one task's output in one piece.
	OutputDir string
	// Dir is the commands' working directory; "" means the worker's.
	Dir string
	// Window bounds the tasks submitted and not finished; 0 means four per
	// worker plus 16. It is also about how many tasks can still start once
	// a failure has stopped the farm.
	Window int
	// Stdout and Stderr receive the tasks' captured output; Stderr also
	// gets a line for each failure. nil discards.
	Stdout, Stderr io.Writer
	// Progress is told how the farm goes; nil means no progress report.
	Progress Progress
}

// Failure is a task that failed, and how.
type Failure struct {
	Task Task
	Err  error
}

// Summary tells how a farm went.
type Summary struct {
	// Total counts the tasks of the input; Skipped those the journal says
	// finished in an earlier run.
	Total, Skipped int
	// Succeeded and Failed count the tasks run now; NotRun those left
	// unstarted because the farm stopped (a failure without KeepGoing, or
	// the context's end).
	Succeeded, Failed, NotRun int
	// Failures lists the first MaxFailures failures, in the order they
	// happened.
	Failures []Failure
	// Elapsed is the farm's run time.
	Elapsed time.Duration
	// Interrupted is set when the context ended before the farm did.
	Interrupted bool
}

// OK reports whether every task of the input has succeeded, now or in an
// earlier run.
func (s Summary) OK() bool {
	return s.Failed == 0 && s.NotRun == 0 && !s.Interrupted && s.Skipped+s.Succeeded == s.Total
}

// Write prints the summary for people: one line of counts, then the
// failures listed.
func (s Summary) Write(w io.Writer) {
	ran := s.Succeeded + s.Failed
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(ran) / s.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "rankfarm run: %d tasks: %d succeeded", s.Total, s.Skipped+s.Succeeded)
	if s.Skipped > 0 {
		fmt.Fprintf(w, " (%d in an earlier run)", s.Skipped)
	}
	fmt.Fprintf(w, ", %d failed, %d not run; %d ran in %v (%.1f/s)\n", s.Failed, s.NotRun, ran, s.Elapsed.Round(time.Millisecond), rate)
	for _, f := range s.Failures {
		fmt.Fprintf(w, "  failed: %s\n", describe(f.Task, f.Err))
	}
	if s.Failed > len(s.Failures) {
		fmt.Fprintf(w, "  … and %d more failures\n", s.Failed-len(s.Failures))
	}
	switch {
	case s.Interrupted:
		fmt.Fprintln(w, "rankfarm run: interrupted; run the same command again to run the rest")
	case s.NotRun > 0:
		fmt.Fprintln(w, "rankfarm run: stopped after a failure (--keep-going runs every task); run the same command again to run the rest")
	}
}

// describe names a task and its error in one line.
func describe(t Task, err error) string {
	msg := err.Error()
	var te *frontend.TaskError
	if errors.As(err, &te) {
		msg = te.Msg
		if te.Attempts > 1 {
			msg += fmt.Sprintf(" [%d attempts]", te.Attempts)
		}
	}
	cmd := t.Cmd
	if len(cmd) > 60 {
		cmd = cmd[:57] + "..."
	}
	return fmt.Sprintf("task %d (line %d: %s): %s", t.Seq, t.Line, cmd, strings.ReplaceAll(msg, "\n", " | "))
}

// exitStatus digs the exit status out of a shell app's failure, or -1.
func exitStatus(err error) int {
	msg := err.Error()
	i := strings.Index(msg, "exit status ")
	if i < 0 {
		return -1
	}
	rest := msg[i+len("exit status "):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(rest[:j])
	if err != nil {
		return -1
	}
	return n
}

// outcome is one task's end.
type outcome struct {
	task Task
	res  frontend.ShellResult
	err  error
}

// Run runs tasks on ex with the built-in shell app and waits for them.
// Tasks that state (a journal's) says succeeded are skipped; every task
// that finishes now is added to j (nil: no journal). Run returns when every
// task it started has finished, or when ctx ends; its error is for the farm
// itself, not the tasks, which the Summary counts.
func Run(ctx context.Context, ex *frontend.Executor, tasks []Task, state JournalState, j *Journal, cfg Config) (Summary, error) {
	stdout, stderr := cfg.Stdout, cfg.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	workers := 0
	for _, b := range ex.Blocks() {
		workers += b.Workers
	}
	window := cfg.Window
	if window <= 0 {
		window = 4*max(workers, 1) + 16
	}
	sum := Summary{Total: len(tasks)}
	todo := make([]Task, 0, len(tasks))
	for _, t := range tasks {
		if state.OK[Key{t.Hash, t.Occ}] {
			sum.Skipped++
			continue
		}
		todo = append(todo, t)
	}
	var (
		mu     sync.Mutex
		counts = Counts{Total: len(todo), Skipped: sum.Skipped}
	)
	snapshot := func() Counts {
		inflight := ex.Stats().InFlight
		mu.Lock()
		defer mu.Unlock()
		c := counts
		c.Running = int(min(inflight, int64(max(workers, 1)), int64(c.Total-c.Done-c.Failed)))
		return c
	}
	prog := cfg.Progress
	if prog == nil {
		prog = noProgress{}
	}
	start := time.Now()
	prog.Start(snapshot)

	opts := []frontend.CallOption{frontend.Retries(cfg.Retries), frontend.Walltime(cfg.Walltime)}
	stop := make(chan struct{}) // closed on the first failure without KeepGoing
	var stopOnce sync.Once
	slots := make(chan struct{}, window)
	results := make(chan outcome, window)
	var submitDone sync.WaitGroup
	var waiters sync.WaitGroup
	submitDone.Go(func() {
		for _, t := range todo {
			select {
			case slots <- struct{}{}:
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
			select { // a stop while waiting for a slot wins
			case <-stop:
				return
			default:
			}
			spec := frontend.ShellSpec{Cmd: t.Cmd, Dir: cfg.Dir, Env: map[string]string{EnvTask: strconv.Itoa(t.Seq)}}
			if cfg.OutputDir != "" {
				base := filepath.Join(cfg.OutputDir, strconv.Itoa(t.Seq))
				spec.Stdout, spec.Stderr = base+".out", base+".err"
			}
			f := frontend.ShellCmd.Call(ex, frontend.V(spec), opts...)
			waiters.Go(func() {
				res, err := f.Get(ctx)
				results <- outcome{task: t, res: res, err: err}
			})
		}
	})
	go func() {
		submitDone.Wait()
		waiters.Wait()
		close(results)
	}()

	for o := range results {
		<-slots
		if ctx.Err() != nil && errors.Is(o.err, ctx.Err()) {
			continue // not finished: it runs again next time
		}
		if errors.Is(o.err, frontend.ErrClosed) {
			continue // the executor went away under it: likewise
		}
		rec := Record{Key: Key{o.task.Hash, o.task.Occ}, Seq: o.task.Seq, OK: o.err == nil}
		if o.err == nil {
			sum.Succeeded++
			mu.Lock()
			counts.Done++
			mu.Unlock()
			if o.res.Stdout != "" {
				_, _ = io.WriteString(stdout, o.res.Stdout)
			}
			if o.res.Stderr != "" {
				_, _ = io.WriteString(stderr, o.res.Stderr)
			}
		} else {
			rec.Exit = exitStatus(o.err)
			sum.Failed++
			mu.Lock()
			counts.Failed++
			mu.Unlock()
			if len(sum.Failures) < MaxFailures {
				sum.Failures = append(sum.Failures, Failure{Task: o.task, Err: o.err})
			}
			fmt.Fprintf(stderr, "rankfarm run: failed: %s\n", describe(o.task, o.err))
			if !cfg.KeepGoing {
				stopOnce.Do(func() {
					fmt.Fprintln(stderr, "rankfarm run: stopping: no new task starts after a failure, those handed out finish (--keep-going runs every task)")
					close(stop)
				})
			}
		}
		if j != nil {
			j.Add(rec)
		}
	}
	submitDone.Wait()
	sum.Elapsed = time.Since(start)
	sum.NotRun = len(todo) - sum.Succeeded - sum.Failed
	sum.Interrupted = ctx.Err() != nil
	prog.Stop()
	return sum, nil
}
