package link

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
)

// FuzzHandshake plays the dialer's side of a handshake with arbitrary bytes:
// the listener must refuse them without a panic or a hang, and keep serving
// real blocks.
func FuzzHandshake(f *testing.F) {
	add := func(ms ...serialize.Message) {
		var b []byte
		for _, m := range ms {
			b = append(b, mustFrame(m)...)
		}
		f.Add(b)
	}
	add(&serialize.Hello{Version: 1, Block: "b", Proof: make([]byte, 32), Nonce: make([]byte, NonceSize), Ranks: 4})
	add(&serialize.Hello{Version: 2, Block: "b"})
	add(&serialize.Hello{Version: 1, Nonce: []byte{1}})
	add(&serialize.Reject{Reason: "no"})
	add(&serialize.Credit{N: 1}, &serialize.Heartbeat{Seq: 1})
	add(&serialize.TaskBatch{Tasks: []serialize.Task{{ID: 1, App: "x"}}})
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 3, 1, 1, 2})
	f.Add([]byte{0, 0, 0, 8, 1, 1, 2, 0xff, 0, 1, 2, 3})
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))

	l, err := Listen(context.Background(), "127.0.0.1:0", ListenOptions{
		Token:            testToken,
		HandshakeTimeout: 2 * time.Second,
		Logger:           discardLogger(),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = l.Close() })

	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.Dial("tcp", l.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = nc.Close() }()
		if err := nc.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		// The listener may refuse and close before it read everything.
		_, _ = nc.Write(data)
		_ = nc.(*net.TCPConn).CloseWrite()
		// Whatever the bytes, the listener must end the connection: read
		// until it does (a timeout here is a hang).
		rd := serialize.NewReader(nc, serialize.Options{})
		for {
			m, err := rd.Read()
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("the listener neither refused nor closed: %v", err)
				}
				break
			}
			if m.Kind() == serialize.KindWelcome {
				t.Fatalf("the listener welcomed %x", data)
			}
		}

		// And it still serves a real block.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dialed := make(chan error, 1)
		go func() {
			c, _, err := Dial(ctx, l.Addr(), dialOpts(nil))
			if err == nil {
				err = c.Close()
			}
			dialed <- err
		}()
		c, _, err := l.Accept(ctx)
		if err != nil {
			t.Fatalf("accept after %x: %v", data, err)
		}
		if err := <-dialed; err != nil {
			t.Fatalf("dial after %x: %v", data, err)
		}
		_ = c.Close()
	})
}
