package sim

import (
	"math"

	"github.com/rankfarm/rankfarm/serialize"
)

// wireSize returns the size of m's body as serialize.Codec encodes it
// uncompressed (header and msgpack payload), computed without encoding. The
// codec compresses payloads above 64 KiB; the simulator charges the
// uncompressed size, an upper bound.
func wireSize(m serialize.Message) int {
	n := serialize.HeaderSize
	switch m := m.(type) {
	case *serialize.TaskBatch:
		n++ // the message's array header
		if m.Tasks == nil {
			return n + 1
		}
		n += arrayLenSize(len(m.Tasks))
		for i := range m.Tasks {
			n += taskSize(&m.Tasks[i])
		}
	case *serialize.ResultBatch:
		n += 1 + uintSize(uint64(m.Credit))
		if m.Results == nil {
			return n + 1
		}
		n += arrayLenSize(len(m.Results))
		for i := range m.Results {
			n += resultSize(&m.Results[i])
		}
	case *serialize.Credit:
		n += 1 + uintSize(uint64(m.N))
	case *serialize.Shutdown:
		n += 1 + strSize(m.Reason)
	case *serialize.Heartbeat:
		n += 1 + uintSize(m.Seq) + intSize(m.Time)
	default:
		n += 16 // not sent by the tree; a rough guess
	}
	return n
}

func taskSize(t *serialize.Task) int {
	return 1 + uintSize(t.ID) + strSize(t.App) + binSize(t.Args) + uintSize(uint64(t.Attempt)) + intSize(t.Walltime)
}

func resultSize(r *serialize.Result) int {
	return 1 + uintSize(r.ID) + uintSize(uint64(r.Err)) + binSize(r.Value) + strSize(r.Msg) +
		strSize(r.Stack) + intSize(int64(r.Rank)) + intSize(r.Start) + intSize(r.End)
}

func arrayLenSize(n int) int {
	switch {
	case n < 16:
		return 1
	case n <= math.MaxUint16:
		return 3
	}
	return 5
}

func uintSize(v uint64) int {
	switch {
	case v <= math.MaxInt8:
		return 1
	case v <= math.MaxUint8:
		return 2
	case v <= math.MaxUint16:
		return 3
	case v <= math.MaxUint32:
		return 5
	}
	return 9
}

func intSize(v int64) int {
	switch {
	case v >= 0:
		return uintSize(uint64(v))
	case v >= -32:
		return 1
	case v >= math.MinInt8:
		return 2
	case v >= math.MinInt16:
		return 3
	case v >= math.MinInt32:
		return 5
	}
	return 9
}

func strSize(s string) int {
	n := len(s)
	switch {
	case n < 32:
		return 1 + n
	case n <= math.MaxUint8:
		return 2 + n
	case n <= math.MaxUint16:
		return 3 + n
	}
	return 5 + n
}

func binSize(p []byte) int {
	n := len(p)
	switch {
	case p == nil:
		return 1
	case n <= math.MaxUint8:
		return 2 + n
	case n <= math.MaxUint16:
		return 3 + n
	}
	return 5 + n
}
