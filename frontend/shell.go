package frontend

import (
	"context"

	"github.com/rankfarm/rankfarm/internal/registry"
)

// ShellSpec describes one command for a shell app: the command line (run
// with /bin/sh -c), files for its stdout and stderr ("" captures them in
// the ShellResult, bounded), extra environment variables and the working
// directory. A relative output path is relative to Dir.
type ShellSpec = registry.ShellSpec

// ShellCmd is a client of the built-in shell app that takes a whole
// ShellSpec: output files, environment and working directory per task. Like
// Shell, it runs in a process group of its own that is killed when the
// task's walltime passes, and a non-zero exit fails the task with an app
// error that carries the status and the tail of stderr. Any worker binary
// serves it, the stock rankfarm included.
var ShellCmd = Declare1[ShellSpec, ShellResult](registry.AppShell)

// ShellQuote quotes s as one word for /bin/sh, for building command lines
// from arguments: s itself when the shell takes it literally, otherwise s
// in single quotes.
func ShellQuote(s string) string { return registry.ShellQuote(s) }

// NewShellApp1 declares a shell app (Parsl's bash_app): fn builds the
// command from the call's argument, on the worker, and the worker runs it
// the way ShellCmd does; the future resolves with its ShellResult, or fails
// with the exit status and the tail of stderr. Futures may stand for the
// argument as for any app. Declare shell apps at package level, like
// NewApp1; a duplicate name panics.
func NewShellApp1[A any](name string, fn func(context.Context, A) (ShellSpec, error)) *App1[A, ShellResult] {
	return NewApp1(name, func(ctx context.Context, a A) (ShellResult, error) {
		spec, err := fn(ctx, a)
		if err != nil {
			return ShellResult{}, err
		}
		return registry.RunShellSpec(ctx, spec)
	})
}

// NewShellApp2 is NewShellApp1 for an app of two arguments.
func NewShellApp2[A, B any](name string, fn func(context.Context, A, B) (ShellSpec, error)) *App2[A, B, ShellResult] {
	return NewApp2(name, func(ctx context.Context, a A, b B) (ShellResult, error) {
		spec, err := fn(ctx, a, b)
		if err != nil {
			return ShellResult{}, err
		}
		return registry.RunShellSpec(ctx, spec)
	})
}

// NewShellApp3 is NewShellApp1 for an app of three arguments.
func NewShellApp3[A, B, C any](name string, fn func(context.Context, A, B, C) (ShellSpec, error)) *App3[A, B, C, ShellResult] {
	return NewApp3(name, func(ctx context.Context, a A, b B, c C) (ShellResult, error) {
		spec, err := fn(ctx, a, b, c)
		if err != nil {
			return ShellResult{}, err
		}
		return registry.RunShellSpec(ctx, spec)
	})
}
