package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mpiProgram is the MPI program the task tests run: it prints its rank and
// the world's size, and with more than one rank rank 0 sends each other
// rank 1000+rank, which doubles it and sends it back.
const mpiProgram = `#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv) {
	int rank, size, v;
	if (MPI_Init(&argc, &argv) != MPI_SUCCESS) return 2;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (size == 1) {
		printf("rank %d of %d\n", rank, size);
	} else if (rank == 0) {
		for (int r = 1; r < size; r++) {
			v = 1000 + r;
			MPI_Send(&v, 1, MPI_INT, r, 0, MPI_COMM_WORLD);
			MPI_Recv(&v, 1, MPI_INT, r, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
			printf("rank 0 of %d got %d from %d\n", size, v, r);
		}
	} else {
		MPI_Recv(&v, 1, MPI_INT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		printf("rank %d of %d got %d from 0\n", rank, size, v);
		v *= 2;
		MPI_Send(&v, 1, MPI_INT, 0, 1, MPI_COMM_WORLD);
	}
	MPI_Finalize();
	return 0;
}
`

// buildMPIProgram compiles mpiProgram in dir with the compiler wrapper of
// the block's MPI family and returns the directory.
func buildMPIProgram(t *testing.T) string {
	t.Helper()
	names := []string{"mpicc.openmpi", "mpicc"}
	if launch.Built == launch.MPICH {
		names = []string{"mpicc.mpich", "mpicc"}
	}
	var cc string
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			cc = p
			break
		}
	}
	require.NotEmpty(t, cc, "no MPI C compiler (%v) on $PATH: install libopenmpi-dev or libmpich-dev", names)
	dir := t.TempDir()
	src := filepath.Join(dir, "prog.c")
	require.NoError(t, os.WriteFile(src, []byte(mpiProgram), 0o644))
	out, err := exec.Command(cc, "-o", filepath.Join(dir, "prog"), src).CombinedOutput()
	require.NoError(t, err, "%s: %s", cc, out)
	return dir
}

// e2eRunsProgram is a Go app that starts a program itself, the documented
// way: frontend.CleanEnv for its environment, frontend.CloseOnExec right
// before it starts.
var e2eRunsProgram = frontend.NewApp2("e2e.runs-program", func(ctx context.Context, dir, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Dir, cmd.Env = dir, frontend.CleanEnv(ctx)
	if err := frontend.CloseOnExec(); err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
})

// removedPrefixes are the variables a task must not inherit (README: What a
// task's environment holds), written out again rather than taken from the
// code under test.
var removedPrefixes = []string{"OMPI_", "OPAL_", "ORTE_", "PMIX_", "PMI_", "HYDRA_", "HYDI_", "MPIR_", "MPICH_",
	"MPI_LOCALRANKID=", "MPI_LOCALNRANKS=", "RANKFARM_"}

// keptOnPurpose are the variables under those prefixes that a task has.
var keptOnPurpose = []string{"OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "OPAL_PREFIX",
	"RANKFARM_RANK", "RANKFARM_ATTEMPT", "RANKFARM_MPIRUN"}

