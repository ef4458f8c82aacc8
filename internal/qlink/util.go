package qlink

import (
	"context"
	"sync"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
)

// backoff is the adaptive poll interval. Right after a poll that found
// work the next poll follows at once; after that the wait grows with the
// time since work was last seen (an eighth of it), from min up to max. So a
// busy queue is polled about every min, while an idle one backs off to max
// and the polling adds at most about an eighth to the latency of work that
// arrives after a quiet spell.
type backoff struct {
	min, max time.Duration
	last     time.Time // when work was last seen
}

// backoffShift sets the wait to 1/2^backoffShift of the quiet time.
const backoffShift = 3

// active records that work was seen at now.
func (b *backoff) active(now time.Time) { b.last = now }

// next returns how long to wait after a poll at now found nothing.
func (b *backoff) next(now time.Time) time.Duration {
	return min(max(now.Sub(b.last)>>backoffShift, b.min), b.max)
}

// sleeper waits with one reusable timer.
type sleeper struct{ t *time.Timer }

func newSleeper() *sleeper {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &sleeper{t: t}
}

// wait sleeps for d, or until wake or done fires; it reports whether wake
// fired.
func (s *sleeper) wait(d time.Duration, wake, done <-chan struct{}) (woken bool) {
	s.t.Reset(d)
	defer s.t.Stop()
	select {
	case <-s.t.C:
		return false
	case <-wake:
		return true
	case <-done:
		return false
	}
}

// mailbox is an unbounded FIFO of messages; put never blocks. get delivers
// what was put before close, then fails with the close's error.
type mailbox struct {
	mu     sync.Mutex
	q      []serialize.Message
	head   int
	closed bool
	wake   chan struct{}
}

func newMailbox() *mailbox { return &mailbox{wake: make(chan struct{}, 1)} }

func (b *mailbox) putAll(ms ...serialize.Message) {
	if len(ms) == 0 {
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.q = append(b.q, ms...)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// get returns the next message; ok is false once the mailbox is closed and
// empty.
func (b *mailbox) get(ctx context.Context) (m serialize.Message, ok bool, err error) {
	for {
		b.mu.Lock()
		if b.head < len(b.q) {
			m := b.q[b.head]
			b.q[b.head] = nil
			b.head++
			if b.head == len(b.q) {
				b.q, b.head = b.q[:0], 0
			} else if b.head >= 1024 && 2*b.head >= len(b.q) {
				n := copy(b.q, b.q[b.head:])
				clear(b.q[n:])
				b.q, b.head = b.q[:n], 0
			}
			b.mu.Unlock()
			return m, true, nil
		}
		closed := b.closed
		b.mu.Unlock()
		if closed {
			return nil, false, nil
		}
		select {
		case <-b.wake:
		case <-ctx.Done():
			return nil, false, ctx.Err()
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

// signal wakes a goroutine waiting on c (capacity 1) without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
