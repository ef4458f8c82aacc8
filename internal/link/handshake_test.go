package link

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

func TestHandshake(t *testing.T) {
	l, logs := fastListen(t, nil)
	_, _, hello, welcome := connect(t, l, nil)

	assert.Equal(t, "run-1", welcome.Run)
	assert.Equal(t, uint16(serialize.ProtocolVersion), hello.Version)
	assert.Equal(t, "block-7", hello.Block)
	assert.Equal(t, int32(9), hello.Ranks)
	assert.Equal(t, int32(8), hello.Workers)
	assert.Equal(t, "node01", hello.Host)
	assert.Equal(t, int32(4242), hello.PID)
	assert.Len(t, hello.Nonce, NonceSize)
	logs.waitLog(t, "block connected", "block=block-7")
}

func TestRefusedWrongToken(t *testing.T) {
	l, logs := fastListen(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, _, err := Dial(ctx, l.Addr(), dialOpts(func(o *DialOptions) { o.Token = bytes.Repeat([]byte{1}, TokenSize) }))
	require.Error(t, err)
	require.ErrorIs(t, err, ErrAuth)
	var rej *RejectError
	require.ErrorAs(t, err, &rej)
	logs.waitLog(t, "refused a connection", "remote=127.0.0.1:", "wrong proof")

	// The right token on the same listener still works.
	front, block, _, _ := connect(t, l, nil)
	require.NoError(t, block.Send(&serialize.Credit{N: 3}))
	m, err := front.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, &serialize.Credit{N: 3}, m)
}

