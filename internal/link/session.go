package link

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
)

// Session is a Conn that outlives the TCP connection under it: when the
// connection breaks, a new one (dialled again by rank 0, accepted again by
// the front end, with the token proved again) can take its place within a
// grace period, and no message is lost or delivered twice.
//
// Each side counts the data messages (every kind but Heartbeat) it has
// received, and every Heartbeat carries that count: an acknowledgement. A
// side keeps what it sent until the peer acknowledges it. On a new
// connection both sides first send their count; each then sends again what
// the other has not acknowledged, in order, before anything new. Heartbeats
// go out every heartbeat interval on a Session's connection, so what is kept
// is about one interval of traffic.
//
// A Session has one reader: Recv must not be called concurrently.
type Session struct {
	log   *slog.Logger
	name  string
	grace time.Duration

	mu      sync.Mutex
	cur     *tcpConn // nil while disconnected
	gen     int      // counts the connections adopted
	changed chan struct{}
	// broke is signalled when the connection breaks, for a redialer.
	broke chan struct{}

	sent     uint64              // data messages sent
	acked    uint64              // data messages the peer acknowledged
	unacked  []serialize.Message // messages acked+1 … sent
	recv     uint64              // data messages received
	resuming bool                // waiting for the peer's count on cur
	closed   bool
	lost     error // set when the grace passed without a new connection
	timer    *time.Timer
}

// NewSession wraps c, a Conn from Dial or Listener.Accept. grace is how long
// the Session waits for a new connection (Resume) after c breaks before it
// fails for good; 0 means it does not wait. name labels its log lines.
func NewSession(c Conn, grace time.Duration, name string, log *slog.Logger) (*Session, error) {
	tc, ok := c.(*tcpConn)
	if !ok {
		return nil, fmt.Errorf("link: a Session needs a TCP link, not %T", c)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Session{log: log, name: name, grace: grace, changed: make(chan struct{}), broke: make(chan struct{}, 1)}
	s.mu.Lock()
	s.adopt(tc, false)
	s.mu.Unlock()
	return s, nil
}

// adopt makes tc the current connection. Called with s.mu held.
func (s *Session) adopt(tc *tcpConn, resuming bool) {
	s.gen++
	gen := s.gen
	s.cur = tc
	s.resuming = resuming
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	close(s.changed)
	s.changed = make(chan struct{})
	tc.hookAcks(func() uint64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.recv
	}, func(n uint64) { s.onAck(gen, n) })
}

// Send queues m for the peer; see Conn. While the Session waits for a new
// connection, messages are kept and go out on it.
func (s *Session) Send(m serialize.Message) error {
	if m == nil || m.Kind() == serialize.KindHeartbeat {
		return fmt.Errorf("link: a Session sends no %T", m)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.lost != nil:
		return s.lost
	}
	s.sent++
	s.unacked = append(s.unacked, m)
	if s.cur != nil && !s.resuming {
		_ = s.cur.Send(m) // a failure shows in Recv, which starts the grace
	}
	return nil
}

// Recv returns the next message from the peer; see Conn. It waits through a
// broken connection for the grace period.
func (s *Session) Recv(ctx context.Context) (serialize.Message, error) {
	for {
		s.mu.Lock()
		c, gen, changed := s.cur, s.gen, s.changed
		closed, lost := s.closed, s.lost
		s.mu.Unlock()
		switch {
		case lost != nil:
			return nil, lost
		case closed:
			return nil, ErrClosed
		case c == nil:
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		m, err := c.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.broken(gen, err)
			continue
		}
		s.mu.Lock()
		if gen != s.gen {
			// From a connection replaced meanwhile: the peer was told a
			// count without it and sends it again on the new one.
			s.mu.Unlock()
			continue
		}
		s.recv++
		s.mu.Unlock()
		return m, nil
	}
}

// onAck records the peer's count of messages received on connection gen,
// and on a new connection sends again what the peer has not got.
func (s *Session) onAck(gen int, n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.cur == nil {
		return
	}
	if n > s.acked && n <= s.sent {
		drop := int(n - s.acked)
		clear(s.unacked[:drop])
		s.unacked = s.unacked[drop:]
		s.acked = n
		if len(s.unacked) == 0 {
			s.unacked = nil // let the old backing array go
		}
	}
	if s.resuming {
		s.resuming = false
		for _, m := range s.unacked {
			_ = s.cur.Send(m)
		}
		s.log.Info("link: session resumed", "session", s.name, "resent", len(s.unacked))
	}
}

// broken records that connection gen ended with err and starts the grace.
func (s *Session) broken(gen int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.cur == nil || s.closed || s.lost != nil {
		return
	}
	old := s.cur
	s.cur = nil
	go old.Close()
	if s.grace <= 0 {
		s.fail(err)
		return
	}
	s.log.Warn("link: connection lost; waiting for it to come back", "session", s.name, "err", err, "grace", s.grace)
	s.timer = time.AfterFunc(s.grace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cur == nil && s.gen == gen && !s.closed && s.lost == nil {
			s.fail(fmt.Errorf("%w (no new connection within %v)", err, s.grace))
		}
	})
	select {
	case s.broke <- struct{}{}:
	default:
	}
}

// fail ends the Session for good. Called with s.mu held.
func (s *Session) fail(err error) {
	if !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	s.lost = err
	s.unacked = nil
	close(s.changed)
	s.changed = make(chan struct{})
}

// Broke is signalled each time the connection breaks and the grace starts:
// rank 0 dials again then.
func (s *Session) Broke() <-chan struct{} { return s.broke }

// Connected reports whether the Session has a connection now.
func (s *Session) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur != nil
}

// Resume makes c, a new connection to the same peer, take the broken one's
// place (or the one still thought alive, which is closed). It fails when
// the Session is closed or its grace has passed.
func (s *Session) Resume(c Conn) error {
	tc, ok := c.(*tcpConn)
	if !ok {
		return fmt.Errorf("link: a Session needs a TCP link, not %T", c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.lost != nil:
		return s.lost
	}
	if s.cur != nil {
		go s.cur.Close()
	}
	s.adopt(tc, true)
	return nil
}

// Close closes the Session: what was sent goes out on the connection, if
// there is one, and Recv fails with ErrClosed.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	c := s.cur
	if s.timer != nil {
		s.timer.Stop()
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	return nil
}
