package frontend

import (
	"context"

	"github.com/rankfarm/rankfarm/internal/cloexec"
	"github.com/rankfarm/rankfarm/internal/registry"
)

// EnvTaskMPIRun names, in a task's environment, the launcher of the
// block's MPI family (mpirun.openmpi, mpirun.mpich, or a plain mpirun of
// that family) when the rank found one on $PATH.
const EnvTaskMPIRun = registry.EnvTaskMPIRun

// CleanEnv returns the environment a shell task starts with, for an app
// that starts a program itself (cmd.Env = frontend.CleanEnv(ctx)): this
// process's, less the variables through which the MPI launcher made it a
// rank and the block's own RANKFARM_ ones (those starting with OMPI_,
// OPAL_, ORTE_, PMIX_, PMI_, HYDRA_, HYDI_, MPIR_, MPICH_ or RANKFARM_, and
// MPI_LOCALRANKID and MPI_LOCALNRANKS, but for the user's settings
// OMPI_ALLOW_RUN_AS_ROOT, OMPI_ALLOW_RUN_AS_ROOT_CONFIRM and OPAL_PREFIX),
// plus RANKFARM_RANK and RANKFARM_ATTEMPT when ctx is a task's and
// RANKFARM_MPIRUN on a rank (EnvTaskMPIRun). An MPI program so started runs
// as a singleton, or as a job of its own under its own mpirun, instead of
// failing in MPI_Init as a stray member of the block's job. PATH, the
// user's variables, those of environment modules and the batch job's
// (SLURM_*, PBS_*) stay. Call CloseOnExec too, right before cmd.Start.
func CleanEnv(ctx context.Context) []string { return registry.TaskEnv(ctx) }

// CloseOnExec marks every descriptor of this process but stdin, stdout and
// stderr close-on-exec, so that a program started afterwards inherits none
// of them (os/exec still hands a child its Stdin, Stdout, Stderr and
// ExtraFiles). A rank does it once when MPI starts, and the shell app
// before every command; an app that starts a program itself should call it
// right before cmd.Start, since the MPI library opens some descriptors
// later without the flag (Open MPI connects to ranks of other nodes on
// first use). It fails only where neither close_range(2) nor /proc/self/fd
// is available.
func CloseOnExec() error { return cloexec.MarkAll() }
