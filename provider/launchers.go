package provider

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// Srun launches a block's ranks with Slurm's srun, inside an allocation (a
// job script of the Slurm provider): srun --mpi=pmix --export=ALL -n np exe
// args. The ranks see the job's environment, and env on top of it, which
// the job script exports (or, outside a script, the command's own
// environment carries); no value goes on the command line. It implements
// launch.Launcher.
//
// Debian's Open MPI works with --mpi=pmix and not with pmi2.
type Srun struct {
	// Path is srun's path; "" means srun on $PATH.
	Path string
	// MPI is the PMI plugin, --mpi=…; "" means "pmix".
	MPI string
	// KeepGoing drops --kill-on-bad-exit=1, which otherwise ends the
	// whole block when one rank fails, as mpirun does.
	KeepGoing bool
	// ExtraArgs go after rankfarm's own flags, before the executable,
	// e.g. "--overcommit" for more ranks than the allocation's CPUs.
	ExtraArgs []string
}

// Command implements launch.Launcher.
func (s Srun) Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error) {
	if np < 1 {
		return nil, fmt.Errorf("provider: srun needs at least 1 rank, not %d", np)
	}
	if exe == "" {
		return nil, errors.New("provider: srun: no executable to launch")
	}
	envv, err := envList(env)
	if err != nil {
		return nil, fmt.Errorf("provider: srun: %w", err)
	}
	path := s.Path
	if path == "" {
		path = "srun"
	}
	mpi := s.MPI
	if mpi == "" {
		mpi = "pmix"
	}
	argv := []string{"--mpi=" + mpi, "--export=ALL", "-n", fmt.Sprint(np)}
	if !s.KeepGoing {
		argv = append(argv, "--kill-on-bad-exit=1")
	}
	argv = append(argv, s.ExtraArgs...)
	argv = append(argv, exe)
	argv = append(argv, args...)
	cmd := exec.Command(path, argv...)
	cmd.Env = append(os.Environ(), envv...)
	return cmd, nil
}

// Single launches one process of exe, without MPI: a program built with
// the nompi tag, or one that starts its own parallelism. It implements
// launch.Launcher and refuses np other than 1.
type Single struct{}

// Command implements launch.Launcher.
func (Single) Command(np int, exe string, args []string, env map[string]string) (*exec.Cmd, error) {
	if np != 1 {
		return nil, fmt.Errorf("provider: the single-process launcher starts 1 process, not %d: set the block's ranks to 1, or use an MPI launcher", np)
	}
	if exe == "" {
		return nil, errors.New("provider: single: no executable to launch")
	}
	envv, err := envList(env)
	if err != nil {
		return nil, fmt.Errorf("provider: single: %w", err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envv...)
	return cmd, nil
}

// envList checks env's names and returns it as sorted NAME=value pairs.
func envList(env map[string]string) ([]string, error) {
	out := make([]string, 0, len(env))
	for k, v := range env {
		if !validEnvKey.MatchString(k) {
			return nil, fmt.Errorf("%q is not a valid environment variable name", k)
		}
		if strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("environment variable %s holds a NUL byte", k)
		}
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}
