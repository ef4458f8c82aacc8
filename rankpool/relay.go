package rankpool

import (
	"sort"

	"github.com/rankfarm/rankfarm/serialize"
)

// Relay is the state machine of rank 0 and of sub-masters. It asks its parent
// for exactly the credit its children ask for, spreads the tasks it receives
// evenly over the children with credit, passes results up in as few messages
// as the batching allows, and relays Shutdown down and its acknowledgement up.
//
// Its state is O(children): a credit count, an acknowledgement flag and an
// outgoing buffer per child. Tasks and results only pass through it between
// a Step and the next Ready (or wait in the backlog when a parent sends more
// than it was granted). A Relay is not safe for concurrent use.
type Relay struct {
	place Place
	cfg   Config

	// Per child, indexed like place.Children.
	credit []int              // tasks the child may still be sent
	outbuf [][]serialize.Task // tasks to send the child at the next Ready
	acked  []bool             // the child acknowledged Shutdown
	cnt    []int32            // scratch for dispatch

	inRing []bool   // the child has an entry in the ring
	stamp  []uint64 // when the child last sent credit or results
	clock  uint64   // counts the children's messages, for stamp

	ring    []int32 // children with credit, in round-robin order
	head    int     // index of the ring's first entry
	ringLen int     // entries in the ring
	dirty   []int32 // children with a non-empty outbuf
	touched []int32 // scratch for dispatch
	nacked  int     // children that acknowledged Shutdown

	backlog []serialize.Task // tasks beyond credit, oldest first
	ledger  ledger

	results   []serialize.Result     // results to pass up at the next Ready
	lastBatch int                    // results the last Ready passed up
	resMsg    *serialize.ResultBatch // an owned message to carry them, or nil
	shutdown  *serialize.Shutdown    // the parent's Shutdown, once received
	downSent  bool                   // Shutdown was forwarded to the children
	done      bool
}

// NewRelay returns the state machine of a scheduler or sub-master at p.
func NewRelay(p Place, cfg Config) *Relay {
	n := len(p.Children)
	return &Relay{
		place:  p,
		cfg:    cfg.withDefaults(),
		credit: make([]int, n),
		outbuf: make([][]serialize.Task, n),
		acked:  make([]bool, n),
		cnt:    make([]int32, n),
		ring:   make([]int32, n),
		inRing: make([]bool, n),
		stamp:  make([]uint64, n),
	}
}

// Place returns the relay's position in the tree.
func (r *Relay) Place() Place { return r.place }

// child returns the index of rank in place.Children, or -1.
func (r *Relay) child(rank int) int {
	kids := r.place.Children
	i := sort.SearchInts(kids, rank)
	if i < len(kids) && kids[i] == rank {
		return i
	}
	return -1
}

// Step absorbs one incoming message. It takes ownership of e.Msg. Messages
// from ranks other than the parent and the children, heartbeats and kinds
// that make no sense here are ignored.
func (r *Relay) Step(e Envelope) {
	if r.done {
		return
	}
	if e.From == r.place.Parent {
		r.stepParent(e.Msg)
		return
	}
	if c := r.child(e.From); c >= 0 {
		r.stepChild(c, e.Msg)
	}
}

func (r *Relay) stepParent(m serialize.Message) {
	switch m := m.(type) {
	case *serialize.TaskBatch:
		tasks := m.Tasks[:len(m.Tasks):len(m.Tasks)] // never append into the sender's spare capacity
		r.ledger.take(len(tasks))
		if len(r.backlog) > 0 {
			r.backlog = append(r.backlog, tasks...) // keep the order
			return
		}
		if rest := r.dispatch(tasks); len(rest) > 0 {
			r.backlog = append(r.backlog, rest...)
		}
	case *serialize.Shutdown:
		if r.shutdown == nil {
			r.shutdown = m
		}
	}
}

func (r *Relay) stepChild(c int, m serialize.Message) {
	r.clock++
	r.stamp[c] = r.clock
	switch m := m.(type) {
	case *serialize.Credit:
		r.addCredit(c, int(m.N))
	case *serialize.ResultBatch:
		r.addCredit(c, int(m.Credit))
		if len(m.Results) == 0 {
			return
		}
		if len(r.results) == 0 {
			r.results = m.Results[:len(m.Results):len(m.Results)]
			if r.resMsg == nil {
				r.resMsg = m
			}
			return
		}
		if need := len(r.results) + len(m.Results); need > cap(r.results) {
			// Grow once to the size of the last batch rather than by doubling.
			grown := make([]serialize.Result, len(r.results), max(need, r.lastBatch, 2*cap(r.results)))
			copy(grown, r.results)
			r.results = grown
		}
		r.results = append(r.results, m.Results...)
	case *serialize.Shutdown:
		if !r.acked[c] {
			r.acked[c] = true
			r.nacked++
			// A stopped child takes no more tasks: drop its credit from the
			// account. Its ring entry, if any, is skipped when popped.
			r.ledger.take(r.credit[c])
			r.credit[c] = 0
		}
	}
}

// addCredit records n more credit from child c.
func (r *Relay) addCredit(c, n int) {
	if n <= 0 || r.acked[c] {
		return
	}
	if !r.inRing[c] {
		r.pushRing(int32(c))
	}
	r.credit[c] += n
	r.ledger.grant(n)
}

