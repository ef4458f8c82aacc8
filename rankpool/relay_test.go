package rankpool

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

func TestRelayAggregatesCredit(t *testing.T) {
	tests := []struct {
		name    string
		credits []uint32 // one Credit message from each child 1..n, in order
		want    uint64
	}{
		{"one child", []uint32{4}, 4},
		{"three children", []uint32{2, 2, 2}, 6},
		{"zero credit is nothing", []uint32{0, 3}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kids := make([]int, len(tt.credits))
			for i := range kids {
				kids[i] = i + 1
			}
			r := NewRelay(scheduler(kids...), Config{})
			assert.Empty(t, r.Ready(nil), "nothing to say before the children speak")
			for i, n := range tt.credits {
				r.Step(credit(i+1, 0, n))
			}
			out := r.Ready(nil)
			require.Len(t, out, 1, "credit goes up in one message")
			assert.Equal(t, tt.want, get(tally(t, 0, out), Upstream).credit)
			assert.Empty(t, r.Ready(nil), "Ready forgets what it returned")
		})
	}
}

func TestRelaySpreadsTasks(t *testing.T) {
	tests := []struct {
		name    string
		credits []int // per child 1..n
		tasks   int
		want    []int // tasks per child
		backlog int
	}{
		{"even over equal credit", []int{4, 4, 4}, 6, []int{2, 2, 2}, 0},
		{"remainder goes round-robin", []int{4, 4, 4}, 7, []int{3, 2, 2}, 0},
		{"never beyond a child's credit", []int{1, 5}, 6, []int{1, 5}, 0},
		{"skips children without credit", []int{0, 3, 0, 3}, 4, []int{0, 2, 0, 2}, 0},
		{"excess waits in the backlog", []int{2, 2}, 6, []int{2, 2}, 2},
		{"no credit at all", []int{0, 0}, 3, []int{0, 0}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kids := make([]int, len(tt.credits))
			for i := range kids {
				kids[i] = i + 1
			}
			r := NewRelay(scheduler(kids...), Config{})
			for i, c := range tt.credits {
				r.Step(credit(i+1, 0, uint32(c)))
			}
			r.Ready(nil)
			r.Step(taskBatch(Upstream, 0, tasks(100, tt.tasks)))
			m := tally(t, 0, r.Ready(nil))
			seen := map[uint64]bool{}
			for i, want := range tt.want {
				s := get(m, i+1)
				assert.Len(t, s.tasks, want, "child %d", i+1)
				assert.LessOrEqual(t, s.taskMsgs, 1, "one message per child")
				for _, id := range s.tasks {
					assert.False(t, seen[id], "task %d sent twice", id)
					seen[id] = true
				}
			}
			assert.Equal(t, tt.backlog, r.Stats().Backlog)
			assert.Zero(t, get(m, Upstream).credit, "tasks bring no credit")
		})
	}
}

func TestRelayBacklogDrainsAsCreditReturns(t *testing.T) {
	r := NewRelay(scheduler(1, 2), Config{})
	r.Step(credit(1, 0, 2))
	r.Step(credit(2, 0, 2))
	require.Equal(t, uint64(4), get(tally(t, 0, r.Ready(nil)), Upstream).credit)

	// The parent overspends: 6 tasks on 4 credit.
	r.Step(taskBatch(Upstream, 0, tasks(1, 6)))
	m := tally(t, 0, r.Ready(nil))
	assert.Len(t, get(m, 1).tasks, 2)
	assert.Len(t, get(m, 2).tasks, 2)
	require.Equal(t, 2, r.Stats().Backlog)

	// Child 1 returns one result: its credit takes a backlog task and is
	// not announced again, but the result goes up.
	r.Step(resultBatch(1, 0, 1, results(1)))
	m = tally(t, 0, r.Ready(nil))
	assert.Equal(t, []uint64{5}, get(m, 1).tasks, "oldest backlog task first")
	assert.Equal(t, []uint64{1}, get(m, Upstream).results)
	assert.Zero(t, get(m, Upstream).credit, "the overspent credit is withheld")
	assert.Equal(t, 1, r.Stats().Backlog)

	// Two more results: one pays for the last backlog task, one is announced.
	r.Step(resultBatch(2, 0, 1, results(3)))
	r.Step(resultBatch(2, 0, 1, results(4)))
	m = tally(t, 0, r.Ready(nil))
	assert.Equal(t, []uint64{6}, get(m, 2).tasks)
	assert.Equal(t, []uint64{3, 4}, get(m, Upstream).results)
	assert.Equal(t, uint64(1), get(m, Upstream).credit)
	assert.Zero(t, r.Stats().Backlog)

	// From now on credit flows one for one again.
	r.Step(resultBatch(1, 0, 1, results(2)))
	assert.Equal(t, uint64(1), get(tally(t, 0, r.Ready(nil)), Upstream).credit)
}

