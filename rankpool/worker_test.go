package rankpool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

func workerAt(rank, parent int) Place {
	return Place{Rank: rank, Size: 8, Role: RoleWorker, Parent: parent}
}

func TestWorkerAnnouncesCredit(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want uint64
	}{
		{"defaults", Config{}, 2},
		{"slots", Config{Slots: 4}, 8},
		{"slots and prefetch", Config{Slots: 3, Prefetch: 5}, 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWorker(workerAt(3, 0), tt.cfg)
			out := w.Ready(nil)
			require.Len(t, out, 1)
			assert.Equal(t, &serialize.Credit{N: uint32(tt.want)}, out[0].Msg)
			assert.Equal(t, 0, out[0].To)
			assert.Empty(t, w.Ready(nil), "credit is announced once")
		})
	}
}

func TestWorkerSlots(t *testing.T) {
	w := NewWorker(workerAt(3, 0), Config{Slots: 2})
	w.Ready(nil)
	_, ok := w.Next()
	require.False(t, ok, "nothing queued")

	w.Step(taskBatch(0, 3, tasks(1, 4)))
	var started []uint64
	for {
		task, ok := w.Next()
		if !ok {
			break
		}
		started = append(started, task.ID)
	}
	assert.Equal(t, []uint64{1, 2}, started, "two slots, FIFO")
	assert.Equal(t, 2, w.Running())
	assert.Equal(t, 2, w.Queued())

	w.Finished(serialize.Result{ID: 2})
	task, ok := w.Next()
	require.True(t, ok)
	assert.Equal(t, uint64(3), task.ID)
	_, ok = w.Next()
	assert.False(t, ok, "both slots busy again")
}

func TestWorkerReturnsResultsWithCredit(t *testing.T) {
	tests := []struct {
		name     string
		maxBatch int
		finished int
		wantMsgs int
	}{
		{"one result leaves at once", 0, 1, 1},
		{"results finished together share a message", 0, 5, 1},
		{"split at MaxBatch", 2, 5, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWorker(workerAt(3, 0), Config{Slots: 8, MaxBatch: tt.maxBatch})
			w.Ready(nil)
			w.Step(taskBatch(0, 3, tasks(1, tt.finished)))
			for range tt.finished {
				task, ok := w.Next()
				require.True(t, ok)
				w.Finished(serialize.Result{ID: task.ID})
			}
			out := w.Ready(nil)
			require.Len(t, out, tt.wantMsgs)
			var ids []uint64
			for _, e := range out {
				rb := e.Msg.(*serialize.ResultBatch)
				assert.Equal(t, uint32(len(rb.Results)), rb.Credit, "one credit per result")
				for _, r := range rb.Results {
					ids = append(ids, r.ID)
				}
			}
			assert.Len(t, ids, tt.finished)
			assert.Empty(t, w.Ready(nil))
		})
	}
}

func TestWorkerWithholdsCreditForExcessTasks(t *testing.T) {
	w := NewWorker(workerAt(3, 0), Config{}) // credit 2
	w.Ready(nil)
	w.Step(taskBatch(0, 3, tasks(1, 3))) // one too many: kept, not dropped
	for id := uint64(1); id <= 3; id++ {
		task, ok := w.Next()
		require.True(t, ok)
		require.Equal(t, id, task.ID)
		w.Finished(serialize.Result{ID: id})
		rb := w.Ready(nil)[0].Msg.(*serialize.ResultBatch)
		if id == 1 {
			assert.Zero(t, rb.Credit, "the first result pays for the excess task")
		} else {
			assert.Equal(t, uint32(1), rb.Credit)
		}
	}
}

func TestWorkerShutdown(t *testing.T) {
	w := NewWorker(workerAt(3, 0), Config{})
	w.Ready(nil)
	w.Step(taskBatch(0, 3, tasks(1, 2)))
	task, ok := w.Next()
	require.True(t, ok)
	w.Finished(serialize.Result{ID: task.ID})
	w.Step(shutdown(0, 3))
	_, ok = w.Next()
	assert.False(t, ok, "queued tasks are dropped")
	assert.Zero(t, w.Queued())
	assert.False(t, w.Done(), "not done before the acknowledgement leaves")

	out := w.Ready(nil)
	require.Len(t, out, 2)
	assert.IsType(t, &serialize.ResultBatch{}, out[0].Msg, "results before the ack")
	assert.Equal(t, &serialize.Shutdown{Reason: "test"}, out[1].Msg)
	assert.True(t, w.Done())

	w.Step(taskBatch(0, 3, tasks(5, 1)))
	w.Finished(serialize.Result{ID: 9})
	assert.Empty(t, w.Ready(nil), "a done worker says nothing")
}

