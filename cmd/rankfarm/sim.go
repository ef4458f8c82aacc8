package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rankfarm/rankfarm/rankpool"
	"github.com/rankfarm/rankfarm/sim"
	"github.com/spf13/pflag"
)

func cmdSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("sim", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: rankfarm sim [flags]

Simulate one block on a virtual clock: the real rankpool scheduler state
machines (rank 0, sub-masters, workers, placed by the same tree as under
mpirun) exchange messages through a cost model instead of MPI, with no
goroutine per rank, so a million workers fit in one process.

Cost model: a message of B bytes (its exact wire size) keeps its sender busy
for OVERHEAD + B x PER-BYTE, is in flight for LATENCY, and keeps its receiver
busy for OVERHEAD + B x PER-BYTE again. A rank does one thing at a time and
takes every message that reached it while busy in one round. Tasks run on
the workers' slots for a time drawn from --task-dist. The front end is one
more such rank above rank 0 that sends tasks as soon as it holds credit.

Reported: makespan against the ideal (a lower bound), utilization, rank 0's
and the busiest sub-master's messages and bytes per second of virtual time
and busy share, rank 0's capacity (tasks per second of its busy time: where
it becomes the bottleneck), the deepest queues, peak memory and wall time.
Utilization counts worker time up to the start of the last task (while work
was waiting); the share over the whole makespan is reported beside it.
Unless GOGC or GOMEMLIMIT is set, the garbage collector runs at GOGC=50.

