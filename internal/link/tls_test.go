package link

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTLSLink(t *testing.T) {
	cfg, fp, err := NewTLSIdentity(time.Hour)
	require.NoError(t, err)
	_, other, err := NewTLSIdentity(time.Hour)
	require.NoError(t, err)
	l, logs := fastListen(t, func(o *ListenOptions) { o.TLS = cfg })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name string
		fp   []byte
		ok   bool
	}{
		{"pinned certificate", fp, true},
		{"another certificate", other, false},
		{"no TLS at all", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Dial(ctx, l.Addr(), dialOpts(func(o *DialOptions) {
				o.TLSFingerprint = tt.fp
				o.HandshakeTimeout = 2 * time.Second
			}))
			if !tt.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			front, hello, err := l.Accept(ctx)
			require.NoError(t, err)
			assert.Equal(t, "block-7", hello.Block)
			require.NoError(t, c.Send(&serialize.Credit{N: 7}))
			m, err := front.Recv(ctx)
			require.NoError(t, err)
			assert.Equal(t, &serialize.Credit{N: 7}, m)
			require.NoError(t, c.Close())
			require.NoError(t, front.Close())
		})
	}
	logs.waitLog(t, "refused")

	s := hex.EncodeToString(fp)
	got, err := ParseFingerprint(s)
	require.NoError(t, err)
	assert.Equal(t, fp, got)
	_, err = ParseFingerprint("abc")
	assert.Error(t, err)
	sum := sha256.Sum256(cfg.Certificates[0].Certificate[0])
	assert.Equal(t, sum[:], fp)
}
