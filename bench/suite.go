package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
)

// The parts of the standard suite, in the order Suite runs them.
const (
	PartThroughput = "throughput" // no-op tasks, one future each
	PartLatency    = "latency"    // sequential single-task round trips
	PartEfficiency = "efficiency" // sleep tasks against the ideal makespan
	PartScaling    = "scaling"    // throughput, latency and efficiency over rank counts
	PartMemory     = "memory"     // the front end's heap per pending task
)

// AllParts lists every part, in the order Suite runs them.
var AllParts = []string{PartThroughput, PartLatency, PartEfficiency, PartScaling, PartMemory}

// Defaults of Config.
const (
	DefaultTasks         = 200000
	DefaultLatencyRounds = 10000
	DefaultScaleTasks    = 50000
	DefaultScaleRounds   = 1000
	DefaultScaleWaves    = 100
	// DefaultEfficiencyTarget is the ideal makespan that AutoWaves aims
	// at for each task duration.
	DefaultEfficiencyTarget = 2 * time.Second
	// MinWaves is the fewest waves AutoWaves gives a duration.
	MinWaves = 3
	// ScaleTaskDuration is the sleep task of the scaling part's efficiency
	// run.
	ScaleTaskDuration = 10 * time.Millisecond
	// warmupTasks are run before the throughput of each executor.
	warmupTasks = 2000
)

// Default lists of Config, as the command line spells them.
const (
	DefaultParts               = "throughput,latency,efficiency,scaling,memory"
	DefaultEfficiencyDurations = "1ms,10ms,1s"
	DefaultScaleNP             = "1,2,4,8"
	DefaultMemoryPending       = "10000,30000,100000"
)

// Config says what Suite measures.
type Config struct {
	// NP is the ranks of the block of the throughput, latency, efficiency
	// and memory parts.
	NP int
	// Parts are the parts to run (see AllParts); empty means all.
	Parts []string
	// Tasks is the throughput part's number of no-op tasks.
	Tasks int
	// LatencyRounds is the latency part's number of round trips.
	LatencyRounds int
	// EfficiencyDurations are the sleep tasks' durations.
	EfficiencyDurations []time.Duration
	// EfficiencyWaves are the tasks per worker slot: one count for every
	// duration, or one per duration; empty means AutoWaves.
	EfficiencyWaves []int
	// ScaleNP are the rank counts of the scaling part; each starts its own
	// block.
	ScaleNP []int
	// ScaleTasks, ScaleRounds and ScaleWaves are the scaling part's no-op
	// tasks, latency round trips and waves of ScaleTaskDuration tasks per
	// rank count.
	ScaleTasks, ScaleRounds, ScaleWaves int
	// MemoryPending are the pending-task counts at which the memory part
	// reads the heap.
	MemoryPending []int
	// Progress, if set, gets a line as each part starts or ends.
	Progress func(string)
}

// DefaultConfig returns the standard suite on np ranks.
func DefaultConfig(np int) Config {
	durs, _ := ParseDurations(DefaultEfficiencyDurations)
	scale, _ := ParseCounts(DefaultScaleNP)
	mem, _ := ParseCounts(DefaultMemoryPending)
	return Config{
		NP: np, Parts: slices.Clone(AllParts),
		Tasks: DefaultTasks, LatencyRounds: DefaultLatencyRounds,
		EfficiencyDurations: durs, ScaleNP: scale,
		ScaleTasks: DefaultScaleTasks, ScaleRounds: DefaultScaleRounds, ScaleWaves: DefaultScaleWaves,
		MemoryPending: mem,
	}
}

// Has reports whether c runs part.
func (c Config) Has(part string) bool { return len(c.Parts) == 0 || slices.Contains(c.Parts, part) }

// Validate checks c, naming the first bad field.
func (c Config) Validate() error {
	if c.NP < 1 {
		return fmt.Errorf("bench: np %d: want at least 1", c.NP)
	}
	for _, p := range c.Parts {
		if !slices.Contains(AllParts, p) {
			return fmt.Errorf("bench: unknown part %q: want some of %s", p, strings.Join(AllParts, ","))
		}
	}
	if c.Tasks < 0 || c.LatencyRounds < 0 || c.ScaleTasks < 0 || c.ScaleRounds < 0 || c.ScaleWaves < 0 {
		return errors.New("bench: task and round counts must not be negative")
	}
	for _, d := range c.EfficiencyDurations {
		if d <= 0 {
			return fmt.Errorf("bench: efficiency duration %v: want more than 0", d)
		}
	}
	if n := len(c.EfficiencyWaves); n > 1 && n != len(c.EfficiencyDurations) {
		return fmt.Errorf("bench: %d efficiency wave counts for %d durations: give one, or one per duration", n, len(c.EfficiencyDurations))
	}
	for _, w := range c.EfficiencyWaves {
		if w < 1 {
			return fmt.Errorf("bench: efficiency waves %d: want at least 1", w)
		}
	}
	for _, np := range c.ScaleNP {
		if np < 1 {
			return fmt.Errorf("bench: scaling np %d: want at least 1", np)
		}
	}
	for _, n := range c.MemoryPending {
		if n < 1 {
			return fmt.Errorf("bench: memory pending count %d: want at least 1", n)
		}
	}
	return nil
}

