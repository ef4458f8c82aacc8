package sim

import "github.com/rankfarm/rankfarm/serialize"

// Kinds of event.
const (
	evArrive uint8 = iota // msg from rank from reaches rank to
	evWake                // rank to handles the messages waiting for it
	evFinish              // worker to finishes task id, started at start
)

// event is one thing that happens at a virtual time.
type event struct {
	at    int64             // virtual nanoseconds
	msg   serialize.Message // evArrive
	id    uint64            // evFinish: the task
	start int64             // evFinish: when the task started
	to    int32             // the rank it happens at; upstream for the front end
	from  int32             // evArrive: the sender
	kind  uint8
}

// heapItem is an event's place in the heap: its time, its sequence number
// and the slot that holds the rest of it. Sixteen bytes, so the four
// children of a node share one cache line.
type heapItem struct {
	at  int64
	seq uint32
	idx uint32
}

func (a heapItem) before(b heapItem) bool {
	// Sequence numbers wrap after 2³² events; compared as a signed
	// difference they stay in order across the wrap as long as fewer than
	// 2³¹ events are pending.
	return a.at < b.at || a.at == b.at && int32(a.seq-b.seq) < 0
}

// eventHeap is a 4-ary min-heap of events by time; events at the same time
// come out in the order they went in, which makes a run deterministic and
// keeps the messages between two ranks in order. The events themselves sit
// in a slab with a free list, so the heap moves 16-byte items and nothing is
// allocated per event in the steady state.
type eventHeap struct {
	items []heapItem
	slab  []event
	free  []uint32
	seq   uint32
}

func (h *eventHeap) len() int { return len(h.items) }

// push schedules e.
func (h *eventHeap) push(e event) {
	var idx uint32
	if n := len(h.free); n > 0 {
		idx = h.free[n-1]
		h.free = h.free[:n-1]
		h.slab[idx] = e
	} else {
		idx = uint32(len(h.slab))
		h.slab = append(h.slab, e)
	}
	it := heapItem{at: e.at, seq: h.seq, idx: idx}
	h.seq++
	i := len(h.items)
	h.items = append(h.items, it)
	for i > 0 {
		p := (i - 1) / 4
		if !it.before(h.items[p]) {
			break
		}
		h.items[i] = h.items[p]
		i = p
	}
	h.items[i] = it
}

// pop removes and returns the earliest event.
func (h *eventHeap) pop() event {
	top := h.items[0]
	last := len(h.items) - 1
	it := h.items[last]
	h.items = h.items[:last]
	if last > 0 {
		i, n := 0, last
		for {
			c := 4*i + 1
			if c >= n {
				break
			}
			m := c
			for k := c + 1; k < c+4 && k < n; k++ {
				if h.items[k].before(h.items[m]) {
					m = k
				}
			}
			if !h.items[m].before(it) {
				break
			}
			h.items[i] = h.items[m]
			i = m
		}
		h.items[i] = it
	}
	e := h.slab[top.idx]
	h.slab[top.idx] = event{} // let the message go
	h.free = append(h.free, top.idx)
	return e
}
