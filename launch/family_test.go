package launch_test

import (
	"context"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/mpiexec/mpi"
)

func TestBuiltMatchesTheBinding(t *testing.T) {
	assert.Equal(t, mpi.Family, string(launch.Built), "launch/built_*.go must carry the build constraints of mpiexec/mpi's cflags_*.go and raw_nompi.go")
}

// TestRealLaunchers starts two ranks of a shell under each MPI family
// installed here and checks that rankfarm's variables reach both ranks.
func TestRealLaunchers(t *testing.T) {
	tests := []struct {
		family launch.Family
		name   string // the launcher that Debian installs
	}{
		{launch.OpenMPI, "mpirun.openmpi"},
		{launch.MPICH, "mpirun.mpich"},
	}
	for _, tt := range tests {
		t.Run(string(tt.family), func(t *testing.T) {
			path, err := exec.LookPath(tt.name)
			if err != nil {
				t.Skipf("%s is not installed", tt.name)
			}
			for _, m := range []launch.MPIRun{{Family: tt.family}, {Path: path}} {
				fam, got, err := m.Resolve()
				require.NoError(t, err)
				assert.Equal(t, tt.family, fam, "%+v", m)
				assert.Equal(t, path, got)

				env := map[string]string{"RANKFARM_LAUNCH_TEST": "v a l", "RANKFARM_OTHER": "2"}
				cmd, err := m.Command(2, "/bin/sh", []string{"-c", `echo "rank=$OMPI_COMM_WORLD_RANK$PMI_RANK var=$RANKFARM_LAUNCH_TEST/$RANKFARM_OTHER"`}, env)
				require.NoError(t, err)
				var out strings.Builder
				cmd.Stdout, cmd.Stderr = &out, &out
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				p, err := launch.Start(ctx, cmd)
				require.NoError(t, err)
				if err := p.Wait(ctx); err != nil {
					_ = p.Stop(time.Second)
					require.NoError(t, err, "%v:\n%s", cmd.Args, out.String())
				}
				assert.Equal(t, []string{"rank=0 var=v a l/2", "rank=1 var=v a l/2"}, lines(out.String()), "%v", cmd.Args)
			}
		})
	}
}

// lines sorts the non-empty lines of out.
func lines(out string) []string {
	var l []string
	for _, s := range strings.Split(out, "\n") {
		if s = strings.TrimSpace(s); s != "" {
			l = append(l, s)
		}
	}
	sort.Strings(l)
	return l
}