// wavesFor returns the tasks per worker slot of the i-th efficiency
// duration.
func (c Config) wavesFor(i int) int {
	switch len(c.EfficiencyWaves) {
	case 0:
		return AutoWaves(c.EfficiencyDurations[i], DefaultEfficiencyTarget)
	case 1:
		return c.EfficiencyWaves[0]
	}
	return c.EfficiencyWaves[i]
}

// MaxPending is the largest of c's memory counts, or 0.
func (c Config) MaxPending() int {
	if len(c.MemoryPending) == 0 {
		return 0
	}
	return slices.Max(c.MemoryPending)
}

// ParseParts parses a comma list of part names; "all" stands for every
// part. It rejects an unknown or empty name.
func ParseParts(s string) ([]string, error) {
	var parts []string
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		switch {
		case f == "all":
			parts = append(parts, AllParts...)
		case slices.Contains(AllParts, f):
			parts = append(parts, f)
		case f == "":
			return nil, fmt.Errorf("bench: parts %q: an empty name", s)
		default:
			return nil, fmt.Errorf("bench: unknown part %q: want some of %s", f, strings.Join(AllParts, ","))
		}
	}
	// In AllParts' order, once each.
	out := make([]string, 0, len(AllParts))
	for _, p := range AllParts {
		if slices.Contains(parts, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// ParseDurations parses a comma list of positive Go durations ("1ms,10ms,1s").
func ParseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		d, err := time.ParseDuration(f)
		if err != nil {
			return nil, fmt.Errorf("bench: duration %q: %w", f, err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("bench: duration %q: want more than 0", f)
		}
		out = append(out, d)
	}
	return out, nil
}

// ParseCounts parses a comma list of positive integers ("2,4,8").
func ParseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("bench: count %q: not a whole number", f)
		}
		if n < 1 {
			return nil, fmt.Errorf("bench: count %q: want at least 1", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// StartFunc starts an executor whose block has np ranks.
type StartFunc func(ctx context.Context, np int) (*frontend.Executor, error)

// Suite runs the parts of cfg: throughput, latency and efficiency on one
// block of cfg.NP ranks, scaling on a block per rank count of cfg.ScaleNP,
// and memory on a block of its own (closing it fails the tasks it left
// pending, which is how they end). Each block is started by start and
// closed before Suite returns. The Result names this machine.
func Suite(ctx context.Context, start StartFunc, cfg Config) (Result, error) {
	r := Result{NP: cfg.NP, Machine: ThisMachine(ctx)}
	if cfg.Has(PartThroughput) {
		r.Tasks = cfg.Tasks
	}
	for _, p := range AllParts {
		if cfg.Has(p) {
			r.Parts = append(r.Parts, p)
		}
	}
	if err := cfg.Validate(); err != nil {
		return r, err
	}
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			cfg.Progress(fmt.Sprintf(format, args...))
		}
	}
	if cfg.Has(PartThroughput) || cfg.Has(PartLatency) || cfg.Has(PartEfficiency) {
		if err := r.runMain(ctx, start, cfg, progress); err != nil {
			return r, err
		}
	}
	if cfg.Has(PartScaling) {
		for _, np := range cfg.ScaleNP {
			progress("scaling: np %d", np)
			s, err := runScale(ctx, start, np, cfg)
			r.Scaling = append(r.Scaling, s)
			r.Errors += s.Errors
			if err != nil {
				return r, fmt.Errorf("bench: scaling at np %d: %w", np, err)
			}
		}
	}
	if cfg.Has(PartMemory) && len(cfg.MemoryPending) > 0 {
		progress("memory: %v pending tasks", cfg.MemoryPending)
		pts, err := PendingMemory(ctx, func(ctx context.Context) (*frontend.Executor, error) { return start(ctx, cfg.NP) }, cfg.MemoryPending)
		if err != nil {
			return r, err
		}
		r.Memory = pts
		r.PendingTaskBytes = pts[len(pts)-1].BytesPerTask
	}
	return r, nil
}

