package monitor

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A chunk packs the records of many settled tasks into one BLOB of the
// task_chunks table, so that the writer pays one insert per chunk rather
// than one per task. Chunks are expanded into rows of the tasks table when
// the writer is idle, when the run ends, and when a reader opens the
// database (see Materialize); until then a Reader decodes them.
//
// Layout (integers are Go varints or uvarints):
//
//	'R' 1                      magic and version
//	uvarint napps, napps × (uvarint len, bytes)     app names
//	uvarint nblocks, nblocks × (uvarint len, bytes) block names
//	varint base                Unix ns that submitted times count from
//	uvarint n                  tasks, then n times:
//	  uvarint id, uvarint app index, uvarint state (0 done, 1 failed, 2 unresolved)
//	  varint submitted-base, uvarint presence bits (ready, dispatched,
//	  started, ended, finished), one varint (time-submitted) per bit set
//	  uvarint block index+1 (0: none), varint rank (-1: none)
//	  uvarint attempts, uvarint requeues
//	  state ≠ done: uvarint err kind, uvarint len, message bytes

const (
	chunkMagic   = 'R'
	chunkVersion = 1
	// maxChunkTasks bounds the tasks in one chunk, and maxDict the
	// distinct app or block names.
	maxChunkTasks = 1 << 16
	maxDict       = 1 << 12
	maxString     = 1 << 20
)

// Task states in the database.
const (
	StateDone       = "done"
	StateFailed     = "failed"
	StateUnresolved = "unresolved"
)

var stateNames = [...]string{StateDone, StateFailed, StateUnresolved}

// TaskRow is one settled task as the tasks table holds it. Times are Unix
// nanoseconds, 0 when unknown; Rank is -1 when the task never ran.
type TaskRow struct {
	ID                                           uint64
	App, State                                   string
	Submitted, Ready, Dispatched, Started, Ended int64
	Finished                                     int64
	Block                                        string
	Rank                                         int32
	Attempts, Requeues                           uint32
	// ErrKind names the failure's kind ("app error", "panic", "dependency
	// failed", …) and Error is its message; both "" for a done task.
	ErrKind, Error string
}

// chunkEncoder builds one chunk. Its buffers are reused from chunk to
// chunk.
type chunkEncoder struct {
	body      []byte
	apps      map[string]uint64
	appList   []string
	blocks    map[string]uint64
	blockList []string
	base      int64
	n         int
	out       []byte
}

func newChunkEncoder() *chunkEncoder {
	return &chunkEncoder{apps: make(map[string]uint64), blocks: make(map[string]uint64)}
}

// full reports whether the chunk can take no more tasks.
func (c *chunkEncoder) full() bool {
	return c.n >= maxChunkTasks || len(c.appList) >= maxDict || len(c.blockList) >= maxDict
}

// add appends one settled task; msg is its error's message when it failed.
func (c *chunkEncoder) add(t *taskRec, msg string) {
	if c.n == 0 {
		c.base = t.submitted
	}
	c.n++
	app, ok := c.apps[t.app]
	if !ok {
		app = uint64(len(c.appList))
		c.apps[t.app] = app
		c.appList = append(c.appList, t.app)
	}
	state := uint64(0)
	switch {
	case t.unresolved:
		state = 2
	case t.failed:
		state = 1
	}
	b := binary.AppendUvarint(c.body, t.id)
	b = binary.AppendUvarint(b, app)
	b = binary.AppendUvarint(b, state)
	b = binary.AppendVarint(b, t.submitted-c.base)
	times := [5]int64{t.ready, t.dispatched, t.started, t.ended, t.fin}
	var bits uint64
	for i, v := range times {
		if v != 0 {
			bits |= 1 << i
		}
	}
	b = binary.AppendUvarint(b, bits)
	for _, v := range times {
		if v != 0 {
			b = binary.AppendVarint(b, v-t.submitted)
		}
	}
	blk := uint64(0)
	if t.block != "" {
		i, ok := c.blocks[t.block]
		if !ok {
			i = uint64(len(c.blockList))
			c.blocks[t.block] = i
			c.blockList = append(c.blockList, t.block)
		}
		blk = i + 1
	}
	b = binary.AppendUvarint(b, blk)
	rank := int64(t.rank)
	if t.started == 0 && t.ended == 0 {
		rank = -1
	}
	b = binary.AppendVarint(b, rank)
	b = binary.AppendUvarint(b, uint64(t.attempts))
	b = binary.AppendUvarint(b, uint64(t.requeues))
	if state != 0 {
		if len(msg) > maxString {
			msg = msg[:maxString]
		}
		b = binary.AppendUvarint(b, uint64(t.errKind))
		b = binary.AppendUvarint(b, uint64(len(msg)))
		b = append(b, msg...)
	}
	c.body = b
}

