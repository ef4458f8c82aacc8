package link

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
)

// NonceSize is the length in bytes of the nonces of Challenge and Hello.
const NonceSize = 32

// handshakeMaxFrame bounds every frame of the handshake: nothing the peer
// sends before it is authenticated may be large.
const handshakeMaxFrame = 64 << 10

// Labels that keep the two proofs apart, so neither side can be made to
// compute the other's.
const (
	labelHello   = "rankfarm-hello"
	labelWelcome = "rankfarm-welcome"
)

// authReason is the reason of the Reject a front end sends for a wrong proof.
const authReason = "authentication failed: the proof does not match the run's token"

// maxReason bounds the length of a peer's reject reason kept in an error.
const maxReason = 512

// ErrAuth matches a handshake that failed because a proof of the token was
// wrong: the block's (seen by the Listener, and by Dial through the front
// end's Reject) or the front end's (seen by Dial).
var ErrAuth = errors.New("link: authentication failed")

// VersionError reports a peer that speaks another protocol version, whether
// its frames or its Challenge or Hello said so.
type VersionError struct {
	Peer, Local int
	frame       *serialize.VersionError // the frame decoder's error, if it was the frame's version
}

// Error implements error.
func (e *VersionError) Error() string {
	return fmt.Sprintf("link: the peer speaks protocol version %d, this build speaks version %d", e.Peer, e.Local)
}

// Unwrap returns the serialize.VersionError when the frame's version byte
// was the one that differed.
func (e *VersionError) Unwrap() error {
	if e.frame == nil {
		return nil
	}
	return e.frame
}

// RejectError reports that the peer refused the handshake with a Reject.
// It matches ErrAuth when the front end refused the block's proof.
type RejectError struct {
	Reason string // as the peer gave it, cut to 512 bytes
}

// Error implements error.
func (e *RejectError) Error() string { return "link: refused by the peer: " + e.Reason }

// Is reports whether the rejection was for a wrong proof of the token.
func (e *RejectError) Is(target error) bool { return target == ErrAuth && e.Reason == authReason }

func newRejectError(reason string) *RejectError {
	if len(reason) > maxReason {
		reason = reason[:maxReason] + "…"
	}
	return &RejectError{Reason: reason}
}

// proof computes HMAC-SHA256(token, nonce ‖ label ‖ block).
func proof(token, nonce []byte, label, block string) []byte {
	m := hmac.New(sha256.New, token)
	m.Write(nonce)
	m.Write([]byte(label))
	m.Write([]byte(block))
	return m.Sum(nil)
}

func newNonce() ([]byte, error) {
	n := make([]byte, NonceSize)
	if _, err := rand.Read(n); err != nil {
		return nil, fmt.Errorf("link: nonce: %w", err)
	}
	return n, nil
}

// writeFrame writes one handshake frame straight to nc.
func writeFrame(nc net.Conn, m serialize.Message) error {
	b, err := serialize.NewCodec(serialize.Options{MaxFrame: handshakeMaxFrame}).AppendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = nc.Write(b)
	return err
}

// versionReason is the text of the Reject for a peer of another version.
func versionReason(peer int, side string) string {
	return fmt.Sprintf("protocol version %d is not supported: this %s speaks version %d", peer, side, serialize.ProtocolVersion)
}