func TestRelayKeepsTaskOrderBehindBacklog(t *testing.T) {
	r := NewRelay(scheduler(1), Config{})
	r.Step(credit(1, 0, 1))
	r.Ready(nil)
	r.Step(taskBatch(Upstream, 0, tasks(1, 2))) // task 2 goes to the backlog
	r.Ready(nil)
	r.Step(taskBatch(Upstream, 0, tasks(3, 1))) // behind task 2
	r.Step(resultBatch(1, 0, 2, results(1)))
	assert.Equal(t, []uint64{2, 3}, get(tally(t, 0, r.Ready(nil)), 1).tasks)
}

func TestRelayBatchesResults(t *testing.T) {
	tests := []struct {
		name     string
		maxBatch int
		perChild [][]uint64 // result IDs each child 1..n sends before Ready
		wantMsgs int
	}{
		{"one message for all children", 0, [][]uint64{{1, 2}, {3}, {4, 5, 6}}, 1},
		{"split at MaxBatch", 3, [][]uint64{{1, 2}, {3}, {4, 5, 6, 7}}, 3},
		{"exactly MaxBatch", 3, [][]uint64{{1, 2, 3}}, 1},
		{"MaxBatch of one", 1, [][]uint64{{1, 2}, {3}}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kids := make([]int, len(tt.perChild))
			for i := range kids {
				kids[i] = i + 1
			}
			r := NewRelay(scheduler(kids...), Config{MaxBatch: tt.maxBatch})
			var want []uint64
			for i, ids := range tt.perChild {
				r.Step(credit(i+1, 0, uint32(len(ids))))
			}
			r.Ready(nil)
			for i, ids := range tt.perChild {
				r.Step(resultBatch(i+1, 0, uint32(len(ids)), results(ids...)))
				want = append(want, ids...)
			}
			out := r.Ready(nil)
			require.Len(t, out, tt.wantMsgs)
			for _, e := range out {
				rb, ok := e.Msg.(*serialize.ResultBatch)
				require.True(t, ok)
				if tt.maxBatch > 0 {
					assert.LessOrEqual(t, len(rb.Results), tt.maxBatch)
				}
				assert.Equal(t, uint32(len(rb.Results)), rb.Credit, "one credit per result")
			}
			s := get(tally(t, 0, out), Upstream)
			assert.Equal(t, want, s.results)
			assert.Equal(t, uint64(len(want)), s.credit)
		})
	}
}

func TestRelaySplitsTaskBatches(t *testing.T) {
	r := NewRelay(scheduler(1), Config{MaxBatch: 4})
	r.Step(credit(1, 0, 10))
	r.Ready(nil)
	r.Step(taskBatch(Upstream, 0, tasks(1, 10)))
	out := r.Ready(nil)
	require.Len(t, out, 3)
	for _, e := range out {
		assert.LessOrEqual(t, len(e.Msg.(*serialize.TaskBatch).Tasks), 4)
	}
	assert.Len(t, get(tally(t, 0, out), 1).tasks, 10)
}

