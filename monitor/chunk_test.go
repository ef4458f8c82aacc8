package monitor

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sampleRecs() []*taskRec {
	return []*taskRec{
		{id: 1, app: "a", submitted: 1000, dispatched: 1100, started: 1200, ended: 1300, fin: 1400, block: "b0", rank: 3, attempts: 1},
		{id: 2, app: "b", submitted: 900, ready: 950, fin: 990, rank: -1, failed: true, errKind: ErrDependency, errMsg: "dep"},
		{id: 1 << 40, app: "a", submitted: 5000, dispatched: 4000, started: 3000, ended: 3500, fin: 6000, block: "b1", rank: 0, attempts: 3, requeues: 2, failed: true, errKind: 2, errMsg: "panic: x"},
		{id: 4, app: "", submitted: 7000, fin: 7001, unresolved: true},
	}
}

func TestChunkRoundTrip(t *testing.T) {
	enc := newChunkEncoder()
	for round := range 2 { // the encoder is reused
		recs := sampleRecs()
		for _, r := range recs {
			enc.add(r, r.errMsg)
		}
		data := append([]byte(nil), enc.finish()...)
		var got []TaskRow
		require.NoError(t, decodeChunk(data, func(r *TaskRow) { got = append(got, *r) }), "round %d", round)
		require.Len(t, got, len(recs))
		assert.Equal(t, TaskRow{ID: 1, App: "a", State: StateDone, Submitted: 1000, Dispatched: 1100, Started: 1200, Ended: 1300, Finished: 1400, Block: "b0", Rank: 3, Attempts: 1}, got[0])
		assert.Equal(t, TaskRow{ID: 2, App: "b", State: StateFailed, Submitted: 900, Ready: 950, Finished: 990, Rank: -1, ErrKind: "dependency failed", Error: "dep"}, got[1])
		assert.Equal(t, TaskRow{ID: 1 << 40, App: "a", State: StateFailed, Submitted: 5000, Dispatched: 4000, Started: 3000, Ended: 3500, Finished: 6000, Block: "b1", Rank: 0, Attempts: 3, Requeues: 2, ErrKind: "panic", Error: "panic: x"}, got[2])
		assert.Equal(t, StateUnresolved, got[3].State)
		assert.Empty(t, got[3].ErrKind)
	}
}

func TestChunkRejectsBadInput(t *testing.T) {
	enc := newChunkEncoder()
	for _, r := range sampleRecs() {
		enc.add(r, r.errMsg)
	}
	good := append([]byte(nil), enc.finish()...)
	for name, data := range map[string][]byte{
		"empty":     nil,
		"magic":     {'X', 1},
		"version":   {'R', 9},
		"truncated": good[:len(good)-3],
		"trailing":  append(append([]byte(nil), good...), 0),
		"count":     {'R', 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"app index": {'R', 1, 0, 0, 0, 1, 1, 5},
	} {
		err := decodeChunk(data, func(*TaskRow) {})
		assert.True(t, errors.Is(err, errBadChunk), "%s: %v", name, err)
	}
}

// FuzzDecodeChunk checks that no input makes the decoder panic, loop or
// allocate without bound, and that the rows it yields are in range.
func FuzzDecodeChunk(f *testing.F) {
	enc := newChunkEncoder()
	for _, r := range sampleRecs() {
		enc.add(r, r.errMsg)
	}
	f.Add(append([]byte(nil), enc.finish()...))
	f.Add([]byte{'R', 1, 0, 0, 0, 0})
	f.Add([]byte{'R', 1, 1, 1, 'a', 0, 2, 1, 0, 0, 0, 0, 0, 0xff, 0x7f, 1, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var rows []TaskRow
		if err := decodeChunk(data, func(r *TaskRow) { rows = append(rows, *r) }); err != nil {
			return
		}
		for _, r := range rows {
			if r.State != StateDone && r.State != StateFailed && r.State != StateUnresolved {
				t.Fatalf("state %q", r.State)
			}
			if r.Rank < -1 {
				t.Fatalf("rank %d", r.Rank)
			}
		}
	})
}
