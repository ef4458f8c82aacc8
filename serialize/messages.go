// Package serialize is rankfarm's wire: the message types that travel between
// the front end, rank 0 and the ranks of a block, and a versioned frame codec
// for byte streams (the TCP link) and for whole buffers (MPI messages and
// queue files).
//
// Every message is a msgpack array (never a map), so field order is the
// schema. A frame carries a protocol version, a codec byte (raw or
// s2-compressed) and the message kind ahead of the payload; docs/PROTOCOL.md
// gives the byte-level layout.
package serialize

//lint:file-ignore U1000 the _msgpack fields are read by msgpack: they make every message a msgpack array

import "fmt"

// ProtocolVersion is the wire version this build speaks. A peer that sends
// another version is refused with an error that names both.
const ProtocolVersion = 1

// Kind names a message type on the wire.
type Kind uint8

// Message kinds. The values are part of the protocol and never change.
const (
	KindChallenge   Kind = 1  // front end → rank 0: a nonce to prove the token with
	KindHello       Kind = 2  // rank 0 → front end: the proof, and the block's shape
	KindWelcome     Kind = 3  // front end → rank 0: accepted, with the front end's own proof
	KindTaskBatch   Kind = 4  // downward: tasks to run
	KindResultBatch Kind = 5  // upward: results, and fresh credit
	KindCredit      Kind = 6  // upward: room for more tasks
	KindHeartbeat   Kind = 7  // both ways: still alive
	KindShutdown    Kind = 8  // downward: stop; upward: stopped (an acknowledgement)
	KindReject      Kind = 9  // either way: the peer was refused, with the reason
	kindMax         Kind = 10 // one past the last kind
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case KindChallenge:
		return "Challenge"
	case KindHello:
		return "Hello"
	case KindWelcome:
		return "Welcome"
	case KindTaskBatch:
		return "TaskBatch"
	case KindResultBatch:
		return "ResultBatch"
	case KindCredit:
		return "Credit"
	case KindHeartbeat:
		return "Heartbeat"
	case KindShutdown:
		return "Shutdown"
	case KindReject:
		return "Reject"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Message is any of the wire message types.
type Message interface {
	// Kind reports the message's wire kind.
	Kind() Kind
}

// Task is one call of an app.
type Task struct {
	_msgpack struct{} `msgpack:",as_array"`
	// ID is unique within a run; the front end assigns it.
	ID uint64
	// App is the registered name of the app to call.
	App string
	// Args is a msgpack array holding the call's arguments, each one msgpack
	// encoded; an app decodes it with its own argument types.
	Args []byte
	// Attempt counts from 0; a retry of a failed task has Attempt 1, then 2.
	Attempt uint32
	// Walltime bounds the run in nanoseconds; 0 means no bound.
	Walltime int64
}

// ErrKind classifies a failed task.
type ErrKind uint8

// Failure kinds. The values are part of the protocol.
const (
	ErrNone       ErrKind = 0 // the task succeeded
	ErrApp        ErrKind = 1 // the app returned an error
	ErrPanic      ErrKind = 2 // the app panicked; Result.Stack holds the stack
	ErrWalltime   ErrKind = 3 // the app outlived its walltime
	ErrUnknownApp ErrKind = 4 // no app of that name is registered in the executor
	ErrArgs       ErrKind = 5 // the arguments did not decode into the app's types
	ErrLost       ErrKind = 6 // the block running the task was lost
)

// String returns the failure kind's name.
func (e ErrKind) String() string {
	switch e {
	case ErrNone:
		return "ok"
	case ErrApp:
		return "app error"
	case ErrPanic:
		return "panic"
	case ErrWalltime:
		return "walltime exceeded"
	case ErrUnknownApp:
		return "unknown app"
	case ErrArgs:
		return "bad arguments"
	case ErrLost:
		return "block lost"
	}
	return fmt.Sprintf("ErrKind(%d)", uint8(e))
}

// Result is the outcome of one Task.
type Result struct {
	_msgpack struct{} `msgpack:",as_array"`
	// ID is the ID of the task this result answers.
	ID uint64
	// Err is ErrNone on success.
	Err ErrKind
	// Value is the app's msgpack-encoded return value when Err is ErrNone.
	Value []byte
	// Msg is the error's message when Err is not ErrNone.
	Msg string
	// Stack is the goroutine stack of a panic.
	Stack string
	// Rank is the world rank of the worker that ran the task.
	Rank int32
	// Start and End are Unix nanoseconds around the app call on the worker.
	Start, End int64
}

// Challenge opens a TCP link: the front end sends a fresh random nonce that
// rank 0 must answer with an HMAC of the run's token.
type Challenge struct {
	_msgpack struct{} `msgpack:",as_array"`
	Version  uint16
	Nonce    []byte
}

// Hello answers a Challenge: Proof is HMAC-SHA256(token, challenge nonce ‖
// "rankfarm-hello" ‖ Block), and Nonce is rank 0's own challenge to the
// front end.
type Hello struct {
	_msgpack struct{} `msgpack:",as_array"`
	Version  uint16
	Block    string
	Proof    []byte
	Nonce    []byte
	Ranks    int32
	Workers  int32
	Host     string
	PID      int32
	// Fanout, NodeHosts and NodeRuns describe the block's layout: the
	// fan-out of its tree, the host name of each node (NodeHosts[k] names
	// node k), and the node of every rank in rank order as runs, pairs of
	// (node, number of ranks). A Hello without them (an older block) has
	// Fanout 0 and no layout.
	Fanout    int32
	NodeHosts []string
	NodeRuns  []int32
}

// NodeOf expands NodeRuns into the node of each rank (nil when the Hello
// carries no layout). Decode has checked the runs against Ranks and
// NodeHosts.
func (m *Hello) NodeOf() []int {
	if len(m.NodeRuns) == 0 {
		return nil
	}
	out := make([]int, 0, m.Ranks)
	for i := 0; i+1 < len(m.NodeRuns); i += 2 {
		for range m.NodeRuns[i+1] {
			out = append(out, int(m.NodeRuns[i]))
		}
	}
	return out
}

// NodeRunsOf compresses a node map (the node of each rank, in rank order)
// into Hello.NodeRuns.
func NodeRunsOf(nodeOf []int) []int32 {
	var runs []int32
	for r, n := range nodeOf {
		if r > 0 && int(runs[len(runs)-2]) == n {
			runs[len(runs)-1]++
			continue
		}
		runs = append(runs, int32(n), 1)
	}
	return runs
}

// Welcome accepts a Hello: Proof is HMAC-SHA256(token, hello nonce ‖
// "rankfarm-welcome" ‖ Block), so rank 0 knows it talks to its real front end.
type Welcome struct {
	_msgpack struct{} `msgpack:",as_array"`
	Proof    []byte
	Run      string
}

// TaskBatch carries tasks down: front end → rank 0 → sub-masters → workers.
// A sender never sends more tasks than the receiver has granted as credit.
type TaskBatch struct {
	_msgpack struct{} `msgpack:",as_array"`
	Tasks    []Task
}

// ResultBatch carries results up, with Credit more task slots granted to the
// receiver's sender (usually one per result).
type ResultBatch struct {
	_msgpack struct{} `msgpack:",as_array"`
	Credit   uint32
	Results  []Result
}

// Credit grants the receiver leave to send N more tasks.
type Credit struct {
	_msgpack struct{} `msgpack:",as_array"`
	N        uint32
}

// Heartbeat says the sender is alive; Seq increases, Time is Unix nanoseconds.
type Heartbeat struct {
	_msgpack struct{} `msgpack:",as_array"`
	Seq      uint64
	Time     int64
}

// Shutdown asks the receiver (and its subtree) to stop; sent upward it
// acknowledges that the sender's subtree has stopped.
type Shutdown struct {
	_msgpack struct{} `msgpack:",as_array"`
	Reason   string
}

// Reject tells a peer why it was refused before the connection is closed.
type Reject struct {
	_msgpack struct{} `msgpack:",as_array"`
	Reason   string
}

// Kind implements Message.
func (*Challenge) Kind() Kind { return KindChallenge }

// Kind implements Message.
func (*Hello) Kind() Kind { return KindHello }

// Kind implements Message.
func (*Welcome) Kind() Kind { return KindWelcome }

// Kind implements Message.
func (*TaskBatch) Kind() Kind { return KindTaskBatch }

// Kind implements Message.
func (*ResultBatch) Kind() Kind { return KindResultBatch }

// Kind implements Message.
func (*Credit) Kind() Kind { return KindCredit }

// Kind implements Message.
func (*Heartbeat) Kind() Kind { return KindHeartbeat }

// Kind implements Message.
func (*Shutdown) Kind() Kind { return KindShutdown }

// Kind implements Message.
func (*Reject) Kind() Kind { return KindReject }

// New returns an empty message of kind k, or nil for an unknown kind.
func New(k Kind) Message {
	switch k {
	case KindChallenge:
		return &Challenge{}
	case KindHello:
		return &Hello{}
	case KindWelcome:
		return &Welcome{}
	case KindTaskBatch:
		return &TaskBatch{}
	case KindResultBatch:
		return &ResultBatch{}
	case KindCredit:
		return &Credit{}
	case KindHeartbeat:
		return &Heartbeat{}
	case KindShutdown:
		return &Shutdown{}
	case KindReject:
		return &Reject{}
	}
	return nil
}