func TestRelayDoesNotWriteIntoSendersSlices(t *testing.T) {
	r := NewRelay(scheduler(1, 2), Config{})
	r.Step(credit(1, 0, 1))
	r.Step(credit(2, 0, 1))
	r.Ready(nil)
	// The parent sends a sub-slice of a larger array and keeps the rest.
	arr := tasks(1, 8)
	r.Step(taskBatch(Upstream, 0, arr[:3])) // one over credit: task 3 waits
	r.Ready(nil)
	r.Step(taskBatch(Upstream, 0, tasks(50, 1)))
	r.Step(resultBatch(1, 0, 2, results(1)))
	r.Ready(nil)
	assert.Equal(t, tasks(1, 8), arr, "the relay wrote into the parent's array")

	// Results: a child's slice with spare capacity is not appended into.
	res := make([]serialize.Result, 1, 8)
	res[0].ID = 7
	r.Step(resultBatch(1, 0, 1, res))
	r.Step(resultBatch(2, 0, 1, results(8)))
	r.Ready(nil)
	assert.Zero(t, res[:2][1].ID, "the relay wrote into a child's spare capacity")
}

func TestRelayShutdown(t *testing.T) {
	r := NewRelay(scheduler(1, 2, 3), Config{})
	r.Step(shutdown(Upstream, 0))
	m := tally(t, 0, r.Ready(nil))
	for _, kid := range []int{1, 2, 3} {
		assert.Equal(t, 1, get(m, kid).shutdown, "Shutdown forwarded to %d", kid)
	}
	assert.Zero(t, get(m, Upstream).shutdown, "no acknowledgement before the children's")
	assert.False(t, r.Done())

	r.Step(shutdown(Upstream, 0)) // a repeat is not forwarded again
	r.Step(shutdown(1, 0))
	r.Step(shutdown(1, 0)) // nor does a repeated ack count twice
	r.Step(shutdown(3, 0))
	assert.Empty(t, r.Ready(nil))
	assert.False(t, r.Done())

	// Child 2's last results come before its acknowledgement and go up
	// before the relay's own.
	r.Step(resultBatch(2, 0, 1, results(9)))
	r.Step(shutdown(2, 0))
	out := r.Ready(nil)
	require.Len(t, out, 2)
	assert.IsType(t, &serialize.ResultBatch{}, out[0].Msg)
	assert.IsType(t, &serialize.Shutdown{}, out[1].Msg)
	assert.Equal(t, Upstream, out[1].To)
	assert.Equal(t, "test", out[1].Msg.(*serialize.Shutdown).Reason)
	assert.True(t, r.Done())

	r.Step(resultBatch(2, 0, 1, results(10)))
	assert.Empty(t, r.Ready(nil), "a done relay says nothing")
}

func TestRelayShutdownSkipsChildrenThatStopped(t *testing.T) {
	r := NewRelay(scheduler(1, 2), Config{})
	r.Step(credit(1, 0, 2))
	r.Step(shutdown(1, 0)) // child 1 stopped on its own
	r.Ready(nil)
	r.Step(taskBatch(Upstream, 0, tasks(1, 1)))
	assert.Empty(t, get(tally(t, 0, r.Ready(nil)), 1).tasks, "no task for a stopped child")
	r.Step(shutdown(Upstream, 0))
	m := tally(t, 0, r.Ready(nil))
	assert.Zero(t, get(m, 1).shutdown)
	assert.Equal(t, 1, get(m, 2).shutdown)
	r.Step(shutdown(2, 0))
	r.Ready(nil)
	assert.True(t, r.Done())
}