func TestWorkerIgnoresNoise(t *testing.T) {
	w := NewWorker(workerAt(3, 0), Config{})
	w.Ready(nil)
	w.Step(Envelope{From: 0, To: 3, Msg: &serialize.Heartbeat{Seq: 1}})
	w.Step(taskBatch(5, 3, tasks(1, 1))) // not the parent
	w.Step(shutdown(5, 3))
	w.Step(credit(0, 3, 4))
	assert.Empty(t, w.Ready(nil))
	assert.Zero(t, w.Queued())
	assert.False(t, w.Done())
}

func TestWorkerUpstreamWhenAlone(t *testing.T) {
	w := NewWorker(Layout(0, 1, nil, 0), Config{})
	out := w.Ready(nil)
	require.Len(t, out, 1)
	assert.Equal(t, Upstream, out[0].To)
	w.Step(taskBatch(Upstream, 0, tasks(1, 1)))
	_, ok := w.Next()
	assert.True(t, ok)
}

func TestTaskQueueWraps(t *testing.T) {
	var q taskQueue
	q.grow(2)
	next := uint64(0)
	want := uint64(0)
	for round := range 50 {
		for range round % 7 {
			q.push(serialize.Task{ID: next})
			next++
		}
		for range round % 5 {
			if q.len() == 0 {
				break
			}
			require.Equal(t, want, q.pop().ID)
			want++
		}
	}
	for q.len() > 0 {
		require.Equal(t, want, q.pop().ID)
		want++
	}
	require.Equal(t, next, want)
}

// creditIn sums the credit that out announces (Credit messages and the
// credit of ResultBatches).
func creditIn(out []Envelope) int {
	n := 0
	for _, e := range out {
		switch m := e.Msg.(type) {
		case *serialize.Credit:
			n += int(m.N)
		case *serialize.ResultBatch:
			n += int(m.Credit)
		}
	}
	return n
}

func TestWorkerAdaptivePrefetch(t *testing.T) {
	const ms = int64(1e6)
	tests := []struct {
		name  string
		cfg   Config
		runNs []int64 // run times of successive batches of tasks
		want  int     // credit in all after the last batch
	}{
		{"no times learnt", Config{}, []int64{0}, 2},
		{"second-long tasks stay at prefetch", Config{}, []int64{1000 * ms}, 2},
		{"no-op tasks grow to max", Config{}, []int64{1000}, 256},
		{"max per slot", Config{Slots: 3, MaxPrefetch: 40}, []int64{1000}, 120},
		{"window sized", Config{Window: 10 * time.Millisecond}, []int64{ms}, 12},
		{"off when max equals prefetch", Config{Prefetch: 4, MaxPrefetch: 4}, []int64{1000}, 4},
		{"shrinks when tasks get long", Config{}, []int64{1000, 1000 * ms}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWorker(workerAt(3, 0), tt.cfg)
			announced := creditIn(w.Ready(nil))
			id := uint64(0)
			for _, run := range tt.runNs {
				// Run several rounds: each fills the credit announced so far.
				for range 40 {
					n := announced - (w.Queued() + w.Running())
					batch := &serialize.TaskBatch{}
					for range n {
						id++
						batch.Tasks = append(batch.Tasks, serialize.Task{ID: id})
					}
					w.Step(Envelope{From: 0, To: 3, Msg: batch})
					for {
						task, ok := w.Next()
						if !ok {
							break
						}
						start := int64(1e18)
						end := start + run
						if run == 0 {
							start, end = 0, 0
						}
						w.Finished(serialize.Result{ID: task.ID, Start: start, End: end})
					}
					got := creditIn(w.Ready(nil))
					announced += got - n
					require.Equal(t, w.Credit(), announced, "the credit announced is the credit granted")
				}
			}
			assert.Equal(t, tt.want, w.Credit())
		})
	}
}

func TestBatchesSplitByBytes(t *testing.T) {
	big := make([]byte, 1000)
	tasks := make([]serialize.Task, 10)
	results := make([]serialize.Result, 10)
	for i := range tasks {
		tasks[i] = serialize.Task{ID: uint64(i), Args: big}
		results[i] = serialize.Result{ID: uint64(i), Value: big}
	}
	tests := []struct {
		name     string
		maxBatch int
		maxBytes int
		want     []int // tasks (or results) per message
	}{
		{"count bound", 4, 1 << 20, []int{4, 4, 2}},
		{"byte bound", 100, 3500, []int{3, 3, 3, 1}},
		{"one oversized travels alone", 100, 10, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			for _, e := range appendTasks(nil, 0, 1, tasks, tt.maxBatch, tt.maxBytes) {
				got = append(got, len(e.Msg.(*serialize.TaskBatch).Tasks))
			}
			assert.Equal(t, tt.want, got, "tasks")
			got = got[:0]
			credit := 0
			for _, e := range appendUp(nil, 1, 0, results, 10, tt.maxBatch, tt.maxBytes, nil) {
				rb := e.Msg.(*serialize.ResultBatch)
				got = append(got, len(rb.Results))
				credit += int(rb.Credit)
			}
			assert.Equal(t, tt.want, got, "results")
			assert.Equal(t, 10, credit, "the credit travels in full")
		})
	}
}
