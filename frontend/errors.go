package frontend

import (
	"errors"
	"fmt"
	"strings"

	"github.com/rankfarm/rankfarm/serialize"
)

// Sentinels that a task's error matches with errors.Is, by its kind.
var (
	ErrApp        = errors.New("app error")                         // the app returned an error
	ErrPanic      = errors.New("app panicked")                      // the app panicked; TaskError.Stack has the stack
	ErrWalltime   = errors.New("walltime exceeded")                 // the app outlived its walltime
	ErrUnknownApp = errors.New("unknown app")                       // the executor has no app of that name
	ErrArgs       = errors.New("bad arguments")                     // the arguments did not fit the app's parameters
	ErrLost       = errors.New("block lost")                        // the block running the task is gone
	ErrClosed     = errors.New("frontend: the executor was closed") // the executor was closed before the task finished
	ErrFull       = errors.New("frontend: too many pending tasks")  // a Call past Options.MaxPending with Options.FailFast
)

// TaskError is the error of a task that failed: it ran and failed, or could
// not run. errors.Is matches it against ErrApp, ErrPanic, ErrWalltime,
// ErrUnknownApp, ErrArgs, ErrLost (by Kind), ErrClosed and ErrFull.
type TaskError struct {
	// ID and App name the task.
	ID  uint64
	App string
	// Kind classifies the failure.
	Kind serialize.ErrKind
	// Msg is the error's message, from the worker when the task ran.
	Msg string
	// Stack is the stack of a panic.
	Stack string
	// Rank is the world rank of the worker of the last attempt, -1 when the
	// task never reached one.
	Rank int
	// Attempts counts the runs: 1, or more when the task was retried.
	Attempts int

	closed bool
	full   bool
}

// Error implements error. It carries the remote message, not the stack.
func (e *TaskError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "task %d (%s) ", e.ID, e.App)
	switch e.Kind {
	case serialize.ErrApp:
		b.WriteString("failed")
	case serialize.ErrPanic:
		b.WriteString("panicked")
	case serialize.ErrWalltime:
		b.WriteString("exceeded its walltime")
	case serialize.ErrUnknownApp:
		b.WriteString("cannot run: unknown app")
	case serialize.ErrArgs:
		b.WriteString("got bad arguments")
	case serialize.ErrLost:
		b.WriteString("was lost")
	default:
		fmt.Fprintf(&b, "failed (%v)", e.Kind)
	}
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	switch {
	case e.Rank >= 0 && e.Attempts > 1:
		fmt.Fprintf(&b, " [rank %d, %d attempts]", e.Rank, e.Attempts)
	case e.Rank >= 0:
		fmt.Fprintf(&b, " [rank %d]", e.Rank)
	case e.Attempts > 1:
		fmt.Fprintf(&b, " [%d attempts]", e.Attempts)
	}
	return b.String()
}

// Is matches the sentinel of the error's kind, and ErrClosed.
func (e *TaskError) Is(target error) bool {
	switch target {
	case ErrApp:
		return e.Kind == serialize.ErrApp
	case ErrPanic:
		return e.Kind == serialize.ErrPanic
	case ErrWalltime:
		return e.Kind == serialize.ErrWalltime
	case ErrUnknownApp:
		return e.Kind == serialize.ErrUnknownApp
	case ErrArgs:
		return e.Kind == serialize.ErrArgs
	case ErrLost:
		return e.Kind == serialize.ErrLost
	case ErrClosed:
		return e.closed
	case ErrFull:
		return e.full
	}
	return false
}

// DependencyError is the error of a task that was not run because a task it
// depends on failed (Parsl's DependencyError). Err is the dependency's own
// error, so errors.Is and errors.As see through to the first failure.
type DependencyError struct {
	// ID and App name the task that was not run.
	ID  uint64
	App string
	// DepID and DepApp name the dependency that failed.
	DepID  uint64
	DepApp string
	// Err is the dependency's error.
	Err error
}

// Error implements error.
func (e *DependencyError) Error() string {
	return fmt.Sprintf("task %d (%s) not run: its dependency task %d (%s) failed: %v", e.ID, e.App, e.DepID, e.DepApp, e.Err)
}

// Unwrap returns the dependency's error.
func (e *DependencyError) Unwrap() error { return e.Err }

// retryable reports whether a failure of this kind may be retried.
func retryable(k serialize.ErrKind) bool {
	return k == serialize.ErrApp || k == serialize.ErrPanic || k == serialize.ErrWalltime
}
