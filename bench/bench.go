// Package bench holds rankfarm's standard benchmark suite, which a user runs
// on their own machine or allocation ("rankfarm bench", "make bench"): no-op
// throughput with one future per task; the round-trip latency of single
// tasks; the efficiency of sleep tasks against the ideal makespan; scaling
// over rank counts; and the front end's memory per pending task. Results
// come as a Result that prints as JSON, as a table, or as a report of a
// Markdown table and plots (WriteReport).
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
)

// Result is one benchmark run. Its JSON field names are stable: scripts read
// them. A part that did not run leaves its fields zero (and the lists of
// efficiency, scaling and memory out).
type Result struct {
	NP            int     `json:"np"`
	Tasks         int     `json:"tasks"`
	TasksPerS     float64 `json:"tasks_per_s"`
	ThroughputS   float64 `json:"throughput_s"`
	LatencyRounds int     `json:"latency_rounds"`
	LatencyP50us  float64 `json:"latency_p50_us"`
	LatencyP99us  float64 `json:"latency_p99_us"`
	LatencyP999us float64 `json:"latency_p999_us"`
	LatencyMaxUs  float64 `json:"latency_max_us"`
	// Machine's fields (host, cores, go_version, cpu_model, os, mpi, date)
	// sit at the top level of the JSON object.
	Machine
	Errors int `json:"errors"`
	// Link is how the front end and the block talked: "tcp" or "queue".
	Link string `json:"link,omitempty"`
	// Workers is the worker slots of the block of NP ranks.
	Workers int `json:"workers,omitempty"`
	// Parts are the parts that ran (see AllParts).
	Parts []string `json:"parts,omitempty"`
	// Command is the command line that made the result.
	Command string `json:"command,omitempty"`
	// Efficiency has one run per sleep-task duration.
	Efficiency []Efficiency `json:"efficiency,omitempty"`
	// Scaling has one measure per rank count.
	Scaling []Scale `json:"scaling,omitempty"`
	// Memory has the heap at each pending-task count, and PendingTaskBytes
	// is the bytes per pending task at the largest.
	Memory           []MemoryPoint `json:"memory,omitempty"`
	PendingTaskBytes float64       `json:"pending_task_bytes,omitempty"`
	// Latencies are the latency run's round trips, sorted (for plots).
	Latencies []time.Duration `json:"-"`
}

// echo is the built-in app that returns its argument: one future per task,
// and each value checked.
var echo = frontend.EchoApp[int64]()

// Throughput submits n echo tasks at once, each with its own future, and
// waits for all; it returns the time from the first submit to the last
// result and the number of tasks whose value was wrong or failed.
func Throughput(ctx context.Context, ex *frontend.Executor, n int) (time.Duration, int, error) {
	futs := make([]*frontend.Future[int64], n)
	start := time.Now()
	for i := range futs {
		futs[i] = echo.Call(ex, frontend.V(int64(i)))
	}
	bad := 0
	for i, f := range futs {
		v, err := f.Get(ctx)
		if ctx.Err() != nil {
			return 0, bad, ctx.Err()
		}
		if err != nil || v != int64(i) {
			bad++
		}
	}
	return time.Since(start), bad, nil
}

// Latency runs rounds single tasks one after another and returns each
// round trip, sorted.
func Latency(ctx context.Context, ex *frontend.Executor, rounds int) ([]time.Duration, int, error) {
	lat := make([]time.Duration, 0, rounds)
	bad := 0
	for i := range rounds {
		t0 := time.Now()
		v, err := echo.Call(ex, frontend.V(int64(i))).Get(ctx)
		lat = append(lat, time.Since(t0))
		if ctx.Err() != nil {
			return nil, bad, ctx.Err()
		}
		if err != nil || v != int64(i) {
			bad++
		}
	}
	slices.Sort(lat)
	return lat, bad, nil
}

// Percentile returns the q-th quantile (0..1) of sorted durations.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// setLatency records the sorted round trips lat.
func (r *Result) setLatency(lat []time.Duration) {
	r.LatencyRounds = len(lat)
	r.LatencyP50us = micros(Percentile(lat, 0.50))
	r.LatencyP99us = micros(Percentile(lat, 0.99))
	r.LatencyP999us = micros(Percentile(lat, 0.999))
	r.LatencyMaxUs = micros(lat[len(lat)-1])
	r.Latencies = lat
}

// ran reports whether part ran (every part counts when Parts is empty).
func (r Result) ran(part string) bool { return len(r.Parts) == 0 || slices.Contains(r.Parts, part) }

// WriteJSON prints r as one JSON object.
func (r Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	return enc.Encode(r)
}

// WriteTable prints r for people: a few lines per part that ran.
func (r Result) WriteTable(w io.Writer) error {
	var b strings.Builder
	if r.ran(PartThroughput) {
		fmt.Fprintf(&b, "np %d, %d no-op tasks: %.0f tasks/s (%.3f s)\n", r.NP, r.Tasks, r.TasksPerS, r.ThroughputS)
	}
	if r.ran(PartLatency) {
		fmt.Fprintf(&b, "latency over %d single tasks: p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs, max %.0f µs\n",
			r.LatencyRounds, r.LatencyP50us, r.LatencyP99us, r.LatencyP999us, r.LatencyMaxUs)
	}
	for _, e := range r.Efficiency {
		fmt.Fprintf(&b, "efficiency of %d sleep tasks of %s, %d worker slots: %.3f (ideal %.3f s, measured %.3f s)\n",
			e.Tasks, fmtMs(e.TaskMs), e.Workers, e.Efficiency, e.IdealS, e.MakespanS)
	}
	for _, s := range r.Scaling {
		fmt.Fprintf(&b, "np %d, %d worker slots: %.0f tasks/s, latency p50 %.0f µs, p99 %.0f µs, efficiency of 10 ms tasks %.3f\n",
			s.NP, s.Workers, s.TasksPerS, s.LatencyP50us, s.LatencyP99us, s.Efficiency10ms)
	}
	for _, m := range r.Memory {
		fmt.Fprintf(&b, "%d pending tasks: %s of heap, %.0f bytes each\n", m.Pending, fmtBytes(m.HeapBytes), m.BytesPerTask)
	}
	fmt.Fprintf(&b, "errors: %d\n", r.Errors)
	_, err := io.WriteString(w, b.String())
	return err
}
