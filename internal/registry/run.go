package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
	"github.com/vmihailenco/msgpack/v5"
)

// ErrArgs is what an ArgsError matches with errors.Is: the task's arguments
// did not fit the app's parameters.
var ErrArgs = errors.New("bad arguments")

// ArgsError is a handler's way to say that the task's arguments did not
// decode into the app's parameter types. Run reports it as
// serialize.ErrArgs, which the front end never retries.
type ArgsError struct {
	// Err says what did not fit.
	Err error
}

// Error implements error.
func (e *ArgsError) Error() string { return "bad arguments: " + e.Err.Error() }

// Unwrap returns the underlying decoding error.
func (e *ArgsError) Unwrap() error { return e.Err }

// Is reports whether target is ErrArgs.
func (e *ArgsError) Is(target error) bool { return target == ErrArgs }

// ArgsErrorf returns an *ArgsError with a formatted message; %w works.
func ArgsErrorf(format string, a ...any) error {
	return &ArgsError{Err: fmt.Errorf(format, a...)}
}

// errWalltime is the cause of a task context whose walltime ran out.
var errWalltime = errors.New("walltime exceeded")

// msgpackNil is the value of an app that returned nothing.
var msgpackNil = []byte{0xc0}

// maxListed bounds how many registered names an unknown-app message lists.
const maxListed = 12

// Run runs task t with the app registered under t.App and returns its
// result; it never panics and never fails to return a result. rank is the
// world rank of the calling worker, reported in the result and in the
// TaskInfo that the handler's context carries.
//
// An unknown app gives serialize.ErrUnknownApp, a handler error
// serialize.ErrApp (serialize.ErrArgs for an *ArgsError), a panic
// serialize.ErrPanic with the panic's value and stack.
//
// When t.Walltime is positive the handler's context has that deadline, and
// Run returns serialize.ErrWalltime as soon as it passes, even if the
// handler is still running. Go cannot kill a goroutine: a handler that
// ignores its context goes on in the background, abandoned, and its result
// is dropped. Only tasks with a walltime pay for the extra goroutine; the
// others run inline on the caller's goroutine.
func (r *Registry) Run(ctx context.Context, t serialize.Task, rank int) serialize.Result {
	res := serialize.Result{ID: t.ID, Rank: int32(rank), Start: time.Now().UnixNano()}
	h, ok := r.Lookup(t.App)
	if !ok {
		res.Err = serialize.ErrUnknownApp
		res.Msg = r.unknownMessage(t.App)
		res.End = time.Now().UnixNano()
		return res
	}
	ctx = WithInfo(ctx, TaskInfo{ID: t.ID, App: t.App, Attempt: int(t.Attempt), Rank: rank})
	if t.Walltime <= 0 {
		call(ctx, h, t.Args, &res)
	} else {
		runWithWalltime(ctx, h, t, &res)
	}
	if len(res.Value) > MaxValue {
		res.Err, res.Msg, res.Stack = serialize.ErrApp, fmt.Sprintf("the result is %d bytes, more than the %d a task may return: write big outputs to files and return their names", len(res.Value), MaxValue), ""
		res.Value = nil
	}
	res.Msg, res.Stack = clip(res.Msg, maxText), clip(res.Stack, maxText)
	res.End = time.Now().UnixNano()
	return res
}

// MaxValue bounds a task's encoded result, and the front end bounds a
// task's encoded arguments alike: a quarter of the wire's frame limit, so
// a value always fits in a message with room to spare.
const MaxValue = serialize.DefaultMaxFrame / 4

// maxText bounds a result's error message and stack.
const maxText = 64 << 10

// clip cuts s to at most n bytes, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("… [%d bytes cut]", len(s)-n)
}

// runWithWalltime runs h on its own goroutine and stops waiting for it
// when the walltime passes.
func runWithWalltime(ctx context.Context, h Handler, t serialize.Task, res *serialize.Result) {
	wall := time.Duration(t.Walltime)
	ctx, cancel := context.WithTimeoutCause(ctx, wall, errWalltime)
	defer cancel()
	done := make(chan serialize.Result, 1) // buffered: an abandoned handler never blocks
	go func() {
		var out serialize.Result
		call(ctx, h, t.Args, &out)
		done <- out
	}()
	select {
	case out := <-done:
		res.Err, res.Value, res.Msg, res.Stack = out.Err, out.Value, out.Msg, out.Stack
		// A handler that gave up because its deadline passed failed on
		// walltime, whatever error it chose to return.
		if res.Err != serialize.ErrNone && context.Cause(ctx) == errWalltime {
			setWalltime(res, wall)
		}
	case <-ctx.Done():
		if context.Cause(ctx) == errWalltime {
			setWalltime(res, wall)
			return
		}
		res.Err = serialize.ErrApp
		res.Msg = fmt.Sprintf("task abandoned: %v", context.Cause(ctx))
	}
}

