package main

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/provider"
)

func TestBlockFlags(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		name    string
		args    []string
		np      int
		npUnset bool // --np was not given
		wantErr string
		check   func(t *testing.T, o frontend.Options)
	}{
		{name: "no provider", args: nil, np: 4, check: func(t *testing.T, o frontend.Options) {
			assert.Nil(t, o.Provider)
			assert.Zero(t, o.Scaling.Max, "one block, the spine's default")
		}},
		{name: "slurm", np: 4, args: []string{"--provider", "slurm", "--partition", "debug", "--nodes", "2", "--ranks-per-node", "8",
			"--block-walltime", "30m", "--max-blocks", "4", "--min-blocks", "1", "--idle-timeout", "90s", "--account", "proj",
			"--qos", "high", "--directive=--mem=4G", "--directive=--exclusive", "--worker-init", "module load openmpi",
			"--scheduler-option=--reservation=demo", "--run-dir", "RUNDIR", "--launcher", "srun"},
			check: func(t *testing.T, o frontend.Options) {
				assert.IsType(t, &provider.Slurm{}, o.Provider)
				assert.IsType(t, provider.Srun{}, o.Launcher)
				assert.Equal(t, 16, o.NP, "nodes × ranks per node")
				assert.Equal(t, provider.BlockSpec{NodesPerBlock: 2, RanksPerNode: 8, Walltime: 30 * time.Minute, Partition: "debug",
					Account: "proj", QoS: "high", Directives: []string{"--mem=4G", "--exclusive"}, WorkerInit: "module load openmpi",
					SchedulerOptions: []string{"--reservation=demo"}}, o.Block)
				assert.Equal(t, frontend.Scaling{Init: 1, Min: 1, Max: 4, IdleTimeout: 90 * time.Second}, o.Scaling)
				assert.Equal(t, "RUNDIR", o.RunDir)
			}},
		{name: "pbs, ranks per node from --np", np: 6, args: []string{"--provider", "pbspro", "--nodes", "3", "--run-dir", "R"},
			check: func(t *testing.T, o frontend.Options) {
				assert.IsType(t, &provider.PBSPro{}, o.Provider)
				assert.Equal(t, 2, o.Block.RanksPerNode)
				assert.Equal(t, 6, o.NP)
			}},
		{name: "local", np: 3, args: []string{"--provider", "local", "--max-blocks", "3"},
			check: func(t *testing.T, o frontend.Options) {
				assert.IsType(t, &provider.Local{}, o.Provider)
				assert.Empty(t, o.RunDir, "local blocks see the temporary run directory")
			}},
		{name: "hosts", np: 4, npUnset: true, args: []string{"--hosts", "n1:4,n2:4,n3", "--rsh-agent", "/usr/bin/ssh", "--network", "10.0.0.0/8", "--listen", "10.0.0.1:0"},
			check: func(t *testing.T, o frontend.Options) {
				assert.Equal(t, launch.MPIRun{Hosts: []string{"n1:4", "n2:4", "n3"}, Agent: "/usr/bin/ssh", Network: "10.0.0.0/8"}, o.Launcher)
				assert.Equal(t, 9, o.NP, "--np defaults to the hosts' slots")
				assert.Equal(t, "10.0.0.1:0", o.ListenAddr)
			}},
		{name: "hosts with --np", np: 4, args: []string{"--hosts", "n1:4,n2:4"},
			check: func(t *testing.T, o frontend.Options) { assert.Zero(t, o.NP, "--np as given (the command sets it)") }},
		{name: "bad host", np: 2, args: []string{"--hosts", "n1:x"}, wantErr: `--hosts: launch: host "n1:x"`},
		{name: "hosts need mpirun", np: 2, args: []string{"--provider", "slurm", "--launcher", "srun", "--hosts", "n1", "--run-dir", "R"}, wantErr: "--hosts, --rsh-agent and --network go with mpirun"},
		{name: "unknown provider", args: []string{"--provider", "lsf"}, np: 2, wantErr: `--provider "lsf"`},
		{name: "unknown launcher", args: []string{"--provider", "slurm", "--launcher", "aprun", "--run-dir", "R"}, np: 2, wantErr: `--launcher "aprun"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			var b blockFlags
			b.add(fs)
			require.NoError(t, fs.Parse(c.args))
			o := frontend.Options{Launcher: launch.MPIRun{}}
			err := b.apply(&o, c.np, !c.npUnset, log)
			if c.wantErr != "" {
				require.ErrorContains(t, err, c.wantErr)
				return
			}
			require.NoError(t, err)
			c.check(t, o)
		})
	}
}
