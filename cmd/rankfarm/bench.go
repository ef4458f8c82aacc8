package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/rankfarm/rankfarm/bench"
	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/spf13/pflag"
)

const benchUsage = `Usage: rankfarm bench [flags]

Run the standard benchmark suite on this machine or allocation. Each part
starts blocks of this same binary under mpirun (oversubscribed when there
are more ranks than cores) and closes them:
  throughput  TASKS no-op tasks (the built-in echo app), one future each,
              from the first submit to the last result, on NP ranks;
  latency     LATENCY-ROUNDS single tasks one after another: p50, p99,
              p99.9 and max, on NP ranks;
  efficiency  for each duration D of --efficiency-durations, W waves of
              sleep tasks (W tasks per worker slot) submitted at once on NP
              ranks. The ideal makespan is ceil(tasks / worker slots) x D,
              the time the tasks would take with no overhead at all; the
              efficiency is ideal / measured makespan, the measure running
              from the first submit to the last result (1 = no overhead);
  scaling     for each rank count of --scale-np, a block of its own:
              SCALE-TASKS no-op tasks/s, SCALE-ROUNDS round trips (p50, p99)
              and the efficiency of SCALE-WAVES waves of 10 ms sleep tasks;
  memory      the front end's heap per pending task: tasks that wait for a
              task that does not end are submitted in this process, and the
              heap (after a GC) is read at each count of --memory-pending;
              closing the block then fails them.
Rank 0 schedules and the other ranks work (a block of 1 rank works on rank
0 itself). Every value is checked; "errors" counts wrong or failed tasks.

With --hosts the same parts (throughput, latency and the efficiency of 1 ms
tasks unless --parts and --efficiency-durations say otherwise) run twice in
one run: on NP ranks of this host, then on NP ranks over the hosts (NP
defaults to their slots), and the ratios of the two are printed. The other
hosts must reach --listen and see --run-dir and this binary, for example:

  rankfarm bench --hosts n1:4,n2:4,n3:4,n4:4 --listen 10.0.0.1:0 \
      --network 10.0.0.0/24 --run-dir $HOME/rf-bench

Flags:
`

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	np := fs.Int("np", runtime.NumCPU(), "ranks of the block of the throughput, latency, efficiency and memory parts: rank 0 plus NP-1 workers")
	partsFlag := fs.String("parts", bench.DefaultParts, "the parts to run, a comma list of throughput, latency, efficiency, scaling, memory (or all)")
	tasks := fs.Int("tasks", bench.DefaultTasks, "no-op tasks of the throughput part")
	rounds := fs.Int("latency-rounds", bench.DefaultLatencyRounds, "sequential single-task round trips of the latency part")
	effDurs := fs.String("efficiency-durations", bench.DefaultEfficiencyDurations, "the efficiency part's sleep-task durations, a comma list of Go durations (500us, 10ms, 1s)")
	effWaves := fs.String("efficiency-waves", "auto", "tasks per worker slot of each efficiency duration: one count for all, a comma list with one per duration, or auto (enough for 2 s of ideal makespan, at least 3)")
	scaleNP := fs.String("scale-np", bench.DefaultScaleNP, "the scaling part's rank counts, a comma list; each starts a block of its own")
	scaleTasks := fs.Int("scale-tasks", bench.DefaultScaleTasks, "no-op tasks per rank count of the scaling part")
	scaleRounds := fs.Int("scale-rounds", bench.DefaultScaleRounds, "single-task round trips per rank count of the scaling part")
	scaleWaves := fs.Int("scale-waves", bench.DefaultScaleWaves, "waves of 10 ms sleep tasks per rank count of the scaling part (0 skips its efficiency)")
	memPending := fs.String("memory-pending", bench.DefaultMemoryPending, "the memory part's pending-task counts, a comma list")
	maxPrefetch := fs.Int("max-prefetch", 0, "most tasks a worker holds per slot when tasks are short (0 = the executor's default, 256)")
	prefetch := fs.Int("prefetch", 0, "tasks a worker may hold per slot (0 = the executor's default)")
	slots := fs.Int("slots", 0, "tasks each worker runs at once (0 = 1); the ideal makespan counts every slot")
	jsonOut := fs.Bool("json", false, "print one JSON object instead of a table")
	linkKind := fs.String("link", "tcp", "how the front end and the blocks talk: tcp, or queue (batch files in a shared directory)")
	out := fs.String("out", "", "also write into this directory the result (result.json), a Markdown report naming the command and the machine (results.md) and the plots of the parts that ran, PNG and SVG: latency, efficiency, scaling, memory")
	queueDir := fs.String("queue-dir", "", "with --link queue: the queue's directory (default: a fresh one under the system's temporary directory, removed after)")
	var hf hostFlags
	hf.add(fs)
	listen := fs.String("listen", "", "with --hosts: the address of this host that the other hosts reach, e.g. 10.0.0.1:0 (default 127.0.0.1:0)")
	runDir := fs.String("run-dir", "", "with --hosts: the run directory (token file), which the other hosts must see (default: a fresh temporary directory)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	usageErr := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "rankfarm bench: "+format+"\n", a...)
		return errUsage
	}
	if *np < 1 {
		return usageErr("--np %d: want at least 1", *np)
	}
	if *tasks < 0 || *rounds < 0 || *scaleTasks < 0 || *scaleRounds < 0 || *scaleWaves < 0 || *prefetch < 0 || *maxPrefetch < 0 || *slots < 0 {
		return usageErr("counts must not be negative")
	}
	cfg := bench.Config{NP: *np, Tasks: *tasks, LatencyRounds: *rounds,
		ScaleTasks: *scaleTasks, ScaleRounds: *scaleRounds, ScaleWaves: *scaleWaves}
	var err error
	lists := []struct {
		flag, value string
		parse       func(string) error
	}{
		{"--parts", *partsFlag, func(s string) (err error) { cfg.Parts, err = bench.ParseParts(s); return }},
		{"--efficiency-durations", *effDurs, func(s string) (err error) { cfg.EfficiencyDurations, err = bench.ParseDurations(s); return }},
		{"--efficiency-waves", *effWaves, func(s string) (err error) {
			if strings.TrimSpace(s) != "auto" {
				cfg.EfficiencyWaves, err = bench.ParseCounts(s)
			}
			return
		}},
		{"--scale-np", *scaleNP, func(s string) (err error) { cfg.ScaleNP, err = bench.ParseCounts(s); return }},
		{"--memory-pending", *memPending, func(s string) (err error) { cfg.MemoryPending, err = bench.ParseCounts(s); return }},
	}
	for _, l := range lists {
		if err = l.parse(l.value); err != nil {
			return usageErr("%s %q: %s", l.flag, l.value, strings.TrimPrefix(err.Error(), "bench: "))
		}
	}
	if err = cfg.Validate(); err != nil {
		return usageErr("%s", strings.TrimPrefix(err.Error(), "bench: "))
	}

	opt := frontend.Options{Prefetch: *prefetch, MaxPrefetch: *maxPrefetch, Slots: *slots,
		// The memory part keeps its tasks pending: let them all in.
		MaxPending: max(frontend.DefaultMaxPending, cfg.MaxPending()+16),
		Logger:     slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	switch *linkKind {
	case "tcp":
		if *queueDir != "" {
			return usageErr("--queue-dir needs --link queue")
		}
	case "queue":
		opt.QueueDir = *queueDir
		if opt.QueueDir == "" {
			dir, err := os.MkdirTemp("", "rankfarm-bench-queue-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			opt.QueueDir = dir
		}
	default:
		return usageErr("--link %q: want tcp or queue", *linkKind)
	}
	cfg.Progress = func(s string) { fmt.Fprintf(stderr, "rankfarm bench: %s\n", s) }
	start := func(ctx context.Context, np int) (*frontend.Executor, error) {
		o := opt
		o.NP = np
		return frontend.Start(ctx, o)
	}
	if hf != (hostFlags{}) {
		// --hosts: the same parts on this host and across the hosts, in
		// one run; the efficiency of 1 ms tasks unless asked otherwise.
		var l launch.MPIRun
		slots, err := hf.apply(&l)
		if err != nil {
			return usageErr("%v", err)
		}
		if len(l.Hosts) == 0 {
			return usageErr("--rsh-agent and --network go with --hosts")
		}
		if !fs.Changed("np") {
			cfg.NP = slots
		}
		if *listen == "" || strings.HasPrefix(*listen, "127.") {
			fmt.Fprintf(stderr, "rankfarm bench: warning: ranks on other hosts cannot reach a loopback address; pass --listen with an address of this host that they reach\n")
		}
		if !fs.Changed("parts") {
			cfg.Parts = []string{bench.PartThroughput, bench.PartLatency, bench.PartEfficiency}
		}
		if !fs.Changed("efficiency-durations") {
			cfg.EfficiencyDurations = []time.Duration{time.Millisecond}
		}
		across := func(ctx context.Context, np int) (*frontend.Executor, error) {
			o := opt
			o.NP, o.Launcher, o.ListenAddr, o.RunDir = np, l, *listen, *runDir
			return frontend.Start(ctx, o)
		}
		cmp, err := bench.CompareHosts(ctx, start, across, l.Hosts, cfg)
		if err != nil {
			return err
		}
		cmp.OneHost.Link, cmp.AcrossHosts.Link = *linkKind, *linkKind
		if *jsonOut {
			return cmp.WriteJSON(stdout)
		}
		return cmp.WriteTable(stdout)
	}
	res, err := bench.Suite(ctx, start, cfg)
	if err != nil {
		return err
	}
	res.Link = *linkKind
	res.Command = strings.TrimSpace("rankfarm bench " + strings.Join(args, " "))
	if *out != "" {
		if err := res.WriteReport(*out, res.Command); err != nil {
			return err
		}
	}
	if *jsonOut {
		return res.WriteJSON(stdout)
	}
	return res.WriteTable(stdout)
}