// TestRefused sends bad handshakes by hand: each is refused and logged, and
// the listener still accepts a real block afterwards.
func TestRefused(t *testing.T) {
	versioned := func(t *testing.T, m serialize.Message, v byte) []byte {
		b := frame(t, m)
		b[4] = v
		return b
	}
	tests := []struct {
		name       string
		skipChal   bool                                               // send before reading the Challenge
		send       func(t *testing.T, ch *serialize.Challenge) []byte // nil: stay silent
		halfClose  bool                                               // close our write side after sending
		wantLog    string                                             // in the listener's log line
		wantReject []string                                           // in the Reject's reason; nil: no Reject
	}{
		{
			name: "garbage payload",
			send: func(*testing.T, *serialize.Challenge) []byte {
				return []byte{0, 0, 0, 8, 1, 0, 2, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1}
			},
			wantLog:    "malformed handshake frame",
			wantReject: []string{"malformed"},
		},
		{
			name:       "garbage before the challenge",
			skipChal:   true,
			send:       func(*testing.T, *serialize.Challenge) []byte { return []byte("\x00\x00\x00\x05hello") },
			wantLog:    "protocol version 104", // 'h'
			wantReject: []string{"version 104"},
		},
		{
			name:       "an HTTP request",
			skipChal:   true,
			send:       func(*testing.T, *serialize.Challenge) []byte { return []byte("GET / HTTP/1.0\r\n\r\n") },
			wantLog:    "too large",
			wantReject: []string{"too large"},
		},
		{
			name:       "huge length prefix",
			send:       func(*testing.T, *serialize.Challenge) []byte { return []byte{0xff, 0xff, 0xff, 0xff} },
			wantLog:    "too large",
			wantReject: []string{"too large"},
		},
		{
			name:       "frame just over the handshake limit",
			send:       func(*testing.T, *serialize.Challenge) []byte { return []byte{0, 1, 0, 4} },
			wantLog:    "too large",
			wantReject: []string{"too large"},
		},
		{
			name:       "short length prefix",
			send:       func(*testing.T, *serialize.Challenge) []byte { return []byte{0, 0, 0, 1, 9} },
			wantLog:    "malformed handshake frame",
			wantReject: []string{"malformed"},
		},
		{
			name:       "unknown kind",
			send:       func(*testing.T, *serialize.Challenge) []byte { return []byte{0, 0, 0, 4, 1, 0, 200, 0x90} },
			wantLog:    "unknown message kind",
			wantReject: []string{"malformed"},
		},
		{
			name:       "wrong first kind",
			send:       func(t *testing.T, _ *serialize.Challenge) []byte { return frame(t, &serialize.Credit{N: 1}) },
			wantLog:    "expected Hello, got Credit",
			wantReject: []string{"expected Hello, got Credit"},
		},
		{
			name: "future frame version",
			send: func(t *testing.T, ch *serialize.Challenge) []byte {
				return versioned(t, goodHello(testToken, ch), serialize.ProtocolVersion+1)
			},
			wantLog:    "protocol version 2",
			wantReject: []string{"version 2", "version 1"},
		},
		{
			name: "future Hello version",
			send: func(t *testing.T, ch *serialize.Challenge) []byte {
				h := goodHello(testToken, ch)
				h.Version = serialize.ProtocolVersion + 1
				return frame(t, h)
			},
			wantLog:    "protocol version 2",
			wantReject: []string{"version 2", "version 1"},
		},
		{
			name: "wrong proof",
			send: func(t *testing.T, ch *serialize.Challenge) []byte {
				return frame(t, goodHello([]byte("not the token"), ch))
			},
			wantLog:    "wrong proof",
			wantReject: []string{"authentication failed"},
		},
		{
			name: "proof of another block",
			send: func(t *testing.T, ch *serialize.Challenge) []byte {
				h := goodHello(testToken, ch)
				h.Block = "other"
				return frame(t, h)
			},
			wantLog:    "wrong proof",
			wantReject: []string{"authentication failed"},
		},
		{
			name: "short nonce",
			send: func(t *testing.T, ch *serialize.Challenge) []byte {
				h := goodHello(testToken, ch)
				h.Nonce = []byte{1, 2, 3}
				return frame(t, h)
			},
			wantLog:    "nonce of 3 bytes",
			wantReject: []string{"nonce"},
		},
		{
			name: "peer rejects",
			send: func(t *testing.T, _ *serialize.Challenge) []byte {
				return frame(t, &serialize.Reject{Reason: "no thanks"})
			},
			wantLog: "no thanks",
		},
		{
			name:      "closed inside a frame",
			send:      func(*testing.T, *serialize.Challenge) []byte { return []byte{0, 0, 0, 40, 1, 0, 2} },
			halfClose: true,
			wantLog:   "unexpected EOF",
		},
		{
			name:    "silent",
			wantLog: "timed out",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, logs := fastListen(t, func(o *ListenOptions) { o.HandshakeTimeout = 300 * time.Millisecond })
			r := dialRaw(t, l.Addr())
			var ch *serialize.Challenge
			if !tt.skipChal {
				ch = r.read(t).(*serialize.Challenge)
				assert.Equal(t, uint16(serialize.ProtocolVersion), ch.Version)
				assert.Len(t, ch.Nonce, NonceSize)
			}
			if tt.send != nil {
				_, err := r.Write(tt.send(t, ch))
				require.NoError(t, err)
			}
			if tt.halfClose {
				require.NoError(t, r.Conn.(*net.TCPConn).CloseWrite())
			}
			got := r.waitClosed(t)
			if tt.skipChal {
				require.NotEmpty(t, got)
				got = got[1:] // the Challenge
			}
			if tt.wantReject == nil {
				assert.Empty(t, got)
			} else {
				require.Len(t, got, 1)
				rej, ok := got[0].(*serialize.Reject)
				require.True(t, ok, "got %T", got[0])
				for _, w := range tt.wantReject {
					assert.Contains(t, rej.Reason, w)
				}
			}
			logs.waitLog(t, "refused a connection", "remote="+r.LocalAddr().String(), tt.wantLog)

			connect(t, l, nil) // the listener still serves
		})
	}
}

func TestRefusedTooManyPending(t *testing.T) {
	l, logs := fastListen(t, func(o *ListenOptions) { o.MaxPending = 2 })
	var silent []*rawConn
	for range 2 {
		r := dialRaw(t, l.Addr())
		_ = r.read(t).(*serialize.Challenge) // its handshake is under way
		silent = append(silent, r)
	}
	extra := dialRaw(t, l.Addr())
	assert.Empty(t, extra.waitClosed(t), "closed at once, without a Challenge")
	logs.waitLog(t, "refused a connection", "remote="+extra.LocalAddr().String(), "too many handshakes")

	for _, r := range silent {
		require.NoError(t, r.Close())
		logs.waitLog(t, "refused a connection", "remote="+r.LocalAddr().String(), "closed during the handshake")
	}
	connect(t, l, nil)
}

