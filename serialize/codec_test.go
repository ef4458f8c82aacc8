package serialize

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// body builds a body by hand: version, codec, kind and payload.
func body(version, codec byte, kind Kind, payload ...byte) []byte {
	return append([]byte{version, codec, byte(kind)}, payload...)
}

// frame prefixes b with its 4-byte big-endian length.
func frame(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// allMessages is every sample message followed by every zero message.
func allMessages() []Message { return append(sampleMessages(), zeroMessages()...) }

func TestBodyRoundTrip(t *testing.T) {
	c := NewCodec(Options{})
	for _, m := range allMessages() {
		t.Run(kindName(m), func(t *testing.T) {
			b, err := c.AppendBody([]byte("prefix"), m)
			require.NoError(t, err)
			require.Equal(t, "prefix", string(b[:6]), "AppendBody keeps dst")
			b = b[6:]
			assert.Equal(t, []byte{ProtocolVersion, CodecRaw, byte(m.Kind())}, b[:HeaderSize])

			k, err := PeekKind(b)
			require.NoError(t, err)
			assert.Equal(t, m.Kind(), k)

			got, err := c.DecodeBody(b)
			require.NoError(t, err)
			assert.Equal(t, m, got)
		})
	}
}

func TestFrameRoundTrip(t *testing.T) {
	c := NewCodec(Options{})
	var all []byte
	for _, m := range allMessages() {
		f, err := c.AppendFrame(nil, m)
		require.NoError(t, err)
		assert.Equal(t, uint32(len(f)-4), binary.BigEndian.Uint32(f), "length prefix of %v", m.Kind())
		got, err := c.DecodeBody(f[4:])
		require.NoError(t, err)
		assert.Equal(t, m, got)
		all = append(all, f...)
	}

	// A Writer writes the same bytes as AppendFrame.
	var buf bytes.Buffer
	w := NewWriter(&buf, Options{})
	for _, m := range allMessages() {
		require.NoError(t, w.Write(m))
	}
	assert.Equal(t, len(all), w.Buffered())
	assert.Zero(t, buf.Len(), "nothing is written before Flush")
	require.NoError(t, w.Flush())
	assert.Equal(t, all, buf.Bytes())
	assert.Zero(t, w.Buffered())
}

// writeAll writes msgs with a Writer, flushing every flushEvery messages and
// at the end.
func writeAll(w *Writer, msgs []Message, flushEvery int) error {
	for i, m := range msgs {
		if err := w.Write(m); err != nil {
			return err
		}
		if (i+1)%flushEvery == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
	return w.Flush()
}

// readAll reads len(want) messages and checks them against want.
func readAll(t *testing.T, r *Reader, want []Message) {
	t.Helper()
	for i, m := range want {
		got, err := r.Read()
		require.NoError(t, err, "message %d", i)
		assert.Equal(t, m, got, "message %d", i)
	}
}

func TestStreamRoundTrip(t *testing.T) {
	msgs := append(allMessages(), noopTaskBatch(4096), noopResultBatch(4096), bigShutdown(300<<10))
	tests := []struct {
		name string
		opt  Options
	}{
		{"defaults", Options{}},
		{"always compress", Options{CompressAbove: 1}},
		{"never compress", Options{CompressAbove: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/buffer", func(t *testing.T) {
			var buf bytes.Buffer
			require.NoError(t, writeAll(NewWriter(&buf, tt.opt), msgs, 3))
			r := NewReader(&buf, tt.opt)
			readAll(t, r, msgs)
			_, err := r.Read()
			assert.ErrorIs(t, err, io.EOF, "a clean end of stream is io.EOF")
			assert.NotErrorIs(t, err, io.ErrUnexpectedEOF)
		})
		t.Run(tt.name+"/pipe", func(t *testing.T) {
			a, b := net.Pipe()
			done := make(chan error, 1)
			go func() {
				err := writeAll(NewWriter(a, tt.opt), msgs, 2)
				done <- errors.Join(err, a.Close())
			}()
			r := NewReader(b, tt.opt)
			readAll(t, r, msgs)
			_, err := r.Read()
			assert.ErrorIs(t, err, io.EOF)
			require.NoError(t, <-done)
			require.NoError(t, b.Close())
		})
	}
}

// TestWireShape pins the schema: every message is a msgpack array with its
// fields in order, and integers take their shortest form.
func TestWireShape(t *testing.T) {
	c := NewCodec(Options{})
	payload := func(m Message) []byte {
		b, err := c.AppendBody(nil, m)
		require.NoError(t, err)
		return b[HeaderSize:]
	}
	tests := []struct {
		name string
		m    Message
		want string // hex of the payload
	}{
		{"Challenge", &Challenge{Version: 1, Nonce: []byte{0xaa, 0xbb}}, "9201c402aabb"},
		{"Hello", &Hello{Version: 1, Block: "b", Proof: []byte{1}, Nonce: nil, Ranks: 4, Workers: 3, Host: "h", PID: 300},
			"9b01a162c40101c00403a168cd012c00c0c0"},
		{"Welcome", &Welcome{Proof: []byte{}, Run: "r"}, "92c400a172"},
		{"TaskBatch", &TaskBatch{Tasks: []Task{{ID: 1, App: "noop", Args: noopArgs, Attempt: 0, Walltime: 0}}},
			"91 91 9501a46e6f6f70c40291070000"},
		{"TaskBatch nil", &TaskBatch{}, "91c0"},
		{"TaskBatch empty", &TaskBatch{Tasks: []Task{}}, "9190"},
		{"ResultBatch", &ResultBatch{Credit: 1, Results: []Result{{ID: 1, Err: ErrApp, Msg: "x", Rank: -1, Start: 1, End: 200}}},
			"9201919801 01c0a178a0ff01cc c8"},
		{"Credit", &Credit{N: 70000}, "91ce00011170"},
		{"Heartbeat", &Heartbeat{Seq: math.MaxUint64, Time: math.MinInt64},
			"92cfffffffffffffffffd38000000000000000"},
		{"Shutdown", &Shutdown{Reason: "done"}, "91a4646f6e65"},
		{"Reject", &Reject{Reason: strings.Repeat("x", 40)}, "91d928" + strings.Repeat("78", 40)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := hex.DecodeString(strings.ReplaceAll(tt.want, " ", ""))
			require.NoError(t, err)
			assert.Equal(t, hex.EncodeToString(want), hex.EncodeToString(payload(tt.m)))
		})
	}

	// The first payload byte of a Task is a fixarray of 5.
	tb := payload(&TaskBatch{Tasks: []Task{{ID: 1}}})
	assert.Equal(t, byte(0x95), tb[2], "Task is a fixarray of 5 fields")
}

// TestMsgpackInterop checks the payloads against an independent msgpack
// implementation: it decodes ours to equal messages, and ours decodes its
// encodings, in both its default (fixed-width integers) and compact form.
func TestMsgpackInterop(t *testing.T) {
	c := NewCodec(Options{})
	for _, m := range allMessages() {
		t.Run(kindName(m), func(t *testing.T) {
			b, err := c.AppendBody(nil, m)
			require.NoError(t, err)

			other := New(m.Kind())
			require.NoError(t, msgpack.Unmarshal(b[HeaderSize:], other))
			assert.Equal(t, m, other, "msgpack/v5 reads our payload")

			for _, compact := range []bool{false, true} {
				var buf bytes.Buffer
				enc := msgpack.NewEncoder(&buf)
				enc.UseCompactInts(compact)
				require.NoError(t, enc.Encode(m))
				if compact {
					assert.Equal(t, hex.EncodeToString(b[HeaderSize:]), hex.EncodeToString(buf.Bytes()),
						"our payload is msgpack/v5's compact encoding")
				}
				got, err := c.DecodeBody(body(ProtocolVersion, CodecRaw, m.Kind(), buf.Bytes()...))
				require.NoError(t, err, "compact=%v", compact)
				assert.Equal(t, m, got, "compact=%v", compact)
			}
		})
	}
}

func TestCompression(t *testing.T) {
	incompressible := make([]byte, 200<<10)
	_, _ = rand.Read(incompressible)
	tests := []struct {
		name      string
		opt       Options
		m         Message
		wantCodec byte
	}{
		{"small stays raw", Options{}, bigShutdown(1000), CodecRaw},
		{"at the threshold stays raw", Options{CompressAbove: 100}, &Shutdown{Reason: strings.Repeat("a", 100-3)}, CodecRaw},
		{"just above the threshold", Options{CompressAbove: 100}, &Shutdown{Reason: strings.Repeat("a", 100-2)}, CodecS2},
		{"large text", Options{}, bigShutdown(300 << 10), CodecS2},
		{"large task batch", Options{}, noopTaskBatch(8192), CodecS2},
		{"large result batch", Options{}, noopResultBatch(8192), CodecS2},
		{"incompressible stays raw", Options{}, &Welcome{Proof: incompressible}, CodecRaw},
		{"compression off", Options{CompressAbove: -1}, bigShutdown(300 << 10), CodecRaw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCodec(tt.opt)
			b, err := c.AppendBody(nil, tt.m)
			require.NoError(t, err)
			require.Equal(t, tt.wantCodec, b[1])

			raw, err := NewCodec(Options{CompressAbove: -1}).AppendBody(nil, tt.m)
			require.NoError(t, err)
			if tt.wantCodec == CodecS2 {
				assert.Less(t, len(b), len(raw))
				// The payload is an S2 block of the raw payload.
				dec, err := s2.Decode(nil, b[HeaderSize:])
				require.NoError(t, err)
				assert.Equal(t, raw[HeaderSize:], dec)
			} else {
				assert.Equal(t, raw, b)
			}

			got, err := NewCodec(Options{}).DecodeBody(b)
			require.NoError(t, err)
			assert.Equal(t, tt.m, got)
		})
	}
}

