package serialize

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// fuzzOptions keeps the fuzzers' memory small; the limits are tested apart.
var fuzzOptions = Options{MaxFrame: 1 << 20, CompressAbove: 256}

// seedBodies returns valid bodies of every kind, raw and compressed.
func seedBodies(tb testing.TB) [][]byte {
	var out [][]byte
	msgs := append(allMessages(), noopTaskBatch(64), noopResultBatch(64), bigShutdown(2000))
	for _, opt := range []Options{{CompressAbove: -1}, {CompressAbove: 1}} {
		c := NewCodec(opt)
		for _, m := range msgs {
			b, err := c.AppendBody(nil, m)
			require.NoError(tb, err)
			out = append(out, b)
		}
	}
	return out
}

// requireKnownError fails unless err is one of the package's documented
// decoding errors.
func requireKnownError(t *testing.T, err error) {
	t.Helper()
	var ve *VersionError
	for _, known := range []error{ErrTruncated, ErrFrameTooLarge, ErrUnknownKind, ErrUnknownCodec, ErrCorrupt} {
		if errors.Is(err, known) {
			return
		}
	}
	if errors.As(err, &ve) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return
	}
	t.Fatalf("undocumented error: %v", err)
}

// requireStable checks that m, which a decoder accepted, re-encodes to a body
// that decodes to an equal message, and that msgpack/v5 reads that payload
// to an equal message too.
func requireStable(t *testing.T, m Message) {
	t.Helper()
	for _, opt := range []Options{{CompressAbove: -1}, {CompressAbove: 1}} {
		c := NewCodec(opt)
		b, err := c.AppendBody(nil, m)
		require.NoError(t, err)
		again, err := c.DecodeBody(b)
		require.NoError(t, err)
		require.Equal(t, m, again)
	}
	b, err := NewCodec(Options{CompressAbove: -1}).AppendBody(nil, m)
	require.NoError(t, err)
	other := New(m.Kind())
	require.NoError(t, msgpack.Unmarshal(b[HeaderSize:], other))
	require.Equal(t, m, other)
}

func FuzzDecodeBody(f *testing.F) {
	for _, b := range seedBodies(f) {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 1, byte(KindShutdown), 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{2, 0, byte(KindCredit), 0x91, 0x01})
	f.Fuzz(func(t *testing.T, body []byte) {
		c := NewCodec(fuzzOptions)
		m, err := c.DecodeBody(body)
		if err != nil {
			require.Nil(t, m)
			requireKnownError(t, err)
			return
		}
		require.Equal(t, Kind(body[2]), m.Kind())
		// The same codec decodes the same body to the same message again.
		again, err := c.DecodeBody(body)
		require.NoError(t, err)
		require.Equal(t, m, again)
		requireStable(t, m)
	})
}

func FuzzReader(f *testing.F) {
	var stream bytes.Buffer
	w := NewWriter(&stream, fuzzOptions)
	for _, m := range sampleMessages() {
		require.NoError(f, w.Write(m))
		require.NoError(f, w.Flush())
		f.Add(bytes.Clone(stream.Bytes()))
	}
	require.NoError(f, w.Write(noopTaskBatch(64)))
	require.NoError(f, w.Flush())
	f.Add(bytes.Clone(stream.Bytes()))
	f.Add(stream.Bytes()[:stream.Len()-3])
	for _, b := range seedBodies(f)[:4] {
		f.Add(frame(b))
	}
	f.Add([]byte{0, 0, 0, 2, 1, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), fuzzOptions)
		for range 1000 {
			m, err := r.Read()
			if err == nil {
				requireStable(t, m)
				continue
			}
			require.Nil(t, m)
			requireKnownError(t, err)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
				errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrTruncated) {
				return // the stream cannot go on
			}
		}
	})
}
