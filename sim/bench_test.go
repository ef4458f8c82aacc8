package sim

import (
	"context"
	"testing"
	"time"
)

// BenchmarkRun measures the simulator itself: one op is one simulated task
// (10 per worker, 1 s each, default cost model). events/op and B/op tell
// its cost per task.
func BenchmarkRun(b *testing.B) {
	for _, workers := range []int{1 << 10, 1 << 16} {
		b.Run("workers="+itoa(workers), func(b *testing.B) {
			b.ReportAllocs()
			cfg := Config{Workers: workers, Tasks: 10 * workers, TaskTime: time.Second,
				Latency: DefaultLatency, Overhead: DefaultOverhead, PerByte: DefaultPerByte}
			var events int64
			tasks := 0
			for b.Loop() {
				rep, err := Run(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				events += rep.Events
				tasks += cfg.Tasks
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(tasks), "ns/task")
			b.ReportMetric(float64(events)/float64(tasks), "events/task")
		})
	}
}

func itoa(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}