// finish returns the chunk (valid until the next add) and resets the
// encoder.
func (c *chunkEncoder) finish() []byte {
	b := append(c.out[:0], chunkMagic, chunkVersion)
	for _, list := range [][]string{c.appList, c.blockList} {
		b = binary.AppendUvarint(b, uint64(len(list)))
		for _, s := range list {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	b = binary.AppendVarint(b, c.base)
	b = binary.AppendUvarint(b, uint64(c.n))
	b = append(b, c.body...)
	c.out = b
	c.body = c.body[:0]
	clear(c.apps)
	clear(c.blocks)
	c.appList, c.blockList = c.appList[:0], c.blockList[:0]
	c.n, c.base = 0, 0
	return b
}

// errBadChunk is the error of a chunk that does not decode.
var errBadChunk = errors.New("monitor: bad task chunk")

type chunkReader struct {
	b   []byte
	err error
}

func (r *chunkReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errBadChunk, what)
	}
}

func (r *chunkReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *chunkReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *chunkReader) str(what string) string {
	n := r.uvarint(what)
	if r.err != nil {
		return ""
	}
	if n > maxString || n > uint64(len(r.b)) {
		r.fail(what + ": length out of range")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *chunkReader) dict(what string) []string {
	n := r.uvarint(what)
	if n > maxDict || n > uint64(len(r.b)) {
		r.fail(what + ": too many names")
		return nil
	}
	out := make([]string, 0, n)
	for range n {
		out = append(out, r.str(what))
	}
	return out
}

// decodeChunk calls f for each task of a chunk, in order, and returns the
// first problem it finds (after which f is not called again).
func decodeChunk(data []byte, f func(*TaskRow)) error {
	if len(data) < 2 || data[0] != chunkMagic {
		return fmt.Errorf("%w: no magic", errBadChunk)
	}
	if data[1] != chunkVersion {
		return fmt.Errorf("%w: version %d, want %d", errBadChunk, data[1], chunkVersion)
	}
	r := &chunkReader{b: data[2:]}
	apps := r.dict("apps")
	blocks := r.dict("blocks")
	base := r.varint("base")
	n := r.uvarint("count")
	if r.err == nil && (n > maxChunkTasks || n > uint64(len(r.b))) {
		r.fail("count out of range")
	}
	var row TaskRow
	for i := uint64(0); i < n && r.err == nil; i++ {
		row = TaskRow{ID: r.uvarint("id")}
		app := r.uvarint("app")
		state := r.uvarint("state")
		row.Submitted = base + r.varint("submitted")
		bits := r.uvarint("presence")
		if r.err != nil {
			break
		}
		if app >= uint64(len(apps)) || state >= uint64(len(stateNames)) || bits >= 1<<5 {
			r.fail("index out of range")
			break
		}
		row.App, row.State = apps[app], stateNames[state]
		for j, p := range [5]*int64{&row.Ready, &row.Dispatched, &row.Started, &row.Ended, &row.Finished} {
			if bits&(1<<j) != 0 {
				*p = row.Submitted + r.varint("time")
			}
		}
		blk := r.uvarint("block")
		rank := r.varint("rank")
		attempts := r.uvarint("attempts")
		requeues := r.uvarint("requeues")
		if r.err != nil {
			break
		}
		if blk > uint64(len(blocks)) || rank < -1 || rank > 1<<31-1 || attempts > 1<<32-1 || requeues > 1<<32-1 {
			r.fail("field out of range")
			break
		}
		if blk > 0 {
			row.Block = blocks[blk-1]
		}
		row.Rank, row.Attempts, row.Requeues = int32(rank), uint32(attempts), uint32(requeues)
		if state != 0 {
			kind := r.uvarint("error kind")
			if kind > 255 {
				r.fail("error kind out of range")
				break
			}
			if kind != 0 {
				row.ErrKind = errKindName(uint8(kind))
			}
			row.Error = r.str("error")
		}
		if r.err == nil {
			f(&row)
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	return r.err
}
