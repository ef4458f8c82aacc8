package launch

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMPIRunCommand(t *testing.T) {
	env := map[string]string{"RANKFARM_EXEC": "1", "RANKFARM_ADDR": "127.0.0.1:5000", "RANKFARM_TOKEN_FILE": "/run/x/token"}
	tests := []struct {
		name    string
		m       MPIRun
		root    bool
		np      int
		exe     string
		args    []string
		env     map[string]string
		path    string
		want    []string
		wantErr string
	}{
		{
			name: "defaults", np: 4, exe: "/bin/app", env: env, path: "mpirun",
			want: []string{"mpirun", "--oversubscribe", "-np", "4", "-x", "RANKFARM_ADDR", "-x", "RANKFARM_EXEC", "-x", "RANKFARM_TOKEN_FILE", "/bin/app"},
		},
		{
			name: "root", root: true, np: 2, exe: "/bin/app", args: []string{"exec", "--slots", "2"}, path: "mpirun",
			want: []string{"mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", "/bin/app", "exec", "--slots", "2"},
		},
		{
			name: "options", m: MPIRun{Path: "/opt/ompi/bin/mpirun", NoOversubscribe: true, ExtraArgs: []string{"--bind-to", "none"}},
			np: 1, exe: "app", env: map[string]string{"A": "1"}, path: "/opt/ompi/bin/mpirun",
			want: []string{"/opt/ompi/bin/mpirun", "-np", "1", "-x", "A", "--bind-to", "none", "app"},
		},
		{name: "no ranks", np: 0, exe: "app", wantErr: "at least 1 rank"},
		{name: "no exe", np: 1, wantErr: "no executable"},
		{name: "nameless variable", np: 1, exe: "app", env: map[string]string{"": "x"}, wantErr: "without a name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			euid = func() int {
				if tt.root {
					return 0
				}
				return 1000
			}
			defer func() { euid = os.Geteuid }()
			cmd, err := tt.m.Command(tt.np, tt.exe, tt.args, tt.env)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, cmd.Args)
			if filepath.IsAbs(tt.path) {
				assert.Equal(t, tt.path, cmd.Path)
			}
			for k, v := range tt.env {
				assert.Contains(t, cmd.Env, k+"="+v)
			}
			assert.Contains(t, cmd.Env, "PATH="+os.Getenv("PATH"), "the caller's environment is kept")
			for _, a := range cmd.Args {
				assert.NotContains(t, a, "=", "values never go on the command line")
			}
		})
	}
}

func TestProcessStopKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	// The leader ignores SIGTERM and has a child that ignores it too.
	cmd := exec.Command("/bin/sh", "-c", `trap "" TERM; sleep 60 & echo $! > `+pidFile+`; wait`)
	p, err := Start(context.Background(), cmd)
	require.NoError(t, err)
	var child int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	pgid, err := syscall.Getpgid(p.Pid())
	require.NoError(t, err)
	assert.Equal(t, p.Pid(), pgid, "the launcher leads its own group")
	assert.NotEqual(t, syscall.Getpgrp(), pgid)

	start := time.Now()
	require.NoError(t, p.Stop(300*time.Millisecond), "an exit Stop caused is no error")
	assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "SIGTERM was ignored, so Stop waited for the grace")
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	assert.Eventually(t, func() bool { return !alive(child) }, 5*time.Second, 10*time.Millisecond, "child %d survived", child)
	require.NoError(t, p.Stop(time.Second), "Stop twice")
}

func TestProcessStopGraceful(t *testing.T) {
	p, err := Start(context.Background(), exec.Command("sleep", "60"))
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, p.Stop(10*time.Second))
	assert.Less(t, time.Since(start), 5*time.Second, "SIGTERM was enough")
}

func TestProcessWait(t *testing.T) {
	p, err := Start(context.Background(), exec.Command("/bin/sh", "-c", "exit 3"))
	require.NoError(t, err)
	err = p.Wait(context.Background())
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 3, ee.ExitCode())
	assert.Error(t, p.Stop(time.Second), "an exit on its own is reported")

	p, err = Start(context.Background(), exec.Command("sleep", "60"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, p.Wait(ctx), context.DeadlineExceeded)
	require.NoError(t, p.Stop(time.Second))

	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	_, err = Start(cctx, exec.Command("true"))
	assert.ErrorIs(t, err, context.Canceled)
	_, err = Start(context.Background(), exec.Command("/no/such/binary"))
	assert.Error(t, err)
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return !(i > 0 && len(s) > i+2 && slices.Contains([]byte{'Z', 'X'}, s[i+2]))
}
