package link

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
)

// Defaults for the options of Listen and Dial.
const (
	DefaultHeartbeat        = time.Second      // a Heartbeat goes out after this long without any other frame
	DefaultPeerTimeout      = 30 * time.Second // no frame from the peer for this long breaks the link
	DefaultHandshakeTimeout = 5 * time.Second  // a whole handshake must finish within this
	DefaultMaxPending       = 64               // handshakes a Listener runs at once
)

// ErrPeerTimeout matches the error of a link on which the peer sent nothing,
// not even a heartbeat, for the peer timeout, or did not read what was sent
// to it for as long.
var ErrPeerTimeout = errors.New("link: peer timed out")

// closeLinger bounds how long Close waits to hand what was queued before it
// to the kernel.
const closeLinger = 2 * time.Second

// bufSize is the size of a link's read buffer; it matches the buffer of
// serialize.NewReader, which then reuses it rather than adding its own.
const bufSize = 64 << 10

// connOptions are the settings of an authenticated link.
type connOptions struct {
	heartbeat   time.Duration // < 0: never send heartbeats
	peerTimeout time.Duration // < 0: never time out
	maxFrame    int
	log         *slog.Logger
}

// deadlineReader reads from a net.Conn, pushing the read deadline to
// timeout from now before every read, so the read fails once nothing at all
// has arrived for timeout. A timeout of 0 leaves the deadline alone.
type deadlineReader struct {
	nc      net.Conn
	timeout time.Duration
}

func (r *deadlineReader) Read(p []byte) (int, error) {
	if r.timeout > 0 {
		if err := r.nc.SetReadDeadline(time.Now().Add(r.timeout)); err != nil {
			return 0, err
		}
	}
	return r.nc.Read(p)
}

// writeChunk bounds one write to the socket, so that the write deadline
// measures a peer that stops reading, not the size of a frame.
const writeChunk = 256 << 10

// deadlineWriter writes to the link's socket, in chunks of at most
// writeChunk, pushing the write deadline before each: to the peer timeout
// from now, or once Close was called to the end of its linger.
type deadlineWriter struct{ c *tcpConn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	c := w.c
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), writeChunk)]
		c.mu.Lock()
		var deadline time.Time
		switch {
		case c.closing:
			deadline = c.lingerUntil
		case c.opt.peerTimeout > 0:
			deadline = time.Now().Add(c.opt.peerTimeout)
		}
		err := c.nc.SetWriteDeadline(deadline)
		c.mu.Unlock()
		if err != nil {
			return written, err
		}
		n, err := c.nc.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// tcpConn is an authenticated link over TCP. One goroutine reads and decodes
// frames into a mailbox; another owns the serialize.Writer, encodes whatever
// Send queued and flushes it in one write. A Send that finds the link idle
// (nothing queued, nobody writing) writes its frame itself, without
// blocking, and leaves to the writer only what the kernel did not take: a
// lone message then skips the wake-up of the writer goroutine.
type tcpConn struct {
	nc     net.Conn
	remote string
	opt    connOptions
	in     *mailbox
	br     *bufio.Reader // under rd: tells whether more whole frames wait
	rd     *serialize.Reader
	wr     *serialize.Writer

	mu          sync.Mutex
	out         []serialize.Message // queued by Send, taken whole by the writer
	closing     bool                // Close was called: flush out, then end
	lingerUntil time.Time           // when closing: the deadline of the last writes
	err         error               // why the link ended; set once
	wake        chan struct{}       // wakes the writer; capacity 1
	done        chan struct{}       // closed when err is set
	// writing is set while the writer goroutine or a Send owns the
	// socket's write side; rest holds the tail of a frame that a Send's
	// non-blocking write left over, which the writer sends before
	// anything else.
	writing bool
	rest    []byte

	// The inline write path, owned by the holder of writing: raw is nil
	// when the connection offers no raw descriptor (TLS, say).
	raw     syscall.RawConn
	inCodec *serialize.Codec
	inFrame []byte

	wg sync.WaitGroup

	// A Session that adopts the link hooks its acknowledgements in: every
	// Heartbeat then carries ackOut() (the data messages received so far)
	// and goes out every heartbeat interval even under load, and ackIn
	// receives the peer's. beatNow asks the writer for a heartbeat at once.
	ackOut  atomic.Pointer[func() uint64]
	ackIn   atomic.Pointer[func(uint64)]
	beatNow atomic.Bool
}

