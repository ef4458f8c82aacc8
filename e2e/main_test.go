// Package e2e runs rankfarm end to end under a real mpirun: the test binary
// is the front end, and mpirun re-runs this same binary as the block's ranks
// (TestMain hands those to mpiexec.Main), exactly as a user's program works.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/mpiexec"
	"github.com/rankfarm/rankfarm/mpiexec/mpi"
)

// Apps of the end-to-end suite, declared at package level so that the ranks
// hold them too.
var (
	add = frontend.NewApp2("e2e.add", func(_ context.Context, a, b int64) (int64, error) { return a + b, nil })
	inc = frontend.NewApp1("e2e.inc", func(_ context.Context, a int64) (int64, error) { return a + 1, nil })
	sum = frontend.NewApp1("e2e.sum", func(_ context.Context, xs []int64) (int64, error) {
		var s int64
		for _, x := range xs {
			s += x
		}
		return s, nil
	})
	boom = frontend.NewApp1("e2e.boom", func(_ context.Context, msg string) (int64, error) {
		panic("boom: " + msg)
	})
	fail = frontend.NewApp1("e2e.fail", func(_ context.Context, msg string) (int64, error) {
		return 0, errors.New("failed on purpose: " + msg)
	})
	nap = frontend.NewApp1("e2e.nap", func(_ context.Context, d time.Duration) (int64, error) {
		time.Sleep(d) // ignores ctx on purpose: the walltime must still hold
		return 1, nil
	})
	flaky = frontend.NewApp1("e2e.flaky", func(ctx context.Context, okOn int) (int, error) {
		if a := frontend.Attempt(ctx); a < okOn {
			return a, fmt.Errorf("attempt %d fails", a)
		}
		return frontend.Attempt(ctx), nil
	})
	// missing is declared but registered nowhere: the executor must say so.
	missing = frontend.Declare1[int64, int64]("e2e.no-such-app")
	// blob returns n bytes of a repeated byte (incompressible enough not
	// to matter: the limits are on the encoded sizes).
	blob = frontend.NewApp1("e2e.blob", func(_ context.Context, n int) ([]byte, error) {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7919 >> 3)
		}
		return b, nil
	})
)

// shared is one executor (np 4, oversubscribed) that most tests use.
var shared *frontend.Executor

func TestMain(m *testing.M) {
	mpiexec.Main()
	family, mpirun, err := launch.MPIRun{}.Resolve()
	if err != nil {
		fmt.Printf("e2e: %v; run `make test` (or `make test MPI=mpich`), which installs it\n", err)
		os.Exit(1)
	}
	fmt.Printf("e2e: %s binding (launch.Built %s), launcher %s (%s)\n", mpi.Family, launch.Built, mpirun, family)
	// One machine: keep MPICH's UCX on shared memory, as the mpi tests keep
	// Open MPI on it. Polling the TCP transport too makes every progress
	// call a system call, which 64 ranks on a few cores feel.
	if _, set := os.LookupEnv("UCX_TLS"); !set && family == launch.MPICH {
		os.Setenv("UCX_TLS", "self,sm")
	}
	// Ranks that the fault tests SIGKILL leave Open MPI's shared-memory
	// segments (vader_segment.*, 4 MiB each) in /dev/shm for ever: keep
	// this run's in a directory of its own, removed at the end. Every
	// block of the suite runs on this machine, so the directory is there
	// for all of their ranks.
	const vaderDir = "OMPI_MCA_btl_vader_backing_directory"
	var shmDir string
	if _, set := os.LookupEnv(vaderDir); !set && family == launch.OpenMPI {
		if d, err := os.MkdirTemp("/dev/shm", "rankfarm-e2e-vader-"); err == nil {
			shmDir = d
			os.Setenv(vaderDir, d)
		}
	}
	// Become a subreaper, so that processes orphaned by a front end we
	// start and kill stay visible as our descendants.
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		fmt.Println("e2e: prctl(PR_SET_CHILD_SUBREAPER):", e)
	}
	// RANKFARM_E2E_LINK=queue runs the whole suite over the shared-filesystem
	// queue instead of TCP: every executor, the subprocess front ends too,
	// takes the queue from RANKFARM_QUEUE_DIR.
	var queueDir string
	switch link := os.Getenv(envE2ELink); link {
	case "", "tcp":
	case "queue":
		dir, err := os.MkdirTemp("", "rankfarm-e2e-queue-")
		if err != nil {
			fmt.Println("e2e:", err)
			os.Exit(1)
		}
		queueDir = dir
		if err := os.Setenv(frontend.EnvQueueDir, dir); err != nil {
			fmt.Println("e2e:", err)
			os.Exit(1)
		}
		fmt.Printf("e2e: over the shared-filesystem queue in %s\n", dir)
	default:
		fmt.Printf("e2e: %s=%q: want tcp or queue\n", envE2ELink, link)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	shared, err = frontend.Start(ctx, frontend.Options{NP: 4})
	cancel()
	if err != nil {
		fmt.Println("e2e: start the shared executor:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := shared.Close(); err != nil {
		fmt.Println("e2e: close the shared executor:", err)
		code = 1
	}
	if queueDir != "" {
		_ = os.RemoveAll(queueDir)
	}
	if shmDir != "" {
		_ = os.RemoveAll(shmDir)
	}
	os.Exit(code)
}

// envE2ELink picks the link the suite runs over: tcp (the default) or queue.
const envE2ELink = "RANKFARM_E2E_LINK"

// overQueue reports whether the suite runs over the shared-filesystem queue.
func overQueue() bool { return os.Getenv(frontend.EnvQueueDir) != "" }

// tcpOnly skips a test of the TCP link itself when the suite runs over the
// queue.
func tcpOnly(t *testing.T) {
	t.Helper()
	if overQueue() {
		t.Skip("tests the TCP link; the suite runs over the queue")
	}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// descendants lists the live processes below pid (not zombies), as
// "pid cmd" strings.
func descendants(pid int) []string {
	parent := map[int]int{}
	cmd := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		rp := strings.LastIndexByte(s, ')')
		if rp < 0 {
			continue
		}
		f := strings.Fields(s[rp+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[p] = pp
		cmd[p] = s[strings.IndexByte(s, '(')+1 : rp]
	}
	var out []string
	for p := range parent {
		for a := parent[p]; a > 1; a = parent[a] {
			if a == pid {
				out = append(out, fmt.Sprintf("%d %s", p, cmd[p]))
				break
			}
		}
	}
	return out
}
