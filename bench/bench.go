// Package bench holds rankfarm's benchmarks that a user can run on their own
// machine or allocation: no-op throughput with one future per task, and the
// round-trip latency of single tasks. Results come as a Result that prints
// as JSON or as a small table.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
)

// Result is one benchmark run. Its JSON field names are stable: scripts read
// them.
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
	Host          string  `json:"host"`
	Cores         int     `json:"cores"`
	GoVersion     string  `json:"go_version"`
	Errors        int     `json:"errors"`
	// Link is how the front end and the block talked: "tcp" or "queue".
	Link string `json:"link,omitempty"`
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

// Run runs the throughput and latency benchmarks on ex.
func Run(ctx context.Context, ex *frontend.Executor, np, tasks, rounds int) (Result, error) {
	host, _ := os.Hostname()
	r := Result{NP: np, Tasks: tasks, LatencyRounds: rounds, Host: host, Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	// Warm up: the first tasks pay for connection set-up and page faults.
	if _, _, err := Throughput(ctx, ex, min(tasks, 2000)); err != nil {
		return r, err
	}
	if tasks > 0 {
		d, bad, err := Throughput(ctx, ex, tasks)
		if err != nil {
			return r, fmt.Errorf("bench: throughput: %w", err)
		}
		r.ThroughputS = d.Seconds()
		r.TasksPerS = float64(tasks) / d.Seconds()
		r.Errors += bad
	}
	if rounds > 0 {
		lat, bad, err := Latency(ctx, ex, rounds)
		if err != nil {
			return r, fmt.Errorf("bench: latency: %w", err)
		}
		us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
		r.LatencyP50us = us(Percentile(lat, 0.50))
		r.LatencyP99us = us(Percentile(lat, 0.99))
		r.LatencyP999us = us(Percentile(lat, 0.999))
		r.LatencyMaxUs = us(lat[len(lat)-1])
		r.Latencies = lat
		r.Errors += bad
	}
	return r, nil
}

// WriteJSON prints r as one JSON object.
func (r Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	return enc.Encode(r)
}

// WriteTable prints r for people.
func (r Result) WriteTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, "np %d, %d no-op tasks: %.0f tasks/s (%.3f s)\nlatency over %d single tasks: p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs, max %.0f µs\nerrors: %d\n",
		r.NP, r.Tasks, r.TasksPerS, r.ThroughputS, r.LatencyRounds, r.LatencyP50us, r.LatencyP99us, r.LatencyP999us, r.LatencyMaxUs, r.Errors)
	return err
}
