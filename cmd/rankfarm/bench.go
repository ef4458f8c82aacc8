package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/rankfarm/rankfarm/bench"
	"github.com/rankfarm/rankfarm/frontend"
	"github.com/spf13/pflag"
)

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: rankfarm bench [flags]

Start a block on this machine (mpirun -np NP of this same binary) and measure:
  - throughput: TASKS no-op tasks (the built-in echo app), one future each,
    from the first submit to the last result;
  - latency: ROUNDS single tasks one after another, p50/p99/p99.9.
Every value is checked; "errors" counts wrong or failed tasks.

Flags:
`)
		fs.PrintDefaults()
	}
	np := fs.Int("np", runtime.NumCPU(), "ranks in the block: rank 0 plus NP-1 workers")
	tasks := fs.Int("tasks", 200000, "no-op tasks for the throughput run")
	rounds := fs.Int("latency-rounds", 2000, "sequential single-task round trips for the latency run")
	maxPrefetch := fs.Int("max-prefetch", 0, "most tasks a worker holds per slot when tasks are short (0 = the executor's default, 256)")
	prefetch := fs.Int("prefetch", 0, "tasks a worker may hold per slot (0 = the executor's default)")
	slots := fs.Int("slots", 0, "tasks each worker runs at once (0 = 1)")
	jsonOut := fs.Bool("json", false, "print one JSON object instead of a table")
	linkKind := fs.String("link", "tcp", "how the front end and the block talk: tcp, or queue (batch files in a shared directory)")
	out := fs.String("out", "", "also write the result (result.json), a Markdown table naming the command and the machine (results.md) and a latency plot (latency.png, latency.svg) into this directory")
	queueDir := fs.String("queue-dir", "", "with --link queue: the queue's directory (default: a fresh one under the system's temporary directory, removed after)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if *np < 1 || *tasks < 0 || *rounds < 0 || *prefetch < 0 || *maxPrefetch < 0 || *slots < 0 {
		fmt.Fprintln(stderr, "rankfarm bench: --np must be at least 1; counts must not be negative")
		return errUsage
	}
	opt := frontend.Options{NP: *np, Prefetch: *prefetch, MaxPrefetch: *maxPrefetch, Slots: *slots}
	switch *linkKind {
	case "tcp":
		if *queueDir != "" {
			fmt.Fprintln(stderr, "rankfarm bench: --queue-dir needs --link queue")
			return errUsage
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
		fmt.Fprintf(stderr, "rankfarm bench: --link %q: want tcp or queue\n", *linkKind)
		return errUsage
	}
	ex, err := frontend.Start(ctx, opt)
	if err != nil {
		return err
	}
	res, err := bench.Run(ctx, ex, *np, *tasks, *rounds)
	res.Link = *linkKind
	if cerr := ex.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if *out != "" {
		if err := res.WriteReport(*out, strings.TrimSpace("rankfarm bench "+strings.Join(args, " "))); err != nil {
			return err
		}
	}
	if *jsonOut {
		return res.WriteJSON(stdout)
	}
	return res.WriteTable(stdout)
}
