// Package link is the front end ↔ rank 0 link, both ends: a TCP connection
// that speaks only after the block proves it holds the run's token
// (challenge–response, both ways), with heartbeats, and an in-memory pipe for
// tests and the no-MPI local mode. Both carry serialize messages behind the
// one small Conn interface.
package link

import (
	"context"
	"errors"
	"sync"

	"github.com/rankfarm/rankfarm/serialize"
)

// Environment variables through which a launcher tells rank 0 where its front
// end is. The token itself never travels on a command line: only the path of
// a 0600 file holding it.
const (
	EnvAddr      = "RANKFARM_ADDR"       // host:port the front end listens on
	EnvTokenFile = "RANKFARM_TOKEN_FILE" // path of the file that holds the run's token
	EnvBlock     = "RANKFARM_BLOCK"      // the block's id, echoed in Hello
)

// ErrClosed is returned by a Conn that was closed, locally or by the peer.
var ErrClosed = errors.New("link: connection closed")

// Conn is one end of a link. Send may be called from many goroutines; Recv
// from one at a time. Heartbeats are the Conn's own business: Recv never
// returns one.
type Conn interface {
	// Send queues m for the peer. Frames are batched: many sends share one
	// write. It fails once the Conn is closed or broken.
	Send(m serialize.Message) error
	// Recv waits for the next message from the peer.
	Recv(ctx context.Context) (serialize.Message, error)
	// Close ends the link; the peer's Recv then fails.
	Close() error
}

// Pipe returns the two ends of an in-memory link. Messages are passed by
// pointer, not encoded: the receiver must not keep a message the sender
// still changes (senders here never change a message after Send).
func Pipe() (Conn, Conn) {
	a := &pipeEnd{box: newMailbox()}
	b := &pipeEnd{box: newMailbox()}
	a.peer, b.peer = b, a
	return a, b
}

type pipeEnd struct {
	box  *mailbox
	peer *pipeEnd
}

func (p *pipeEnd) Send(m serialize.Message) error { return p.peer.box.put(m) }

func (p *pipeEnd) Recv(ctx context.Context) (serialize.Message, error) { return p.box.get(ctx) }

func (p *pipeEnd) Close() error {
	p.box.close()
	p.peer.box.close()
	return nil
}

// compactAfter is how many consumed slots a mailbox tolerates at the head of
// its queue before it moves the rest to the front.
const compactAfter = 1024

// mailbox is an unbounded FIFO of messages; put never blocks.
type mailbox struct {
	mu     sync.Mutex
	q      []serialize.Message
	head   int
	closed bool
	wake   chan struct{}
}

func newMailbox() *mailbox { return &mailbox{wake: make(chan struct{}, 1)} }

func (b *mailbox) put(m serialize.Message) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.q = append(b.q, m)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

// putAll appends ms in order, under one lock and with one wake-up.
func (b *mailbox) putAll(ms []serialize.Message) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.q = append(b.q, ms...)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

func (b *mailbox) get(ctx context.Context) (serialize.Message, error) {
	for {
		b.mu.Lock()
		if b.head < len(b.q) {
			m := b.q[b.head]
			b.q[b.head] = nil
			b.head++
			switch {
			case b.head == len(b.q):
				b.q, b.head = b.q[:0], 0
			case b.head >= compactAfter && 2*b.head >= len(b.q):
				// A consumer that never quite catches up would otherwise
				// grow q with every message ever queued: move the live
				// tail to the front once the consumed head is most of it.
				n := copy(b.q, b.q[b.head:])
				clear(b.q[n:])
				b.q, b.head = b.q[:n], 0
			}
			b.mu.Unlock()
			return m, nil
		}
		closed := b.closed
		b.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		select {
		case <-b.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (b *mailbox) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}
