package sim

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

func TestWireSizeMatchesCodec(t *testing.T) {
	big := strings.Repeat("x", 70000)
	tasks := func(n int, app string, args []byte) []serialize.Task {
		ts := make([]serialize.Task, n)
		for i := range ts {
			ts[i] = serialize.Task{ID: uint64(i) * 977777, App: app, Args: args, Attempt: uint32(i % 300), Walltime: int64(i) * -123456789}
		}
		return ts
	}
	results := func(n int, value []byte, msg string) []serialize.Result {
		rs := make([]serialize.Result, n)
		for i := range rs {
			rs[i] = serialize.Result{ID: uint64(i) << 40, Err: serialize.ErrKind(i % 7), Value: value, Msg: msg, Stack: msg,
				Rank: int32(i * 3000), Start: epoch + int64(i), End: -int64(i) * 1000}
		}
		return rs
	}
	msgs := []serialize.Message{
		&serialize.TaskBatch{},
		&serialize.TaskBatch{Tasks: tasks(1, "noop", nil)},
		&serialize.TaskBatch{Tasks: tasks(15, "a-longer-app-name-than-thirty-two-bytes", []byte{1, 2})},
		&serialize.TaskBatch{Tasks: tasks(300, "x", make([]byte, 300))},
		&serialize.TaskBatch{Tasks: tasks(70000, "", []byte{})},
		&serialize.ResultBatch{Credit: 70000},
		&serialize.ResultBatch{Credit: 1, Results: results(1, nil, "")},
		&serialize.ResultBatch{Credit: 200, Results: results(17, make([]byte, 70000), "boom")},
		&serialize.ResultBatch{Credit: 5, Results: results(5, []byte("v"), big)},
		&serialize.Credit{N: 0},
		&serialize.Credit{N: 1 << 31},
		&serialize.Shutdown{Reason: "done"},
		&serialize.Heartbeat{Seq: 1 << 50, Time: -40000},
	}
	codec := serialize.NewCodec(serialize.Options{CompressAbove: -1, MaxFrame: 1 << 30})
	for _, m := range msgs {
		body, err := codec.AppendBody(nil, m)
		require.NoError(t, err)
		require.Equal(t, len(body), wireSize(m), "%v", m.Kind())
	}
}
