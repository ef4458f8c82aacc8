package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/rankfarm/rankfarm/monitor"
	"github.com/spf13/pflag"
)

func cmdMonitor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("monitor", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: rankfarm monitor [flags] RUNDIR_OR_DB

Serve the web dashboard of a run's monitoring database on this machine: the
run's summary, tasks over time by state, a per-rank timeline, failures with
their errors, the blocks' events. The page updates every second while the
run goes on. RUNDIR_OR_DB is the database file or the directory that holds
monitor.db (what Options.Monitor or RANKFARM_MONITOR named).

Record a run with:
  RANKFARM_MONITOR=RUNDIR rankfarm run ...    (or any front end; Options.Monitor)

Flags:
`)
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "127.0.0.1:0", "address to serve on; port 0 picks a free one (the URL is printed)")
	jsonOut := fs.Bool("json", false, "print the latest run's snapshot (what the page shows) as JSON and exit, serving nothing")
	run := fs.Int64("run", 0, "with --json: the run to print (0 = the latest)")
	expand := fs.Bool("expand", true, "first expand the packed task chunks into rows of the tasks table, for plain SQL (in the background; needs write access)")
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		fmt.Fprintf(stderr, "rankfarm monitor: %v\n", err)
		fs.Usage()
		return errUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "rankfarm monitor: want one RUNDIR_OR_DB")
		fs.Usage()
		return errUsage
	}
	if *run < 0 {
		fmt.Fprintln(stderr, "rankfarm monitor: --run must not be negative")
		return errUsage
	}
	r, err := monitor.OpenReader(fs.Arg(0))
	if err != nil {
		return err
	}
	defer r.Close()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if *jsonOut {
		snap, err := r.Snapshot(ctx, *run)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(snap)
	}
	if *expand {
		go func() {
			start := time.Now()
			n, err := r.Materialize(ctx, 0)
			if err != nil && ctx.Err() == nil {
				log.Warn("could not expand the task chunks (the dashboard reads them anyway)", "err", err)
				return
			}
			if n > 0 {
				log.Info("expanded task chunks into the tasks table", "tasks", n, "took", time.Since(start).Round(time.Millisecond))
			}
		}()
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rankfarm monitor: serving %s at http://%s/ (Ctrl-C to stop)\n", r.Path(), ln.Addr())
	return monitor.NewServer(r, log).Serve(ctx, ln)
}
