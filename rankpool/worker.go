package rankpool

import (
	"github.com/rankfarm/rankfarm/serialize"
)

// Worker is the state machine of a worker rank. It announces Slots×Prefetch
// credit to its parent, queues the tasks it receives, hands them out through
// Next as slots free up, and returns each result with one credit. Its state
// is its queue, bounded by the credit it granted. A Worker is not safe for
// concurrent use.
//
// Prefetch adapts to the tasks' run time (Result.Start and End): a worker
// keeps about Config.Window of work queued per slot, between Prefetch and
// MaxPrefetch tasks. Tasks of a second keep the credit at Prefetch, so work
// spreads evenly; no-op tasks raise it to MaxPrefetch, so a message carries
// hundreds of tasks instead of two. Growth is granted at once with the next
// result; shrinking withholds one returning credit per finished task.
type Worker struct {
	place Place
	cfg   Config

	queue   taskQueue
	running int
	ledger  ledger

	capacity int   // credit granted in all: tasks held, running or on their way
	avgRunNs int64 // moving average of the tasks' run time, 0 until one is known

	results   []serialize.Result // results to send at the next Ready
	lastBatch int                // results the last Ready sent
	shutdown  *serialize.Shutdown
	done      bool
}

// NewWorker returns the state machine of a worker at p.
func NewWorker(p Place, cfg Config) *Worker {
	cfg = cfg.withDefaults()
	w := &Worker{place: p, cfg: cfg, capacity: cfg.Slots * cfg.Prefetch}
	w.queue.grow(w.capacity)
	w.ledger.grant(w.capacity)
	return w
}

// Place returns the worker's position in the tree.
func (w *Worker) Place() Place { return w.place }

// Step absorbs one incoming message. It takes ownership of e.Msg. Only the
// parent's TaskBatch and Shutdown matter; everything else is ignored. Tasks
// beyond the credit granted are kept and run, and the credit they use is not
// announced again.
func (w *Worker) Step(e Envelope) {
	if w.done || w.shutdown != nil || e.From != w.place.Parent {
		return
	}
	switch m := e.Msg.(type) {
	case *serialize.TaskBatch:
		w.ledger.take(len(m.Tasks))
		for i := range m.Tasks {
			w.queue.push(m.Tasks[i])
		}
	case *serialize.Shutdown:
		w.shutdown = m
		w.queue.reset() // queued tasks are dropped: the parent stops waiting for them
	}
}

// Next returns a task to start now, if a slot is free and a task is queued,
// and marks the slot busy. The caller reports the task's result through
// Finished.
func (w *Worker) Next() (serialize.Task, bool) {
	if w.done || w.shutdown != nil || w.running >= w.cfg.Slots || w.queue.len() == 0 {
		return serialize.Task{}, false
	}
	w.running++
	return w.queue.pop(), true
}

// Finished records the result of a task that Next returned and frees its
// slot. The result leaves at the next Ready with one credit.
func (w *Worker) Finished(r serialize.Result) {
	if w.running > 0 {
		w.running--
	}
	if w.done {
		return
	}
	if w.results == nil {
		// Size the buffer like the last batch: one result at a time when
		// idle, many when busy, with no regrowth in the steady state.
		w.results = make([]serialize.Result, 0, max(w.lastBatch, 1))
	}
	w.results = append(w.results, r)
	w.observe(r)
	switch target := w.target(); {
	case w.capacity < target:
		w.ledger.grant(1 + target - w.capacity)
		w.capacity = target
	case w.capacity > target:
		w.capacity-- // keep the returning credit: the worker holds too much
	default:
		w.ledger.grant(1)
	}
}

// observe folds a result's run time into the moving average (weight 1/8).
func (w *Worker) observe(r serialize.Result) {
	if r.Start == 0 || r.End < r.Start {
		return // no times: nothing learnt
	}
	d := r.End - r.Start
	if w.avgRunNs == 0 {
		w.avgRunNs = max(d, 1)
		return
	}
	w.avgRunNs = max(w.avgRunNs+(d-w.avgRunNs)/8, 1)
}

// target is the credit the worker wants in all: per slot, Prefetch plus the
// tasks that fill Window, at most MaxPrefetch.
func (w *Worker) target() int {
	per := w.cfg.Prefetch
	if w.avgRunNs > 0 && w.cfg.MaxPrefetch > per {
		fill := int64(w.cfg.Window) / w.avgRunNs
		per = int(min(int64(per)+fill, int64(w.cfg.MaxPrefetch)))
	}
	return per * w.cfg.Slots
}

// Credit reports the credit the worker has granted in all: what it may hold
// queued, running or on its way to it.
func (w *Worker) Credit() int { return w.capacity }

// Running reports how many tasks have started and not finished.
func (w *Worker) Running() int { return w.running }

// Queued reports how many tasks wait for a slot.
func (w *Worker) Queued() int { return w.queue.len() }

// Ready appends everything to send now to out and forgets it: the first call
// announces the worker's credit; later calls send the results finished since
// the last one, with their credit; after Shutdown the acknowledgement follows
// those results. The messages belong to the caller.
func (w *Worker) Ready(out []Envelope) []Envelope {
	if w.done {
		return out
	}
	out = appendUp(out, w.place.Rank, w.place.Parent, w.results, w.ledger.up, w.cfg.MaxBatch, w.cfg.MaxBatchBytes, nil)
	if len(w.results) > 0 {
		w.lastBatch = len(w.results)
	}
	w.results, w.ledger.up = nil, 0
	if w.shutdown != nil {
		out = append(out, Envelope{From: w.place.Rank, To: w.place.Parent, Msg: &serialize.Shutdown{Reason: w.shutdown.Reason}})
		w.done = true
	}
	return out
}

// Done reports whether the worker has shut down: its parent asked and Ready
// has returned the acknowledgement.
func (w *Worker) Done() bool { return w.done }

// taskQueue is a FIFO ring of tasks that grows when full and reuses its
// buffer, so queueing a task allocates nothing in the steady state.
type taskQueue struct {
	buf  []serialize.Task
	head int
	n    int
}

func (q *taskQueue) len() int { return q.n }

// grow makes room for at least n tasks.
func (q *taskQueue) grow(n int) {
	if n <= len(q.buf) {
		return
	}
	buf := make([]serialize.Task, max(n, 2*len(q.buf)))
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

func (q *taskQueue) push(t serialize.Task) {
	if q.n == len(q.buf) {
		q.grow(q.n + 1)
	}
	q.buf[(q.head+q.n)%len(q.buf)] = t
	q.n++
}

func (q *taskQueue) pop() serialize.Task {
	t := q.buf[q.head]
	q.buf[q.head] = serialize.Task{} // let the arguments go
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return t
}

// reset drops every queued task.
func (q *taskQueue) reset() {
	clear(q.buf)
	q.head, q.n = 0, 0
}
