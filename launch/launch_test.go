package launch

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeMPI stands in for the machine: the launchers on $PATH (name → path)
// and what each prints for --version.
type fakeMPI struct {
	onPath   map[string]string
	versions map[string]string
	ran      []string // the paths whose --version was run
}

func (f *fakeMPI) install(t *testing.T, root bool) {
	t.Helper()
	oldLook, oldVer, oldEuid := lookPath, versionOf, euid
	t.Cleanup(func() { lookPath, versionOf, euid = oldLook, oldVer, oldEuid })
	versions = sync.Map{}
	t.Cleanup(func() { versions = sync.Map{} })
	lookPath = func(name string) (string, error) {
		if p, ok := f.onPath[name]; ok {
			return p, nil
		}
		return "", exec.ErrNotFound
	}
	versionOf = func(path string) (string, error) {
		f.ran = append(f.ran, path)
		if v, ok := f.versions[path]; ok {
			return v, nil
		}
		return "", errors.New("exit status 1")
	}
	euid = func() int {
		if root {
			return 0
		}
		return 1000
	}
}

// Machines for the table below.
var (
	debianBoth = map[string]string{
		"mpirun.openmpi": "/usr/bin/mpirun.openmpi", "mpirun.mpich": "/usr/bin/mpirun.mpich",
		"mpiexec.hydra": "/usr/bin/mpiexec.hydra", "mpirun": "/usr/bin/mpirun", "mpiexec": "/usr/bin/mpiexec",
	}
	plainMPICH = map[string]string{"mpirun": "/opt/mpich/bin/mpirun", "mpiexec": "/opt/mpich/bin/mpiexec"}
	plainOMPI  = map[string]string{"mpirun": "/opt/ompi/bin/mpirun"}
)

const (
	ompiVersion  = "mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n"
	hydraVersion = "HYDRA build details:\n    Version:                                 4.0.2\n"
)

