package frontend

import (
	"context"
	"fmt"
	"iter"

	"github.com/rankfarm/rankfarm/internal/registry"
	"github.com/rankfarm/rankfarm/serialize"
	"github.com/vmihailenco/msgpack/v5"
)

// errKindDecode classifies a result that does not decode into the
// future's type.
const errKindDecode = serialize.ErrApp

// App1 is an app of one argument of type A with a result of type R.
type App1[A, R any] struct{ appInfo }

// App2 is an app of two arguments.
type App2[A, B, R any] struct{ appInfo }

// App3 is an app of three arguments.
type App3[A, B, C, R any] struct{ appInfo }

// appInfo is what every app client holds.
type appInfo struct {
	name    string
	memo    bool
	version string
}

func (a appInfo) newCall(nargs int) *call {
	c := newCall(nargs)
	c.memo, c.memoVersion = a.memo, a.version
	return c
}

// register adds h to registry.Default, panicking on a duplicate name the way
// flag does on a redefined flag.
func register(name string, h registry.Handler) {
	if err := registry.Default.Register(name, h); err != nil {
		panic(fmt.Sprintf("frontend: %v", err))
	}
}

// encodeResult is an app's msgpack-encoded result.
func encodeResult[R any](r R) ([]byte, error) {
	b, err := msgpack.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode the result %T: %w", r, err)
	}
	return b, nil
}

// NewApp1 declares fn as the app name and registers it in the registry that
// the executor serves. Declare apps at package level, so that the block's
// ranks (this same program, re-run) hold them too. A duplicate name panics.
func NewApp1[A, R any](name string, fn func(context.Context, A) (R, error)) *App1[A, R] {
	fn = staged1(fn) // stages the Files it takes and writes (file.go)
	register(name, func(ctx context.Context, args []byte) ([]byte, error) {
		var a A
		if err := registry.DecodeArgs(args, &a); err != nil {
			return nil, err
		}
		r, err := fn(ctx, a)
		if err != nil {
			return nil, err
		}
		return encodeResult(r)
	})
	return &App1[A, R]{appInfo{name: name}}
}

// NewApp2 is NewApp1 for an app of two arguments.
func NewApp2[A, B, R any](name string, fn func(context.Context, A, B) (R, error)) *App2[A, B, R] {
	fn = staged2(fn) // stages the Files it takes and writes (file.go)
	register(name, func(ctx context.Context, args []byte) ([]byte, error) {
		var a A
		var b B
		if err := registry.DecodeArgs(args, &a, &b); err != nil {
			return nil, err
		}
		r, err := fn(ctx, a, b)
		if err != nil {
			return nil, err
		}
		return encodeResult(r)
	})
	return &App2[A, B, R]{appInfo{name: name}}
}

// NewApp3 is NewApp1 for an app of three arguments.
func NewApp3[A, B, C, R any](name string, fn func(context.Context, A, B, C) (R, error)) *App3[A, B, C, R] {
	fn = staged3(fn) // stages the Files it takes and writes (file.go)
	register(name, func(ctx context.Context, args []byte) ([]byte, error) {
		var a A
		var b B
		var c C
		if err := registry.DecodeArgs(args, &a, &b, &c); err != nil {
			return nil, err
		}
		r, err := fn(ctx, a, b, c)
		if err != nil {
			return nil, err
		}
		return encodeResult(r)
	})
	return &App3[A, B, C, R]{appInfo{name: name}}
}

// Declare1 names an app of one argument that only the executor holds (a
// separate worker binary, or a built-in): nothing is registered here.
func Declare1[A, R any](name string) *App1[A, R] { return &App1[A, R]{appInfo{name: name}} }

// Declare2 is Declare1 for an app of two arguments.
func Declare2[A, B, R any](name string) *App2[A, B, R] { return &App2[A, B, R]{appInfo{name: name}} }

// Declare3 is Declare1 for an app of three arguments.
func Declare3[A, B, C, R any](name string) *App3[A, B, C, R] {
	return &App3[A, B, C, R]{appInfo{name: name}}
}

// Name returns the app's name.
func (a *App1[A, R]) Name() string { return a.name }

// Memoize returns a client of the same app whose calls are memoized: a call
// whose app name, version and encoded arguments match one that succeeded
// before (in this executor, or in the executor's Checkpoint file) resolves
// at once with that result and does not run. Change version when the app's
// code changes what it returns. Failures are never memoized.
func (a *App1[A, R]) Memoize(version string) *App1[A, R] {
	return &App1[A, R]{appInfo{name: a.name, memo: true, version: version}}
}

