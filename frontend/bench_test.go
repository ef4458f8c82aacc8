package frontend

import (
	"runtime"
	"testing"
)

// BenchmarkPendingTask reports the front end's memory per pending task
// (B/pending: the task, its argument bytes, its Future and the caller's
// pointer to it) and the cost of a Call. The block grants no credit, so every
// task stays pending.
func BenchmarkPendingTask(b *testing.B) {
	ex, _ := newTestExecutor(b, 1, 0, Options{}, nil)
	fs := make([]*Future[struct{}], 0, b.N)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		fs = append(fs, Noop.Call(ex, V(struct{}{})))
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), "B/pending")
	runtime.KeepAlive(fs)
}

// BenchmarkRoundTrip is submit-to-result through an in-process block, many
// tasks in flight: the front end's own cost per task.
func BenchmarkRoundTrip(b *testing.B) {
	ex, _ := newTestExecutor(b, 2, 1024, Options{}, nil)
	b.ReportAllocs()
	fs := make([]*Future[int64], b.N)
	b.ResetTimer()
	for i := range fs {
		fs[i] = inc.Call(ex, V(int64(i)))
	}
	for _, f := range fs {
		if _, err := f.Get(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}