// hookAcks makes the link carry a Session's acknowledgements and sends the
// first at once.
func (c *tcpConn) hookAcks(out func() uint64, in func(uint64)) {
	c.ackOut.Store(&out)
	c.ackIn.Store(&in)
	c.beatNow.Store(true)
	c.signal()
}

// newTCPConn starts the link's goroutines over an authenticated connection.
// br buffers lr, which reads nc, and may already hold the first frames.
func newTCPConn(nc net.Conn, lr *deadlineReader, br *bufio.Reader, opt connOptions) *tcpConn {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if opt.peerTimeout > 0 {
		lr.timeout = opt.peerTimeout
	}
	sopt := serialize.Options{MaxFrame: opt.maxFrame}
	c := &tcpConn{
		nc:     nc,
		remote: nc.RemoteAddr().String(),
		opt:    opt,
		in:     newMailbox(),
		br:     br,
		rd:     serialize.NewReader(br, sopt), // reuses br: it is large enough
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	c.wr = serialize.NewWriter(deadlineWriter{c}, sopt)
	if tc, ok := nc.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			c.raw = raw
			c.inCodec = serialize.NewCodec(sopt)
		}
	}
	c.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
	return c
}

// Send queues m for the peer and returns at once; the writer goroutine
// encodes it soon after. Send takes ownership of m: the caller must not
// change m, or anything it points to, after Send returns. Once the link is
// closed or broken Send fails with an error that matches ErrClosed (and the
// cause, such as ErrPeerTimeout). A message that cannot be encoded (one over
// the frame size limit, say) breaks the link, since dropping it would lose
// what it carries.
func (c *tcpConn) Send(m serialize.Message) error {
	if m == nil || serialize.New(m.Kind()) == nil {
		return fmt.Errorf("link: cannot send %T", m)
	}
	if v := reflect.ValueOf(m); v.Kind() == reflect.Pointer && v.IsNil() {
		return fmt.Errorf("link: cannot send a nil %T", m)
	}
	c.mu.Lock()
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return err
	case c.closing:
		c.mu.Unlock()
		return ErrClosed
	}
	if c.raw != nil && !c.writing && len(c.out) == 0 && c.rest == nil {
		// The link is idle: write the frame from here.
		c.writing = true
		c.mu.Unlock()
		done := c.writeInline(m)
		c.mu.Lock()
		c.writing = false
		// Whatever reached the writer meanwhile waits for this wake.
		more := len(c.out) > 0 || c.rest != nil || c.closing || c.beatNow.Load()
		if done || c.err != nil {
			c.mu.Unlock()
			if more {
				c.signal()
			}
			return nil
		}
	}
	// The writer takes the whole queue at once, so a wake is needed only
	// when this message starts a new one.
	first := len(c.out) == 0
	c.out = append(c.out, m)
	c.mu.Unlock()
	if first {
		c.signal()
	}
	return nil
}

// writeInline encodes m and writes it with one non-blocking write. It
// reports false when nothing was written (the socket's buffer is full, or
// m cannot be encoded): the caller then queues m for the writer, which
// blocks or reports the error as it should. What a short write leaves over
// goes to rest. The caller holds writing.
func (c *tcpConn) writeInline(m serialize.Message) bool {
	frame, err := c.inCodec.AppendFrame(c.inFrame[:0], m)
	if err != nil {
		return false
	}
	if cap(frame) <= 4*bufSize {
		c.inFrame = frame
	} else {
		c.inFrame = nil // do not keep a huge buffer for a rare message
	}
	n := 0
	// An error (the descriptor closed, say) leaves n at 0: the writer then
	// meets it again and reports it.
	_ = c.raw.Write(func(fd uintptr) bool {
		for n < len(frame) {
			k, err := syscall.Write(int(fd), frame[n:])
			if err == syscall.EINTR {
				continue
			}
			if k > 0 {
				n += k
			}
			if err != nil || k <= 0 {
				break
			}
		}
		return true // never wait for the socket here
	})
	if n == 0 {
		return false
	}
	if n < len(frame) {
		c.mu.Lock()
		c.rest = append([]byte(nil), frame[n:]...)
		c.mu.Unlock()
	}
	return true
}

