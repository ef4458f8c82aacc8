package serialize

import (
	"errors"
	"fmt"
	"math"
)

// This file holds the msgpack coding of every message type, written by hand
// over byte slices: no reflection, no allocation per task when encoding, and
// on decoding only what the message must own (one slice per batch, a few
// shared chunks for the byte fields, app names interned per Codec).
//
// The decoder is strict about shape and lenient about scalars. Every message,
// Task and Result must be an array with exactly its number of fields (nil
// stands for an empty or absent list only where a list is expected); an
// integer field takes any msgpack integer encoding whose value fits its type
// (and nil as 0); a string or bytes field takes str, bin or nil. Nothing is
// decoded recursively and every length is checked against the bytes that
// remain before anything is allocated for it, so a small hostile payload can
// neither exhaust memory nor the stack.

// msgpack format bytes used here.
const (
	mpNil     = 0xc0
	mpBin8    = 0xc4
	mpBin16   = 0xc5
	mpBin32   = 0xc6
	mpUint8   = 0xcc
	mpUint16  = 0xcd
	mpUint32  = 0xce
	mpUint64  = 0xcf
	mpInt8    = 0xd0
	mpInt16   = 0xd1
	mpInt32   = 0xd2
	mpInt64   = 0xd3
	mpStr8    = 0xd9
	mpStr16   = 0xda
	mpStr32   = 0xdb
	mpArray16 = 0xdc
	mpArray32 = 0xdd
)

// Smallest encodings of a Task and a Result (an array header and one byte per
// field), used to bound a batch's claimed length by the bytes that remain.
const (
	minTaskSize   = 1 + 5
	minResultSize = 1 + 8
)

// wireMessage is a Message this package can code.
type wireMessage interface {
	Message
	appendPayload(b []byte) []byte
	decodePayload(d *decoder) error
}

// ---- encoding ----

func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(b, mpArray16, byte(n>>8), byte(n))
	}
	return append(b, mpArray32, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= math.MaxInt8:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, mpUint8, byte(v))
	case v <= math.MaxUint16:
		return append(b, mpUint16, byte(v>>8), byte(v))
	case v <= math.MaxUint32:
		return append(b, mpUint32, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, mpUint64, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
		byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0:
		return appendUint(b, uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, mpInt8, byte(v))
	case v >= math.MinInt16:
		return append(b, mpInt16, byte(v>>8), byte(v))
	case v >= math.MinInt32:
		return append(b, mpInt32, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, mpInt64, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
		byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, mpStr8, byte(n))
	case n <= math.MaxUint16:
		b = append(b, mpStr16, byte(n>>8), byte(n))
	default:
		b = append(b, mpStr32, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, s...)
}