// Memoize is App1.Memoize for an app of two arguments.
func (a *App2[A, B, R]) Memoize(version string) *App2[A, B, R] {
	return &App2[A, B, R]{appInfo{name: a.name, memo: true, version: version}}
}

// Memoize is App1.Memoize for an app of three arguments.
func (a *App3[A, B, C, R]) Memoize(version string) *App3[A, B, C, R] {
	return &App3[A, B, C, R]{appInfo{name: a.name, memo: true, version: version}}
}

// Name returns the app's name.
func (a *App2[A, B, R]) Name() string { return a.name }

// Name returns the app's name.
func (a *App3[A, B, C, R]) Name() string { return a.name }

// Call submits one call of the app to ex and returns its future at once.
// The task runs when every future among its arguments (and its After
// dependencies) has resolved; if one failed, it is not run and its future
// fails with a *DependencyError.
func (a *App1[A, R]) Call(ex *Executor, x Arg[A], opts ...CallOption) *Future[R] {
	c := a.newCall(1)
	addArg(c, x)
	return &Future[R]{t: ex.submit(a.name, c, opts)}
}

// Call submits one call of the app to ex; see App1.Call.
func (a *App2[A, B, R]) Call(ex *Executor, x Arg[A], y Arg[B], opts ...CallOption) *Future[R] {
	c := a.newCall(2)
	addArg(c, x)
	addArg(c, y)
	return &Future[R]{t: ex.submit(a.name, c, opts)}
}

// Call submits one call of the app to ex; see App1.Call.
func (a *App3[A, B, C, R]) Call(ex *Executor, x Arg[A], y Arg[B], z Arg[C], opts ...CallOption) *Future[R] {
	c := a.newCall(3)
	addArg(c, x)
	addArg(c, y)
	addArg(c, z)
	return &Future[R]{t: ex.submit(a.name, c, opts)}
}

// DefaultMapWindow is how many calls Map keeps in flight.
const DefaultMapWindow = 1 << 16

// Map calls the app once per value of in and yields the results in the
// order of in, keeping at most DefaultMapWindow calls (and never more than
// the executor's MaxPending) in flight: a stream of any length runs in
// bounded memory. Each call fails or succeeds on its own; a failure is
// yielded with its error and the stream goes on. When ctx ends, Map yields
// ctx's error once and stops. Stopping the loop early abandons the calls in
// flight: they still run, and nothing waits for them.
func (a *App1[A, R]) Map(ctx context.Context, ex *Executor, in iter.Seq[A], opts ...CallOption) iter.Seq2[R, error] {
	return func(yield func(R, error) bool) {
		window := max(min(DefaultMapWindow, ex.maxPending), 1)
		ring := make([]*Future[R], window)
		head, n := 0, 0
		next := func() bool { // yields the oldest result
			f := ring[head]
			ring[head] = nil
			head = (head + 1) % window
			n--
			v, err := f.Get(ctx)
			if err != nil && ctx.Err() != nil {
				var zero R
				yield(zero, ctx.Err())
				return false
			}
			return yield(v, err)
		}
		for x := range in {
			if ctx.Err() != nil {
				var zero R
				yield(zero, ctx.Err())
				return
			}
			if n == window && !next() {
				return
			}
			ring[(head+n)%window] = a.Call(ex, V(x), opts...)
			n++
		}
		for n > 0 {
			if !next() {
				return
			}
		}
	}
}

func addArg[T any](c *call, x Arg[T]) {
	if x == nil {
		c.fail(fmt.Errorf("argument %d is nil", c.n+1))
		c.parts[c.n] = part{value: true}
		c.n++
		return
	}
	x.addTo(c)
}

// ShellResult is the value of the built-in shell app: the exit status and
// the command's output (stdout cut after 1 MiB, stderr's last 1 MiB).
type ShellResult = registry.ShellResult

// Typed clients of the executor's built-in apps.
var (
	// Noop does nothing and returns nothing: a measure of overhead.
	Noop = Declare1[struct{}, struct{}](registry.AppNoop)
	// Sleep sleeps for the given number of seconds.
	Sleep = Declare1[float64, struct{}](registry.AppSleep)
	// Shell runs a command with /bin/sh -c on a worker, in a process group
	// of its own that is killed when the task's walltime passes. A non-zero
	// exit status fails the task with an app error that carries the status
	// and the tail of stderr.
	Shell = Declare1[string, ShellResult](registry.AppShell)
)

// EchoApp returns a client of the built-in echo app for values of type T:
// the task returns its argument, byte for byte.
func EchoApp[T any]() *App1[T, T] { return Declare1[T, T](registry.AppEcho) }
