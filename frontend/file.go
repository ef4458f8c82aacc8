package frontend

import (
	"context"
	"reflect"

	"github.com/rankfarm/rankfarm/internal/registry"
)

// File names a file that an app reads or writes (Parsl's File): a local or
// shared-filesystem path, an http(s) URL (an input only), or an rsync daemon
// URL, rsync://host[:port]/module/path. An app takes Files as arguments, or
// inside its arguments (slices, maps, struct fields), and reads or writes
// f.Path() on the worker:
//
//   - a path is used in place;
//   - an http(s) or rsync input is downloaded into a scratch directory of
//     the task before the app runs; a transfer that fails or is cut short
//     fails the task with an error naming the URL, and the app does not run;
//   - an rsync output (OutputFile) is written by the app into the scratch
//     directory and pushed to its URL once the app has succeeded.
//
// The scratch directory ($RANKFARM_SCRATCH or the system's temporary
// directory, per task) is removed when the task ends. A File an app returns
// is an input of the tasks that take it (see DataFuture).
type File = registry.File

// NewFile names an input file: a path, an http(s) URL or an rsync URL.
func NewFile(url string) File { return File{URL: url} }

// OutputFile names a file that the app writes: a path (its directory is
// made before the app runs) or an rsync URL (pushed there after the app
// succeeds). An output the app does not write fails the task.
func OutputFile(url string) File { return File{URL: url, Out: true} }

// StagingError is how a worker reports a file it could not stage; its text
// (in the task's TaskError.Msg) names the URL.
type StagingError = registry.StagingError

// EnvScratch names the directory under which each worker makes its tasks'
// scratch directories; unset, the system's temporary directory.
const EnvScratch = registry.EnvScratch

// appDataFuture is the app name of a DataFuture's task: the front end
// resolves it itself once its dependency has succeeded; it never reaches a
// block.
const appDataFuture = "rankfarm.datafuture"

// DataFuture returns a future of f that resolves, with f as an input, once
// writer (the task that writes f, usually given f as an OutputFile) has
// succeeded, and fails with a *DependencyError if writer fails (Parsl's
// DataFuture). Pass it to the apps that read f: they wait for writer. A
// nil writer makes a future that resolves at once.
func DataFuture(ex *Executor, f File, writer Dependency) *Future[File] {
	registry.AsInputs(&f)
	c := newCall(1)
	addArg(c, V(f))
	var opts []CallOption
	if writer != nil {
		opts = append(opts, After(writer))
	}
	return &Future[File]{t: ex.submit(appDataFuture, c, opts)}
}

// dataFutureValue is the value of a DataFuture's task: its one argument,
// the File. args is the task's msgpack argument array of one element.
func dataFutureValue(args []byte) []byte { return args[1:] }

// Staging wrappers: NewApp1…3 pass the app's function through one of them.
// An app whose argument and result types hold no File runs as it is.
// Otherwise the worker stages its Files in before it runs and its outputs
// out after it succeeds (registry.RunStaged), and the Files it returns go
// back as inputs.

func staged1[A, R any](fn func(context.Context, A) (R, error)) func(context.Context, A) (R, error) {
	if !hasFiles[A]() && !hasFiles[R]() {
		return fn
	}
	return func(ctx context.Context, a A) (r R, err error) {
		err = registry.RunStaged(ctx, func(ctx context.Context) error {
			r, err = fn(ctx, a)
			return err
		}, &a)
		registry.AsInputs(&r)
		return r, err
	}
}

func staged2[A, B, R any](fn func(context.Context, A, B) (R, error)) func(context.Context, A, B) (R, error) {
	if !hasFiles[A]() && !hasFiles[B]() && !hasFiles[R]() {
		return fn
	}
	return func(ctx context.Context, a A, b B) (r R, err error) {
		err = registry.RunStaged(ctx, func(ctx context.Context) error {
			r, err = fn(ctx, a, b)
			return err
		}, &a, &b)
		registry.AsInputs(&r)
		return r, err
	}
}

func staged3[A, B, C, R any](fn func(context.Context, A, B, C) (R, error)) func(context.Context, A, B, C) (R, error) {
	if !hasFiles[A]() && !hasFiles[B]() && !hasFiles[C]() && !hasFiles[R]() {
		return fn
	}
	return func(ctx context.Context, a A, b B, c C) (r R, err error) {
		err = registry.RunStaged(ctx, func(ctx context.Context) error {
			r, err = fn(ctx, a, b, c)
			return err
		}, &a, &b, &c)
		registry.AsInputs(&r)
		return r, err
	}
}

func hasFiles[T any]() bool { return registry.HasFiles(reflect.TypeFor[T]()) }