// handshakeReadError classifies an error reading a handshake frame: the reason
// to send the peer in a Reject ("" for none) and the error to report.
func handshakeReadError(err error, timeout time.Duration, side string) (string, error) {
	var sv *serialize.VersionError
	switch {
	case errors.As(err, &sv):
		return versionReason(int(sv.Got), side), &VersionError{Peer: int(sv.Got), Local: int(sv.Want), frame: sv}
	case errors.Is(err, serialize.ErrFrameTooLarge):
		return fmt.Sprintf("handshake frame too large (limit %d bytes)", handshakeMaxFrame), fmt.Errorf("handshake frame too large: %w", err)
	case errors.Is(err, serialize.ErrTruncated), errors.Is(err, serialize.ErrUnknownKind),
		errors.Is(err, serialize.ErrUnknownCodec), errors.Is(err, serialize.ErrCorrupt):
		return "malformed handshake frame", fmt.Errorf("malformed handshake frame: %w", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "", fmt.Errorf("handshake timed out after %v: %w", timeout, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "", fmt.Errorf("connection closed during the handshake: %w", err)
	}
	return "", fmt.Errorf("handshake read: %w", err)
}

// ListenOptions configure a Listener. Zero durations and sizes mean the
// defaults.
type ListenOptions struct {
	// Token is the run's secret; a block must prove it holds it. Required.
	Token []byte
	// Run is the run's id, sent to each block in Welcome.
	Run string
	// Heartbeat is how long an accepted link may stay silent before it sends
	// a Heartbeat (default 1 s; negative: never).
	Heartbeat time.Duration
	// PeerTimeout breaks an accepted link on which the block sent nothing,
	// heartbeats included, for this long (default 30 s; negative: never).
	PeerTimeout time.Duration
	// HandshakeTimeout bounds a whole handshake (default 5 s).
	HandshakeTimeout time.Duration
	// MaxPending bounds the connections that are mid-handshake (default 64);
	// one more is closed at once.
	MaxPending int
	// MaxFrame bounds a frame after the handshake (default
	// serialize.DefaultMaxFrame); both ends should agree on it.
	MaxFrame int
	// Logger receives a line for every refused connection (default
	// slog.Default()).
	Logger *slog.Logger
	// TLS, when set, makes the Listener speak TLS (see NewTLSIdentity); the
	// token handshake then runs inside it.
	TLS *tls.Config
}

// Listener is the front end's end of the TCP link: it accepts connections,
// runs the handshake on each, and hands out the links of blocks that proved
// they hold the token. A connection that fails the handshake is logged and
// closed; the Listener goes on serving.
type Listener struct {
	ln      net.Listener
	opt     ListenOptions
	log     *slog.Logger
	ctx     context.Context // done once Close is called
	cancel  context.CancelFunc
	pending chan struct{} // one token per handshake under way
	ready   chan accepted // authenticated links waiting for Accept
	wg      sync.WaitGroup
	once    sync.Once
	err     error
}

type accepted struct {
	conn  *tcpConn
	hello *serialize.Hello
}

// Listen starts a Listener on addr (host:port; port 0 picks a free one). ctx
// bounds only the setting up; the Listener lives until Close.
func Listen(ctx context.Context, addr string, opt ListenOptions) (*Listener, error) {
	if len(opt.Token) == 0 {
		return nil, errors.New("link: listen: empty token")
	}
	opt.Token = bytes.Clone(opt.Token)
	if opt.Heartbeat == 0 {
		opt.Heartbeat = DefaultHeartbeat
	}
	if opt.PeerTimeout == 0 {
		opt.PeerTimeout = DefaultPeerTimeout
	}
	if opt.HandshakeTimeout <= 0 {
		opt.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opt.MaxPending <= 0 {
		opt.MaxPending = DefaultMaxPending
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("link: listen on %s: %w", addr, err)
	}
	if opt.TLS != nil {
		ln = tls.NewListener(ln, opt.TLS)
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		ln:      ln,
		opt:     opt,
		log:     opt.Logger.With("listener", ln.Addr().String()),
		ctx:     lctx,
		cancel:  cancel,
		pending: make(chan struct{}, opt.MaxPending),
		ready:   make(chan accepted),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr reports the address the Listener listens on, as host:port.
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Accept waits for the next block that completes the handshake and returns
// its link and its Hello. The link belongs to the caller, who must Close it.
// Accept fails with ErrClosed once the Listener is closed.
func (l *Listener) Accept(ctx context.Context) (Conn, *serialize.Hello, error) {
	select {
	case a := <-l.ready:
		return a.conn, a.hello, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-l.ctx.Done():
		return nil, nil, ErrClosed
	}
}

// Close stops listening, ends the handshakes under way and closes the
// authenticated links that no Accept took, then waits for the Listener's
// goroutines. Links already returned by Accept stay open.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.cancel()
		l.err = l.ln.Close()
		l.wg.Wait()
	})
	return l.err
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Most likely out of file descriptors: wait a little, the way
			// net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Error("link: accept failed; retrying", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		select {
		case l.pending <- struct{}{}:
		default:
			l.log.Warn("link: refused a connection", "remote", nc.RemoteAddr().String(),
				"reason", fmt.Sprintf("too many handshakes under way (limit %d)", l.opt.MaxPending))
			_ = nc.Close()
			continue
		}
		l.wg.Add(1)
		go l.serve(nc)
	}
}

// serve runs the handshake on nc and hands an authenticated link to Accept.
func (l *Listener) serve(nc net.Conn) {
	defer l.wg.Done()
	remote := nc.RemoteAddr().String()
	c, hello, err := l.handshake(nc)
	<-l.pending
	if err != nil {
		_ = nc.Close()
		l.log.Warn("link: refused a connection", "remote", remote, "reason", err.Error())
		return
	}
	l.log.Info("link: block connected", "remote", remote, "block", hello.Block,
		"ranks", hello.Ranks, "workers", hello.Workers, "host", hello.Host, "pid", hello.PID)
	select {
	case l.ready <- accepted{conn: c, hello: hello}:
	case <-l.ctx.Done():
		_ = c.Close()
	}
}