// runMain runs throughput, latency and efficiency on one block of cfg.NP
// ranks.
func (r *Result) runMain(ctx context.Context, start StartFunc, cfg Config, progress func(string, ...any)) (err error) {
	ex, err := start(ctx, cfg.NP)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := ex.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("bench: close: %w", cerr)
		}
	}()
	r.Workers = Workers(ex)
	if cfg.Has(PartThroughput) {
		progress("throughput: %d no-op tasks", cfg.Tasks)
		tput, bad, err := measureThroughput(ctx, ex, cfg.Tasks)
		r.Errors += bad
		if err != nil {
			return err
		}
		r.ThroughputS = tput.Seconds()
		if cfg.Tasks > 0 {
			r.TasksPerS = float64(cfg.Tasks) / tput.Seconds()
		}
	}
	if cfg.Has(PartLatency) && cfg.LatencyRounds > 0 {
		progress("latency: %d round trips", cfg.LatencyRounds)
		lat, bad, err := Latency(ctx, ex, cfg.LatencyRounds)
		r.Errors += bad
		if err != nil {
			return fmt.Errorf("bench: latency: %w", err)
		}
		r.setLatency(lat)
	}
	if cfg.Has(PartEfficiency) {
		for i, d := range cfg.EfficiencyDurations {
			tasks := cfg.wavesFor(i) * r.Workers
			progress("efficiency: %d tasks of %v, %d worker slots", tasks, d, r.Workers)
			e, err := RunEfficiency(ctx, ex, d, tasks)
			r.Efficiency = append(r.Efficiency, e)
			r.Errors += e.Errors
			if err != nil {
				return fmt.Errorf("bench: efficiency of %v tasks: %w", d, err)
			}
		}
	}
	return nil
}

// measureThroughput warms ex up and then times n no-op tasks.
func measureThroughput(ctx context.Context, ex *frontend.Executor, n int) (time.Duration, int, error) {
	// Warm up: the first tasks pay for connection set-up and page faults.
	if _, _, err := Throughput(ctx, ex, min(n, warmupTasks)); err != nil {
		return 0, 0, fmt.Errorf("bench: warm-up: %w", err)
	}
	if n == 0 {
		return 0, 0, nil
	}
	d, bad, err := Throughput(ctx, ex, n)
	if err != nil {
		return 0, bad, fmt.Errorf("bench: throughput: %w", err)
	}
	return d, bad, nil
}

// Workers returns the worker slots of ex's blocks.
func Workers(ex *frontend.Executor) int {
	n := 0
	for _, b := range ex.Blocks() {
		n += b.Workers
	}
	return n
}

// Scale is the scaling part's measure at one rank count.
type Scale struct {
	NP      int `json:"np"`
	Workers int `json:"workers"`
	// Tasks and TasksPerS are the no-op throughput run's.
	Tasks     int     `json:"tasks"`
	TasksPerS float64 `json:"tasks_per_s"`
	// LatencyP50us and LatencyP99us are single-task round trips.
	LatencyP50us float64 `json:"latency_p50_us"`
	LatencyP99us float64 `json:"latency_p99_us"`
	// Efficiency10ms is the efficiency of ScaleWaves waves of 10 ms sleep
	// tasks (0 when none ran).
	Efficiency10ms float64 `json:"efficiency_10ms"`
	Errors         int     `json:"errors"`
}

// runScale measures one rank count on a block of its own.
func runScale(ctx context.Context, start StartFunc, np int, cfg Config) (s Scale, err error) {
	s = Scale{NP: np, Tasks: cfg.ScaleTasks}
	ex, err := start(ctx, np)
	if err != nil {
		return s, err
	}
	defer func() {
		if cerr := ex.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("bench: close: %w", cerr)
		}
	}()
	s.Workers = Workers(ex)
	d, bad, err := measureThroughput(ctx, ex, cfg.ScaleTasks)
	s.Errors += bad
	if err != nil {
		return s, err
	}
	if cfg.ScaleTasks > 0 {
		s.TasksPerS = float64(cfg.ScaleTasks) / d.Seconds()
	}
	if cfg.ScaleRounds > 0 {
		lat, bad, err := Latency(ctx, ex, cfg.ScaleRounds)
		s.Errors += bad
		if err != nil {
			return s, fmt.Errorf("bench: latency: %w", err)
		}
		s.LatencyP50us, s.LatencyP99us = micros(Percentile(lat, 0.50)), micros(Percentile(lat, 0.99))
	}
	if cfg.ScaleWaves > 0 {
		e, err := RunEfficiency(ctx, ex, ScaleTaskDuration, cfg.ScaleWaves*s.Workers)
		s.Errors += e.Errors
		if err != nil {
			return s, fmt.Errorf("bench: efficiency: %w", err)
		}
		s.Efficiency10ms = e.Efficiency
	}
	return s, nil
}

// micros is d in microseconds.
func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
