package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/internal/qlink"
	"github.com/rankfarm/rankfarm/mpiexec"
	"github.com/spf13/pflag"
)

func cmdExec(ctx context.Context, args []string, stderr io.Writer) error {
	fs := pflag.NewFlagSet("exec", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: mpirun -np N rankfarm exec [flags]

Serve as one rank of a block. Every rank of the mpirun job runs this; rank 0
connects to the front end, the others become sub-masters and workers. The
built-in apps noop, echo, sleep and shell are served. The run's token is read
from a file (never from the command line).

Where compute nodes cannot open a socket to the front end, --queue DIR makes
rank 0 take its tasks from, and leave its results in, a queue directory on a
filesystem both see (mode 0700, owned by you); the front end opens it first.

Flags (each defaults to the environment variable named):
`)
		fs.PrintDefaults()
	}
	cfg, err := mpiexec.ConfigFromEnv()
	if err != nil {
		return err
	}
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "front end address host:port that rank 0 dials ($"+link.EnvAddr+")")
	fs.StringVar(&cfg.QueueDir, "queue", cfg.QueueDir, "serve the shared-filesystem queue in this directory instead of dialling --addr ($"+qlink.EnvQueue+")")
	fs.StringVar(&cfg.TokenFile, "token-file", cfg.TokenFile, "file holding the run's secret token, mode 0600 ($"+link.EnvTokenFile+")")
	fs.StringVar(&cfg.Block, "block", cfg.Block, "this block's id, reported in the handshake ($"+link.EnvBlock+")")
	fs.IntVar(&cfg.Slots, "slots", cfg.Slots, "tasks each worker runs at once; more than 1 suits I/O-bound apps (0 = 1) ($"+mpiexec.EnvSlots+")")
	fs.IntVar(&cfg.MaxPrefetch, "max-prefetch", cfg.MaxPrefetch, "most tasks per slot a worker holds when tasks are short; adaptive prefetch grows from --prefetch up to it (0 = default 256) ($"+mpiexec.EnvMaxPrefetch+")")
	fs.IntVar(&cfg.Prefetch, "prefetch", cfg.Prefetch, "tasks a worker may hold per slot, running or queued (0 = default) ($"+mpiexec.EnvPrefetch+")")
	fs.IntVar(&cfg.Fanout, "fanout", cfg.Fanout, "most children of one rank in the tree (0 = default) ($"+mpiexec.EnvFanout+")")
	fs.DurationVar(&cfg.PeerTimeout, "peer-timeout", 30*time.Second, "shut the block down when the front end has been silent this long")
	logLevel := fs.String("log-level", envOr(mpiexec.EnvLogLevel, "warn"), "log level: debug, info, warn or error ($"+mpiexec.EnvLogLevel+")")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := os.Setenv(mpiexec.EnvLogLevel, *logLevel); err != nil {
		return err
	}
	if cfg.Slots < 0 || cfg.Prefetch < 0 || cfg.MaxPrefetch < 0 || cfg.Fanout < 0 || cfg.PeerTimeout <= 0 {
		return fmt.Errorf("--slots, --prefetch, --max-prefetch and --fanout must not be negative, --peer-timeout must be positive")
	}
	cfg.Logger = mpiexec.LoggerFromEnv()
	return mpiexec.Run(ctx, cfg)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
