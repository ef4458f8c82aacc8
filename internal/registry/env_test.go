package registry

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestLauncherVar(t *testing.T) {
	tests := []struct {
		name    string
		removed bool
	}{
		// Open MPI's and PMIx's identity of a rank.
		{"OMPI_COMM_WORLD_RANK", true},
		{"OMPI_MCA_orte_hnp_uri", true},
		{"OMPI_MCA_ess", true},
		{"OMPI_MCA_btl", true}, // a user's MCA setting goes too: it cannot be told apart
		{"OPAL_OUTPUT_STDERR_FD", true},
		{"ORTE_SOMETHING", true},
		{"PMIX_SERVER_URI41", true},
		{"PMIX_RANK", true},
		// MPICH's Hydra.
		{"PMI_FD", true},
		{"PMI_RANK", true},
		{"PMI_SIZE", true},
		{"HYDRA_PROXY_PORT", true},
		{"HYDI_CONTROL_FD", true},
		{"MPIR_CVAR_CH3_INTERFACE_HOSTNAME", true},
		{"MPICH_INTERFACE_HOSTNAME", true},
		{"MPI_LOCALRANKID", true},
		{"MPI_LOCALNRANKS", true},
		// The block's own.
		{"RANKFARM_EXEC", true},
		{"RANKFARM_TOKEN_FILE", true},
		{"RANKFARM_ADDR", true},
		// The user's settings under a launcher prefix.
		{"OMPI_ALLOW_RUN_AS_ROOT", false},
		{"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", false},
		{"OPAL_PREFIX", false},
		// Everything else.
		{"PATH", false},
		{"HOME", false},
		{"LD_LIBRARY_PATH", false},
		{"MODULEPATH", false},
		{"LOADEDMODULES", false},
		{"SLURM_JOB_ID", false},
		{"SLURM_JOB_NODELIST", false},
		{"SLURM_NTASKS", false},
		{"PBS_JOBID", false},
		{"PBS_NODEFILE", false},
		{"UCX_TLS", false},
		{"I_MPI_PIN", false},
		{"MPI_HOME", false},
		{"GFORTRAN_UNBUFFERED_PRECONNECTED", false},
		{"OMPI", false}, // a prefix needs its underscore
		{"PMIX", false},
		{"RANKFARMER", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.removed, LauncherVar(tt.name))
		})
	}
}

func TestCleanEnv(t *testing.T) {
	tests := []struct {
		name     string
		env, out []string
	}{
		{"empty", nil, []string{}},
		{
			"an Open MPI rank",
			[]string{"PATH=/usr/bin", "OMPI_COMM_WORLD_RANK=3", "OMPI_MCA_orte_hnp_uri=1.0;tcp://10.0.0.1:4242",
				"PMIX_NAMESPACE=42", "HOME=/root", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"},
			[]string{"PATH=/usr/bin", "HOME=/root", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"},
		},
		{
			"an MPICH rank",
			[]string{"PMI_FD=6", "PMI_RANK=1", "PMI_SIZE=4", "HYDI_CONTROL_FD=7", "MPI_LOCALRANKID=1", "MPI_LOCALNRANKS=4",
				"MPIR_CVAR_CH3_INTERFACE_HOSTNAME=vm", "GFORTRAN_UNBUFFERED_PRECONNECTED=y", "UCX_TLS=self,sm"},
			[]string{"GFORTRAN_UNBUFFERED_PRECONNECTED=y", "UCX_TLS=self,sm"},
		},
		{
			"a block in a Slurm job, modules loaded",
			[]string{"SLURM_JOB_ID=77", "SLURM_JOB_NODELIST=n[1-2]", "RANKFARM_EXEC=1", "RANKFARM_BLOCK=b0",
				"LOADEDMODULES=openmpi/4.1", "OPAL_PREFIX=/opt/openmpi", "PBS_JOBID=9.pbs"},
			[]string{"SLURM_JOB_ID=77", "SLURM_JOB_NODELIST=n[1-2]", "LOADEDMODULES=openmpi/4.1", "OPAL_PREFIX=/opt/openmpi", "PBS_JOBID=9.pbs"},
		},
		{
			"values and odd entries",
			[]string{"A=OMPI_X=1", "NOEQUALS", "OMPI_NOEQUALS", "=weird", "B="},
			[]string{"A=OMPI_X=1", "NOEQUALS", "=weird", "B="},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.env)
			assert.Equal(t, tt.out, CleanEnv(tt.env))
			assert.Equal(t, in, tt.env, "env is not modified")
		})
	}
}

// setMPIRun sets SetMPIRun's finder for one test.
func setMPIRun(t *testing.T, find func() string) {
	t.Helper()
	SetMPIRun(find)
	t.Cleanup(func() { mpirun.Store(nil) })
}