// TestDecodeDoesNotAlias checks that a decoded message owns its bytes, even
// when the codec's buffers are reused for the next frame.
func TestDecodeDoesNotAlias(t *testing.T) {
	for _, opt := range []Options{{}, {CompressAbove: 1}} {
		c := NewCodec(opt)
		want := noopTaskBatch(100)
		b, err := c.AppendBody(nil, want)
		require.NoError(t, err)
		got, err := c.DecodeBody(b)
		require.NoError(t, err)

		// Scribble over the input and decode other frames with the same codec.
		for i := range b {
			b[i] = 0xff
		}
		other := noopTaskBatch(100)
		for i := range other.Tasks {
			other.Tasks[i].Args = []byte{0x91, 0x09}
		}
		ob, err := c.AppendBody(nil, other)
		require.NoError(t, err)
		_, err = c.DecodeBody(ob)
		require.NoError(t, err)
		assert.Equal(t, want, got)

		// Appending to one task's Args does not touch its neighbour.
		tb := got.(*TaskBatch)
		_ = append(tb.Tasks[0].Args, 0xee)
		assert.Equal(t, noopArgs, tb.Tasks[1].Args)
	}
}

func TestEncodeErrors(t *testing.T) {
	c := NewCodec(Options{MaxFrame: 1024})
	tests := []struct {
		name string
		m    Message
		want error
	}{
		{"over the limit", &Shutdown{Reason: strings.Repeat("x", 1025)}, ErrFrameTooLarge},
		{"big batch over the limit", noopTaskBatch(100), ErrFrameTooLarge},
		{"nil message", nil, nil},
		{"nil pointer", (*TaskBatch)(nil), nil},
		{"foreign type", foreign{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := c.AppendBody(dst, tt.m)
			require.Error(t, err)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
			assert.Equal(t, "keep", string(out), "dst is returned unchanged")

			out, err = c.AppendFrame(dst, tt.m)
			require.Error(t, err)
			assert.Equal(t, "keep", string(out))

			var buf bytes.Buffer
			w := NewWriter(&buf, Options{MaxFrame: 1024})
			require.Error(t, w.Write(tt.m))
			assert.Zero(t, w.Buffered(), "a refused message writes nothing")
		})
	}
	// At the limit exactly is fine.
	b, err := c.AppendBody(nil, &Shutdown{Reason: strings.Repeat("x", 1024-4)})
	require.NoError(t, err)
	assert.Len(t, b, HeaderSize+1024)
}

