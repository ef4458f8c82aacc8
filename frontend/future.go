package frontend

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rankfarm/rankfarm/internal/registry"
	"github.com/vmihailenco/msgpack/v5"
)

// Future is the eventual result of a task. It resolves exactly once, with a
// value or an error; a *Future[T] passed as an argument makes the task wait
// for it and receive its value.
type Future[T any] struct {
	t *task

	once sync.Once
	v    T
	err  error
}

// Get waits until the task resolves, or ctx ends, and returns its value or
// its error (a *TaskError or a *DependencyError). The value is decoded once;
// later calls return the same.
func (f *Future[T]) Get(ctx context.Context) (T, error) {
	if !f.t.resolved.Load() {
		select {
		case <-f.t.ex.doneChan(f.t):
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
	f.once.Do(f.decode)
	return f.v, f.err
}

func (f *Future[T]) decode() {
	if f.t.err != nil {
		f.err = f.t.err
		return
	}
	err := registry.Validate(f.t.data)
	if err == nil {
		err = msgpack.Unmarshal(f.t.data, &f.v)
	}
	if err != nil {
		f.err = &TaskError{ID: f.t.id, App: f.t.app, Kind: errKindDecode, Msg: fmt.Sprintf("the result does not decode into %T: %v", f.v, err), Rank: -1, Attempts: int(f.t.attempt) + 1}
	}
}

// Done is closed when the task has resolved.
func (f *Future[T]) Done() <-chan struct{} { return f.t.ex.doneChan(f.t) }

// ID returns the task's id, unique in its executor.
func (f *Future[T]) ID() uint64 { return f.t.id }

func (f *Future[T]) argType(*T) {}

func (f *Future[T]) addTo(c *call) {
	if f == nil || f.t == nil {
		c.fail(fmt.Errorf("argument %d is a nil future", c.n+1))
		return
	}
	c.parts[c.n] = part{dep: f.t}
	c.n++
	c.deps++
}

func (f *Future[T]) depTask() *task {
	if f == nil {
		return nil
	}
	return f.t
}

// Arg is what can stand for an argument of type T: a plain value (V), a
// future of that type, or a fan-in of futures (All).
type Arg[T any] interface {
	argType(*T) // ties the argument to T, so that types are checked at compile time
	addTo(c *call)
}

// Dependency is something a task can wait for without taking its value
// (After); every *Future is one.
type Dependency interface {
	depTask() *task
}

type valueArg[T any] struct{ v T }

// V wraps a plain value as an argument. It is encoded with msgpack when the
// task is submitted.
func V[T any](v T) Arg[T] { return valueArg[T]{v} }

func (valueArg[T]) argType(*T) {}

func (a valueArg[T]) addTo(c *call) {
	if c.err != nil {
		return
	}
	start := c.es.buf.Len()
	if err := c.es.enc.Encode(a.v); err != nil {
		c.fail(fmt.Errorf("argument %d: encode %T: %w", c.n+1, a.v, err))
		return
	}
	c.parts[c.n] = part{value: true, start: start, end: c.es.buf.Len()}
	c.n++
}

type allArg[T any] struct{ fs []*Future[T] }

// All gathers futures into one argument: the task waits for all of them and
// receives their values as a []T, in order. If one fails, the task is not
// run and fails with a *DependencyError.
func All[T any](fs []*Future[T]) Arg[[]T] { return allArg[T]{fs} }

func (allArg[T]) argType(*[]T) {}

func (a allArg[T]) addTo(c *call) {
	if len(a.fs) == 0 {
		// Nothing to wait for: the argument is an empty array, a plain value.
		start := c.es.buf.Len()
		c.es.buf.WriteByte(0x90)
		c.parts[c.n] = part{value: true, start: start, end: c.es.buf.Len()}
		c.n++
		return
	}
	ts := make([]*task, len(a.fs))
	for i, f := range a.fs {
		if f == nil || f.t == nil {
			c.fail(fmt.Errorf("argument %d: future %d of All is nil", c.n+1, i))
			return
		}
		ts[i] = f.t
	}
	c.parts[c.n] = part{all: ts, isAll: true}
	c.n++
	c.deps += len(ts)
}

// CallOption tunes one call.
type CallOption func(*callOptions)

type callOptions struct {
	retries    int
	retriesSet bool
	walltime   time.Duration
	wallSet    bool
	after      []Dependency
}

// Retries lets the task be run up to n more times when it fails with an
// app error, a panic or a walltime overrun (never for an unknown app or bad
// arguments). It overrides Options.Retries.
func Retries(n int) CallOption {
	return func(o *callOptions) { o.retries, o.retriesSet = max(n, 0), true }
}

// Walltime bounds each run of the task; 0 means none. It overrides
// Options.Walltime.
func Walltime(d time.Duration) CallOption {
	return func(o *callOptions) { o.walltime, o.wallSet = max(d, 0), true }
}

// After makes the task wait for deps, without taking their values; if one
// fails, the task is not run and fails with a *DependencyError.
func After(deps ...Dependency) CallOption {
	return func(o *callOptions) { o.after = append(o.after, deps...) }
}

// Attempt tells an app which attempt it is running: 0 on the first, then 1,
// 2, … on retries. Outside an app it returns 0.
func Attempt(ctx context.Context) int {
	info, _ := registry.Info(ctx)
	return info.Attempt
}

// part is one argument of a call: an encoded value (a range of the call's
// buffer, then of the task's own copy), one future, or a fan-in.
type part struct {
	value      bool
	start, end int
	raw        []byte
	dep        *task
	all        []*task
	isAll      bool
}

// maxArgs is the most arguments an app takes.
const maxArgs = 3

// call gathers one call's arguments before it is submitted.
type call struct {
	// memo and memoVersion mark a call of a memoized app.
	memo        bool
	memoVersion string

	es    *encState
	parts [maxArgs]part
	n     int
	deps  int
	err   error
}

func (c *call) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// encState is a reusable msgpack encoder over a buffer.
type encState struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encStates = sync.Pool{New: func() any {
	es := &encState{}
	es.enc = msgpack.NewEncoder(&es.buf)
	return es
}}

func newCall(nargs int) *call {
	c := &call{es: encStates.Get().(*encState)}
	c.es.buf.Reset()
	c.es.buf.WriteByte(0x90 | byte(nargs)) // fixarray header: nargs ≤ 3
	return c
}

func (c *call) release() {
	if c.es.buf.Cap() <= 64<<10 {
		encStates.Put(c.es)
	}
	c.es = nil
}

// appendArrayHeader appends a msgpack array header for n elements.
func appendArrayHeader(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= 0xffff:
		return append(b, 0xdc, byte(n>>8), byte(n))
	default:
		return append(b, 0xdd, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}
