package serialize

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/klauspost/compress/s2"
)

// Codec bytes: how a frame's payload is stored.
const (
	CodecRaw byte = 0 // the msgpack payload as it is
	CodecS2  byte = 1 // the msgpack payload compressed with S2 (klauspost/compress)
)

// HeaderSize is the size of a body's header: version, codec and kind bytes.
const HeaderSize = 3

// Defaults for Options.
const (
	DefaultMaxFrame      = 64 << 20 // 64 MiB, before and after decompression
	DefaultCompressAbove = 64 << 10 // payloads above 64 KiB are compressed
)

// Errors a decoder returns; wrap-aware callers test them with errors.Is.
var (
	ErrFrameTooLarge = errors.New("serialize: frame exceeds the size limit")
	ErrTruncated     = errors.New("serialize: truncated frame")
	ErrUnknownKind   = errors.New("serialize: unknown message kind")
	ErrUnknownCodec  = errors.New("serialize: unknown codec")
	ErrCorrupt       = errors.New("serialize: corrupt payload")
)

// VersionError reports a frame of a protocol version this build does not speak.
type VersionError struct {
	Got, Want uint8
}

// Error implements error.
func (e *VersionError) Error() string {
	return fmt.Sprintf("serialize: protocol version %d is not supported (this build speaks version %d)", e.Got, e.Want)
}

// Options tune a Codec. The zero value means the defaults.
type Options struct {
	// MaxFrame bounds a frame's payload, compressed and decompressed;
	// 0 means DefaultMaxFrame. It is capped so that a body's length fits
	// the 4-byte length prefix.
	MaxFrame int
	// CompressAbove is the payload size above which a frame is compressed;
	// 0 means DefaultCompressAbove and a negative value never compresses.
	CompressAbove int
}

// maxFrameLimit is the largest MaxFrame a codec accepts: a body (header and
// payload) must fit the 4-byte length prefix of a stream frame.
const maxFrameLimit = math.MaxUint32 - HeaderSize

// Codec encodes and decodes message bodies. It reuses its buffers, so one
// Codec serves one goroutine; make one per goroutine.
type Codec struct {
	maxFrame      int
	compressAbove int

	dec  decoder
	zbuf []byte
}

// NewCodec returns a Codec with the given options.
func NewCodec(opt Options) *Codec {
	c := &Codec{maxFrame: opt.MaxFrame, compressAbove: opt.CompressAbove}
	if c.maxFrame <= 0 {
		c.maxFrame = DefaultMaxFrame
	}
	c.maxFrame = int(min(int64(c.maxFrame), maxFrameLimit))
	if c.compressAbove == 0 {
		c.compressAbove = DefaultCompressAbove
	}
	return c
}

// MaxFrame reports the codec's frame size limit.
func (c *Codec) MaxFrame() int { return c.maxFrame }

// AppendBody appends m's body (version, codec, kind, payload) to dst. On
// error dst is returned as it was.
func (c *Codec) AppendBody(dst []byte, m Message) ([]byte, error) {
	wm, ok := m.(wireMessage)
	if !ok || isNilMessage(wm) {
		return dst, fmt.Errorf("serialize: cannot encode %T(%v)", m, m)
	}
	start := len(dst)
	dst = append(dst, ProtocolVersion, CodecRaw, byte(m.Kind()))
	dst = wm.appendPayload(dst)
	payload := dst[start+HeaderSize:]
	if len(payload) > c.maxFrame {
		return dst[:start], fmt.Errorf("%w: %v payload of %d bytes, limit %d", ErrFrameTooLarge, m.Kind(), len(payload), c.maxFrame)
	}
	if c.compressAbove > 0 && len(payload) > c.compressAbove {
		c.zbuf = s2.Encode(c.zbuf[:cap(c.zbuf)], payload)
		if len(c.zbuf) < len(payload) {
			dst[start+1] = CodecS2
			return append(dst[:start+HeaderSize], c.zbuf...), nil
		}
	}
	return dst, nil
}

// isNilMessage reports whether m is a nil pointer to a message type.
func isNilMessage(m wireMessage) bool {
	switch m := m.(type) {
	case *Challenge:
		return m == nil
	case *Hello:
		return m == nil
	case *Welcome:
		return m == nil
	case *TaskBatch:
		return m == nil
	case *ResultBatch:
		return m == nil
	case *Credit:
		return m == nil
	case *Heartbeat:
		return m == nil
	case *Shutdown:
		return m == nil
	case *Reject:
		return m == nil
	}
	return m == nil
}

