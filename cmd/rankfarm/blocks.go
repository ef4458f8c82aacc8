package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/provider"
)

// blockUsage explains the block flags, for the commands that take them.
const blockUsage = `Blocks on a batch system: with --provider slurm (or pbspro) each block is a
batch job of --nodes nodes × --ranks-per-node ranks, whose script (kept in
--run-dir, which the compute nodes must see) runs --worker-init and then the
launcher (--launcher mpirun or srun). Blocks are asked for as the backlog
grows, up to --max-blocks, and given back after --idle-timeout with nothing
to run, down to --min-blocks. For example, on a Slurm cluster:

  rankfarm run --provider slurm --partition debug --nodes 2 --ranks-per-node 8 \
      --block-walltime 30m --max-blocks 4 --listen 0.0.0.0:0 \
      --run-dir $HOME/rf-run --worker-init 'module load openmpi' jobs.txt
`

// blockFlags are the flags that choose where blocks run.
type blockFlags struct {
	provider      string
	launcher      string
	nodes, rpn    int
	walltime      time.Duration
	partition     string
	account, qos  string
	directives    []string
	workerInit    string
	schedOpts     []string
	initBlocks    int
	minBlocks     int
	maxBlocks     int
	idleTimeout   time.Duration
	listen        string
	runDir        string
	startTimeout  time.Duration
	blockRestarts int
	hosts         hostFlags
}

// hostFlags place mpirun's ranks on other hosts.
type hostFlags struct {
	hosts, agent, network string
}

// add declares the host flags on fs.
func (h *hostFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&h.hosts, "hosts", "", "run the block's ranks on these hosts, a comma list of HOST or HOST:SLOTS (mpirun -H, Hydra -hosts); --np defaults to their slots")
	fs.StringVar(&h.agent, "rsh-agent", "", "the remote shell mpirun starts its daemons on other hosts with (default ssh)")
	fs.StringVar(&h.network, "network", "", "the network the ranks talk over, as a CIDR range or an interface name, when hosts have several (Open MPI: btl/oob_tcp_if_include; Hydra: -iface)")
}

// apply puts the host flags into l, the launcher mpirun builds, and returns
// the ranks the hosts offer (0 without --hosts).
func (h *hostFlags) apply(l *launch.MPIRun) (int, error) {
	if h.hosts != "" {
		l.Hosts = strings.Split(h.hosts, ",")
		if err := launch.CheckHosts(l.Hosts); err != nil {
			return 0, fmt.Errorf("--hosts: %w", err)
		}
	}
	l.Agent, l.Network = h.agent, h.network
	return launch.HostSlots(l.Hosts), nil
}

// add declares the block flags on fs.
func (b *blockFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&b.provider, "provider", "", "where blocks run: \"\" (mpirun launched here, one block), local, slurm or pbspro")
	fs.StringVar(&b.launcher, "launcher", "mpirun", "the launch command inside a block's job: mpirun or srun (srun --mpi=pmix, Slurm only)")
	fs.IntVar(&b.nodes, "nodes", 1, "nodes per block (batch providers)")
	fs.IntVar(&b.rpn, "ranks-per-node", 0, "MPI ranks per node (batch providers; default: --np on one node)")
	fs.DurationVar(&b.walltime, "block-walltime", 0, "a block job's walltime, e.g. 2h (0 = the site's default)")
	fs.StringVar(&b.partition, "partition", "", "Slurm partition or PBS queue")
	fs.StringVar(&b.account, "account", "", "account (Slurm) or project (PBS) to charge")
	fs.StringVar(&b.qos, "qos", "", "Slurm quality of service")
	fs.StringArrayVar(&b.directives, "directive", nil, "an extra job-script directive, e.g. --directive=--mem=4G (repeatable)")
	fs.StringVar(&b.workerInit, "worker-init", "", "shell code a block's job runs before the launcher, e.g. 'module load openmpi'")
	fs.StringArrayVar(&b.schedOpts, "scheduler-option", nil, "an option passed to sbatch or qsub as it is (repeatable)")
	fs.IntVar(&b.initBlocks, "init-blocks", 1, "blocks to ask for at the start")
	fs.IntVar(&b.minBlocks, "min-blocks", 0, "blocks to keep even when idle")
	fs.IntVar(&b.maxBlocks, "max-blocks", 1, "the most blocks at once")
	fs.DurationVar(&b.idleTimeout, "idle-timeout", frontend.DefaultIdleTimeout, "give back a block that had nothing to run this long (drained first)")
	fs.StringVar(&b.listen, "listen", "", "address blocks connect back to, e.g. 0.0.0.0:0 when they run on other nodes (default 127.0.0.1:0)")
	fs.StringVar(&b.runDir, "run-dir", "", "the run directory (job scripts, token file); compute nodes must see it (default: a fresh temporary directory)")
	fs.DurationVar(&b.startTimeout, "start-timeout", 0, "how long a block may take to connect once its job runs (default 60s)")
	fs.IntVar(&b.blockRestarts, "block-restarts", 0, "blocks that may fail to start or be lost before the run gives up (default 3)")
	b.hosts.add(fs)
}

