package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"github.com/rankfarm/rankfarm/frontend"
)

// MemoryPoint is the front end's heap with Pending tasks waiting.
type MemoryPoint struct {
	Pending int `json:"pending"`
	// HeapBytes is the growth of the live heap (runtime.MemStats.HeapAlloc
	// after a GC) since before the first pending task was submitted.
	HeapBytes int64 `json:"heap_bytes"`
	// BytesPerTask is HeapBytes / Pending.
	BytesPerTask float64 `json:"bytes_per_task"`
}

// gateSeconds is the sleep of the task that the pending tasks wait for: far
// longer than any measurement, since closing the executor ends it.
const gateSeconds = 3600

// PendingMemory measures the front end's memory per pending task. It starts
// an executor, submits one long sleep task (the gate) and then no-op tasks
// that each wait for the gate (frontend.After), so that none can run; at
// each count of counts (taken in ascending order) it collects the garbage
// and reads the heap. Then it closes the executor, which fails every
// pending task with an error matching frontend.ErrClosed; one that ends
// otherwise is an error. A point's bytes hold the task, its encoded
// argument, its Future and the gate's link to it, not the caller's slice
// of futures (allocated before the first read).
func PendingMemory(ctx context.Context, start func(context.Context) (*frontend.Executor, error), counts []int) (pts []MemoryPoint, err error) {
	counts = slices.Clone(counts)
	slices.Sort(counts)
	counts = slices.Compact(counts)
	if len(counts) == 0 || counts[0] < 1 {
		return nil, errors.New("bench: memory: want pending counts of at least 1")
	}
	ex, err := start(ctx)
	if err != nil {
		return nil, err
	}
	futs := make([]*frontend.Future[struct{}], 0, counts[len(counts)-1])
	gate := frontend.Sleep.Call(ex, frontend.V(float64(gateSeconds)))
	closed := false
	defer func() {
		if !closed {
			_ = ex.Close()
		}
	}()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, n := range counts {
		for len(futs) < n {
			futs = append(futs, frontend.Noop.Call(ex, frontend.V(struct{}{}), frontend.After(gate)))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if ctx.Err() != nil {
			return pts, fmt.Errorf("bench: memory: %w", ctx.Err())
		}
		select {
		case <-gate.Done():
			_, gerr := gate.Get(ctx)
			return pts, fmt.Errorf("bench: memory: the task the pending tasks wait for ended before the measure: %v", gerr)
		default:
		}
		heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		pts = append(pts, MemoryPoint{Pending: n, HeapBytes: heap, BytesPerTask: float64(heap) / float64(n)})
	}

	closed = true
	if err := ex.Close(); err != nil {
		return pts, fmt.Errorf("bench: memory: close: %w", err)
	}
	for i, f := range futs {
		if _, err := f.Get(ctx); !errors.Is(err, frontend.ErrClosed) {
			return pts, fmt.Errorf("bench: memory: pending task %d ended with %v, not as closed", i, err)
		}
	}
	runtime.KeepAlive(futs)
	return pts, nil
}