Flags:
`)
		fs.PrintDefaults()
	}
	workers := fs.Int("workers", 1024, "worker ranks; the tree adds rank 0 and the sub-masters it needs")
	ranks := fs.Int("ranks", 0, "world size, as mpirun -np: rank 0, sub-masters and workers together (0 = as --workers needs)")
	fanout := fs.Int("fanout", 0, fmt.Sprintf("most children of one rank (0 = %d)", rankpool.DefaultFanout))
	ranksPerNode := fs.Int("ranks-per-node", 0, "ranks per node, consecutive ranks sharing one (0 = a single node)")
	tasks := fs.Int("tasks", 100000, "tasks to run")
	taskSeconds := fs.Float64("task-seconds", 1, "mean run time of a task in seconds (0 = no-op tasks)")
	distName := fs.String("task-dist", "constant", "task run time distribution: constant, exponential or lognormal (all with mean --task-seconds)")
	sigma := fs.Float64("task-sigma", 1, "shape (sigma) of the lognormal distribution")
	latency := fs.Duration("latency", sim.DefaultLatency, "time a message is in flight, from its sender's last byte to its receiver")
	overhead := fs.Duration("overhead", sim.DefaultOverhead, "busy time one message costs its sender, and again its receiver")
	perByte := fs.String("per-byte", strconv.FormatFloat(sim.DefaultPerByte, 'g', -1, 64)+"ns", "busy time one byte costs its sender, and again its receiver (the wire, copying, encoding, decoding): a time like 0.1ns (10 GB/s) or 2ns; a bare number is nanoseconds")
	slots := fs.Int("slots", 0, "tasks each worker runs at once (0 = 1)")
	prefetch := fs.Int("prefetch", 0, fmt.Sprintf("credit per slot a worker announces at first (0 = %d)", rankpool.DefaultPrefetch))
	maxPrefetch := fs.Int("max-prefetch", 0, fmt.Sprintf("most credit per slot adaptive prefetch grows to for short tasks (0 = %d)", rankpool.DefaultMaxPrefetch))
	maxBatch := fs.Int("max-batch", 0, fmt.Sprintf("most tasks or results in one message (0 = %d)", rankpool.DefaultMaxBatch))
	argBytes := fs.Int("arg-bytes", 0, "size of each task's arguments in bytes")
	valueBytes := fs.Int("value-bytes", 0, "size of each result's value in bytes")
	seed := fs.Uint64("seed", 1, "seed of the task time draws; a run is determined by its flags")
	jsonOut := fs.Bool("json", false, "print one JSON object instead of a table")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	dist, err := sim.ParseDist(*distName)
	if err != nil {
		fmt.Fprintf(stderr, "rankfarm sim: %v\n", err)
		return errUsage
	}
	pb, err := parsePerByte(*perByte)
	if err != nil {
		fmt.Fprintf(stderr, "rankfarm sim: --per-byte: %v\n", err)
		return errUsage
	}
	if *taskSeconds < 0 || *taskSeconds > 1e6 || math.IsNaN(*taskSeconds) || *sigma <= 0 || *sigma > 10 {
		fmt.Fprintln(stderr, "rankfarm sim: --task-seconds must be from 0 to 1e6 and --task-sigma from 0 to 10")
		return errUsage
	}
	if *workers < 1 || *ranks < 0 || *tasks < 0 || *fanout < 0 || *ranksPerNode < 0 || *latency < 0 || *overhead < 0 ||
		*slots < 0 || *prefetch < 0 || *maxPrefetch < 0 || *maxBatch < 0 || *argBytes < 0 || *valueBytes < 0 {
		fmt.Fprintln(stderr, "rankfarm sim: --workers must be at least 1; counts and times must not be negative")
		return errUsage
	}
	cfg := sim.Config{
		Workers:      *workers,
		Ranks:        *ranks,
		RanksPerNode: *ranksPerNode,
		Fanout:       *fanout,
		Tasks:        *tasks,
		TaskTime:     time.Duration(*taskSeconds * float64(time.Second)),
		Dist:         dist,
		Sigma:        *sigma,
		Latency:      *latency,
		Overhead:     *overhead,
		PerByte:      pb,
		ArgBytes:     *argBytes,
		ValueBytes:   *valueBytes,
		Pool:         rankpool.Config{Slots: *slots, Prefetch: *prefetch, MaxPrefetch: *maxPrefetch, MaxBatch: *maxBatch},
		Seed:         *seed,
	}
	if os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "" {
		// The simulator's heap is mostly long-lived state machines: collect
		// at 1.5× the live heap rather than 2×, for a third less peak
		// memory at a few percent more time.
		defer debug.SetGCPercent(debug.SetGCPercent(50))
	}
	rep, err := sim.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		return enc.Encode(rep)
	}
	return writeSimTable(stdout, rep)
}

// parsePerByte reads a per-byte time: a number with a unit (ps, ns, us, µs,
// ms, s) or a bare number of nanoseconds, and returns nanoseconds.
func parsePerByte(s string) (float64, error) {
	units := []struct {
		suffix string
		ns     float64
	}{{"ps", 1e-3}, {"ns", 1}, {"us", 1e3}, {"µs", 1e3}, {"ms", 1e6}, {"s", 1e9}}
	scale := 1.0
	num := strings.TrimSpace(s)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, scale = rest, u.ns
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is not a non-negative time such as 2ns or 500ps", s)
	}
	ns := v * scale
	if ns > 1e9 {
		return 0, fmt.Errorf("%q is more than a second per byte", s)
	}
	return ns, nil
}

func writeSimTable(w io.Writer, r *sim.Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("tree", "%d ranks: rank 0, %d sub-masters, %d workers on %d node(s); fan-out %d, depth %d", r.Ranks, r.SubMasters, r.Workers, r.Nodes, r.Fanout, r.Depth)
	row("tasks", "%d, %s, mean %gs", r.Tasks, r.Dist, r.TaskTime)
	row("model", "latency %gs, overhead %gs per message, %gs per byte", r.Latency, r.Overhead, r.PerByte)
	row("makespan", "%.6f s (ideal %.6f s, efficiency %.4f)", r.Makespan, r.Ideal, r.Efficiency)
	row("utilization", "%.4f until the last task started, %.4f over the makespan", r.Utilization, r.UtilizationMakespan)
	row("throughput", "%.0f tasks/s", r.Throughput)
	row("tasks per worker", "%d to %d", r.TasksPerWorkerMin, r.TasksPerWorkerMax)
	row("rank 0", "%.0f msgs/s, %.0f bytes/s, busy %.4f, capacity %.0f tasks/s", r.Rank0Msgs, r.Rank0Bytes, r.Rank0Busy, r.Rank0Capacity)
	if r.BusiestSubMaster >= 0 {
		row("busiest sub-master", "rank %d: %.0f msgs/s, %.0f bytes/s, busy %.4f", r.BusiestSubMaster, r.BusiestSubMasterMsgs, r.BusiestSubMasterBytes, r.BusiestSubMasterBusy)
	}
	row("deepest queues", "%d tasks in a worker, %d tasks in a relay's backlog, %d messages at a rank", r.MaxWorkerQueue, r.MaxRelayBacklog, r.MaxInbox)
	row("traffic", "%d messages, %d bytes, %d events", r.Messages, r.Bytes, r.Events)
	row("shutdown", "acknowledged at %.6f s", r.Shutdown)
	row("process", "peak RSS %.1f MiB, wall %.2f s", float64(r.PeakRSS)/(1<<20), r.Wall)
	return tw.Flush()
}