func setWalltime(res *serialize.Result, wall time.Duration) {
	res.Err = serialize.ErrWalltime
	res.Value, res.Stack = nil, ""
	res.Msg = fmt.Sprintf("walltime of %v exceeded", wall)
}

// call runs h and fills res with its value, error or panic.
func call(ctx context.Context, h Handler, args []byte, res *serialize.Result) {
	defer func() {
		if p := recover(); p != nil {
			res.Err = serialize.ErrPanic
			res.Value = nil
			res.Msg = fmt.Sprint(p)
			res.Stack = string(debug.Stack())
		}
	}()
	v, err := h(ctx, args)
	if err != nil {
		res.Err = serialize.ErrApp
		var ae *ArgsError
		if errors.As(err, &ae) {
			res.Err = serialize.ErrArgs
		}
		res.Msg = err.Error()
		return
	}
	if len(v) == 0 {
		v = msgpackNil
	}
	res.Value = v
}

// unknownMessage names the missing app and (briefly) what is registered.
func (r *Registry) unknownMessage(app string) string {
	names := r.Names()
	var b strings.Builder
	fmt.Fprintf(&b, "no app named %q is registered in this executor", app)
	if len(names) == 0 {
		b.WriteString(" (none are)")
		return b.String()
	}
	shown := names[:min(len(names), maxListed)]
	fmt.Fprintf(&b, "; registered: %s", strings.Join(shown, ", "))
	if len(names) > len(shown) {
		fmt.Fprintf(&b, " and %d more", len(names)-len(shown))
	}
	return b.String()
}

// argDecoder is a reusable msgpack decoder over a byte slice.
type argDecoder struct {
	rd  bytes.Reader
	dec *msgpack.Decoder
}

var argDecoders = sync.Pool{New: func() any {
	d := &argDecoder{}
	d.dec = msgpack.NewDecoder(&d.rd)
	return d
}}

func getArgDecoder(b []byte) *argDecoder {
	d := argDecoders.Get().(*argDecoder)
	d.rd.Reset(b)
	d.dec.Reset(&d.rd)
	return d
}

func putArgDecoder(d *argDecoder) {
	d.rd.Reset(nil)
	argDecoders.Put(d)
}

// DecodeArgs decodes args, a msgpack array of exactly len(dst) elements,
// into the pointers in dst, in order. Any mismatch — not an array, another
// length, an element of the wrong type, trailing bytes — is an *ArgsError.
// The array is checked with Validate before anything is decoded.
func DecodeArgs(args []byte, dst ...any) error {
	if _, err := SplitArgs(args, len(dst)); err != nil {
		return err
	}
	d := getArgDecoder(args)
	defer putArgDecoder(d)
	if _, err := d.dec.DecodeArrayLen(); err != nil {
		return &ArgsError{Err: fmt.Errorf("not a msgpack array: %w", err)}
	}
	for i, p := range dst {
		if err := d.dec.Decode(p); err != nil {
			return &ArgsError{Err: fmt.Errorf("argument %d: %w", i+1, err)}
		}
	}
	return nil
}

// SplitArgs returns the raw msgpack elements of args, which must be an
// array of exactly n well-formed elements (see Validate). The elements alias
// args; nothing is decoded beyond what it takes to find their bounds.
func SplitArgs(args []byte, n int) ([][]byte, error) {
	got, off, err := arrayHeader(args)
	if err != nil {
		return nil, &ArgsError{Err: err}
	}
	if got != n {
		return nil, ArgsErrorf("got %d arguments, the app takes %d", got, n)
	}
	if got > len(args)-off {
		return nil, ArgsErrorf("array of %d elements in %d bytes", got, len(args)-off)
	}
	out := make([][]byte, n)
	for i := range out {
		end, err := skipValue(args, off, 1)
		if err != nil {
			return nil, &ArgsError{Err: fmt.Errorf("argument %d: %w", i+1, err)}
		}
		out[i] = args[off:end:end]
		off = end
	}
	if off != len(args) {
		return nil, ArgsErrorf("%d trailing bytes after the arguments", len(args)-off)
	}
	return out, nil
}

// MaxDepth bounds how deeply msgpack arrays and maps may nest in a value
// that Validate accepts.
const MaxDepth = 256