type foreign struct{}

func (foreign) Kind() Kind { return KindShutdown }

func TestDecodeHeaderErrors(t *testing.T) {
	ok := []byte{0x91, 0xa0} // Shutdown{""}
	tests := []struct {
		name string
		body []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"one byte", []byte{1}, ErrTruncated},
		{"two bytes", []byte{1, 0}, ErrTruncated},
		{"kind 0", body(1, 0, 0, ok...), ErrUnknownKind},
		{"kind 10", body(1, 0, 10, ok...), ErrUnknownKind},
		{"kind 255", body(1, 0, 255, ok...), ErrUnknownKind},
		{"codec 2", body(1, 2, KindShutdown, ok...), ErrUnknownCodec},
		{"codec 255", body(1, 255, KindShutdown, ok...), ErrUnknownCodec},
		{"header only", body(1, 0, KindShutdown), ErrCorrupt},
		{"trailing byte", body(1, 0, KindShutdown, 0x91, 0xa0, 0x00), ErrCorrupt},
		{"s2 garbage", body(1, 1, KindShutdown, 0x05, 0xff, 0xff), ErrCorrupt},
		{"s2 truncated", body(1, 1, KindShutdown, 0x80), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewCodec(Options{}).DecodeBody(tt.body)
			require.ErrorIs(t, err, tt.want)
			assert.Nil(t, m)
			assert.True(t, strings.HasPrefix(err.Error(), "serialize: "), err.Error())
		})
	}

	_, err := NewCodec(Options{}).DecodeBody(body(1, 0, KindShutdown, 0x91, 0xa0, 0x00, 0x00))
	assert.ErrorContains(t, err, "2 trailing bytes")

	_, err = PeekKind([]byte{1, 0})
	assert.ErrorIs(t, err, ErrTruncated)
}

