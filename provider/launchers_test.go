package provider

import (
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSrun(t *testing.T) {
	env := map[string]string{"RANKFARM_BLOCK": "b1", "RANKFARM_ADDR": "h:1"}
	cases := []struct {
		name string
		s    Srun
		want []string
	}{
		{name: "default", want: []string{"srun", "--mpi=pmix", "--export=ALL", "-n", "8", "--kill-on-bad-exit=1", "/bin/prog", "exec"}},
		{name: "options", s: Srun{Path: "/opt/slurm/bin/srun", MPI: "pmi2", KeepGoing: true, ExtraArgs: []string{"--overcommit"}},
			want: []string{"/opt/slurm/bin/srun", "--mpi=pmi2", "--export=ALL", "-n", "8", "--overcommit", "/bin/prog", "exec"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd, err := tc.s.Command(8, "/bin/prog", []string{"exec"}, env)
			require.NoError(t, err)
			assert.Equal(t, tc.want, Command(cmd))
			assert.Contains(t, cmd.Env, "RANKFARM_BLOCK=b1")
			assert.Contains(t, cmd.Env, "RANKFARM_ADDR=h:1")
			for _, a := range cmd.Args {
				assert.NotContains(t, a, "h:1", "no value on the command line")
			}
		})
	}
	_, err := Srun{}.Command(0, "/bin/prog", nil, nil)
	assert.Error(t, err)
	_, err = Srun{}.Command(1, "", nil, nil)
	assert.Error(t, err)
	_, err = Srun{}.Command(1, "/bin/prog", nil, map[string]string{"A=B": "x"})
	assert.Error(t, err)
}

func TestSingle(t *testing.T) {
	cmd, err := Single{}.Command(1, "/bin/echo", []string{"hi"}, map[string]string{"RF_Y": "1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"/bin/echo", "hi"}, Command(cmd))
	assert.Contains(t, cmd.Env, "RF_Y=1")
	_, err = Single{}.Command(4, "/bin/echo", nil, nil)
	assert.ErrorContains(t, err, "1 process, not 4")
}

func TestCommandKeepsBareNames(t *testing.T) {
	// A bare name stays bare, whether this machine has the program or not:
	// the job finds it on its own $PATH.
	for _, name := range []string{"sh", "surely-not-a-program-here"} {
		cmd := exec.Command(name, "a")
		assert.Equal(t, []string{name, "a"}, Command(cmd))
	}
	assert.Equal(t, []string{"/bin/sh", "-c", "x"}, Command(exec.Command("/bin/sh", "-c", "x")))
	assert.Equal(t, []string{"/bin/true"}, Command(&exec.Cmd{Path: "/bin/true"}))
}
