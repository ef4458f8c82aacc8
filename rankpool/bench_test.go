package rankpool

import (
	"context"
	"fmt"
	"testing"

	"github.com/rankfarm/rankfarm/serialize"
)

// BenchmarkLocalTree measures the throughput of a whole in-process tree: one
// op is one task sent by a credit-obeying front end, run by an echo Runner
// and its result returned. allocs/op is allocations per task.
func BenchmarkLocalTree(b *testing.B) {
	shapes := []struct {
		name   string
		size   int
		nodeOf []int
		cfg    Config
	}{
		{name: "ranks=1", size: 1},
		{name: "ranks=1/prefetch=64", size: 1, cfg: Config{Prefetch: 64}},
		{name: "ranks=2", size: 2},
		{name: "ranks=8/nodes=1", size: 8},
		{name: "ranks=12/nodes=3", size: 12, nodeOf: []int{0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2}},
		{name: "ranks=12/nodes=3/prefetch=64", size: 12, nodeOf: []int{0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2}, cfg: Config{Prefetch: 64}},
		{name: "ranks=64/nodes=4", size: 64, nodeOf: blocks(64, 4)},
	}
	for _, s := range shapes {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			runErr, feErr := runTree(context.Background(), s.size, s.nodeOf, s.cfg, echo, frontEnd{n: b.N, batch: 4096})
			if feErr != nil || runErr != nil {
				b.Fatal(feErr, runErr)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// BenchmarkRelayStep measures the relay state machine alone: a parent batch
// of 4096 tasks spread over 64 children and their results gathered up,
// without transport or goroutines. One op is one task there and back.
func BenchmarkRelayStep(b *testing.B) {
	const kids, batch = 64, 4096
	children := make([]int, kids)
	for i := range children {
		children[i] = i + 1
	}
	r := NewRelay(scheduler(children...), Config{})
	for _, c := range children {
		r.Step(credit(c, 0, batch/kids))
	}
	out := r.Ready(nil)
	ts := tasks(0, batch)
	perChild := make([][]serialize.Result, kids)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		r.Step(taskBatch(Upstream, 0, ts))
		out = r.Ready(out[:0])
		for _, e := range out {
			tb := e.Msg.(*serialize.TaskBatch)
			rs := perChild[e.To-1][:0]
			for _, t := range tb.Tasks {
				rs = append(rs, serialize.Result{ID: t.ID})
			}
			perChild[e.To-1] = rs
			r.Step(resultBatch(e.From+e.To, 0, uint32(len(rs)), rs))
		}
		out = r.Ready(out[:0])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// blocks returns a node map of size ranks in nodes contiguous blocks.
func blocks(size, nodes int) []int {
	m := make([]int, size)
	for r := range m {
		m[r] = r * nodes / size
	}
	return m
}

func ExampleLayout() {
	for r := range 5 {
		p := Layout(r, 5, []int{0, 0, 1, 1, 1}, 0)
		fmt.Println(r, p.Role, p.Parent, p.Children)
	}
	// Output:
	// 0 scheduler -1 [1 2]
	// 1 worker 0 []
	// 2 sub-master 0 [3 4]
	// 3 worker 2 []
	// 4 worker 2 []
}