func TestVersionError(t *testing.T) {
	for _, v := range []byte{0, 2, 255} {
		_, err := NewCodec(Options{}).DecodeBody(body(v, 0, KindShutdown, 0x91, 0xa0))
		var ve *VersionError
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, VersionError{Got: v, Want: ProtocolVersion}, *ve)
		assert.Contains(t, err.Error(), fmt.Sprintf("version %d is not supported", v))
		assert.Contains(t, err.Error(), "speaks version 1")

		// Through a stream too.
		_, err = NewReader(bytes.NewReader(frame(body(v, 0, KindShutdown, 0x91, 0xa0))), Options{}).Read()
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, v, ve.Got)
	}
	assert.Equal(t, "serialize: protocol version 2 is not supported (this build speaks version 1)",
		(&VersionError{Got: 2, Want: 1}).Error())
}

// TestDecodeGarbage feeds payloads that are well framed but wrong inside.
func TestDecodeGarbage(t *testing.T) {
	tests := []struct {
		name    string
		kind    Kind
		payload string // hex
		msg     string // part of the error
	}{
		{"map instead of array", KindShutdown, "81a6526561736f6ea0", "want an array"},
		{"nil message", KindCredit, "c0", "want an array of 1 fields, got -1"},
		{"too few fields", KindHeartbeat, "9101", "want an array of 2 fields, got 1"},
		{"too many fields", KindCredit, "920101", "got 2"},
		{"string for an int", KindCredit, "91a131", "want an integer"},
		{"float for an int", KindCredit, "91cb3ff0000000000000", "want an integer"},
		{"bool for a string", KindShutdown, "91c3", "want a string"},
		{"negative credit", KindCredit, "91ff", "out of range"},
		{"credit over uint32", KindCredit, "91cf0000000100000000", "out of range"},
		{"negative task id", KindTaskBatch, "9191 95 d0ff a0 c0 00 00", "out of range"},
		{"attempt over uint32", KindTaskBatch, "9191 95 01 a0 c0 cf0000000100000000 00", "out of range"},
		{"walltime over int64", KindTaskBatch, "9191 95 01 a0 c0 00 cf8000000000000000", "out of range"},
		{"rank over int32", KindResultBatch, "9201 91 98 01 00 c0 a0 a0 ce80000000 00 00", "out of range"},
		{"err kind over uint8", KindResultBatch, "9201 91 98 01 cd0100 c0 a0 a0 00 00 00", "out of range"},
		{"version over uint16", KindChallenge, "92 ce00010000 c0", "out of range"},
		{"nil task", KindTaskBatch, "9191c0 0000000000", "want an array of 5 fields, got -1"},
		{"task of 4 fields", KindTaskBatch, "9191 94 01 a0 c0 00 00", "got 4"},
		{"task of 6 fields", KindTaskBatch, "9191 96 01 a0 c0 00 00 00", "got 6"},
		{"truncated task", KindTaskBatch, "9191 95 01 a46e6f6f", "bytes needed"},
		{"truncated int", KindHeartbeat, "92 cf0000", "bytes needed"},
		{"empty payload", KindShutdown, "", "unexpected end"},
		{"batch claims 2^32-1 tasks", KindTaskBatch, "91 ddffffffff 95", "cannot fit"},
		{"batch claims more results than fit", KindResultBatch, "92 01 dc0002 980100c0a0a0000000", "cannot fit"},
		{"bin32 claims 4 GiB", KindChallenge, "92 01 c6ffffffff 00", "bytes needed"},
		{"str32 claims 2 GiB", KindShutdown, "91 db7fffffff", "bytes needed"},
		{"ext type", KindShutdown, "91 d40100", "want a string"},
		{"reserved byte 0xc1", KindShutdown, "91c1", "want a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := hex.DecodeString(strings.ReplaceAll(tt.payload, " ", ""))
			require.NoError(t, err)
			before := totalAlloc()
			m, err := NewCodec(Options{}).DecodeBody(body(1, 0, tt.kind, p...))
			assert.Less(t, totalAlloc()-before, uint64(1<<20), "a small bad payload allocates little")
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Nil(t, m)
			assert.ErrorContains(t, err, tt.msg)
			assert.ErrorContains(t, err, tt.kind.String())
		})
	}
}