// Recv returns the next message from the peer; heartbeats never surface.
// Messages that arrived before the link broke are delivered first; then Recv
// fails with an error that matches ErrClosed and, when there is one, its
// cause: ErrPeerTimeout when the peer sent nothing for the peer timeout, or
// the read error (io.EOF when the peer closed the connection).
func (c *tcpConn) Recv(ctx context.Context) (serialize.Message, error) {
	m, err := c.in.get(ctx)
	if errors.Is(err, ErrClosed) {
		return nil, c.cause()
	}
	return m, err
}

// Close hands what Send queued to the kernel (waiting at most a couple of
// seconds for a peer that does not read), closes the connection and waits
// for the link's goroutines to end. It is safe to call more than once.
func (c *tcpConn) Close() error {
	c.mu.Lock()
	if !c.closing && c.err == nil {
		c.closing = true
		c.lingerUntil = time.Now().Add(closeLinger)
		// Bound a write that may be under way; deadlineWriter sets the
		// same deadline for the writes still to come (both under mu).
		_ = c.nc.SetWriteDeadline(c.lingerUntil)
	}
	c.mu.Unlock()
	c.signal()
	c.wg.Wait()
	return nil
}

// RemoteAddr reports the peer's address.
func (c *tcpConn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

func (c *tcpConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *tcpConn) cause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return ErrClosed
	}
	return c.err
}

// fail ends the link with err (only the first error counts): it closes the
// socket, which stops both goroutines, and the mailbox, which lets Recv drain
// what is left and then report err.
func (c *tcpConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	clear(c.out)
	c.out = nil
	close(c.done)
	c.mu.Unlock()
	_ = c.nc.Close()
	c.in.close()
	if err != ErrClosed { // a plain ErrClosed is the local Close
		c.opt.log.Debug("link: connection ended", "remote", c.remote, "err", err)
	}
}

// maxReadBatch bounds how many decoded messages the reader holds before it
// hands them to the mailbox.
const maxReadBatch = 256

func (c *tcpConn) readLoop() {
	defer c.wg.Done()
	batch := make([]serialize.Message, 0, maxReadBatch)
	for {
		m, err := c.rd.Read()
		if err != nil {
			_ = c.in.putAll(batch) // what arrived before the end still counts
			c.fail(c.readError(err))
			return
		}
		if m.Kind() != serialize.KindHeartbeat {
			batch = append(batch, m)
		} else if in := c.ackIn.Load(); in != nil && m.(*serialize.Heartbeat).Seq > 0 {
			// Deliver what came before it first: the acknowledgement may
			// make the Session resend, and order must hold.
			if len(batch) > 0 {
				if c.in.putAll(batch) != nil {
					return
				}
				clear(batch)
				batch = batch[:0]
			}
			(*in)(m.(*serialize.Heartbeat).Seq - 1)
		} // else a heartbeat only refreshed the read deadline
		// Hand the messages over at once unless another whole frame is
		// already buffered: then decoding it cannot block, and one lock
		// and one wake-up serve them all.
		if len(batch) > 0 && (len(batch) == maxReadBatch || !c.frameBuffered()) {
			if c.in.putAll(batch) != nil {
				return // closed
			}
			clear(batch)
			batch = batch[:0]
		}
	}
}

// frameBuffered reports whether a whole frame waits in the read buffer.
func (c *tcpConn) frameBuffered() bool {
	have := c.br.Buffered()
	if have < 4 {
		return false
	}
	hdr, err := c.br.Peek(4) // cannot block: the bytes are buffered
	if err != nil {
		return false
	}
	return uint64(have-4) >= uint64(binary.BigEndian.Uint32(hdr))
}

