// Package launch starts blocks: a Launcher turns "np ranks of this program
// with this environment" into the command line of an MPI launcher, and a
// Process runs that command in a process group of its own, so that the whole
// job can be stopped at once.
package launch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
)

// Launcher builds the command that starts np ranks of exe with args, each
// rank seeing the variables in env on top of the launcher's own environment.
type Launcher interface {
	Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error)
}

// MPIRun launches with Open MPI's mpirun. Each variable of the environment
// is passed on with -x, so ranks on other nodes see it too; as root it adds
// --allow-run-as-root.
type MPIRun struct {
	// Path is the mpirun to run; "" means "mpirun" from $PATH.
	Path string
	// NoOversubscribe drops --oversubscribe, which is on by default so that
	// a block may have more ranks than the machine has cores.
	NoOversubscribe bool
	// ExtraArgs go after rankfarm's own flags, before the executable.
	ExtraArgs []string
}

// euid is os.Geteuid, replaced in tests.
var euid = os.Geteuid

// Command implements Launcher. The command's environment is the current
// process's plus env.
func (m MPIRun) Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error) {
	if np < 1 {
		return nil, fmt.Errorf("launch: mpirun needs at least 1 rank, not %d", np)
	}
	if exe == "" {
		return nil, errors.New("launch: no executable to launch")
	}
	path := m.Path
	if path == "" {
		path = "mpirun"
	}
	var argv []string
	if euid() == 0 {
		argv = append(argv, "--allow-run-as-root")
	}
	if !m.NoOversubscribe {
		argv = append(argv, "--oversubscribe")
	}
	argv = append(argv, "-np", fmt.Sprint(np))
	names := make([]string, 0, len(env))
	for k := range env {
		if k == "" {
			return nil, errors.New("launch: an environment variable without a name")
		}
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		argv = append(argv, "-x", k)
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