func TestRelayWithoutChildrenAcksAtOnce(t *testing.T) {
	r := NewRelay(scheduler(), Config{})
	r.Step(shutdown(Upstream, 0))
	m := tally(t, 0, r.Ready(nil))
	assert.Equal(t, 1, get(m, Upstream).shutdown)
	assert.True(t, r.Done())
}

func TestRelayIgnoresNoise(t *testing.T) {
	sub := Place{Rank: 4, Size: 8, Role: RoleSubMaster, Parent: 0, Children: []int{5, 6}}
	r := NewRelay(sub, Config{})
	r.Step(Envelope{From: 0, To: 4, Msg: &serialize.Heartbeat{Seq: 1}})
	r.Step(Envelope{From: 5, To: 4, Msg: &serialize.Heartbeat{Seq: 1}})
	r.Step(credit(7, 4, 3))                  // not a child
	r.Step(taskBatch(6, 4, tasks(1, 1)))     // tasks from a child
	r.Step(resultBatch(0, 4, 1, results(1))) // results from the parent
	r.Step(Envelope{From: 0, To: 4, Msg: &serialize.Reject{Reason: "x"}})
	assert.Empty(t, r.Ready(nil))
	assert.Equal(t, RelayStats{}, r.Stats())

	r.Step(credit(5, 4, 1))
	m := tally(t, 4, r.Ready(nil))
	assert.Equal(t, uint64(1), get(m, 0).credit, "a sub-master's parent is rank 0")
}

// TestRelayRandomInterleavings pushes tasks through a relay whose children
// grant random credit and return results in random order and batches, with
// a parent that obeys credit (and sometimes overspends), and checks that each
// task reaches exactly one child once, never beyond that child's credit, and
// each result goes up exactly once, with the credit accounts balanced.
func TestRelayRandomInterleavings(t *testing.T) {
	for seed := range uint64(40) {
		t.Run("", func(t *testing.T) { relayProperty(t, seed) })
	}
}

