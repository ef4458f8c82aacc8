package registry

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// EnvTaskMPIRun is the variable that names, for a task, the launcher of
// the block's MPI family (mpirun.openmpi, mpirun.mpich, or a plain mpirun
// of that family) when the rank found one on $PATH: `"$RANKFARM_MPIRUN" -np
// 4 ./prog` runs a job of its own inside a task.
const EnvTaskMPIRun = "RANKFARM_MPIRUN"

// launcherPrefixes mark the variables through which an MPI launcher gives a
// rank its identity in the job, and rankfarm gives a rank its block. A task
// inherits none of them: an MPI program run by a task would otherwise take
// itself for a rank of the block (and fail in MPI_Init), and a rankfarm
// program for a rank of the block.
//
//   - Open MPI: OMPI_ (OMPI_COMM_WORLD_RANK, OMPI_MCA_orte_hnp_uri, OMPI_MCA_ess, …),
//     OPAL_, ORTE_, and PMIX_ (the PMIx server's address and namespace);
//   - MPICH's Hydra: PMI_ (PMI_FD, PMI_RANK, PMI_SIZE, …), HYDRA_ and HYDI_
//     (HYDI_CONTROL_FD), MPIR_ (MPIR_CVAR_CH3_INTERFACE_HOSTNAME) and
//     MPICH_;
//   - rankfarm: RANKFARM_ (the front end's address, the token file, the
//     block's name, RANKFARM_EXEC, …).
var launcherPrefixes = []string{
	"OMPI_", "OPAL_", "ORTE_", "PMIX_",
	"PMI_", "HYDRA_", "HYDI_", "MPIR_", "MPICH_",
	"RANKFARM_",
}

// launcherNames are the launcher's variables that no prefix marks: Hydra's
// node-local rank and rank count.
var launcherNames = map[string]bool{
	"MPI_LOCALRANKID": true,
	"MPI_LOCALNRANKS": true,
}

// userNames are variables under a launcher prefix that are settings of the
// user's, which no launcher sets for a rank and which an MPI program or a
// launcher run by a task needs as much as the block did. Open MPI's mpirun
// refuses to run as root without the first two; OPAL_PREFIX tells a
// relocated Open MPI installation (as environment modules install it)
// where it lives.
var userNames = map[string]bool{
	"OMPI_ALLOW_RUN_AS_ROOT":         true,
	"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": true,
	"OPAL_PREFIX":                    true,
}

// LauncherVar reports whether a task does not inherit the variable name:
// whether it is part of the rank's MPI launcher identity or the block's own
// RANKFARM_ variables (see CleanEnv).
func LauncherVar(name string) bool {
	if userNames[name] {
		return false
	}
	if launcherNames[name] {
		return true
	}
	for _, p := range launcherPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// CleanEnv returns env ("NAME=value" entries, as os.Environ gives them)
// without the variables of the rank's MPI launcher and of the block: those
// that start with OMPI_, OPAL_, ORTE_, PMIX_ (Open MPI and PMIx), PMI_,
// HYDRA_, HYDI_, MPIR_, MPICH_ (MPICH's Hydra), MPI_LOCALRANKID and
// MPI_LOCALNRANKS (Hydra), and RANKFARM_ (rankfarm's own), except
// OMPI_ALLOW_RUN_AS_ROOT, OMPI_ALLOW_RUN_AS_ROOT_CONFIRM and OPAL_PREFIX,
// which are the user's settings. Everything else stays: the user's own
// variables, PATH, those of environment modules, and the batch job's
// (SLURM_*, PBS_*), so that srun or mpirun run by a task find the job's
// allocation. The order of the rest is kept; env itself is not modified.
func CleanEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !LauncherVar(name) {
			out = append(out, kv)
		}
	}
	return out
}

// mpirun finds RANKFARM_MPIRUN's value once (see SetMPIRun).
var mpirun atomic.Pointer[func() string]

// SetMPIRun tells the tasks of this process where the launcher of the
// block's MPI family is: find is called once, when a task first asks for
// its environment, and a non-empty result becomes the task's
// RANKFARM_MPIRUN. mpiexec sets it on every rank.
func SetMPIRun(find func() string) {
	f := sync.OnceValue(find)
	mpirun.Store(&f)
}

// TaskEnv is the environment a task's command starts with: the process's
// own, less the launcher's and the block's variables (CleanEnv), plus the
// variables rankfarm gives a task on purpose: RANKFARM_RANK and
// RANKFARM_ATTEMPT when ctx is a task's, and RANKFARM_MPIRUN on a rank that
// found its family's launcher.
func TaskEnv(ctx context.Context) []string {
	env := CleanEnv(os.Environ())
	if info, ok := Info(ctx); ok {
		env = append(env, EnvTaskRank+"="+strconv.Itoa(info.Rank), EnvTaskAttempt+"="+strconv.Itoa(info.Attempt))
	}
	if f := mpirun.Load(); f != nil {
		if path := (*f)(); path != "" {
			env = append(env, EnvTaskMPIRun+"="+path)
		}
	}
	return env
}