// TestDecodeDeepNesting feeds nested arrays that once overflowed the stack
// of a recursive decoder.
func TestDecodeDeepNesting(t *testing.T) {
	deep := bytes.Repeat([]byte{0x91}, 8<<20)
	for k := Kind(1); k < kindMax; k++ {
		_, err := NewCodec(Options{}).DecodeBody(body(1, 0, k, deep...))
		require.ErrorIs(t, err, ErrCorrupt, "%v", k)
		mapped := append([]byte{0x81, 0xa1, 'x'}, deep...)
		_, err = NewCodec(Options{}).DecodeBody(body(1, 0, k, mapped...))
		require.ErrorIs(t, err, ErrCorrupt, "%v", k)
	}
}

// TestDecodeNilListsAndScalars checks the leniency the decoder allows: nil
// for a list, a string, bytes or an integer; any integer width; bin for a
// string and str for bytes.
func TestDecodeNilListsAndScalars(t *testing.T) {
	tests := []struct {
		name    string
		kind    Kind
		payload string
		want    Message
	}{
		{"nil tasks", KindTaskBatch, "91c0", &TaskBatch{}},
		{"nil results", KindResultBatch, "92 05 c0", &ResultBatch{Credit: 5}},
		{"nil everywhere", KindTaskBatch, "9191 95 c0 c0 c0 c0 c0", &TaskBatch{Tasks: []Task{{}}}},
		{"wide ints", KindTaskBatch, "9191 95 cf0000000000000007 a0 c0 d200000002 d3fffffffffffffffe",
			&TaskBatch{Tasks: []Task{{ID: 7, Attempt: 2, Walltime: -2}}}},
		{"bin for a string, str for bytes", KindTaskBatch, "9191 95 01 c4026869 a3616263 00 00",
			&TaskBatch{Tasks: []Task{{ID: 1, App: "hi", Args: []byte("abc")}}}},
		{"uint64 max", KindHeartbeat, "92 cfffffffffffffffff 00", &Heartbeat{Seq: math.MaxUint64}},
		{"int64 min", KindHeartbeat, "92 00 d38000000000000000", &Heartbeat{Time: math.MinInt64}},
		{"str16 and bin16", KindWelcome, "92 c50003010203 da0001 7a", &Welcome{Proof: []byte{1, 2, 3}, Run: "z"}},
		{"array16 of tasks", KindTaskBatch, "91 dc0001 9500a0c00000", &TaskBatch{Tasks: []Task{{}}}},
		{"array32 of results", KindResultBatch, "92 00 dd00000001 9800 00c0a0a0000000", &ResultBatch{Results: []Result{{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := hex.DecodeString(strings.ReplaceAll(tt.payload, " ", ""))
			require.NoError(t, err)
			m, err := NewCodec(Options{}).DecodeBody(body(1, 0, tt.kind, p...))
			require.NoError(t, err)
			assert.Equal(t, tt.want, m)
		})
	}
}

func TestFrameLimitDecode(t *testing.T) {
	t.Run("body over the limit", func(t *testing.T) {
		c := NewCodec(Options{MaxFrame: 10})
		_, err := c.DecodeBody(body(1, 0, KindShutdown, append([]byte{0xab}, make([]byte, 11)...)...))
		require.ErrorIs(t, err, ErrFrameTooLarge)
	})

	t.Run("length prefix refused before the body is read", func(t *testing.T) {
		src := &countingReader{data: binary.BigEndian.AppendUint32(nil, 1<<30)}
		before := totalAlloc()
		_, err := NewReader(src, Options{MaxFrame: 1 << 20}).Read()
		require.ErrorIs(t, err, ErrFrameTooLarge)
		assert.ErrorContains(t, err, "limit 1048576")
		assert.Equal(t, 4, src.served, "only the length prefix was read")
		assert.Less(t, totalAlloc()-before, uint64(1<<20))
	})

	t.Run("length prefix at the limit is read", func(t *testing.T) {
		c := NewCodec(Options{MaxFrame: 100})
		f, err := c.AppendFrame(nil, &Shutdown{Reason: strings.Repeat("y", 100-3)})
		require.NoError(t, err)
		require.Len(t, f, 4+HeaderSize+100)
		_, err = NewReader(bytes.NewReader(f), Options{MaxFrame: 100}).Read()
		require.NoError(t, err)
		_, err = NewReader(bytes.NewReader(f), Options{MaxFrame: 99}).Read()
		require.ErrorIs(t, err, ErrFrameTooLarge)
	})

	t.Run("a claimed length does not allocate ahead of the data", func(t *testing.T) {
		// A prefix within the limit followed by only a few bytes.
		data := append(binary.BigEndian.AppendUint32(nil, 60<<20), 1, 0, byte(KindShutdown))
		before := totalAlloc()
		_, err := NewReader(bytes.NewReader(data), Options{}).Read()
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		assert.Less(t, totalAlloc()-before, uint64(4<<20))
	})

	t.Run("decompressed size over the limit", func(t *testing.T) {
		// 8 MiB of zeros compresses to a few hundred bytes.
		payload := append([]byte{0x91, 0xdb, 0x00, 0x80, 0x00, 0x00}, make([]byte, 8<<20)...)
		z := s2.Encode(nil, payload)
		require.Less(t, len(z), 4096)
		b := body(1, CodecS2, KindShutdown, z...)

		before := totalAlloc()
		_, err := NewCodec(Options{MaxFrame: 1 << 20}).DecodeBody(b)
		require.ErrorIs(t, err, ErrFrameTooLarge)
		assert.ErrorContains(t, err, "decompresses to")
		assert.Less(t, totalAlloc()-before, uint64(1<<20), "refused before decompressing")

		// With room for it, the same frame decodes.
		m, err := NewCodec(Options{MaxFrame: 16 << 20}).DecodeBody(b)
		require.NoError(t, err)
		assert.Len(t, m.(*Shutdown).Reason, 8<<20)
	})

	t.Run("tiny s2 frame claiming a huge size", func(t *testing.T) {
		// An S2 block starts with the decoded length as a uvarint.
		z := binary.AppendUvarint(nil, 1<<40)
		z = append(z, 0x00, 0x91)
		before := totalAlloc()
		_, err := NewCodec(Options{}).DecodeBody(body(1, CodecS2, KindShutdown, z...))
		require.Error(t, err)
		assert.True(t, errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrCorrupt), err.Error())
		assert.Less(t, totalAlloc()-before, uint64(1<<20))

		z = binary.AppendUvarint(nil, DefaultMaxFrame+1)
		z = append(z, 0x00, 0x91)
		_, err = NewCodec(Options{}).DecodeBody(body(1, CodecS2, KindShutdown, z...))
		require.ErrorIs(t, err, ErrFrameTooLarge)
	})

	t.Run("limit capped to the length prefix", func(t *testing.T) {
		assert.Equal(t, DefaultMaxFrame, NewCodec(Options{}).MaxFrame())
		assert.Equal(t, DefaultMaxFrame, NewCodec(Options{MaxFrame: -1}).MaxFrame())
		assert.Equal(t, 5, NewCodec(Options{MaxFrame: 5}).MaxFrame())
		if math.MaxInt > math.MaxUint32 {
			assert.Equal(t, int64(math.MaxUint32-HeaderSize), int64(NewCodec(Options{MaxFrame: math.MaxInt}).MaxFrame()))
		}
	})
}

// countingReader serves data once and records how many bytes it served.
type countingReader struct {
	data   []byte
	served int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.served >= len(r.data) {
		return 0, errors.New("read past the length prefix")
	}
	n := copy(p, r.data[r.served:])
	r.served += n
	return n, nil
}

func TestReaderTruncated(t *testing.T) {
	c := NewCodec(Options{})
	f, err := c.AppendFrame(nil, sampleMessages()[3])
	require.NoError(t, err)
	for cut := 0; cut < len(f); cut++ {
		_, err := NewReader(bytes.NewReader(f[:cut]), Options{}).Read()
		if cut == 0 {
			require.ErrorIs(t, err, io.EOF)
			require.NotErrorIs(t, err, io.ErrUnexpectedEOF)
			continue
		}
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d of %d", cut, len(f))
	}

	// A body shorter than its header.
	for n := range HeaderSize {
		_, err := NewReader(bytes.NewReader(frame(make([]byte, n))), Options{}).Read()
		require.ErrorIs(t, err, ErrTruncated, "length %d", n)
	}

	// A cut inside the payload of a whole buffer (MPI message, queue file).
	b := f[4:]
	for cut := HeaderSize; cut < len(b); cut++ {
		_, err := c.DecodeBody(b[:cut])
		require.ErrorIs(t, err, ErrCorrupt, "cut at %d", cut)
	}
}

// TestReaderResyncs checks that a well-framed but bad body does not upset
// the frames after it.
func TestReaderResyncs(t *testing.T) {
	var stream []byte
	stream = append(stream, frame(body(1, 0, KindCredit, 0x91, 0xa1, 'x'))...) // corrupt
	stream = append(stream, frame(body(9, 0, KindCredit, 0x91, 0x01))...)      // future version
	stream = append(stream, frame(body(1, 0, 77, 0x91, 0x01))...)              // unknown kind
	stream = append(stream, frame(body(1, 7, KindCredit, 0x91, 0x01))...)      // unknown codec
	stream = append(stream, frame(body(1, 0, KindCredit, 0x91, 0x05))...)      // good
	r := NewReader(bytes.NewReader(stream), Options{})
	for _, want := range []error{ErrCorrupt, nil, ErrUnknownKind, ErrUnknownCodec} {
		_, err := r.Read()
		if want == nil {
			var ve *VersionError
			require.ErrorAs(t, err, &ve)
			continue
		}
		require.ErrorIs(t, err, want)
	}
	m, err := r.Read()
	require.NoError(t, err)
	assert.Equal(t, &Credit{N: 5}, m)
	_, err = r.Read()
	require.ErrorIs(t, err, io.EOF)
}

func TestPipeDeadline(t *testing.T) {
	// A Reader passes the transport's errors through untouched.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	require.NoError(t, b.SetReadDeadline(time.Now().Add(10*time.Millisecond)))
	_, err := NewReader(b, Options{}).Read()
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
}

func TestStrings(t *testing.T) {
	kinds := map[Kind]string{
		KindChallenge: "Challenge", KindHello: "Hello", KindWelcome: "Welcome",
		KindTaskBatch: "TaskBatch", KindResultBatch: "ResultBatch", KindCredit: "Credit",
		KindHeartbeat: "Heartbeat", KindShutdown: "Shutdown", KindReject: "Reject",
		0: "Kind(0)", kindMax: "Kind(10)",
	}
	for k, want := range kinds {
		assert.Equal(t, want, k.String())
		if m := New(k); m != nil {
			assert.Equal(t, k, m.Kind())
		} else {
			assert.Contains(t, want, "Kind(")
		}
	}
	errs := map[ErrKind]string{
		ErrNone: "ok", ErrApp: "app error", ErrPanic: "panic", ErrWalltime: "walltime exceeded",
		ErrUnknownApp: "unknown app", ErrArgs: "bad arguments", ErrLost: "block lost", 7: "ErrKind(7)",
	}
	for e, want := range errs {
		assert.Equal(t, want, e.String())
	}
}

// totalAlloc reports the bytes allocated by the process so far.
func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}
