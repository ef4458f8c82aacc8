package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// args encodes vs as a task's argument array.
func args(t testing.TB, vs ...any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(vs)
	require.NoError(t, err)
	return b
}

func testRegistry(t *testing.T) *Registry {
	t.Helper()
	r := New()
	apps := map[string]Handler{
		"add": func(_ context.Context, a []byte) ([]byte, error) {
			var x, y int64
			if err := DecodeArgs(a, &x, &y); err != nil {
				return nil, err
			}
			return msgpack.Marshal(x + y)
		},
		"fail":  func(context.Context, []byte) ([]byte, error) { return nil, errors.New("failed on purpose") },
		"boom":  func(context.Context, []byte) ([]byte, error) { panic("kaboom") },
		"empty": func(context.Context, []byte) ([]byte, error) { return nil, nil },
		"info": func(ctx context.Context, _ []byte) ([]byte, error) {
			info, ok := Info(ctx)
			if !ok {
				return nil, errors.New("no task info")
			}
			_, hasDeadline := ctx.Deadline()
			return msgpack.Marshal([]any{info.ID, info.App, info.Attempt, info.Rank, hasDeadline})
		},
		"stubborn": func(context.Context, []byte) ([]byte, error) {
			time.Sleep(300 * time.Millisecond) // ignores its context
			return msgpack.Marshal("late")
		},
		"polite": func(ctx context.Context, _ []byte) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
		"quick": func(context.Context, []byte) ([]byte, error) { return msgpack.Marshal("quick") },
		"argsfail": func(context.Context, []byte) ([]byte, error) {
			return nil, fmt.Errorf("wrapped: %w", ArgsErrorf("argument 1 is no good"))
		},
	}
	for name, h := range apps {
		require.NoError(t, r.Register(name, h))
	}
	return r
}

func TestRun(t *testing.T) {
	r := testRegistry(t)
	ms := int64(time.Millisecond)
	tests := []struct {
		name      string
		task      serialize.Task
		wantErr   serialize.ErrKind
		wantValue any    // decoded and compared when wantErr is ErrNone
		msg       string // substring of Msg
		stack     string // substring of Stack
		maxTime   time.Duration
	}{
		{name: "value", task: serialize.Task{ID: 1, App: "add", Args: args(t, 2, 3)}, wantValue: int64(5)},
		{name: "nil value", task: serialize.Task{ID: 2, App: "empty", Args: args(t)}, wantValue: nil},
		{name: "unknown app", task: serialize.Task{ID: 3, App: "nope"}, wantErr: serialize.ErrUnknownApp, msg: `no app named "nope" is registered in this executor; registered: add, argsfail, boom`},
		{name: "app error", task: serialize.Task{ID: 4, App: "fail"}, wantErr: serialize.ErrApp, msg: "failed on purpose"},
		{name: "bad args", task: serialize.Task{ID: 5, App: "add", Args: args(t, "x", 3)}, wantErr: serialize.ErrArgs, msg: "argument 1"},
		{name: "wrong arity", task: serialize.Task{ID: 6, App: "add", Args: args(t, 1)}, wantErr: serialize.ErrArgs, msg: "got 1 arguments, the app takes 2"},
		{name: "wrapped args error", task: serialize.Task{ID: 7, App: "argsfail"}, wantErr: serialize.ErrArgs, msg: "no good"},
		{name: "panic", task: serialize.Task{ID: 8, App: "boom"}, wantErr: serialize.ErrPanic, msg: "kaboom", stack: "registry.testRegistry"},
		{name: "panic under walltime", task: serialize.Task{ID: 9, App: "boom", Walltime: 1000 * ms}, wantErr: serialize.ErrPanic, msg: "kaboom", stack: "registry.testRegistry"},
		{name: "walltime, ignored context", task: serialize.Task{ID: 10, App: "stubborn", Walltime: 20 * ms}, wantErr: serialize.ErrWalltime, msg: "walltime of 20ms exceeded", maxTime: 200 * time.Millisecond},
		{name: "walltime, honoured context", task: serialize.Task{ID: 11, App: "polite", Walltime: 20 * ms}, wantErr: serialize.ErrWalltime, msg: "walltime", maxTime: 200 * time.Millisecond},
		{name: "within walltime", task: serialize.Task{ID: 12, App: "quick", Walltime: 1000 * ms}, wantValue: "quick"},
		{name: "info", task: serialize.Task{ID: 13, App: "info", Attempt: 2}, wantValue: []any{uint64(13), "info", int8(2), int8(7), false}},
		{name: "info under walltime", task: serialize.Task{ID: 14, App: "info", Walltime: 1000 * ms}, wantValue: []any{uint64(14), "info", int8(0), int8(7), true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res := r.Run(context.Background(), tt.task, 7)
			took := time.Since(start)
			assert.Equal(t, tt.task.ID, res.ID)
			assert.Equal(t, int32(7), res.Rank)
			assert.NotZero(t, res.Start)
			assert.GreaterOrEqual(t, res.End, res.Start)
			require.Equal(t, tt.wantErr, res.Err, "msg %q", res.Msg)
			if tt.wantErr == serialize.ErrNone {
				require.NotEmpty(t, res.Value, "a success always has a msgpack value")
				var got any
				require.NoError(t, msgpack.Unmarshal(res.Value, &got))
				assert.Equal(t, tt.wantValue, got)
			} else {
				assert.Nil(t, res.Value)
				assert.Contains(t, res.Msg, tt.msg)
			}
			if tt.stack != "" {
				assert.Contains(t, res.Stack, tt.stack)
			}
			if tt.maxTime > 0 {
				assert.Less(t, took, tt.maxTime, "Run returns at the walltime")
			}
		})
	}
	time.Sleep(350 * time.Millisecond) // let the abandoned stubborn handler end
}

