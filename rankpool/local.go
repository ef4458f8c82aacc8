package rankpool

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rankfarm/rankfarm/serialize"
)

// ErrLocalClosed reports a send through a Local tree that was closed.
var ErrLocalClosed = errors.New("rankpool: local transport closed")

// mailboxBuffer is the channel buffer of a mailbox: messages go straight into
// it while it has room, and into an unbounded queue behind it otherwise.
const mailboxBuffer = 64

// Local is the in-process transport: a whole tree of ranks in one process,
// each rank with an unbounded mailbox, so a send never blocks and no order of
// sends can deadlock. It is safe for concurrent use.
//
// A mailbox runs a helper goroutine only while messages wait behind its full
// channel, so a tree that shut down cleanly leaves no goroutines behind;
// Close stops them in any case.
type Local struct {
	size  int
	boxes []*mailbox // one per rank, then the Upstream side
	ranks []localRank
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// NewLocal returns an in-process tree of size ranks.
func NewLocal(size int) *Local {
	l := &Local{size: size, done: make(chan struct{})}
	l.boxes = make([]*mailbox, size+1)
	l.ranks = make([]localRank, size)
	for i := range l.boxes {
		l.boxes[i] = &mailbox{ch: make(chan Envelope, mailboxBuffer), done: l.done, wg: &l.wg}
	}
	for r := range l.ranks {
		l.ranks[r] = localRank{l: l, rank: r}
	}
	return l
}

// Size returns the number of ranks in the tree.
func (l *Local) Size() int { return l.size }

// Rank returns the transport of rank r. A send to Upstream from rank 0 goes to
// the Upstream side (UpInbox).
func (l *Local) Rank(r int) Transport { return &l.ranks[r] }

// UpSend delivers m to rank 0 as coming From Upstream. After Close it drops
// m.
func (l *Local) UpSend(m serialize.Message) {
	_ = l.boxes[0].put(Envelope{From: Upstream, To: 0, Msg: m})
}

// UpInbox delivers what rank 0 sends Upstream.
func (l *Local) UpInbox() <-chan Envelope { return l.boxes[l.size].ch }

// Close stops every mailbox: later sends fail with ErrLocalClosed and
// undelivered messages are dropped. It is safe to call more than once.
func (l *Local) Close() {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
}

// localRank is the Transport of one rank of a Local tree.
type localRank struct {
	l    *Local
	rank int
}

// Send implements Transport.
func (t *localRank) Send(to int, m serialize.Message) error {
	switch {
	case to == Upstream && t.rank == 0:
		to = t.l.size
	case to < 0 || to >= t.l.size:
		return fmt.Errorf("rankpool: local rank %d: no rank %d to send to", t.rank, to)
	}
	toRank := to
	if to == t.l.size {
		toRank = Upstream
	}
	return t.l.boxes[to].put(Envelope{From: t.rank, To: toRank, Msg: m})
}

// Inbox implements Transport.
func (t *localRank) Inbox() <-chan Envelope { return t.l.boxes[t.rank].ch }

// mailbox is an unbounded FIFO in front of a channel. While no pump runs,
// put sends straight into the channel's buffer; when that is full it queues
// and starts a pump goroutine, which moves the queue into the channel and
// ends when the queue is empty. Every put goes to the queue while a pump
// runs, so the order is kept.
type mailbox struct {
	ch   chan Envelope
	done <-chan struct{}
	wg   *sync.WaitGroup

	mu      sync.Mutex
	q       []Envelope
	head    int
	pumping bool
}

func (m *mailbox) put(e Envelope) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return ErrLocalClosed
	default:
	}
	if !m.pumping {
		select {
		case m.ch <- e:
			return nil
		default:
		}
		m.pumping = true
		m.wg.Add(1)
		go m.pump()
	}
	m.q = append(m.q, e)
	return nil
}

func (m *mailbox) pump() {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		if m.head == len(m.q) {
			clear(m.q)
			m.q, m.head, m.pumping = m.q[:0], 0, false
			m.mu.Unlock()
			return
		}
		e := m.q[m.head]
		m.q[m.head] = Envelope{}
		m.head++
		if m.head >= 1024 && m.head*2 >= len(m.q) { // compact a long-lived queue
			n := copy(m.q, m.q[m.head:])
			clear(m.q[n:])
			m.q, m.head = m.q[:n], 0
		}
		m.mu.Unlock()
		select {
		case m.ch <- e:
		case <-m.done:
			return
		}
	}
}

// RunLocal runs every rank of l as a goroutine, each placed by Layout with
// nodeOf and fanout, and returns when all ranks have returned: nil after a
// clean shutdown, the first rank's error otherwise (a failing rank stops the
// others). The caller drives the tree through l.UpSend and l.UpInbox, and
// may Close l once it has read what it needs.
func RunLocal(ctx context.Context, l *Local, nodeOf []int, fanout int, run Runner, cfg Config) error {
	topo, err := NewTopology(l.size, nodeOf, fanout)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, l.size)
	var wg sync.WaitGroup
	for r := range l.size {
		wg.Go(func() {
			p := topo.Place(r)
			if err := Run(ctx, p, l.Rank(r), run, cfg); err != nil {
				errs[r] = err
				cancel()
			}
		})
	}
	wg.Wait()
	// A rank that failed on its own is the news; the others only followed.
	var first error
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			first = err
			break
		}
	}
	if first != nil {
		return first
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
