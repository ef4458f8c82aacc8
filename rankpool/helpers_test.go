package rankpool

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

// tasks returns n tasks with IDs from first on.
func tasks(first uint64, n int) []serialize.Task {
	ts := make([]serialize.Task, n)
	for i := range ts {
		ts[i] = serialize.Task{ID: first + uint64(i), App: "echo"}
	}
	return ts
}

// results returns a result for each of ids.
func results(ids ...uint64) []serialize.Result {
	rs := make([]serialize.Result, len(ids))
	for i, id := range ids {
		rs[i] = serialize.Result{ID: id}
	}
	return rs
}

func taskBatch(from, to int, ts []serialize.Task) Envelope {
	return Envelope{From: from, To: to, Msg: &serialize.TaskBatch{Tasks: ts}}
}

func resultBatch(from, to int, credit uint32, rs []serialize.Result) Envelope {
	return Envelope{From: from, To: to, Msg: &serialize.ResultBatch{Credit: credit, Results: rs}}
}

func credit(from, to int, n uint32) Envelope {
	return Envelope{From: from, To: to, Msg: &serialize.Credit{N: n}}
}

func shutdown(from, to int) Envelope {
	return Envelope{From: from, To: to, Msg: &serialize.Shutdown{Reason: "test"}}
}

// sent sums up what a Ready call returned for one destination.
type sent struct {
	msgs     int // messages of any kind
	tasks    []uint64
	taskMsgs int
	results  []uint64
	resMsgs  int
	credit   uint64 // from Credit and ResultBatch
	shutdown int
}

// tally groups out by destination and checks every envelope's From.
func tally(t *testing.T, from int, out []Envelope) map[int]*sent {
	t.Helper()
	m := make(map[int]*sent)
	for _, e := range out {
		require.Equal(t, from, e.From)
		s := m[e.To]
		if s == nil {
			s = &sent{}
			m[e.To] = s
		}
		s.msgs++
		switch msg := e.Msg.(type) {
		case *serialize.TaskBatch:
			s.taskMsgs++
			for _, task := range msg.Tasks {
				s.tasks = append(s.tasks, task.ID)
			}
		case *serialize.ResultBatch:
			s.resMsgs++
			s.credit += uint64(msg.Credit)
			for _, r := range msg.Results {
				s.results = append(s.results, r.ID)
			}
		case *serialize.Credit:
			s.credit += uint64(msg.N)
		case *serialize.Shutdown:
			s.shutdown++
		default:
			t.Fatalf("unexpected %T to %d", e.Msg, e.To)
		}
	}
	return m
}

// get returns what went to rank to, or an empty record.
func get(m map[int]*sent, to int) *sent {
	if s := m[to]; s != nil {
		return s
	}
	return &sent{}
}

// scheduler returns the place of rank 0 with the given children.
func scheduler(children ...int) Place {
	return Place{Rank: 0, Size: len(children) + 1, Role: RoleScheduler, Parent: Upstream, Children: children}
}
