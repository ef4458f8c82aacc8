// Command rankfarm is the stock rankfarm binary.
//
//	rankfarm exec      serve as a rank of a block (what mpirun starts)
//	rankfarm run       run each line of a file as a shell task
//	rankfarm bench     run the standard benchmarks on this machine
//	rankfarm sim       simulate a block of up to millions of workers
//	rankfarm monitor   serve the web dashboard of a run's monitoring database
//	rankfarm version   print the version
//
// Run "rankfarm COMMAND --help" for a command's flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/rankfarm/rankfarm/mpiexec"
	"github.com/spf13/pflag"
)

// version is set at link time (-ldflags "-X main.version=…"); otherwise the
// module version from the build info is used.
var version = ""

func main() {
	// When a front end (bench, a workflow) re-runs this binary under mpirun,
	// it becomes a rank here and never returns.
	mpiexec.Main()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `rankfarm: a parallel scripting executor on one mpirun-launched rank tree.

Usage:
  rankfarm exec [flags]      serve as a rank of a block (what mpirun starts)
  rankfarm run [flags] FILE  run each line of FILE as a shell task (a task farm)
  rankfarm bench [flags]     the benchmark suite: throughput, latency, efficiency, scaling, memory
  rankfarm sim [flags]       the real scheduler on a virtual clock, up to millions of workers
  rankfarm monitor RUNDIR    a live web dashboard of a run's monitoring database
  rankfarm version           print the version

Run "rankfarm COMMAND --help" for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "exec":
		// A rank handles SIGTERM and SIGINT itself (rank 0 shuts the whole
		// block down in order): a context cancelled by the signal would
		// race that shutdown.
		stop()
		err = cmdExec(context.Background(), args[1:], stderr)
	case "bench":
		err = cmdBench(ctx, args[1:], stdout, stderr)
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "sim":
		err = cmdSim(ctx, args[1:], stdout, stderr)
	case "monitor":
		err = cmdMonitor(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "rankfarm", versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "rankfarm: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "rankfarm %s: %v\n", args[0], err)
		return 1
	}
}

// errUsage marks a bad command line; the message was already printed.
var errUsage = errors.New("usage")

// parse parses a command's flags, printing the problem and the flags on a
// mistake.
func parse(fs *pflag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		fmt.Fprintf(stderr, "rankfarm %s: %v\n", fs.Name(), err)
		fs.Usage()
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rankfarm %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return nil
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
		if bi.Main.Version != "" {
			return bi.Main.Version
		}
	}
	return "dev"
}
