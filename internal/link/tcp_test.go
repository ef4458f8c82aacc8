package link

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

func TestRoundTrip(t *testing.T) {
	big := make([]serialize.Task, 2000)
	for i := range big {
		big[i] = serialize.Task{ID: uint64(i), App: "sum", Args: bytes.Repeat([]byte{byte(i)}, 100), Walltime: 1}
	}
	tests := []struct {
		name string
		down serialize.Message // front end → block
		up   serialize.Message // block → front end
	}{
		{
			name: "batches",
			down: &serialize.TaskBatch{Tasks: []serialize.Task{
				{ID: 1, App: "add", Args: []byte{0x92, 1, 2}},
				{ID: 2, App: "echo", Args: []byte{0x91, 0xa1, 'x'}, Attempt: 2, Walltime: int64(time.Second)},
			}},
			up: &serialize.ResultBatch{Credit: 2, Results: []serialize.Result{
				{ID: 1, Value: []byte{3}, Rank: 4, Start: 10, End: 20},
				{ID: 2, Err: serialize.ErrPanic, Msg: "boom", Stack: "goroutine 1", Rank: 5},
			}},
		},
		{
			name: "compressed batch",
			down: &serialize.TaskBatch{Tasks: big},
			up:   &serialize.Credit{N: 2000},
		},
		{
			name: "shutdown",
			down: &serialize.Shutdown{Reason: "done"},
			up:   &serialize.Shutdown{Reason: "stopped"},
		},
	}
	l, _ := fastListen(t, nil)
	front, block, _, _ := connect(t, l, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, front.Send(tt.down))
			require.NoError(t, block.Send(tt.up))
			got, err := block.Recv(ctx)
			require.NoError(t, err)
			assert.Equal(t, tt.down, got)
			got, err = front.Recv(ctx)
			require.NoError(t, err)
			assert.Equal(t, tt.up, got)
		})
	}
}

func TestManyMessagesInOrder(t *testing.T) {
	n := 1_000_000
	l, _ := fastListen(t, nil)
	front, block, _, _ := connect(t, l, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	start := time.Now()
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if err := block.Send(&serialize.Credit{N: uint32(i)}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for i := range n {
		m, err := front.Recv(ctx)
		if err != nil {
			require.NoError(t, err, "message %d", i)
		}
		if c, ok := m.(*serialize.Credit); !ok || c.N != uint32(i) {
			require.Equal(t, &serialize.Credit{N: uint32(i)}, m, "out of order")
		}
	}
	require.NoError(t, <-sent)
	d := time.Since(start)
	t.Logf("%d messages in %v: %.0f messages/s", n, d.Round(time.Millisecond), float64(n)/d.Seconds())
}

// TestInlineWritesKeepOrder mixes the inline path of an idle link with the
// writer goroutine. The peer is a bare socket that does not read at first,
// so the socket's buffers fill: inline writes are cut short or take nothing,
// and the writer must finish them before anything else. Every message must
// arrive whole and in order once the peer reads.
func TestInlineWritesKeepOrder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	peer := <-accepted
	require.NotNil(t, peer)
	defer peer.Close()
	require.NoError(t, nc.(*net.TCPConn).SetWriteBuffer(16<<10))
	require.NoError(t, peer.(*net.TCPConn).SetReadBuffer(16<<10))
	lr := &deadlineReader{nc: nc}
	c := newTCPConn(nc, lr, bufio.NewReaderSize(lr, bufSize), connOptions{heartbeat: -1, peerTimeout: -1, maxFrame: 64 << 20, log: discardLogger()})
	defer c.Close()

	body := func(i int) string {
		size := 10 + i%7
		switch i % 10 {
		case 0:
			size = 4 << 20 // more than the peer's receive window
		case 5:
			size = 100 << 10
		}
		// Random hex: frames over the threshold are compressed.
		b := make([]byte, size/2)
		_, _ = rand.NewChaCha8([32]byte{byte(i), byte(i >> 8)}).Read(b)
		return hex.EncodeToString(b) + strconv.Itoa(i)
	}
	const n = 60
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if i%3 == 0 {
				time.Sleep(time.Millisecond) // let the link go idle
			}
			if err := c.Send(&serialize.Shutdown{Reason: body(i)}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	time.Sleep(300 * time.Millisecond) // the peer is slow to start reading
	rd := serialize.NewReader(peer, serialize.Options{MaxFrame: 64 << 20})
	for i := range n {
		m, err := rd.Read()
		require.NoError(t, err, "message %d", i)
		sd, ok := m.(*serialize.Shutdown)
		require.True(t, ok, "message %d is a %T", i, m)
		if sd.Reason != body(i) {
			require.Failf(t, "wrong message", "message %d: %d bytes, want %d", i, len(sd.Reason), len(body(i)))
		}
	}
	require.NoError(t, <-sent)
}

func TestConcurrentSenders(t *testing.T) {
	const senders, each = 8, 5000
	l, _ := fastListen(t, nil)
	front, block, _, _ := connect(t, l, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				assert.NoError(t, front.Send(&serialize.Shutdown{Reason: fmt.Sprintf("%d/%d", s, i)}))
			}
		})
	}
	next := make([]int, senders)
	for range senders * each {
		m, err := block.Recv(ctx)
		require.NoError(t, err)
		var s, i int
		_, err = fmt.Sscanf(m.(*serialize.Shutdown).Reason, "%d/%d", &s, &i)
		require.NoError(t, err)
		require.Equal(t, next[s], i, "sender %d out of order", s)
		next[s]++
	}
	wg.Wait()
}