func (r *Relay) pushRing(c int32) {
	r.ring[(r.head+r.ringLen)%len(r.ring)] = c
	r.ringLen++
	r.inRing[c] = true
}

// popRing returns the next child with credit, or -1.
func (r *Relay) popRing() int32 {
	for r.ringLen > 0 {
		c := r.ring[r.head]
		r.head = (r.head + 1) % len(r.ring)
		r.ringLen--
		r.inRing[c] = false
		if r.credit[c] > 0 {
			return c
		}
	}
	return -1
}

// dispatch hands tasks to the children with credit, one to each in turn, and
// returns the tasks no child has credit for. Every child gets one contiguous
// run of tasks, so the tasks are not copied.
//
// A trickle of tasks, fewer than the children with credit, goes instead to
// the children with the most credit left (the idlest), and among those to
// the one heard from last: it is awake, polling at its shortest interval,
// while the others may sleep. Single tasks in a row then meet a warm worker
// rather than each worker in turn, which costs a wake-up per task.
func (r *Relay) dispatch(tasks []serialize.Task) []serialize.Task {
	touched := r.touched[:0]
	given := 0
	trickle := len(tasks) < r.ringLen
	for given < len(tasks) {
		var c int32
		if trickle {
			c = r.idlest()
		} else {
			c = r.popRing()
		}
		if c < 0 {
			break
		}
		if r.cnt[c] == 0 {
			touched = append(touched, c)
		}
		r.cnt[c]++
		r.credit[c]--
		given++
		if !trickle && r.credit[c] > 0 {
			r.pushRing(c)
		}
	}
	off := 0
	for _, c := range touched {
		k := int(r.cnt[c])
		r.cnt[c] = 0
		run := tasks[off : off+k : off+k]
		off += k
		if len(r.outbuf[c]) == 0 {
			r.outbuf[c] = run
			r.dirty = append(r.dirty, c)
		} else {
			r.outbuf[c] = append(r.outbuf[c], run...)
		}
	}
	r.touched = touched[:0]
	return tasks[given:]
}

// idlest returns the child with the most credit, the last heard from among
// equals, or -1 when none has credit. It costs O(children) and leaves the
// ring alone: a child whose credit it spends to zero keeps a stale entry,
// which popRing skips.
func (r *Relay) idlest() int32 {
	best := int32(-1)
	for c, cr := range r.credit {
		if cr <= 0 {
			continue
		}
		if best < 0 || cr > r.credit[best] || (cr == r.credit[best] && r.stamp[c] > r.stamp[best]) {
			best = int32(c)
		}
	}
	return best
}

// Ready appends everything to send now to out and forgets it: tasks for the
// children, Shutdown for the children, results and credit for the parent,
// and, once every child has acknowledged Shutdown, the relay's own
// acknowledgement. The messages belong to the caller.
func (r *Relay) Ready(out []Envelope) []Envelope {
	if r.done {
		return out
	}
	if len(r.backlog) > 0 && r.ringLen > 0 {
		r.backlog = r.dispatch(r.backlog)
		if len(r.backlog) == 0 {
			r.backlog = nil // its front went to the children: never reuse it
		}
	}
	me := r.place.Rank
	for _, c := range r.dirty {
		out = appendTasks(out, me, r.place.Children[c], r.outbuf[c], r.cfg.MaxBatch, r.cfg.MaxBatchBytes)
		r.outbuf[c] = nil
	}
	r.dirty = r.dirty[:0]

	if r.shutdown != nil && !r.downSent {
		r.downSent = true
		for c, kid := range r.place.Children {
			if !r.acked[c] {
				out = append(out, Envelope{From: me, To: kid, Msg: r.shutdown})
			}
		}
	}

	out = appendUp(out, me, r.place.Parent, r.results, r.ledger.up, r.cfg.MaxBatch, r.cfg.MaxBatchBytes, r.resMsg)
	if len(r.results) > 0 {
		r.lastBatch = len(r.results)
	}
	r.results, r.resMsg, r.ledger.up = nil, nil, 0

	if r.shutdown != nil && r.nacked == len(r.place.Children) {
		out = append(out, Envelope{From: me, To: r.place.Parent, Msg: &serialize.Shutdown{Reason: r.shutdown.Reason}})
		r.done = true
		r.backlog = nil
	}
	return out
}

// Done reports whether the relay has shut down: its parent asked, every child
// acknowledged, and Ready has returned the relay's own acknowledgement.
func (r *Relay) Done() bool { return r.done }

// RelayStats is a snapshot of a relay's counters, for tests and monitoring.
type RelayStats struct {
	// Credit is the credit the children have granted and not yet used.
	Credit int
	// Backlog is the number of tasks received beyond credit and not yet
	// handed down.
	Backlog int
	// Acked is the number of children that acknowledged Shutdown.
	Acked int
}

// Stats returns the relay's counters. It costs O(children).
func (r *Relay) Stats() RelayStats {
	s := RelayStats{Backlog: len(r.backlog), Acked: r.nacked}
	for _, c := range r.credit {
		s.Credit += c
	}
	return s
}
