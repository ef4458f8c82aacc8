package serialize

import (
	"fmt"
	"runtime"
	"testing"
)

var benchSizes = []int{1, 64, 4096}

// benchEncode measures AppendBody of m, which holds n tasks or results.
func benchEncode(b *testing.B, m Message, n int) {
	c := NewCodec(Options{})
	buf, err := c.AppendBody(nil, m)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	start := mallocs()
	for b.Loop() {
		buf, err = c.AppendBody(buf[:0], m)
		if err != nil {
			b.Fatal(err)
		}
	}
	reportPerItem(b, n, start)
}

// benchDecode measures DecodeBody of m's body, which holds n tasks or results.
func benchDecode(b *testing.B, m Message, n int) {
	c := NewCodec(Options{})
	body, err := c.AppendBody(nil, m)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	start := mallocs()
	for b.Loop() {
		if _, err := c.DecodeBody(body); err != nil {
			b.Fatal(err)
		}
	}
	reportPerItem(b, n, start)
}

// mallocs reports the process's count of heap allocations so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// reportPerItem adds ns/task and allocs/task metrics for a loop that handled
// n tasks or results per iteration and began when mallocs reported start.
func reportPerItem(b *testing.B, n int, start uint64) {
	allocs := mallocs() - start
	per := float64(b.N) * float64(n)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/per, "ns/task")
	b.ReportMetric(float64(allocs)/per, "allocs/task")
}

func BenchmarkTaskBatch(b *testing.B) {
	for _, n := range benchSizes {
		m := noopTaskBatch(n)
		b.Run(fmt.Sprintf("encode/%d", n), func(b *testing.B) { benchEncode(b, m, n) })
		b.Run(fmt.Sprintf("decode/%d", n), func(b *testing.B) { benchDecode(b, m, n) })
	}
}

func BenchmarkResultBatch(b *testing.B) {
	for _, n := range benchSizes {
		m := noopResultBatch(n)
		b.Run(fmt.Sprintf("encode/%d", n), func(b *testing.B) { benchEncode(b, m, n) })
		b.Run(fmt.Sprintf("decode/%d", n), func(b *testing.B) { benchDecode(b, m, n) })
	}
}