func (c *tcpConn) readError(err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: nothing from %s for %v (%w)", ErrPeerTimeout, c.remote, c.opt.peerTimeout, ErrClosed)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w by the peer %s: %w", ErrClosed, c.remote, err)
	}
	return fmt.Errorf("%w: read from %s: %w", ErrClosed, c.remote, err)
}

func (c *tcpConn) writeError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %s did not read for %v (%w)", ErrPeerTimeout, c.remote, c.opt.peerTimeout, ErrClosed)
	}
	return fmt.Errorf("%w: write to %s: %w", ErrClosed, c.remote, err)
}

func (c *tcpConn) writeLoop() {
	defer c.wg.Done()
	var tick <-chan time.Time
	var timer *time.Timer
	if c.opt.heartbeat > 0 {
		timer = time.NewTimer(c.opt.heartbeat)
		defer timer.Stop()
		tick = timer.C
	}
	var (
		batch    []serialize.Message
		hb       serialize.Heartbeat
		lastSent = time.Now()
		lastBeat = time.Now()
	)
	for {
		beat := false
		select {
		case <-c.wake:
		case <-tick:
			// The timer is not reset on every flush (that would cost a
			// timer operation per batch under load); it checks instead.
			// With a Session's acknowledgements hooked in, a heartbeat goes
			// out every interval, busy or not.
			since := lastSent
			if c.ackOut.Load() != nil {
				since = lastBeat
			}
			if idle := time.Since(since); idle < c.opt.heartbeat {
				timer.Reset(c.opt.heartbeat - idle)
				continue
			}
			beat = true
			timer.Reset(c.opt.heartbeat)
		case <-c.done:
			return
		}

		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		if c.writing {
			// A Send writes inline; it wakes the writer when it is done
			// if anything waits, a heartbeat due now included.
			if beat {
				c.beatNow.Store(true)
			}
			c.mu.Unlock()
			continue
		}
		batch, c.out = c.out, batch[:0]
		rest := c.rest
		c.rest = nil
		closing := c.closing
		if c.beatNow.Swap(false) {
			beat = true
		}
		if len(batch) == 0 && rest == nil && !beat && !closing {
			c.mu.Unlock()
			continue
		}
		c.writing = true
		c.mu.Unlock()
		if rest != nil {
			if _, err := (deadlineWriter{c}).Write(rest); err != nil {
				c.fail(c.writeError(err))
				return
			}
		}
		for i, m := range batch {
			batch[i] = nil
			if err := c.wr.Write(m); err != nil {
				if !isNetError(err) { // an encoding error: nothing was written
					err = fmt.Errorf("%w: cannot send %v to %s: %w", ErrClosed, m.Kind(), c.remote, err)
					c.opt.log.Error("link: message cannot be sent; closing the link", "remote", c.remote, "err", err)
				} else {
					err = c.writeError(err)
				}
				c.fail(err)
				return
			}
		}
		ackOut := c.ackOut.Load()
		if beat && (len(batch) == 0 || ackOut != nil) {
			// Seq 0 acknowledges nothing; n+1 acknowledges n data
			// messages received.
			hb.Seq = 0
			if ackOut != nil {
				hb.Seq = (*ackOut)() + 1
			}
			hb.Time = time.Now().UnixNano()
			lastBeat = time.Now()
			if err := c.wr.Write(&hb); err != nil {
				c.fail(c.writeError(err))
				return
			}
		}
		if err := c.wr.Flush(); err != nil {
			c.fail(c.writeError(err))
			return
		}
		c.mu.Lock()
		c.writing = false
		c.mu.Unlock()
		lastSent = time.Now()
		if closing {
			// Sends after Close are refused, so this batch was the last.
			if tc, ok := c.nc.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			c.fail(ErrClosed)
			return
		}
	}
}

// isNetError tells an I/O error of the connection from an encoding error.
func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.ErrShortWrite) || errors.Is(err, os.ErrDeadlineExceeded)
}