func TestHeartbeatsKeepIdleLinkAlive(t *testing.T) {
	const peerTimeout = 300 * time.Millisecond
	l, _ := fastListen(t, func(o *ListenOptions) { o.Heartbeat = 20 * time.Millisecond; o.PeerTimeout = peerTimeout })
	front, block, _, _ := connect(t, l, func(o *DialOptions) { o.Heartbeat = 20 * time.Millisecond; o.PeerTimeout = peerTimeout })

	// Both ends stay silent, but for heartbeats, for three peer timeouts.
	var wg sync.WaitGroup
	for _, c := range []Conn{front, block} {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*peerTimeout)
			defer cancel()
			m, err := c.Recv(ctx)
			assert.Nil(t, m, "heartbeats never surface")
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		})
	}
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, front.Send(&serialize.Credit{N: 1}))
	require.NoError(t, block.Send(&serialize.Credit{N: 2}))
	m, err := block.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, &serialize.Credit{N: 1}, m)
	m, err = front.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, &serialize.Credit{N: 2}, m)
}

func TestPeerTimeout(t *testing.T) {
	const peerTimeout = 150 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	t.Run("block without heartbeats", func(t *testing.T) {
		l, _ := fastListen(t, func(o *ListenOptions) { o.PeerTimeout = peerTimeout })
		front, block, _, _ := connect(t, l, func(o *DialOptions) { o.Heartbeat = -1 })
		require.NoError(t, block.Send(&serialize.Credit{N: 1}))

		start := time.Now()
		m, err := front.Recv(ctx)
		require.NoError(t, err)
		assert.Equal(t, &serialize.Credit{N: 1}, m)
		_, err = front.Recv(ctx)
		require.ErrorIs(t, err, ErrPeerTimeout)
		assert.ErrorIs(t, err, ErrClosed)
		assert.GreaterOrEqual(t, time.Since(start), peerTimeout)
		assert.ErrorIs(t, front.Send(&serialize.Credit{}), ErrPeerTimeout)

		// The block sees the front end hang up.
		_, err = block.Recv(ctx)
		assert.ErrorIs(t, err, ErrClosed)
	})

	t.Run("front end that goes silent after the handshake", func(t *testing.T) {
		addr := fakeFrontEnd(t, func(r *rawConn) {
			_, _ = r.Write(mustFrame(&serialize.Challenge{Version: serialize.ProtocolVersion, Nonce: bytes.Repeat([]byte{3}, NonceSize)}))
			m, err := r.rd.Read()
			if err != nil {
				return
			}
			h := m.(*serialize.Hello)
			_, _ = r.Write(mustFrame(&serialize.Welcome{Proof: proof(testToken, h.Nonce, labelWelcome, h.Block), Run: "silent"}))
			for { // read everything, say nothing
				if _, err := r.rd.Read(); err != nil {
					return
				}
			}
		})
		c, w, err := Dial(ctx, addr, dialOpts(func(o *DialOptions) { o.PeerTimeout = peerTimeout }))
		require.NoError(t, err)
		defer func() { require.NoError(t, c.Close()) }()
		assert.Equal(t, "silent", w.Run)
		start := time.Now()
		_, err = c.Recv(ctx)
		require.ErrorIs(t, err, ErrPeerTimeout)
		assert.Less(t, time.Since(start), peerTimeout+time.Second)
	})
}

