package frontend

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// ftStartsProgram is an app that starts a program itself, the documented
// way: CleanEnv for its environment, CloseOnExec right before it starts.
var ftStartsProgram = NewApp1("ft.starts-program", func(ctx context.Context, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Env = CleanEnv(ctx)
	if err := CloseOnExec(); err != nil {
		return "", err
	}
	out, err := cmd.Output()
	return string(out), err
})

func TestCleanEnv(t *testing.T) {
	for _, kv := range [][2]string{
		{"OMPI_COMM_WORLD_RANK", "1"}, {"PMIX_NAMESPACE", "7"}, {"PMI_FD", "6"}, {"RANKFARM_EXEC", "1"},
		{"OMPI_ALLOW_RUN_AS_ROOT", "1"}, {"SLURM_JOB_ID", "3"}, {"FT_USER_VAR", "mine"},
	} {
		t.Setenv(kv[0], kv[1])
	}
	env := CleanEnv(context.Background())
	tests := []struct {
		kv   string
		kept bool
	}{
		{"OMPI_COMM_WORLD_RANK=1", false},
		{"PMIX_NAMESPACE=7", false},
		{"PMI_FD=6", false},
		{"RANKFARM_EXEC=1", false},
		{"OMPI_ALLOW_RUN_AS_ROOT=1", true},
		{"SLURM_JOB_ID=3", true},
		{"FT_USER_VAR=mine", true},
	}
	for _, tt := range tests {
		t.Run(tt.kv, func(t *testing.T) {
			if tt.kept {
				assert.Contains(t, env, tt.kv)
			} else {
				assert.NotContains(t, env, tt.kv)
			}
		})
	}

	// In a task: the rank and attempt too, and no inheritable descriptor.
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], 0))
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	_, conn := startTestBlock(t, 2, 2, nil)
	ex, err := Start(context.Background(), Options{Conn: conn, Logger: quietLogger()})
	require.NoError(t, err)
	defer ex.Close()
	out, err := ftStartsProgram.Call(ex, V(`echo "${RANKFARM_RANK-unset} ${PMI_FD-unset} $FT_USER_VAR"; ls /proc/$$/fd`)).
		Get(ctxFor(t, 30*time.Second))
	require.NoError(t, err)
	lines := strings.SplitN(out, "\n", 2)
	assert.Regexp(t, `^[0-9]+ unset mine$`, lines[0])
	assert.Equal(t, []string{"0", "1", "2"}, strings.Fields(lines[1]), "the shell holds only stdin, stdout and stderr")
}