func TestMPIRunCommand(t *testing.T) {
	env := map[string]string{"RANKFARM_EXEC": "1", "RANKFARM_ADDR": "127.0.0.1:5000", "RANKFARM_TOKEN_FILE": "/run/x/token"}
	ompiX := []string{"-x", "RANKFARM_ADDR", "-x", "RANKFARM_EXEC", "-x", "RANKFARM_TOKEN_FILE"}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }
	tests := []struct {
		name     string
		m        MPIRun
		built    Family // Built for this case: the family of the program's binding
		onPath   map[string]string
		versions map[string]string
		root     bool
		np       int
		exe      string
		args     []string
		env      map[string]string
		wantFam  Family
		want     []string // Args: the launcher's path first
		wantErr  string
	}{
		{
			name: "openmpi defaults", built: OpenMPI, onPath: debianBoth, np: 4, exe: "/bin/app", env: env, wantFam: OpenMPI,
			want: cat([]string{"/usr/bin/mpirun.openmpi", "--oversubscribe", "-np", "4"}, ompiX, []string{"/bin/app"}),
		},
		{
			name: "openmpi as root", built: OpenMPI, onPath: debianBoth, root: true, np: 2, exe: "/bin/app", args: []string{"exec", "--slots", "2"}, wantFam: OpenMPI,
			want: []string{"/usr/bin/mpirun.openmpi", "--allow-run-as-root", "--oversubscribe", "-np", "2", "/bin/app", "exec", "--slots", "2"},
		},
		{
			name: "openmpi options", built: OpenMPI, m: MPIRun{Path: "/opt/ompi/bin/mpirun", NoOversubscribe: true, ExtraArgs: []string{"--bind-to", "none"}},
			versions: map[string]string{"/opt/ompi/bin/mpirun": ompiVersion},
			np:       1, exe: "app", env: map[string]string{"A": "1"}, wantFam: OpenMPI,
			want: []string{"/opt/ompi/bin/mpirun", "-np", "1", "-x", "A", "--bind-to", "none", "app"},
		},
		{
			name: "mpich defaults", built: MPICH, onPath: debianBoth, root: true, np: 4, exe: "/bin/app", env: env, wantFam: MPICH,
			want: []string{"/usr/bin/mpirun.mpich", "-genvall", "-np", "4", "/bin/app"},
		},
		{
			name: "mpich ignores oversubscribe and passes extra args", built: MPICH, onPath: debianBoth, m: MPIRun{NoOversubscribe: true, ExtraArgs: []string{"-bind-to", "none"}},
			np: 3, exe: "/bin/app", args: []string{"exec"}, env: env, wantFam: MPICH,
			want: []string{"/usr/bin/mpirun.mpich", "-genvall", "-np", "3", "-bind-to", "none", "/bin/app", "exec"},
		},
		{
			name: "mpich through hydra only", built: MPICH, onPath: map[string]string{"mpiexec.hydra": "/usr/bin/mpiexec.hydra", "mpirun": "/usr/bin/mpirun"},
			np: 2, exe: "/bin/app", wantFam: MPICH,
			want: []string{"/usr/bin/mpiexec.hydra", "-genvall", "-np", "2", "/bin/app"},
		},
		{
			name: "mpich detected from a plain mpiexec", built: MPICH, onPath: plainMPICH,
			versions: map[string]string{"/opt/mpich/bin/mpiexec": hydraVersion},
			np:       2, exe: "/bin/app", wantFam: MPICH,
			want: []string{"/opt/mpich/bin/mpiexec", "-genvall", "-np", "2", "/bin/app"},
		},
		{
			name: "family of an explicit path detected", built: OpenMPI, m: MPIRun{Path: "/opt/mpich/bin/mpiexec"},
			versions: map[string]string{"/opt/mpich/bin/mpiexec": hydraVersion},
			np:       2, exe: "/bin/worker", wantFam: MPICH,
			want: []string{"/opt/mpich/bin/mpiexec", "-genvall", "-np", "2", "/bin/worker"},
		},
		{
			name: "explicit family picks its launcher", built: OpenMPI, onPath: debianBoth, m: MPIRun{Family: MPICH},
			np: 2, exe: "/bin/worker", wantFam: MPICH,
			want: []string{"/usr/bin/mpirun.mpich", "-genvall", "-np", "2", "/bin/worker"},
		},
		{
			name: "explicit family wins over the version", built: OpenMPI, m: MPIRun{Family: OpenMPI, Path: "/site/mpirun"},
			versions: map[string]string{"/site/mpirun": hydraVersion},
			np:       1, exe: "/bin/app", wantFam: OpenMPI,
			want: []string{"/site/mpirun", "--oversubscribe", "-np", "1", "/bin/app"},
		},
		{
			name: "nompi program: plain mpirun, detected", built: NoMPI, onPath: plainMPICH,
			versions: map[string]string{"/opt/mpich/bin/mpirun": hydraVersion},
			np:       2, exe: "/bin/worker", wantFam: MPICH,
			want: []string{"/opt/mpich/bin/mpirun", "-genvall", "-np", "2", "/bin/worker"},
		},
		{
			name: "nompi program: undetectable mpirun is taken for Open MPI", built: NoMPI, onPath: plainOMPI,
			np: 2, exe: "/bin/worker", wantFam: OpenMPI,
			want: []string{"/opt/ompi/bin/mpirun", "--oversubscribe", "-np", "2", "/bin/worker"},
		},
		{
			name: "undetectable mpirun is taken for the built family", built: MPICH, onPath: plainOMPI,
			np: 2, exe: "/bin/worker", wantFam: MPICH,
			want: []string{"/opt/ompi/bin/mpirun", "-genvall", "-np", "2", "/bin/worker"},
		},
		{
			name: "openmpi over hosts with an agent and a network", built: OpenMPI, onPath: debianBoth, np: 8, exe: "/bin/app",
			m:       MPIRun{Hosts: []string{"n1:4", "n2:4"}, Agent: "/bin/true", Network: "10.1.0.0/16"},
			wantFam: OpenMPI,
			want: []string{"/usr/bin/mpirun.openmpi", "--oversubscribe", "-np", "8", "-H", "n1:4,n2:4", "--mca", "plm_rsh_agent", "/bin/true",
				"--mca", "btl_tcp_if_include", "10.1.0.0/16", "--mca", "oob_tcp_if_include", "10.1.0.0/16", "-x", "RANKFARM_NETWORK", "/bin/app"},
		},
		{
			name: "mpich over hosts with an agent and this host's interface of the network", built: MPICH, onPath: debianBoth, np: 2, exe: "/bin/app",
			m:       MPIRun{Hosts: []string{"n1", "n2"}, Agent: "/bin/true", Network: "127.0.0.0/8"},
			wantFam: MPICH,
			want: []string{"/usr/bin/mpirun.mpich", "-genvall", "-np", "2", "-hosts", "n1,n2", "-launcher", "ssh", "-launcher-exec", "/bin/true",
				"-iface", "lo", "/bin/app"},
		},
		{name: "bad host", built: OpenMPI, onPath: debianBoth, m: MPIRun{Hosts: []string{"n1:4", "n 2"}}, np: 1, exe: "app", wantErr: `host "n 2": ' ' is not allowed`},
		{name: "bad slots", built: MPICH, onPath: debianBoth, m: MPIRun{Hosts: []string{"n1:0"}}, np: 1, exe: "app", wantErr: `host "n1:0": the slots after ':' must be a whole number from 1`},
		{name: "missing agent", built: OpenMPI, onPath: debianBoth, m: MPIRun{Agent: "/no/such/agent"}, np: 1, exe: "app", wantErr: "the remote shell agent /no/such/agent: stat /no/such/agent: no such file"},
		{name: "agent not executable", built: OpenMPI, onPath: debianBoth, m: MPIRun{Agent: "/etc/passwd"}, np: 1, exe: "app", wantErr: "the remote shell agent /etc/passwd is not an executable file"},
		{name: "mpich network this host is not in", built: MPICH, onPath: debianBoth, m: MPIRun{Network: "198.51.100.0/24"}, np: 1, exe: "app", wantErr: "network 198.51.100.0/24: no interface of this host is in it"},
		{name: "mpich network that is no interface", built: MPICH, onPath: debianBoth, m: MPIRun{Network: "nosuch0"}, np: 1, exe: "app", wantErr: `network "nosuch0" is neither a CIDR range nor an interface of this host`},
		{name: "no launcher", built: MPICH, onPath: map[string]string{}, np: 1, exe: "app", wantErr: "no MPI launcher on $PATH (looked for mpirun.mpich, mpiexec.mpich, mpiexec.hydra, mpiexec, mpirun): install MPICH"},
		{name: "bad family", m: MPIRun{Family: "lam"}, np: 1, exe: "app", wantErr: `not "lam"`},
		{name: "no ranks", np: 0, exe: "app", wantErr: "at least 1 rank"},
		{name: "no exe", np: 1, wantErr: "no executable"},
		{name: "nameless variable", np: 1, exe: "app", env: map[string]string{"": "x"}, wantErr: "without a name"},
		{name: "variable with =", np: 1, exe: "app", env: map[string]string{"A=B": "x"}, wantErr: "holds '='"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeMPI{onPath: tt.onPath, versions: tt.versions}
			f.install(t, tt.root)
			fam, path, rerr := tt.m.resolve(tt.built)
			cmd, err := tt.m.command(tt.built, tt.np, tt.exe, tt.args, tt.env)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.NoError(t, rerr)
			assert.Equal(t, tt.wantFam, fam)
			assert.Equal(t, tt.want[0], path)
			assert.Equal(t, tt.want, append([]string{cmd.Path}, cmd.Args[1:]...))
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

func TestMPIRunRefusesMismatch(t *testing.T) {
	me, err := os.Executable()
	require.NoError(t, err)
	tests := []struct {
		name    string
		built   Family
		m       MPIRun
		exe     string
		wantErr string
	}{
		{name: "mpich program under Open MPI", built: MPICH, m: MPIRun{Path: "/usr/bin/mpirun.openmpi"}, exe: me, wantErr: "binding is mpich but /usr/bin/mpirun.openmpi is openmpi's launcher"},
		{name: "openmpi program under MPICH", built: OpenMPI, m: MPIRun{Family: MPICH}, exe: me, wantErr: "binding is openmpi"},
		{name: "another program may differ", built: MPICH, m: MPIRun{Path: "/usr/bin/mpirun.openmpi"}, exe: "/bin/true"},
		{name: "a program without MPI may go anywhere", built: NoMPI, m: MPIRun{Path: "/usr/bin/mpirun.openmpi"}, exe: me},
		{name: "matching", built: OpenMPI, m: MPIRun{Path: "/usr/bin/mpirun.openmpi"}, exe: me},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeMPI{onPath: debianBoth}
			f.install(t, false)
			_, err := tt.m.command(tt.built, 2, tt.exe, nil, nil)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
		})
	}
}