func TestClose(t *testing.T) {
	l, _ := fastListen(t, nil)
	front, block, _, _ := connect(t, l, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// What was sent before Close arrives, then the peer sees the end.
	const n = 1000
	for i := range n {
		require.NoError(t, block.Send(&serialize.Credit{N: uint32(i)}))
	}
	require.NoError(t, block.Close())
	for i := range n {
		m, err := front.Recv(ctx)
		require.NoError(t, err)
		require.Equal(t, &serialize.Credit{N: uint32(i)}, m)
	}
	_, err := front.Recv(ctx)
	require.ErrorIs(t, err, ErrClosed)
	assert.ErrorContains(t, err, "by the peer")

	require.NoError(t, block.Close(), "Close twice")
	assert.ErrorIs(t, block.Send(&serialize.Credit{}), ErrClosed)
	_, err = block.Recv(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, front.Send(&serialize.Credit{}), ErrClosed)
}

func TestSendRefuses(t *testing.T) {
	l, _ := fastListen(t, nil)
	front, _, _, _ := connect(t, l, nil)
	var nilBatch *serialize.TaskBatch
	tests := []struct {
		name string
		m    serialize.Message
	}{
		{"nil", nil},
		{"typed nil", nilBatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Error(t, front.Send(tt.m))
		})
	}
	// The link is still fine.
	require.NoError(t, front.Send(&serialize.Credit{N: 1}))
}

func TestOversizedMessageBreaksLink(t *testing.T) {
	l, _ := fastListen(t, nil)
	log, logs := newLogger()
	front, block, _, _ := connect(t, l, func(o *DialOptions) { o.MaxFrame = 1 << 10; o.Logger = log })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	require.NoError(t, block.Send(&serialize.Shutdown{Reason: string(bytes.Repeat([]byte{'x'}, 4<<10))}))
	_, err := block.Recv(ctx)
	require.ErrorIs(t, err, serialize.ErrFrameTooLarge)
	logs.waitLog(t, "cannot be sent", "Shutdown")
	_, err = front.Recv(ctx)
	assert.ErrorIs(t, err, ErrClosed)
}

func TestMailboxCompacts(t *testing.T) {
	b := newMailbox()
	ctx := context.Background()
	next := 0
	for i := range 100_000 {
		require.NoError(t, b.put(&serialize.Credit{N: uint32(i)}))
		if i%2 == 1 { // the consumer never catches up
			m, err := b.get(ctx)
			require.NoError(t, err)
			require.Equal(t, uint32(next), m.(*serialize.Credit).N)
			next++
		}
	}
	b.mu.Lock()
	live, size := len(b.q)-b.head, cap(b.q)
	b.mu.Unlock()
	assert.Equal(t, 50_000, live)
	assert.Less(t, size, 4*live, "the queue holds what is live, not everything ever put")
	for ; next < 100_000; next++ {
		m, err := b.get(ctx)
		require.NoError(t, err)
		require.Equal(t, uint32(next), m.(*serialize.Credit).N)
	}
}

func BenchmarkSmallMessages(b *testing.B) {
	l, _ := fastListen(b, nil)
	front, block, _, _ := connect(b, l, nil)
	ctx := context.Background()
	msg := &serialize.Credit{N: 1}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	go func() {
		for range b.N {
			if block.Send(msg) != nil {
				return
			}
		}
	}()
	for range b.N {
		if _, err := front.Recv(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