// TestDialChecksFrontEnd runs Dial against fake front ends.
func TestDialChecksFrontEnd(t *testing.T) {
	readHello := func(r *rawConn) *serialize.Hello {
		m, err := r.rd.Read()
		if err != nil {
			return nil
		}
		h, _ := m.(*serialize.Hello)
		return h
	}
	challenge := func(v uint16) *serialize.Challenge {
		return &serialize.Challenge{Version: v, Nonce: bytes.Repeat([]byte{7}, NonceSize)}
	}
	tests := []struct {
		name       string
		serve      func(r *rawConn)
		check      func(t *testing.T, err error)
		wantReject string // what the fake front end must receive; "" for nothing
	}{
		{
			name: "front end without the token",
			serve: func(r *rawConn) {
				_, _ = r.Write(mustFrame(challenge(serialize.ProtocolVersion)))
				if h := readHello(r); h != nil {
					_, _ = r.Write(mustFrame(&serialize.Welcome{Proof: bytes.Repeat([]byte{9}, 32), Run: "fake"}))
				}
			},
			check:      func(t *testing.T, err error) { assert.ErrorIs(t, err, ErrAuth) },
			wantReject: "front end's proof",
		},
		{
			name: "front end that guesses the proof for another nonce",
			serve: func(r *rawConn) {
				_, _ = r.Write(mustFrame(challenge(serialize.ProtocolVersion)))
				if h := readHello(r); h != nil {
					p := proof(testToken, bytes.Repeat([]byte{1}, NonceSize), labelWelcome, h.Block)
					_, _ = r.Write(mustFrame(&serialize.Welcome{Proof: p, Run: "fake"}))
				}
			},
			check:      func(t *testing.T, err error) { assert.ErrorIs(t, err, ErrAuth) },
			wantReject: "front end's proof",
		},
		{
			name:  "future Challenge version",
			serve: func(r *rawConn) { _, _ = r.Write(mustFrame(challenge(serialize.ProtocolVersion + 1))) },
			check: func(t *testing.T, err error) {
				var ve *VersionError
				require.ErrorAs(t, err, &ve)
				assert.Equal(t, VersionError{Peer: 2, Local: 1}, *ve)
			},
			wantReject: "protocol version 2 is not supported: this block speaks version 1",
		},
		{
			name: "future frame version",
			serve: func(r *rawConn) {
				b := mustFrame(challenge(serialize.ProtocolVersion))
				b[4] = serialize.ProtocolVersion + 1
				_, _ = r.Write(b)
			},
			check: func(t *testing.T, err error) {
				var ve *VersionError
				require.ErrorAs(t, err, &ve)
				assert.Equal(t, 2, ve.Peer)
				var sve *serialize.VersionError
				assert.ErrorAs(t, err, &sve)
			},
			wantReject: "version 2",
		},
		{
			name:  "rejected at once",
			serve: func(r *rawConn) { _, _ = r.Write(mustFrame(&serialize.Reject{Reason: "go away"})) },
			check: func(t *testing.T, err error) {
				var rej *RejectError
				require.ErrorAs(t, err, &rej)
				assert.Equal(t, "go away", rej.Reason)
				assert.NotErrorIs(t, err, ErrAuth)
			},
		},
		{
			name:       "wrong first kind",
			serve:      func(r *rawConn) { _, _ = r.Write(mustFrame(&serialize.Welcome{Run: "x"})) },
			check:      func(t *testing.T, err error) { assert.ErrorContains(t, err, "expected Challenge, got Welcome") },
			wantReject: "expected Challenge",
		},
		{
			name:       "short nonce",
			serve:      func(r *rawConn) { _, _ = r.Write(mustFrame(&serialize.Challenge{Version: 1, Nonce: []byte{1}})) },
			check:      func(t *testing.T, err error) { assert.ErrorContains(t, err, "nonce") },
			wantReject: "nonce",
		},
		{
			name:       "huge frame",
			serve:      func(r *rawConn) { _, _ = r.Write([]byte{0x7f, 0xff, 0xff, 0xff}) },
			check:      func(t *testing.T, err error) { assert.ErrorIs(t, err, serialize.ErrFrameTooLarge) },
			wantReject: "too large",
		},
		{
			name:  "silent",
			serve: func(r *rawConn) { _, _ = r.rd.Read() },
			check: func(t *testing.T, err error) { assert.ErrorContains(t, err, "timed out") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan serialize.Message, 4)
			addr := fakeFrontEnd(t, func(r *rawConn) {
				tt.serve(r)
				for {
					m, err := r.rd.Read()
					if err != nil {
						close(got)
						return
					}
					got <- m
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, w, err := Dial(ctx, addr, dialOpts(func(o *DialOptions) { o.HandshakeTimeout = 300 * time.Millisecond }))
			require.Error(t, err)
			assert.Nil(t, c)
			assert.Nil(t, w)
			tt.check(t, err)
			var rejects []string
			for m := range got {
				if r, ok := m.(*serialize.Reject); ok {
					rejects = append(rejects, r.Reason)
				}
			}
			if tt.wantReject == "" {
				assert.Empty(t, rejects)
			} else {
				require.Len(t, rejects, 1)
				assert.Contains(t, rejects[0], tt.wantReject)
			}
		})
	}
}

func TestDialContextCancel(t *testing.T) {
	addr := fakeFrontEnd(t, func(r *rawConn) { _, _ = r.rd.Read() }) // never sends a Challenge
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, _, err := Dial(ctx, addr, dialOpts(func(o *DialOptions) { o.HandshakeTimeout = 10 * time.Second }))
	require.ErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), 2*time.Second)
}