func TestRunUnknownListsBriefly(t *testing.T) {
	r := New()
	res := r.Run(context.Background(), serialize.Task{App: "x"}, 0)
	assert.Equal(t, `no app named "x" is registered in this executor (none are)`, res.Msg)
	for i := range 30 {
		require.NoError(t, r.Register(fmt.Sprintf("app%02d", i), func(context.Context, []byte) ([]byte, error) { return nil, nil }))
	}
	res = r.Run(context.Background(), serialize.Task{App: "x"}, 0)
	assert.Contains(t, res.Msg, "app00, app01")
	assert.Contains(t, res.Msg, "and 18 more")
	assert.NotContains(t, res.Msg, "app29")
}

func TestRunParentCancelled(t *testing.T) {
	r := testRegistry(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := r.Run(ctx, serialize.Task{App: "polite", Walltime: int64(time.Second)}, 0)
	assert.Equal(t, serialize.ErrApp, res.Err, "a rank shutting down is not a walltime: %s", res.Msg)
}

func TestArgsError(t *testing.T) {
	err := fmt.Errorf("outer: %w", ArgsErrorf("inner %d", 1))
	assert.ErrorIs(t, err, ErrArgs)
	var ae *ArgsError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "bad arguments: inner 1", ae.Error())
}

func TestDecodeArgs(t *testing.T) {
	var a int64
	var b string
	tests := []struct {
		name string
		args []byte
		ok   bool
	}{
		{"fits", args(t, 1, "x"), true},
		{"too few", args(t, 1), false},
		{"too many", args(t, 1, "x", 3), false},
		{"wrong type", args(t, "x", 1), false},
		{"not an array", []byte{0x01}, false},
		{"nil", []byte{0xc0}, false},
		{"empty", nil, false},
		{"trailing", append(args(t, 1, "x"), 0x01), false},
		{"truncated", args(t, 1, "xyz")[:5], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := DecodeArgs(tt.args, &a, &b)
			if tt.ok {
				require.NoError(t, err)
				assert.Equal(t, int64(1), a)
				assert.Equal(t, "x", b)
				return
			}
			assert.ErrorIs(t, err, ErrArgs)
		})
	}
}

func TestSplitArgs(t *testing.T) {
	in := args(t, []int{1, 2}, map[string]int{"a": 1}, "s")
	parts, err := SplitArgs(in, 3)
	require.NoError(t, err)
	want := [][]byte{args(t)[:0], nil, nil}
	for i, v := range []any{[]int{1, 2}, map[string]int{"a": 1}, "s"} {
		want[i], err = msgpack.Marshal(v)
		require.NoError(t, err)
	}
	assert.Equal(t, want, parts)
	_, err = SplitArgs(in, 2)
	assert.ErrorIs(t, err, ErrArgs)
	_, err = SplitArgs(append(in, 0xc0), 3)
	assert.ErrorIs(t, err, ErrArgs)
}

func FuzzDecodeArgs(f *testing.F) {
	f.Add(args(f, 1, "x"))
	f.Add(args(f, []int{1, 2, 3}))
	f.Add(args(f, map[string]any{"a": []any{1, "b"}}))
	f.Add([]byte{0x91, 0xdc, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var x int64
		var s string
		if err := DecodeArgs(b, &x, &s); err != nil {
			require.ErrorIs(t, err, ErrArgs)
		}
		var xs []int64
		var m map[string]any
		if err := DecodeArgs(b, &xs, &m); err != nil {
			require.ErrorIs(t, err, ErrArgs)
		}
		for n := range 3 {
			parts, err := SplitArgs(b, n)
			if err != nil {
				require.ErrorIs(t, err, ErrArgs)
				continue
			}
			require.Len(t, parts, n)
			total := 0
			for _, p := range parts {
				total += len(p)
			}
			require.Less(t, total, len(b)+1)
		}
		// echo never fails on what SplitArgs accepts, and gives its bytes back.
		if parts, err := SplitArgs(b, 1); err == nil {
			v, err := echo(context.Background(), b)
			require.NoError(t, err)
			require.Equal(t, parts[0], v)
		}
	})
}

func TestRunRefusesOversizedResults(t *testing.T) {
	r := New()
	require.NoError(t, r.Register("big", func(context.Context, []byte) ([]byte, error) {
		return make([]byte, MaxValue+1), nil
	}))
	require.NoError(t, r.Register("loud", func(context.Context, []byte) ([]byte, error) {
		return nil, errors.New(strings.Repeat("x", 1<<20))
	}))
	res := r.Run(context.Background(), serialize.Task{ID: 1, App: "big"}, 3)
	assert.Equal(t, serialize.ErrApp, res.Err)
	assert.Nil(t, res.Value)
	assert.Contains(t, res.Msg, "more than")
	res = r.Run(context.Background(), serialize.Task{ID: 2, App: "loud"}, 3)
	assert.Equal(t, serialize.ErrApp, res.Err)
	assert.Less(t, len(res.Msg), maxText+100, "the message is clipped")
	assert.Contains(t, res.Msg, "bytes cut]")
}