// apply sets the block options of opt from the flags. np is --np, npSet
// whether it was given.
func (b *blockFlags) apply(opt *frontend.Options, np int, npSet bool, log *slog.Logger) error {
	opt.ListenAddr = b.listen
	opt.RunDir = b.runDir
	opt.StartTimeout = b.startTimeout
	opt.BlockRestarts = b.blockRestarts
	if l, ok := opt.Launcher.(launch.MPIRun); ok && b.launcher == "mpirun" {
		slots, err := b.hosts.apply(&l)
		if err != nil {
			return err
		}
		opt.Launcher = l
		if slots > 0 && !npSet {
			opt.NP = slots
		}
		if len(l.Hosts) > 0 && (opt.ListenAddr == "" || strings.HasPrefix(opt.ListenAddr, "127.")) {
			log.Warn("ranks on other hosts cannot reach a loopback address; pass --listen with an address of this host that they reach", "listen", opt.ListenAddr)
		}
	} else if b.hosts != (hostFlags{}) {
		return fmt.Errorf("--hosts, --rsh-agent and --network go with mpirun blocks launched from here")
	}
	switch b.provider {
	case "":
		return nil
	case "local":
		opt.Provider = &provider.Local{}
	case "slurm":
		opt.Provider = &provider.Slurm{Logger: log}
	case "pbspro", "pbs":
		opt.Provider = &provider.PBSPro{Logger: log}
	default:
		return fmt.Errorf("--provider %q: want local, slurm or pbspro", b.provider)
	}
	switch b.launcher {
	case "mpirun": // opt.Launcher as the command set it
	case "srun":
		opt.Launcher = provider.Srun{}
	default:
		return fmt.Errorf("--launcher %q: want mpirun or srun", b.launcher)
	}
	rpn := b.rpn
	if rpn <= 0 {
		rpn = max(np/max(b.nodes, 1), 1)
	}
	opt.NP = max(b.nodes, 1) * rpn
	opt.Block = provider.BlockSpec{
		NodesPerBlock: b.nodes, RanksPerNode: rpn, Walltime: b.walltime,
		Partition: b.partition, Account: b.account, QoS: b.qos,
		Directives: b.directives, WorkerInit: b.workerInit, SchedulerOptions: b.schedOpts,
	}
	opt.Scaling = frontend.Scaling{Init: b.initBlocks, Min: b.minBlocks, Max: b.maxBlocks, IdleTimeout: b.idleTimeout}
	if opt.RunDir == "" && b.provider != "local" {
		// The token file and the job scripts must be where the compute
		// nodes see them: the home directory is, on most clusters; /tmp
		// is not.
		home, err := os.UserHomeDir()
		if err != nil {
			return fmt.Errorf("--run-dir: none given, and no home directory: %w", err)
		}
		dir, err := os.MkdirTemp(home, ".rankfarm-run-")
		if err != nil {
			return fmt.Errorf("--run-dir: %w", err)
		}
		opt.RunDir = dir
	}
	if strings.HasPrefix(opt.ListenAddr, "127.") && b.nodes > 1 {
		log.Warn("blocks on other nodes cannot reach a loopback address; pass --listen 0.0.0.0:0", "listen", opt.ListenAddr)
	}
	return nil
}