func TestDialRefusesEmptyToken(t *testing.T) {
	_, _, err := Dial(context.Background(), "127.0.0.1:1", dialOpts(func(o *DialOptions) { o.Token = nil }))
	assert.ErrorContains(t, err, "empty token")
	_, err = Listen(context.Background(), "127.0.0.1:0", ListenOptions{})
	assert.ErrorContains(t, err, "empty token")
}

func TestListenerClose(t *testing.T) {
	log, _ := newLogger()
	l, err := Listen(context.Background(), "127.0.0.1:0", ListenOptions{Token: testToken, Logger: log, HandshakeTimeout: time.Minute})
	require.NoError(t, err)

	// A handshake under way ends with the listener.
	r := dialRaw(t, l.Addr())
	_ = r.read(t).(*serialize.Challenge)

	// An authenticated link that no Accept took is closed with it.
	dialed := make(chan Conn, 1)
	go func() {
		c, _, err := Dial(context.Background(), l.Addr(), dialOpts(nil))
		if err != nil {
			dialed <- nil
			return
		}
		dialed <- c
	}()
	c := <-dialed
	require.NotNil(t, c)
	defer func() { require.NoError(t, c.Close()) }()

	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "Close twice")
	assert.Empty(t, r.waitClosed(t))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Recv(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	_, _, err = l.Accept(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	_, _, err = Dial(ctx, l.Addr(), dialOpts(nil))
	assert.Error(t, err)
}

func TestListenerCloseEndsAccept(t *testing.T) {
	l, err := Listen(context.Background(), "127.0.0.1:0", ListenOptions{Token: testToken, Logger: discardLogger()})
	require.NoError(t, err)
	accepting := make(chan error, 1)
	go func() {
		_, _, err := l.Accept(context.Background())
		accepting <- err
	}()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, l.Close())
	assert.ErrorIs(t, <-accepting, ErrClosed)
}

func TestAcceptContext(t *testing.T) {
	l, _ := fastListen(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, _, err := l.Accept(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestErrors(t *testing.T) {
	tests := []struct {
		err     error
		is      error
		isNot   error
		message string
	}{
		{err: &RejectError{Reason: authReason}, is: ErrAuth, message: "refused by the peer: authentication failed"},
		{err: &RejectError{Reason: "busy"}, isNot: ErrAuth, message: "refused by the peer: busy"},
		{err: &VersionError{Peer: 3, Local: 1}, isNot: ErrAuth, message: "version 3, this build speaks version 1"},
		{err: newRejectError(string(bytes.Repeat([]byte{'x'}, 2000))), message: "xxx…"},
	}
	for i, tt := range tests {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			if tt.is != nil {
				assert.True(t, errors.Is(tt.err, tt.is))
			}
			if tt.isNot != nil {
				assert.False(t, errors.Is(tt.err, tt.isNot))
			}
			assert.Contains(t, tt.err.Error(), tt.message)
			assert.Less(t, len(tt.err.Error()), 700)
		})
	}
}