func TestGoBuildFlags(t *testing.T) {
	assert.Empty(t, OpenMPI.GoBuildFlags())
	assert.Equal(t, []string{"-tags", "mpich"}, MPICH.GoBuildFlags())
	assert.Equal(t, []string{"-tags", "nompi"}, NoMPI.GoBuildFlags())
}

func TestFamilyOfVersion(t *testing.T) {
	tests := []struct {
		out  string
		want Family
	}{
		{ompiVersion, OpenMPI},
		{"mpirun.openmpi (OpenRTE) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n", OpenMPI},
		{hydraVersion, MPICH},
		{"Intel(R) MPI Library for Linux* OS, Version 2021.10", MPICH},
		{"", Detect},
		{"mpirun: command not found", Detect},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, FamilyOfVersion(tt.out), "%q", tt.out)
	}
}

func TestFamilyDetectionIsCached(t *testing.T) {
	f := &fakeMPI{versions: map[string]string{"/opt/x/mpirun": hydraVersion}}
	f.install(t, false)
	for range 3 {
		fam, _, err := MPIRun{Path: "/opt/x/mpirun"}.resolve(OpenMPI)
		require.NoError(t, err)
		assert.Equal(t, MPICH, fam)
	}
	assert.Equal(t, []string{"/opt/x/mpirun"}, f.ran, "--version runs once per launcher")
	fam, _, err := MPIRun{Path: "/usr/bin/mpirun.mpich"}.resolve(OpenMPI)
	require.NoError(t, err)
	assert.Equal(t, MPICH, fam)
	assert.Len(t, f.ran, 1, "a launcher's name can say it all")
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

func TestHostSlots(t *testing.T) {
	tests := []struct {
		hosts []string
		want  int
	}{
		{nil, 0},
		{[]string{"a"}, 1},
		{[]string{"a:4", "b:4", "c"}, 9},
	}
	for _, tt := range tests {
		require.NoError(t, CheckHosts(tt.hosts))
		assert.Equal(t, tt.want, HostSlots(tt.hosts), "%v", tt.hosts)
	}
}