func relayProperty(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	nKids := 1 + rng.IntN(7)
	kids := make([]int, nKids)
	for i := range kids {
		kids[i] = 10 + 3*i // not contiguous, not starting at 1
	}
	const total = 2000
	maxBatch := 1 + rng.IntN(64)
	overspend := seed%5 == 0
	r := NewRelay(Place{Rank: 2, Size: 100, Role: RoleSubMaster, Parent: 0, Children: kids}, Config{MaxBatch: maxBatch})

	type kid struct {
		capacity int      // credit it wants outstanding
		granted  int      // credit granted and not yet used by a task
		holding  []uint64 // tasks received, not yet answered
	}
	ks := make([]*kid, nKids)
	for i := range ks {
		ks[i] = &kid{capacity: 1 + rng.IntN(6)}
	}
	var (
		parentCredit int // what the parent may send
		nextID       uint64
		delivered    = make(map[uint64]int)
		resultsUp    = make(map[uint64]int)
		out          []Envelope
	)
	ready := func() {
		out = r.Ready(out[:0])
		for _, e := range out {
			switch m := e.Msg.(type) {
			case *serialize.TaskBatch:
				require.LessOrEqual(t, len(m.Tasks), maxBatch)
				i := (e.To - 10) / 3
				k := ks[i]
				require.LessOrEqual(t, len(m.Tasks), k.granted, "seed %d: child %d sent beyond its credit", seed, e.To)
				k.granted -= len(m.Tasks)
				for _, task := range m.Tasks {
					delivered[task.ID]++
					k.holding = append(k.holding, task.ID)
				}
			case *serialize.ResultBatch:
				require.Equal(t, 0, e.To)
				require.LessOrEqual(t, len(m.Results), maxBatch)
				parentCredit += int(m.Credit)
				for _, res := range m.Results {
					resultsUp[res.ID]++
				}
			case *serialize.Credit:
				require.Equal(t, 0, e.To)
				parentCredit += int(m.N)
			default:
				t.Fatalf("unexpected %T", e.Msg)
			}
		}
	}
	for i, k := range ks {
		r.Step(credit(kids[i], 2, uint32(k.capacity)))
		k.granted = k.capacity
	}
	for steps := 0; len(resultsUp) < total; steps++ {
		require.Less(t, steps, 100_000, "seed %d: no progress", seed)
		// A random burst of events between two Ready calls.
		for range 1 + rng.IntN(5) {
			switch rng.IntN(3) {
			case 0: // the parent sends what its credit allows
				n := min(parentCredit, total-int(nextID), 1+rng.IntN(40))
				if overspend && rng.IntN(10) == 0 {
					n = min(n+1+rng.IntN(3), total-int(nextID))
				}
				if n > 0 {
					parentCredit -= n
					r.Step(taskBatch(0, 2, tasks(nextID, n)))
					nextID += uint64(n)
				}
			default: // a child answers some of what it holds, in any order
				i := rng.IntN(nKids)
				k := ks[i]
				if len(k.holding) == 0 {
					continue
				}
				rng.Shuffle(len(k.holding), func(a, b int) { k.holding[a], k.holding[b] = k.holding[b], k.holding[a] })
				n := 1 + rng.IntN(len(k.holding))
				r.Step(resultBatch(kids[i], 2, uint32(n), results(k.holding[:n]...)))
				k.holding = append(k.holding[:0], k.holding[n:]...)
				k.granted += n
			}
		}
		ready()
	}
	require.Len(t, delivered, total)
	for id, n := range delivered {
		require.Equal(t, 1, n, "seed %d: task %d delivered %d times", seed, id, n)
	}
	for id, n := range resultsUp {
		require.Equal(t, 1, n, "seed %d: result %d forwarded %d times", seed, id, n)
	}
	// Everything answered: the parent holds all the children's credit again
	// (less what overspending used up), and the relay holds no tasks.
	sum := 0
	for _, k := range ks {
		sum += k.capacity
		require.Equal(t, k.capacity, k.granted)
	}
	st := r.Stats()
	require.Zero(t, st.Backlog)
	require.Equal(t, sum, st.Credit)
	if !overspend {
		require.Equal(t, sum, parentCredit, "seed %d", seed)
	} else {
		require.LessOrEqual(t, parentCredit, sum, "seed %d", seed)
	}
}

func TestRelayTrickleGoesToTheWarmIdlestChild(t *testing.T) {
	r := NewRelay(scheduler(1, 2, 3), Config{})
	for _, c := range []int{1, 2, 3} {
		r.Step(credit(c, 0, 4))
	}
	r.Ready(nil)
	// Child 2 was heard from last: single tasks go to it, one at a time,
	// as long as it has as much credit left as any.
	r.Step(credit(2, 0, 1))
	r.Ready(nil)
	r.Step(taskBatch(Upstream, 0, tasks(1, 1)))
	m := tally(t, 0, r.Ready(nil))
	assert.Len(t, get(m, 2).tasks, 1, "the warm child")
	// Its credit is now equal to the others': the last heard from wins.
	r.Step(taskBatch(Upstream, 0, tasks(2, 1)))
	m = tally(t, 0, r.Ready(nil))
	assert.Len(t, get(m, 2).tasks, 1, "still the warm child")
	// Now it has less credit than the others: the idlest take the next.
	r.Step(taskBatch(Upstream, 0, tasks(3, 1)))
	m = tally(t, 0, r.Ready(nil))
	assert.Empty(t, get(m, 2).tasks, "a busier child is passed over")
	// A batch as large as the children with credit goes round-robin again.
	r.Step(taskBatch(Upstream, 0, tasks(10, 3)))
	m = tally(t, 0, r.Ready(nil))
	for _, c := range []int{1, 2, 3} {
		assert.Len(t, get(m, c).tasks, 1, "child %d", c)
	}
	assert.Equal(t, 13-6, r.Stats().Credit)
}