// handshake runs the front end's side of the handshake. On failure it has
// sent the peer a Reject where one makes sense; the caller closes nc.
func (l *Listener) handshake(nc net.Conn) (*tcpConn, *serialize.Hello, error) {
	if err := nc.SetDeadline(time.Now().Add(l.opt.HandshakeTimeout)); err != nil {
		return nil, nil, err
	}
	// Close ends a handshake under way by moving its deadline to the past.
	stop := context.AfterFunc(l.ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	reject := func(reason string, err error) (*tcpConn, *serialize.Hello, error) {
		if reason != "" {
			_ = writeFrame(nc, &serialize.Reject{Reason: reason})
		}
		return nil, nil, err
	}
	nonce, err := newNonce()
	if err != nil {
		return nil, nil, err
	}
	if err := writeFrame(nc, &serialize.Challenge{Version: serialize.ProtocolVersion, Nonce: nonce}); err != nil {
		return nil, nil, fmt.Errorf("send Challenge: %w", err)
	}
	lr := &deadlineReader{nc: nc}
	br := bufio.NewReaderSize(lr, bufSize)
	m, err := serialize.NewReader(br, serialize.Options{MaxFrame: handshakeMaxFrame}).Read()
	if err != nil {
		if l.ctx.Err() != nil {
			return nil, nil, fmt.Errorf("listener closed during the handshake: %w", ErrClosed)
		}
		reason, err := handshakeReadError(err, l.opt.HandshakeTimeout, "front end")
		return reject(reason, err)
	}
	var h *serialize.Hello
	switch m := m.(type) {
	case *serialize.Hello:
		h = m
	case *serialize.Reject:
		return nil, nil, fmt.Errorf("the peer refused the Challenge: %w", newRejectError(m.Reason))
	default:
		return reject("expected Hello, got "+m.Kind().String(), fmt.Errorf("expected Hello, got %v", m.Kind()))
	}
	if h.Version != serialize.ProtocolVersion {
		return reject(versionReason(int(h.Version), "front end"), &VersionError{Peer: int(h.Version), Local: serialize.ProtocolVersion})
	}
	if len(h.Nonce) != NonceSize {
		return reject(fmt.Sprintf("malformed Hello: the nonce must be %d bytes", NonceSize),
			fmt.Errorf("malformed Hello: a nonce of %d bytes, want %d", len(h.Nonce), NonceSize))
	}
	if !hmac.Equal(h.Proof, proof(l.opt.Token, nonce, labelHello, h.Block)) {
		return reject(authReason, fmt.Errorf("%w: block %q sent a wrong proof of the token", ErrAuth, h.Block))
	}
	welcome := &serialize.Welcome{Proof: proof(l.opt.Token, h.Nonce, labelWelcome, h.Block), Run: l.opt.Run}
	if err := writeFrame(nc, welcome); err != nil {
		return nil, nil, fmt.Errorf("send Welcome: %w", err)
	}
	if !stop() {
		return nil, nil, fmt.Errorf("listener closed during the handshake: %w", ErrClosed)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, nil, err
	}
	c := newTCPConn(nc, lr, br, connOptions{
		heartbeat:   l.opt.Heartbeat,
		peerTimeout: l.opt.PeerTimeout,
		maxFrame:    l.opt.MaxFrame,
		log:         l.opt.Logger,
	})
	return c, h, nil
}

// DialOptions configure Dial. Zero durations and sizes mean the defaults
// (those of ListenOptions).
type DialOptions struct {
	// Token is the run's secret. Required.
	Token []byte
	// Hello describes the block: Block, Ranks, Workers, Host and PID. Dial
	// fills in Version, Proof and Nonce.
	Hello serialize.Hello
	// Heartbeat, PeerTimeout and HandshakeTimeout: as in ListenOptions.
	Heartbeat, PeerTimeout, HandshakeTimeout time.Duration
	// MaxFrame bounds a frame after the handshake; both ends should agree.
	MaxFrame int
	// Logger receives the link's debug lines (default slog.Default()).
	Logger *slog.Logger
	// TLSFingerprint, when set, makes Dial speak TLS and accept only the
	// front end certificate with this SHA-256 fingerprint.
	TLSFingerprint []byte
}

// Dial connects rank 0 to the front end at addr and runs the handshake: it
// proves the token, and checks that the front end proves it too. ctx bounds
// the connection and the handshake (which HandshakeTimeout bounds as well);
// the link it returns outlives ctx. Errors match ErrAuth for a wrong proof
// either way, *VersionError for a front end of another protocol version and
// *RejectError for any other refusal.
func Dial(ctx context.Context, addr string, opt DialOptions) (Conn, *serialize.Welcome, error) {
	if len(opt.Token) == 0 {
		return nil, nil, errors.New("link: dial: empty token")
	}
	if opt.Heartbeat == 0 {
		opt.Heartbeat = DefaultHeartbeat
	}
	if opt.PeerTimeout == 0 {
		opt.PeerTimeout = DefaultPeerTimeout
	}
	if opt.HandshakeTimeout <= 0 {
		opt.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("link: dial %s: %w", addr, err)
	}
	if len(opt.TLSFingerprint) > 0 {
		nc = tls.Client(nc, clientTLS(opt.TLSFingerprint))
	}
	c, w, err := dialHandshake(ctx, nc, &opt)
	if err != nil {
		_ = nc.Close()
		return nil, nil, fmt.Errorf("link: handshake with %s: %w", addr, err)
	}
	opt.Logger.Debug("link: connected to the front end", "remote", addr, "run", w.Run)
	return c, w, nil
}

// dialHandshake runs rank 0's side of the handshake. On failure it has sent
// the peer a Reject where one makes sense; the caller closes nc.
func dialHandshake(ctx context.Context, nc net.Conn, opt *DialOptions) (*tcpConn, *serialize.Welcome, error) {
	deadline := time.Now().Add(opt.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := nc.SetDeadline(deadline); err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	lr := &deadlineReader{nc: nc}
	br := bufio.NewReaderSize(lr, bufSize)
	rd := serialize.NewReader(br, serialize.Options{MaxFrame: handshakeMaxFrame})
	fail := func(reason string, err error) (*tcpConn, *serialize.Welcome, error) {
		if reason != "" {
			_ = writeFrame(nc, &serialize.Reject{Reason: reason})
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, nil, err
	}
	read := func(want serialize.Kind) (serialize.Message, error) {
		m, err := rd.Read()
		if err != nil {
			reason, err := handshakeReadError(err, opt.HandshakeTimeout, "block")
			_, _, err = fail(reason, err)
			return nil, err
		}
		switch m.Kind() {
		case want:
			return m, nil
		case serialize.KindReject:
			return nil, newRejectError(m.(*serialize.Reject).Reason)
		}
		_, _, err = fail(fmt.Sprintf("expected %v, got %v", want, m.Kind()), fmt.Errorf("expected %v, got %v", want, m.Kind()))
		return nil, err
	}

	m, err := read(serialize.KindChallenge)
	if err != nil {
		return nil, nil, err
	}
	ch := m.(*serialize.Challenge)
	if ch.Version != serialize.ProtocolVersion {
		return fail(versionReason(int(ch.Version), "block"), &VersionError{Peer: int(ch.Version), Local: serialize.ProtocolVersion})
	}
	if len(ch.Nonce) != NonceSize {
		return fail(fmt.Sprintf("malformed Challenge: the nonce must be %d bytes", NonceSize),
			fmt.Errorf("malformed Challenge: a nonce of %d bytes, want %d", len(ch.Nonce), NonceSize))
	}
	nonce, err := newNonce()
	if err != nil {
		return nil, nil, err
	}
	hello := opt.Hello
	hello.Version = serialize.ProtocolVersion
	hello.Proof = proof(opt.Token, ch.Nonce, labelHello, hello.Block)
	hello.Nonce = nonce
	if err := writeFrame(nc, &hello); err != nil {
		return fail("", fmt.Errorf("send Hello: %w", err))
	}

	m, err = read(serialize.KindWelcome)
	if err != nil {
		return nil, nil, err
	}
	w := m.(*serialize.Welcome)
	if !hmac.Equal(w.Proof, proof(opt.Token, nonce, labelWelcome, hello.Block)) {
		return fail("the front end's proof does not match the run's token",
			fmt.Errorf("%w: the front end sent a wrong proof of the token", ErrAuth))
	}
	if !stop() {
		return nil, nil, ctx.Err()
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, nil, err
	}
	c := newTCPConn(nc, lr, br, connOptions{
		heartbeat:   opt.Heartbeat,
		peerTimeout: opt.PeerTimeout,
		maxFrame:    opt.MaxFrame,
		log:         opt.Logger,
	})
	return c, w, nil
}