// TestMPIProgramAsTask runs an MPI program, built here with the block's
// family's mpicc, as a task of a block of that family: alone, as a
// singleton, and as a job of its own under "$RANKFARM_MPIRUN -np 2" inside
// a task; also from a Go app through os/exec. Each task's output is
// checked. Tasks list their descriptors and their environment too: only 0,
// 1 and 2, and none of the launcher's variables.
func TestMPIProgramAsTask(t *testing.T) {
	dir := buildMPIProgram(t)
	// Settings of the user's, in the environment the block is launched
	// with: they must reach the tasks.
	t.Setenv("E2E_USER_SETTING", "mine")
	t.Setenv("SLURM_JOB_NAME", "e2e-taskenv")
	nested := `"$RANKFARM_MPIRUN" -np 2 ./prog`
	if launch.Built == launch.OpenMPI {
		nested = `"$RANKFARM_MPIRUN" --oversubscribe -np 2 ./prog`
		if os.Geteuid() == 0 && os.Getenv("OMPI_ALLOW_RUN_AS_ROOT") == "" {
			// What a root user exports for Open MPI's mpirun (as make
			// does): a task's mpirun needs it as much as the block's.
			t.Setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
			t.Setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
		}
	}
	ctx := testCtx(t, 3*time.Minute)
	ex, err := frontend.Start(ctx, frontend.Options{NP: 3, Logger: quietLog()})
	require.NoError(t, err)
	defer ex.Close()

	// A program that takes itself for a rank of the block may hang in
	// MPI_Init (MPICH's, on the block's PMI socket): the walltime makes that
	// a failure of its own.
	limit := frontend.Walltime(time.Minute)
	shell := func(cmd string) *frontend.Future[frontend.ShellResult] {
		return frontend.ShellCmd.Call(ex, frontend.V(frontend.ShellSpec{Cmd: cmd, Dir: dir}), limit)
	}
	single := shell("./prog")
	job := shell(nested)
	fromGo := e2eRunsProgram.Call(ex, frontend.V(dir), frontend.V("./prog"), limit)
	env := shell("env")
	var fds []*frontend.Future[frontend.ShellResult]
	for range 6 { // on both workers
		fds = append(fds, shell(`ls /proc/$$/fd`))
	}
	goFDs := e2eRunsProgram.Call(ex, frontend.V(dir), frontend.V(`ls /proc/$$/fd`), limit)

	res, err := single.Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, "rank 0 of 1\n", res.Stdout, "the program runs as a singleton")

	res, err = job.Get(ctx)
	require.NoError(t, err, "%s", res.Stderr)
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	slices.Sort(lines)
	assert.Equal(t, []string{"rank 0 of 2 got 2002 from 1", "rank 1 of 2 got 1001 from 0"}, lines,
		"the program runs as a job of its own under the block's family's mpirun; stderr: %s", res.Stderr)

	out, err := fromGo.Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, "rank 0 of 1\n", out, "a program a Go app starts with CleanEnv runs as a singleton")

	res, err = env.Get(ctx)
	require.NoError(t, err)
	vars := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
		name, value, _ := strings.Cut(kv, "=")
		vars[name] = value
		if slices.Contains(keptOnPurpose, name) {
			continue
		}
		for _, p := range removedPrefixes {
			assert.False(t, strings.HasPrefix(kv, p), "a task inherits %s", kv)
		}
	}
	assert.Equal(t, "mine", vars["E2E_USER_SETTING"])
	assert.Equal(t, "e2e-taskenv", vars["SLURM_JOB_NAME"])
	// Open MPI's mpirun puts its own bin directory in front.
	assert.True(t, strings.HasSuffix(vars["PATH"], os.Getenv("PATH")), "PATH=%s", vars["PATH"])
	assert.Equal(t, "0", vars["RANKFARM_ATTEMPT"])
	assert.Contains(t, []string{"1", "2"}, vars["RANKFARM_RANK"], "a worker of the block's ranks 0..2")
	assert.Equal(t, os.Getenv("OMPI_ALLOW_RUN_AS_ROOT"), vars["OMPI_ALLOW_RUN_AS_ROOT"], "the user's allow-run-as-root setting stays")
	assert.True(t, filepath.IsAbs(vars["RANKFARM_MPIRUN"]), "RANKFARM_MPIRUN=%q", vars["RANKFARM_MPIRUN"])

	for _, f := range fds {
		res, err := f.Get(ctx)
		require.NoError(t, err)
		assert.Equal(t, []string{"0", "1", "2"}, strings.Fields(res.Stdout), "a task holds only stdin, stdout and stderr")
	}
	out, err = goFDs.Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"0", "1", "2"}, strings.Fields(out), "so does a program a Go app starts after CloseOnExec")
}