// Errors of Validate.
var (
	errTruncated = errors.New("truncated msgpack")
	errTooDeep   = fmt.Errorf("msgpack nested deeper than %d", MaxDepth)
	errBadCode   = errors.New("invalid msgpack code 0xc1")
)

// Validate checks that b holds exactly one well-formed msgpack value, nested
// at most MaxDepth deep, in which no array, map, string or binary claims more
// bytes than are left. It allocates nothing. A value that passes cannot make
// the msgpack decoder allocate out of proportion to its size (msgpack v5.4.1
// sizes a typed slice by the claimed count).
func Validate(b []byte) error {
	end, err := skipValue(b, 0, 0)
	if err != nil {
		return err
	}
	if end != len(b) {
		return fmt.Errorf("%d trailing bytes after the msgpack value", len(b)-end)
	}
	return nil
}

// arrayHeader reads an array header at b[0]: the count and the offset of the
// first element.
func arrayHeader(b []byte) (n, off int, err error) {
	if len(b) == 0 {
		return 0, 0, fmt.Errorf("not a msgpack array: %w", errTruncated)
	}
	c := b[0]
	switch {
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f), 1, nil
	case c == 0xdc || c == 0xdd:
		size := 2
		if c == 0xdd {
			size = 4
		}
		v, ok := uintAt(b, 1, size)
		if !ok {
			return 0, 0, fmt.Errorf("array header: %w", errTruncated)
		}
		return int(v), 1 + size, nil
	}
	return 0, 0, fmt.Errorf("not a msgpack array (code 0x%02x)", c)
}

// uintAt reads a big-endian unsigned integer of size bytes at b[i].
func uintAt(b []byte, i, size int) (uint64, bool) {
	if i+size > len(b) {
		return 0, false
	}
	var v uint64
	for _, x := range b[i : i+size] {
		v = v<<8 | uint64(x)
	}
	return v, true
}

// skipValue returns the offset just past the msgpack value at b[i].
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, errTruncated
	}
	c := b[i]
	i++
	var (
		n     uint64 // elements to skip (containers) or bytes (the rest)
		elems bool
		pairs bool
	)
	switch {
	case c <= 0x7f || c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		return i, nil
	case c >= 0x80 && c <= 0x8f:
		n, elems, pairs = uint64(c&0x0f), true, true
	case c >= 0x90 && c <= 0x9f:
		n, elems = uint64(c&0x0f), true
	case c >= 0xa0 && c <= 0xbf:
		n = uint64(c & 0x1f)
	case c == 0xc1:
		return 0, errBadCode
	default:
		lenSize, extra := 0, 0
		switch c {
		case 0xc4, 0xd9:
			lenSize = 1
		case 0xc5, 0xda:
			lenSize = 2
		case 0xc6, 0xdb:
			lenSize = 4
		case 0xc7:
			lenSize, extra = 1, 1
		case 0xc8:
			lenSize, extra = 2, 1
		case 0xc9:
			lenSize, extra = 4, 1
		case 0xca:
			n = 4
		case 0xcb:
			n = 8
		case 0xcc, 0xd0:
			n = 1
		case 0xcd, 0xd1:
			n = 2
		case 0xce, 0xd2:
			n = 4
		case 0xcf, 0xd3:
			n = 8
		case 0xd4:
			n = 2
		case 0xd5:
			n = 3
		case 0xd6:
			n = 5
		case 0xd7:
			n = 9
		case 0xd8:
			n = 17
		case 0xdc:
			lenSize, elems = 2, true
		case 0xdd:
			lenSize, elems = 4, true
		case 0xde:
			lenSize, elems, pairs = 2, true, true
		case 0xdf:
			lenSize, elems, pairs = 4, true, true
		}
		if lenSize > 0 {
			v, ok := uintAt(b, i, lenSize)
			if !ok {
				return 0, errTruncated
			}
			n = v + uint64(extra)
			i += lenSize
		}
	}
	left := uint64(len(b) - i)
	if !elems {
		if n > left {
			return 0, errTruncated
		}
		return i + int(n), nil
	}
	if pairs {
		if n > left/2 {
			return 0, fmt.Errorf("map of %d pairs in %d bytes: %w", n, left, errTruncated)
		}
		n *= 2
	} else if n > left {
		return 0, fmt.Errorf("array of %d elements in %d bytes: %w", n, left, errTruncated)
	}
	if n > 0 && depth >= MaxDepth {
		return 0, errTooDeep
	}
	for ; n > 0; n-- {
		var err error
		if i, err = skipValue(b, i, depth+1); err != nil {
			return 0, err
		}
	}
	return i, nil
}