func TestTaskEnv(t *testing.T) {
	t.Setenv("OMPI_COMM_WORLD_RANK", "1")
	t.Setenv("PMI_FD", "6")
	t.Setenv("RANKFARM_EXEC", "1")
	t.Setenv("TASK_ENV_TEST", "kept")
	calls := 0
	setMPIRun(t, func() string { calls++; return "/usr/bin/mpirun.test" })
	ctx := WithInfo(context.Background(), TaskInfo{Rank: 3, Attempt: 1})

	for range 2 {
		env := TaskEnv(ctx)
		assert.Contains(t, env, "TASK_ENV_TEST=kept")
		assert.Contains(t, env, "RANKFARM_RANK=3")
		assert.Contains(t, env, "RANKFARM_ATTEMPT=1")
		assert.Contains(t, env, "RANKFARM_MPIRUN=/usr/bin/mpirun.test")
		for _, kv := range env {
			assert.NotRegexp(t, `^(OMPI_COMM_WORLD_RANK|PMI_FD|RANKFARM_EXEC)=`, kv)
		}
	}
	assert.Equal(t, 1, calls, "the launcher is looked for once")

	// Outside a task, and on a rank that found no launcher.
	setMPIRun(t, func() string { return "" })
	env := TaskEnv(context.Background())
	assert.Contains(t, env, "TASK_ENV_TEST=kept")
	for _, kv := range env {
		assert.False(t, strings.HasPrefix(kv, "RANKFARM_"), kv)
	}
}

// TestShellTaskIsClean runs commands that print their environment and
// their descriptors in a process that holds an MPI launcher's variables and
// an inheritable pipe, as a rank does.
func TestShellTaskIsClean(t *testing.T) {
	for _, kv := range [][2]string{
		{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_MCA_orte_hnp_uri", "1.0;tcp://127.0.0.1:1"}, {"PMIX_RANK", "2"},
		{"PMI_FD", "6"}, {"HYDI_CONTROL_FD", "7"}, {"MPI_LOCALRANKID", "0"}, {"RANKFARM_EXEC", "1"},
		{"OMPI_ALLOW_RUN_AS_ROOT", "1"}, {"SLURM_JOB_ID", "77"}, {"CLEAN_TEST_USER", "mine"},
	} {
		t.Setenv(kv[0], kv[1])
	}
	setMPIRun(t, func() string { return "/opt/mpi/bin/mpirun" })
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], 0)) // no close-on-exec, as MPI libraries open them
	defer unix.Close(p[0])
	defer unix.Close(p[1])

	res, sr := runSpec(t, ShellSpec{Cmd: "env"}, 10*time.Second)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(sr.Stdout), "\n") {
		name, _, _ := strings.Cut(line, "=")
		names = append(names, name)
	}
	for _, gone := range []string{"OMPI_COMM_WORLD_RANK", "OMPI_MCA_orte_hnp_uri", "PMIX_RANK", "PMI_FD",
		"HYDI_CONTROL_FD", "MPI_LOCALRANKID", "RANKFARM_EXEC"} {
		assert.NotContains(t, names, gone)
	}
	for _, kept := range []string{"PATH", "OMPI_ALLOW_RUN_AS_ROOT", "SLURM_JOB_ID", "CLEAN_TEST_USER"} {
		assert.Contains(t, names, kept)
	}
	assert.Contains(t, sr.Stdout, "RANKFARM_RANK=5\n")
	assert.Contains(t, sr.Stdout, "RANKFARM_ATTEMPT=2\n")
	assert.Contains(t, sr.Stdout, "RANKFARM_MPIRUN=/opt/mpi/bin/mpirun\n")

	res, sr = runSpec(t, ShellSpec{Cmd: "exec ls -l /proc/self/fd/"}, 10*time.Second)
	require.Equal(t, serialize.ErrNone, res.Err, res.Msg)
	assert.Equal(t, []string{"0", "1", "2"}, openFDs(t, sr.Stdout), "the task holds only its stdin, stdout and stderr")
}

// listingFD matches the descriptor ls opens to list /proc/self/fd.
var listingFD = regexp.MustCompile(`^/proc/\d+/fd/?$`)

// openFDs reads `ls -l /proc/self/fd/` output: the descriptors ls holds but
// the one it lists the directory with.
func openFDs(t *testing.T, ls string) []string {
	t.Helper()
	var fds []string
	for _, line := range strings.Split(ls, "\n") {
		name, target, ok := strings.Cut(line, " -> ")
		if !ok {
			continue
		}
		f := strings.Fields(name)
		if listingFD.MatchString(target) {
			continue
		}
		fds = append(fds, f[len(f)-1])
	}
	return fds
}

func TestOpenFDs(t *testing.T) {
	out := `total 0
lr-x------ 1 root root 64 Nov 29 10:00 0 -> /dev/null
l-wx------ 1 root root 64 Nov 29 10:00 1 -> pipe:[123]
l-wx------ 1 root root 64 Nov 29 10:00 2 -> pipe:[124]
lr-x------ 1 root root 64 Nov 29 10:00 3 -> /proc/4242/fd
lrwx------ 1 root root 64 Nov 29 10:00 14 -> socket:[11413]
`
	assert.Equal(t, []string{"0", "1", "2", "14"}, openFDs(t, out))
}