// AppendFrame appends m as a stream frame: a 4-byte big-endian length of the
// body, then the body.
func (c *Codec) AppendFrame(dst []byte, m Message) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst, err := c.AppendBody(dst, m)
	if err != nil {
		return dst[:start], err
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst, nil
}

// PeekKind returns the kind of a body without decoding it.
func PeekKind(body []byte) (Kind, error) {
	if len(body) < HeaderSize {
		return 0, ErrTruncated
	}
	return Kind(body[2]), nil
}

// DecodeBody decodes one body (as AppendBody makes it). The message does not
// alias body.
func (c *Codec) DecodeBody(body []byte) (Message, error) {
	if len(body) < HeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrTruncated, len(body), HeaderSize)
	}
	if len(body)-HeaderSize > c.maxFrame {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(body)-HeaderSize, c.maxFrame)
	}
	if body[0] != ProtocolVersion {
		return nil, &VersionError{Got: body[0], Want: ProtocolVersion}
	}
	kind := Kind(body[2])
	m := New(kind)
	if m == nil {
		return nil, fmt.Errorf("%w: %d", ErrUnknownKind, body[2])
	}
	payload := body[HeaderSize:]
	switch body[1] {
	case CodecRaw:
	case CodecS2:
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %v: %w", ErrCorrupt, kind, err)
		}
		if n > c.maxFrame {
			return nil, fmt.Errorf("%w: %v decompresses to %d bytes, limit %d", ErrFrameTooLarge, kind, n, c.maxFrame)
		}
		if cap(c.zbuf) < n {
			c.zbuf = make([]byte, n)
		}
		out, err := s2.Decode(c.zbuf[:n], payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %v: %w", ErrCorrupt, kind, err)
		}
		payload = out
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownCodec, body[1])
	}
	c.dec.reset(payload)
	err := m.(wireMessage).decodePayload(&c.dec)
	trailing := c.dec.remaining()
	c.dec.reset(nil) // drop the references to payload and the arena
	if err != nil {
		return nil, fmt.Errorf("%w: %v: %w", ErrCorrupt, kind, err)
	}
	if trailing != 0 {
		return nil, fmt.Errorf("%w: %v: %d trailing bytes", ErrCorrupt, kind, trailing)
	}
	return m, nil
}

// Reader reads stream frames from an io.Reader.
type Reader struct {
	r     *bufio.Reader
	codec *Codec
	buf   []byte
}

// NewReader returns a Reader over r with the given options.
func NewReader(r io.Reader, opt Options) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), codec: NewCodec(opt)}
}

// Read reads and decodes the next frame. It returns io.EOF at a clean end of
// stream and io.ErrUnexpectedEOF inside a frame. A frame over the limit is
// refused before its body is read.
func (r *Reader) Read() (Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n < HeaderSize {
		return nil, fmt.Errorf("%w: frame length %d", ErrTruncated, n)
	}
	if n-HeaderSize > r.codec.maxFrame {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrFrameTooLarge, n, r.codec.maxFrame)
	}
	if err := r.readBody(n); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return r.codec.DecodeBody(r.buf)
}

// readChunk bounds how far the Reader's buffer grows ahead of the bytes that
// actually arrive, so a length prefix alone cannot make it allocate the
// whole frame limit.
const readChunk = 1 << 20

// readBody reads an n-byte body into r.buf.
func (r *Reader) readBody(n int) error {
	if cap(r.buf) >= n {
		r.buf = r.buf[:n]
		_, err := io.ReadFull(r.r, r.buf)
		return err
	}
	r.buf = r.buf[:0]
	for len(r.buf) < n {
		have := len(r.buf)
		want := min(n, have+max(have, readChunk))
		r.buf = append(r.buf, make([]byte, want-have)...)
		if _, err := io.ReadFull(r.r, r.buf[have:]); err != nil {
			return err
		}
	}
	return nil
}

// Writer writes stream frames to a buffered io.Writer; call Flush to push
// them out. Writes are batched: many frames share one system call.
type Writer struct {
	w     *bufio.Writer
	codec *Codec
	buf   []byte
}

// NewWriter returns a Writer over w with the given options.
func NewWriter(w io.Writer, opt Options) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 64<<10), codec: NewCodec(opt)}
}

// Write encodes m into the buffer.
func (w *Writer) Write(m Message) error {
	var err error
	w.buf, err = w.codec.AppendFrame(w.buf[:0], m)
	if err != nil {
		return err
	}
	_, err = w.w.Write(w.buf)
	return err
}

// Flush writes the buffered frames out.
func (w *Writer) Flush() error { return w.w.Flush() }

// Buffered reports how many bytes wait in the buffer.
func (w *Writer) Buffered() int { return w.w.Buffered() }
