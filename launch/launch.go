// Package launch starts blocks: a Launcher turns "np ranks of this program
// with this environment" into the command line of an MPI launcher, and a
// Process runs that command in a process group of its own, so that the whole
// job can be stopped at once.
package launch

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// Launcher builds the command that starts np ranks of exe with args, each
// rank seeing the variables in env on top of the launcher's own environment.
type Launcher interface {
	Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error)
}

// MPIRun launches with mpirun, Open MPI's or MPICH's (Hydra's mpiexec).
// The zero value picks the launcher that matches this binary's MPI binding
// (Built): mpirun.openmpi or mpirun.mpich, else plain mpirun; see Resolve.
//
// With Open MPI each variable of the environment is passed on with -x, so
// ranks on other nodes see it too; --oversubscribe lets a block have more
// ranks than cores, and as root it adds --allow-run-as-root. With MPICH
// it passes -genvall, Hydra's default made explicit: the whole environment,
// rankfarm's variables included, reaches every rank on every node; Hydra
// needs no flag to oversubscribe nor to run as root. Either way no value
// goes on the command line, where other users could read it.
type MPIRun struct {
	// Family chooses the flags; Detect (the zero value) tells it from the
	// launcher's name or its --version output.
	Family Family
	// Path is the launcher to run; "" looks on $PATH for the one that
	// matches Family, or else Built.
	Path string
	// NoOversubscribe drops Open MPI's --oversubscribe, which is on by
	// default so that a block may have more ranks than the machine has
	// cores. MPICH oversubscribes without being asked.
	NoOversubscribe bool
	// ExtraArgs go after rankfarm's own flags, before the executable.
	ExtraArgs []string
	// Hosts places the ranks on these hosts, each "name" or "name:slots"
	// (Open MPI's -H, Hydra's -hosts); nil leaves placement to the
	// launcher: this machine, a hostfile named in ExtraArgs, or the batch
	// job's allocation. See CheckHosts.
	Hosts []string
	// Agent is the remote shell that starts the launcher's daemons on the
	// other hosts, called as "AGENT [options] HOST COMMAND..." as ssh is
	// (Open MPI's plm_rsh_agent; Hydra's -launcher ssh -launcher-exec).
	// "" means the launcher's default, ssh. It must be an executable file.
	Agent string
	// Network names the network the ranks and the launcher talk over, for
	// hosts with several interfaces where some do not reach the others: an
	// address range in CIDR form ("10.1.0.0/16") or an interface name
	// ("ib0"). Open MPI gets it as btl_tcp_if_include and
	// oob_tcp_if_include, so neither its daemons nor its ranks pick an
	// interface that the other hosts cannot reach; Hydra gets the
	// interface of this host in that range as -iface, for the connections
	// of its proxies back to the launcher. "" lets the launcher choose.
	Network string
}

// EnvNetwork passes MPIRun.Network to the ranks (the same name as
// mpi.EnvNetwork): they bind their wake-up sockets in that network.
const EnvNetwork = "RANKFARM_NETWORK"

// euid is os.Geteuid, replaced in tests.
var euid = os.Geteuid

// Command implements Launcher. The command's environment is the current
// process's plus env. It fails when exe is this very program and the
// launcher is of another MPI family than its binding.
func (m MPIRun) Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error) {
	return m.command(Built, np, exe, args, env)
}

// command is Command for a program whose binding is of family built.
func (m MPIRun) command(built Family, np int, exe string, args []string, env map[string]string) (*exec.Cmd, error) {
	if np < 1 {
		return nil, fmt.Errorf("launch: mpirun needs at least 1 rank, not %d", np)
	}
	if exe == "" {
		return nil, errors.New("launch: no executable to launch")
	}
	if m.Network != "" {
		// The ranks bind their wake-up sockets in the same network.
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env[EnvNetwork] = m.Network
	}
	names := make([]string, 0, len(env))
	for k := range env {
		if k == "" {
			return nil, errors.New("launch: an environment variable without a name")
		}
		if strings.ContainsAny(k, "=,\x00") {
			return nil, fmt.Errorf("launch: environment variable name %q holds '=', ',' or NUL", k)
		}
		names = append(names, k)
	}
	sort.Strings(names)
	family, path, err := m.resolve(built)
	if err != nil {
		return nil, err
	}
	if err := checkMatch(built, family, path, exe); err != nil {
		return nil, err
	}
	place, err := m.placement(family)
	if err != nil {
		return nil, err
	}
	var argv []string
	switch family {
	case MPICH:
		argv = append(argv, "-genvall", "-np", fmt.Sprint(np))
		argv = append(argv, place...)
	default:
		if euid() == 0 {
			argv = append(argv, "--allow-run-as-root")
		}
		if !m.NoOversubscribe {
			argv = append(argv, "--oversubscribe")
		}
		argv = append(argv, "-np", fmt.Sprint(np))
		argv = append(argv, place...)
		for _, k := range names {
			argv = append(argv, "-x", k)
		}
	}
	argv = append(argv, m.ExtraArgs...)
	argv = append(argv, exe)
	argv = append(argv, args...)
	cmd := exec.Command(path, argv...)
	cmd.Env = os.Environ()
	for _, k := range names {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	return cmd, nil
}
