package link

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/rankfarm/rankfarm/serialize"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testToken is the token of the tests' run.
var testToken = bytes.Repeat([]byte{0x5a}, TokenSize)

// logBuf collects log lines for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitLog waits until one log line holds every one of want.
func (l *logBuf) waitLog(t testing.TB, want ...string) {
	t.Helper()
	ok := func() bool {
		for line := range strings.Lines(l.String()) {
			all := true
			for _, w := range want {
				all = all && strings.Contains(line, w)
			}
			if all {
				return true
			}
		}
		return false
	}
	require.Eventually(t, ok, 3*time.Second, 2*time.Millisecond, "no log line with %q in:\n%s", want, l)
}

func newLogger() (*slog.Logger, *logBuf) {
	b := &logBuf{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fastListen starts a Listener with short timeouts, closed at the test's end.
func fastListen(t testing.TB, mod func(*ListenOptions)) (*Listener, *logBuf) {
	t.Helper()
	log, buf := newLogger()
	opt := ListenOptions{
		Token:            testToken,
		Run:              "run-1",
		Heartbeat:        20 * time.Millisecond,
		PeerTimeout:      5 * time.Second,
		HandshakeTimeout: time.Second,
		Logger:           log,
	}
	if mod != nil {
		mod(&opt)
	}
	l, err := Listen(context.Background(), "127.0.0.1:0", opt)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l, buf
}

func dialOpts(mod func(*DialOptions)) DialOptions {
	opt := DialOptions{
		Token:            testToken,
		Hello:            serialize.Hello{Block: "block-7", Ranks: 9, Workers: 8, Host: "node01", PID: 4242},
		Heartbeat:        20 * time.Millisecond,
		PeerTimeout:      5 * time.Second,
		HandshakeTimeout: time.Second,
		Logger:           discardLogger(),
	}
	if mod != nil {
		mod(&opt)
	}
	return opt
}

// connect dials l and accepts the link; both ends are closed at the test's end.
func connect(t testing.TB, l *Listener, mod func(*DialOptions)) (front, block Conn, hello *serialize.Hello, welcome *serialize.Welcome) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type res struct {
		c   Conn
		w   *serialize.Welcome
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, w, err := Dial(ctx, l.Addr(), dialOpts(mod))
		ch <- res{c, w, err}
	}()
	front, hello, err := l.Accept(ctx)
	require.NoError(t, err)
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() {
		require.NoError(t, r.c.Close())
		require.NoError(t, front.Close())
	})
	return front, r.c, hello, r.w
}

// rawConn is a TCP client that speaks frames by hand.
type rawConn struct {
	net.Conn
	rd *serialize.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
	t.Cleanup(func() { _ = nc.Close() })
	return &rawConn{Conn: nc, rd: serialize.NewReader(nc, serialize.Options{})}
}

func (r *rawConn) read(t testing.TB) serialize.Message {
	t.Helper()
	m, err := r.rd.Read()
	require.NoError(t, err)
	return m
}

// waitClosed reads until the peer closes the connection and returns the
// frames that came before.
func (r *rawConn) waitClosed(t testing.TB) []serialize.Message {
	t.Helper()
	var ms []serialize.Message
	for {
		m, err := r.rd.Read()
		if err != nil {
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the peer did not close the connection: %v", err)
			return ms
		}
		ms = append(ms, m)
	}
}

func frame(t testing.TB, m serialize.Message) []byte {
	t.Helper()
	b, err := serialize.NewCodec(serialize.Options{}).AppendFrame(nil, m)
	require.NoError(t, err)
	return b
}

// mustFrame encodes m as a stream frame; for goroutines that cannot fail a test.
func mustFrame(m serialize.Message) []byte {
	b, err := serialize.NewCodec(serialize.Options{}).AppendFrame(nil, m)
	if err != nil {
		panic(err)
	}
	return b
}

// goodHello answers ch the way a block that holds token would.
func goodHello(token []byte, ch *serialize.Challenge) *serialize.Hello {
	return &serialize.Hello{
		Version: serialize.ProtocolVersion,
		Block:   "raw",
		Proof:   proof(token, ch.Nonce, labelHello, "raw"),
		Nonce:   bytes.Repeat([]byte{1}, NonceSize),
	}
}

// fakeFrontEnd listens on a port and runs serve on the first connection.
func fakeFrontEnd(t testing.TB, serve func(r *rawConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = nc.Close() }()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		serve(&rawConn{Conn: nc, rd: serialize.NewReader(nc, serialize.Options{})})
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}
