package link

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pair dials l and accepts: the front end's and the block's connections.
func pair(t *testing.T, l *Listener) (front, block Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ch := make(chan Conn, 1)
	go func() {
		c, _, err := Dial(ctx, l.Addr(), dialOpts(nil))
		assert.NoError(t, err)
		ch <- c
	}()
	front, _, err := l.Accept(ctx)
	require.NoError(t, err)
	block = <-ch
	require.NotNil(t, block)
	return front, block
}

// cut breaks a session's TCP connection under it, as a network fault does.
func cut(s *Session) {
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	if c != nil {
		_ = c.nc.Close()
	}
}

// stream sends n numbered Credit messages from a to b, and checks that b
// gets each once, in order, while cutAt (if > 0) breaks the connection after
// b got that many and reconnect heals it.
func TestSessionSurvivesACut(t *testing.T) {
	for _, cutAt := range []int{0, 1, 5000, 19999} {
		l, _ := fastListen(t, nil)
		f1, b1 := pair(t, l)
		fs, err := NewSession(f1, 5*time.Second, "front", discardLogger())
		require.NoError(t, err)
		bs, err := NewSession(b1, 5*time.Second, "block", discardLogger())
		require.NoError(t, err)
		const n = 20000
		var once sync.Once
		reconnect := func() {
			cut(fs)
			cut(bs)
			f2, b2 := pair(t, l)
			require.NoError(t, bs.Resume(b2))
			require.NoError(t, fs.Resume(f2))
		}
		var wg sync.WaitGroup
		for _, dir := range []struct {
			from, to *Session
		}{{fs, bs}, {bs, fs}} {
			wg.Go(func() {
				for i := 1; i <= n; i++ {
					require.NoError(t, dir.from.Send(&serialize.Credit{N: uint32(i)}))
				}
			})
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				for i := 1; i <= n; i++ {
					m, err := dir.to.Recv(ctx)
					require.NoError(t, err, "message %d", i)
					require.Equal(t, uint32(i), m.(*serialize.Credit).N, "in order, once each")
					if i == cutAt {
						wg.Go(func() { once.Do(reconnect) })
					}
				}
			})
		}
		wg.Wait()
		require.NoError(t, fs.Close())
		require.NoError(t, bs.Close())
	}
}

func TestSessionGracePasses(t *testing.T) {
	l, _ := fastListen(t, nil)
	f1, b1 := pair(t, l)
	fs, err := NewSession(f1, 100*time.Millisecond, "front", discardLogger())
	require.NoError(t, err)
	bs, err := NewSession(b1, 0, "block", discardLogger())
	require.NoError(t, err)
	require.NoError(t, bs.Send(&serialize.Credit{N: 1}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := fs.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint32(1), m.(*serialize.Credit).N)
	cut(fs)
	_, err = bs.Recv(ctx)
	require.ErrorIs(t, err, ErrClosed, "no grace: the block side fails at once")
	_, err = fs.Recv(ctx)
	require.ErrorIs(t, err, ErrClosed, "the grace passed")
	select {
	case <-fs.Broke():
	default:
		t.Error("Broke was not signalled")
	}
	assert.ErrorIs(t, fs.Send(&serialize.Credit{N: 2}), ErrClosed)
	_, b2 := pair(t, l)
	assert.ErrorIs(t, fs.Resume(b2), ErrClosed, "too late to resume")
	require.NoError(t, b2.Close())
	require.NoError(t, fs.Close())
	require.NoError(t, bs.Close())
}