// appendBin writes p as bin, or nil when p is nil.
func appendBin(b []byte, p []byte) []byte {
	n := len(p)
	switch {
	case p == nil:
		return append(b, mpNil)
	case n <= math.MaxUint8:
		b = append(b, mpBin8, byte(n))
	case n <= math.MaxUint16:
		b = append(b, mpBin16, byte(n>>8), byte(n))
	default:
		b = append(b, mpBin32, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, p...)
}

// ---- decoding ----

// errShape is the cause of every decoding error below; DecodeBody wraps the
// result in ErrCorrupt.
var errShape = errors.New("msgpack")

// decoder reads msgpack values from b.
type decoder struct {
	b   []byte
	off int

	// arena holds the bytes fields of the message being decoded. It is a
	// chunk that grows by new chunks; a field never aliases the input.
	arena     []byte
	lastChunk int

	// intern maps short strings (app names) to one shared copy; lastStr is
	// the last one returned, since a batch often calls one app many times.
	intern  map[string]string
	lastStr string
}

const (
	arenaFirstChunk = 512
	arenaMaxChunk   = 64 << 10
	internMaxLen    = 64
	internMaxCount  = 1024
)

func (d *decoder) reset(b []byte) {
	d.b, d.off = b, 0
	d.arena, d.lastChunk = nil, 0
}

func (d *decoder) fail(format string, args ...any) error {
	return fmt.Errorf("%w: at payload byte %d: %s", errShape, d.off, fmt.Sprintf(format, args...))
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

// take returns the next n bytes.
func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || n > d.remaining() {
		return nil, d.fail("%d bytes needed, %d left", n, d.remaining())
	}
	p := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return p, nil
}

func (d *decoder) readByte() (byte, error) {
	if d.off >= len(d.b) {
		return 0, d.fail("unexpected end of payload")
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

// be reads an n-byte big-endian unsigned number.
func (d *decoder) be(n int) (uint64, error) {
	p, err := d.take(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// arrayLen reads an array header; nil reads as -1. Each element must take at
// least minElem bytes, so a claimed length beyond the payload is refused.
func (d *decoder) arrayLen(minElem int) (int, error) {
	c, err := d.readByte()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c&0xf0 == 0x90:
		n = uint64(c & 0x0f)
	case c == mpArray16:
		n, err = d.be(2)
	case c == mpArray32:
		n, err = d.be(4)
	case c == mpNil:
		return -1, nil
	default:
		d.off--
		return 0, d.fail("want an array, got format byte 0x%02x", c)
	}
	if err != nil {
		return 0, err
	}
	if n*uint64(minElem) > uint64(d.remaining()) {
		return 0, d.fail("array of %d elements cannot fit in %d bytes", n, d.remaining())
	}
	return int(n), nil
}

// expectArray reads the header of a struct with n fields.
func (d *decoder) expectArray(n int, what string) error {
	start := d.off
	got, err := d.arrayLen(1)
	if err != nil {
		return err
	}
	if got != n {
		d.off = start
		return d.fail("%s: want an array of %d fields, got %d", what, n, got)
	}
	return nil
}

// integer reads any msgpack integer (or nil as 0). neg reports a negative
// value, whose two's complement is in v.
func (d *decoder) integer() (v uint64, neg bool, err error) {
	c, err := d.readByte()
	if err != nil {
		return 0, false, err
	}
	switch {
	case c <= 0x7f:
		return uint64(c), false, nil
	case c >= 0xe0:
		return uint64(int64(int8(c))), true, nil
	}
	switch c {
	case mpNil:
		return 0, false, nil
	case mpUint8:
		v, err = d.be(1)
	case mpUint16:
		v, err = d.be(2)
	case mpUint32:
		v, err = d.be(4)
	case mpUint64:
		v, err = d.be(8)
	case mpInt8:
		v, err = d.be(1)
		v = uint64(int64(int8(v)))
	case mpInt16:
		v, err = d.be(2)
		v = uint64(int64(int16(v)))
	case mpInt32:
		v, err = d.be(4)
		v = uint64(int64(int32(v)))
	case mpInt64:
		v, err = d.be(8)
	default:
		d.off--
		return 0, false, d.fail("want an integer, got format byte 0x%02x", c)
	}
	return v, int64(v) < 0 && c >= mpInt8, err
}

// uint reads an integer in [0, max].
func (d *decoder) uint(max uint64) (uint64, error) {
	start := d.off
	v, neg, err := d.integer()
	if err != nil {
		return 0, err
	}
	if neg || v > max {
		d.off = start
		if neg {
			return 0, d.fail("integer %d is out of range [0, %d]", int64(v), max)
		}
		return 0, d.fail("integer %d is out of range [0, %d]", v, max)
	}
	return v, nil
}

// int reads an integer in [min, max].
func (d *decoder) int(min, max int64) (int64, error) {
	start := d.off
	v, neg, err := d.integer()
	if err != nil {
		return 0, err
	}
	if !neg && v > math.MaxInt64 || int64(v) < min || int64(v) > max {
		d.off = start
		if neg {
			return 0, d.fail("integer %d is out of range [%d, %d]", int64(v), min, max)
		}
		return 0, d.fail("integer %d is out of range [%d, %d]", v, min, max)
	}
	return int64(v), nil
}

func (d *decoder) uint64() (uint64, error) { return d.uint(math.MaxUint64) }

func (d *decoder) uint32() (uint32, error) {
	v, err := d.uint(math.MaxUint32)
	return uint32(v), err
}

func (d *decoder) int64() (int64, error) { return d.int(math.MinInt64, math.MaxInt64) }

func (d *decoder) int32() (int32, error) {
	v, err := d.int(math.MinInt32, math.MaxInt32)
	return int32(v), err
}

// raw reads a str, bin or nil and returns its bytes, which alias the input;
// isNil reports a nil.
func (d *decoder) raw() (p []byte, isNil bool, err error) {
	c, err := d.readByte()
	if err != nil {
		return nil, false, err
	}
	var n uint64
	switch {
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == mpStr8 || c == mpBin8:
		n, err = d.be(1)
	case c == mpStr16 || c == mpBin16:
		n, err = d.be(2)
	case c == mpStr32 || c == mpBin32:
		n, err = d.be(4)
	case c == mpNil:
		return nil, true, nil
	default:
		d.off--
		return nil, false, d.fail("want a string or bytes, got format byte 0x%02x", c)
	}
	if err != nil {
		return nil, false, err
	}
	p, err = d.take(int(min(n, math.MaxInt32)))
	return p, false, err
}

// str reads a string (nil reads as "").
func (d *decoder) str() (string, error) {
	p, _, err := d.raw()
	return string(p), err
}

// internStr reads a string and returns a shared copy of it when it is short.
func (d *decoder) internStr() (string, error) {
	p, _, err := d.raw()
	if err != nil || len(p) == 0 {
		return "", err
	}
	if string(p) == d.lastStr {
		return d.lastStr, nil
	}
	if len(p) > internMaxLen {
		return string(p), nil
	}
	s, ok := d.intern[string(p)]
	if !ok {
		s = string(p)
		if d.intern == nil {
			d.intern = make(map[string]string)
		}
		if len(d.intern) < internMaxCount {
			d.intern[s] = s
		}
	}
	d.lastStr = s
	return s, nil
}

// bytes reads bytes (nil reads as nil) into the arena.
func (d *decoder) bytes() ([]byte, error) {
	p, isNil, err := d.raw()
	if err != nil || isNil {
		return nil, err
	}
	if len(p) == 0 {
		return []byte{}, nil
	}
	if len(p) > cap(d.arena)-len(d.arena) {
		size := min(max(arenaFirstChunk, 2*d.lastChunk), arenaMaxChunk)
		size = max(min(size, len(p)+d.remaining()), len(p))
		d.arena, d.lastChunk = make([]byte, 0, size), size
	}
	start := len(d.arena)
	d.arena = append(d.arena, p...)
	return d.arena[start:len(d.arena):len(d.arena)], nil
}

// ---- the messages ----

func (m *Challenge) appendPayload(b []byte) []byte {
	b = append(b, 0x92)
	b = appendUint(b, uint64(m.Version))
	return appendBin(b, m.Nonce)
}

func (m *Challenge) decodePayload(d *decoder) error {
	if err := d.expectArray(2, "Challenge"); err != nil {
		return err
	}
	v, err := d.uint(math.MaxUint16)
	if err != nil {
		return err
	}
	m.Version = uint16(v)
	m.Nonce, err = d.bytes()
	return err
}

func (m *Hello) appendPayload(b []byte) []byte {
	b = append(b, 0x90|helloFields)
	b = appendUint(b, uint64(m.Version))
	b = appendStr(b, m.Block)
	b = appendBin(b, m.Proof)
	b = appendBin(b, m.Nonce)
	b = appendInt(b, int64(m.Ranks))
	b = appendInt(b, int64(m.Workers))
	b = appendStr(b, m.Host)
	b = appendInt(b, int64(m.PID))
	b = appendInt(b, int64(m.Fanout))
	if m.NodeHosts == nil {
		b = append(b, mpNil)
	} else {
		b = appendArrayLen(b, len(m.NodeHosts))
		for _, h := range m.NodeHosts {
			b = appendStr(b, h)
		}
	}
	if m.NodeRuns == nil {
		return append(b, mpNil)
	}
	b = appendArrayLen(b, len(m.NodeRuns))
	for _, v := range m.NodeRuns {
		b = appendInt(b, int64(v))
	}
	return b
}

// helloFields is the length of a Hello with a layout; helloFieldsV1 that of
// one without (blocks of earlier releases).
const (
	helloFields   = 11
	helloFieldsV1 = 8
)

func (m *Hello) decodePayload(d *decoder) (err error) {
	start := d.off
	n, err := d.arrayLen(1)
	if err != nil {
		return err
	}
	if n != helloFields && n != helloFieldsV1 {
		d.off = start
		return d.fail("Hello: want an array of %d or %d fields, got %d", helloFieldsV1, helloFields, n)
	}
	v, err := d.uint(math.MaxUint16)
	if err != nil {
		return err
	}
	m.Version = uint16(v)
	if m.Block, err = d.str(); err != nil {
		return err
	}
	if m.Proof, err = d.bytes(); err != nil {
		return err
	}
	if m.Nonce, err = d.bytes(); err != nil {
		return err
	}
	if m.Ranks, err = d.int32(); err != nil {
		return err
	}
	if m.Workers, err = d.int32(); err != nil {
		return err
	}
	if m.Host, err = d.str(); err != nil {
		return err
	}
	if m.PID, err = d.int32(); err != nil || n == helloFieldsV1 {
		return err
	}
	return m.decodeLayout(d)
}

// decodeLayout reads a Hello's Fanout, NodeHosts and NodeRuns and checks
// them against Ranks: every rank in exactly one run of a named node, every
// node named at least once.
func (m *Hello) decodeLayout(d *decoder) (err error) {
	if m.Fanout, err = d.int32(); err != nil {
		return err
	}
	if m.Fanout < 0 {
		return d.fail("Hello: fan-out %d", m.Fanout)
	}
	nh, err := d.arrayLen(1)
	if err != nil {
		return err
	}
	if nh > int(max(m.Ranks, 0)) {
		return d.fail("Hello: %d node hosts for %d ranks", nh, m.Ranks)
	}
	if nh >= 0 {
		m.NodeHosts = make([]string, nh)
	}
	for i := range m.NodeHosts {
		if m.NodeHosts[i], err = d.str(); err != nil {
			return err
		}
	}
	nr, err := d.arrayLen(1)
	if err != nil {
		return err
	}
	if (nr > 0 && nr%2 != 0) || nr > 2*int(max(m.Ranks, 0)) || (nr > 0) != (nh > 0) {
		return d.fail("Hello: %d node run entries for %d ranks and %d nodes", max(nr, 0), m.Ranks, max(nh, 0))
	}
	if nr >= 0 {
		m.NodeRuns = make([]int32, nr)
	}
	var total int64
	named := make([]bool, max(nh, 0))
	for i := range m.NodeRuns {
		if m.NodeRuns[i], err = d.int32(); err != nil {
			return err
		}
		v := m.NodeRuns[i]
		if i%2 == 0 {
			if v < 0 || int(v) >= nh {
				return d.fail("Hello: node %d of %d", v, nh)
			}
			named[v] = true
		} else {
			if v < 1 {
				return d.fail("Hello: a run of %d ranks", v)
			}
			total += int64(v)
		}
	}
	if nr > 0 && total != int64(m.Ranks) {
		return d.fail("Hello: node runs cover %d ranks, not %d", total, m.Ranks)
	}
	for k, ok := range named {
		if !ok {
			return d.fail("Hello: node %d has no rank", k)
		}
	}
	return nil
}

func (m *Welcome) appendPayload(b []byte) []byte {
	b = append(b, 0x92)
	b = appendBin(b, m.Proof)
	return appendStr(b, m.Run)
}

func (m *Welcome) decodePayload(d *decoder) (err error) {
	if err = d.expectArray(2, "Welcome"); err != nil {
		return err
	}
	if m.Proof, err = d.bytes(); err != nil {
		return err
	}
	m.Run, err = d.str()
	return err
}

func (t *Task) appendPayload(b []byte) []byte {
	b = append(b, 0x95)
	b = appendUint(b, t.ID)
	b = appendStr(b, t.App)
	b = appendBin(b, t.Args)
	b = appendUint(b, uint64(t.Attempt))
	return appendInt(b, t.Walltime)
}

func (t *Task) decodePayload(d *decoder) (err error) {
	if err = d.expectArray(5, "Task"); err != nil {
		return err
	}
	if t.ID, err = d.uint64(); err != nil {
		return err
	}
	if t.App, err = d.internStr(); err != nil {
		return err
	}
	if t.Args, err = d.bytes(); err != nil {
		return err
	}
	if t.Attempt, err = d.uint32(); err != nil {
		return err
	}
	t.Walltime, err = d.int64()
	return err
}

func (m *TaskBatch) appendPayload(b []byte) []byte {
	b = append(b, 0x91)
	if m.Tasks == nil {
		return append(b, mpNil)
	}
	b = appendArrayLen(b, len(m.Tasks))
	for i := range m.Tasks {
		b = m.Tasks[i].appendPayload(b)
	}
	return b
}

func (m *TaskBatch) decodePayload(d *decoder) error {
	if err := d.expectArray(1, "TaskBatch"); err != nil {
		return err
	}
	n, err := d.arrayLen(minTaskSize)
	if err != nil || n < 0 {
		return err
	}
	m.Tasks = make([]Task, n)
	for i := range m.Tasks {
		if err := m.Tasks[i].decodePayload(d); err != nil {
			return err
		}
	}
	return nil
}

func (r *Result) appendPayload(b []byte) []byte {
	b = append(b, 0x98)
	b = appendUint(b, r.ID)
	b = appendUint(b, uint64(r.Err))
	b = appendBin(b, r.Value)
	b = appendStr(b, r.Msg)
	b = appendStr(b, r.Stack)
	b = appendInt(b, int64(r.Rank))
	b = appendInt(b, r.Start)
	return appendInt(b, r.End)
}

func (r *Result) decodePayload(d *decoder) (err error) {
	if err = d.expectArray(8, "Result"); err != nil {
		return err
	}
	if r.ID, err = d.uint64(); err != nil {
		return err
	}
	v, err := d.uint(math.MaxUint8)
	if err != nil {
		return err
	}
	r.Err = ErrKind(v)
	if r.Value, err = d.bytes(); err != nil {
		return err
	}
	if r.Msg, err = d.str(); err != nil {
		return err
	}
	if r.Stack, err = d.str(); err != nil {
		return err
	}
	if r.Rank, err = d.int32(); err != nil {
		return err
	}
	if r.Start, err = d.int64(); err != nil {
		return err
	}
	r.End, err = d.int64()
	return err
}

func (m *ResultBatch) appendPayload(b []byte) []byte {
	b = append(b, 0x92)
	b = appendUint(b, uint64(m.Credit))
	if m.Results == nil {
		return append(b, mpNil)
	}
	b = appendArrayLen(b, len(m.Results))
	for i := range m.Results {
		b = m.Results[i].appendPayload(b)
	}
	return b
}

func (m *ResultBatch) decodePayload(d *decoder) (err error) {
	if err = d.expectArray(2, "ResultBatch"); err != nil {
		return err
	}
	if m.Credit, err = d.uint32(); err != nil {
		return err
	}
	n, err := d.arrayLen(minResultSize)
	if err != nil || n < 0 {
		return err
	}
	m.Results = make([]Result, n)
	for i := range m.Results {
		if err := m.Results[i].decodePayload(d); err != nil {
			return err
		}
	}
	return nil
}

func (m *Credit) appendPayload(b []byte) []byte {
	return appendUint(append(b, 0x91), uint64(m.N))
}

func (m *Credit) decodePayload(d *decoder) (err error) {
	if err = d.expectArray(1, "Credit"); err != nil {
		return err
	}
	m.N, err = d.uint32()
	return err
}

func (m *Heartbeat) appendPayload(b []byte) []byte {
	b = appendUint(append(b, 0x92), m.Seq)
	return appendInt(b, m.Time)
}

func (m *Heartbeat) decodePayload(d *decoder) (err error) {
	if err = d.expectArray(2, "Heartbeat"); err != nil {
		return err
	}
	if m.Seq, err = d.uint64(); err != nil {
		return err
	}
	m.Time, err = d.int64()
	return err
}

func (m *Shutdown) appendPayload(b []byte) []byte {
	return appendStr(append(b, 0x91), m.Reason)
}

func (m *Shutdown) decodePayload(d *decoder) (err error) {
	if err = d.expectArray(1, "Shutdown"); err != nil {
		return err
	}
	m.Reason, err = d.str()
	return err
}

func (m *Reject) appendPayload(b []byte) []byte {
	return appendStr(append(b, 0x91), m.Reason)
}

func (m *Reject) decodePayload(d *decoder) (err error) {
	if err = d.expectArray(1, "Reject"); err != nil {
		return err
	}
	m.Reason, err = d.str()
	return err
}
