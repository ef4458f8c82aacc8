package serialize

import (
	"fmt"
	"strings"
)

// noopArgs is a msgpack array of one element (the integer 7): the Args of a
// task that takes one small argument.
var noopArgs = []byte{0x91, 0x07}

// sampleMessages returns one message of every kind with every field set.
func sampleMessages() []Message {
	return []Message{
		&Challenge{Version: ProtocolVersion, Nonce: []byte("0123456789abcdef0123456789abcdef")},
		&Hello{
			Version: ProtocolVersion, Block: "block-3", Proof: []byte{0xde, 0xad, 0xbe, 0xef},
			Nonce: []byte("fedcba9876543210"), Ranks: 128, Workers: 120, Host: "node017", PID: 4242,
			Fanout: 16, NodeHosts: []string{"node017", "node018"}, NodeRuns: []int32{0, 64, 1, 32, 0, 32},
		},
		&Welcome{Proof: []byte{1, 2, 3, 4, 5}, Run: "run-2024-01-01"},
		&TaskBatch{Tasks: []Task{
			{ID: 1, App: "noop", Args: noopArgs, Attempt: 0, Walltime: 0},
			{ID: 1 << 40, App: "sim", Args: []byte{0x92, 0xa1, 'x', 0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18}, Attempt: 2, Walltime: 3e9},
		}},
		&ResultBatch{Credit: 2, Results: []Result{
			{ID: 1, Err: ErrNone, Value: []byte{0xc3}, Rank: 5, Start: 1700000000000000000, End: 1700000000000001000},
			{ID: 2, Err: ErrPanic, Msg: "boom", Stack: "goroutine 1 [running]:\nmain.main()", Rank: -1, Start: -5, End: 0},
		}},
		&Credit{N: 640},
		&Heartbeat{Seq: 99, Time: -1},
		&Shutdown{Reason: "done"},
		&Reject{Reason: "bad proof"},
	}
}

// zeroMessages returns every kind with all fields at their zero values.
func zeroMessages() []Message {
	var out []Message
	for k := Kind(1); k < kindMax; k++ {
		out = append(out, New(k))
	}
	return out
}

// noopTaskBatch returns a TaskBatch of n no-op tasks.
func noopTaskBatch(n int) *TaskBatch {
	b := &TaskBatch{Tasks: make([]Task, n)}
	for i := range b.Tasks {
		b.Tasks[i] = Task{ID: uint64(i + 1), App: "noop", Args: noopArgs}
	}
	return b
}

// noopResultBatch returns a ResultBatch answering n no-op tasks.
func noopResultBatch(n int) *ResultBatch {
	b := &ResultBatch{Credit: uint32(n), Results: make([]Result, n)}
	for i := range b.Results {
		b.Results[i] = Result{ID: uint64(i + 1), Value: []byte{0xc0}, Rank: int32(i%64 + 1), Start: 1700000000000000000 + int64(i), End: 1700000000000000500 + int64(i)}
	}
	return b
}

// bigShutdown returns a Shutdown whose Reason is n bytes of compressible text.
func bigShutdown(n int) *Shutdown {
	return &Shutdown{Reason: strings.Repeat("all work is done; ", n/18+1)[:n]}
}

func kindName(m Message) string { return fmt.Sprintf("%v", m.Kind()) }
