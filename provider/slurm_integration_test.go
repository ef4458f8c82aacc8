package provider

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Slurm tests run real jobs on a real Slurm: by default the single-node
// cluster of ci/slurm.sh, which TestMain starts when it runs as root (and
// leaves running: `ci/slurm.sh stop` stops it). RANKFARM_SLURM=off skips
// them; RANKFARM_SLURM=system uses the Slurm the environment points at
// instead (its default partition must run small jobs soon).
var slurmEnv struct {
	skip   string   // why the Slurm tests are skipped; "" when they run
	fail   string   // why they cannot run although they should
	env    []string // for the Slurm provider: SLURM_CONF=…
	prefix string   // of this process's block names
}

func TestMain(m *testing.M) {
	flag.Parse()
	setupSlurm()
	code := m.Run()
	if slurmEnv.skip == "" && slurmEnv.fail == "" {
		if left := leftoverJobs(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: jobs of these tests are still in Slurm's queue: %s\n", strings.Join(left, ", "))
			ids := make([]string, len(left))
			for i, l := range left {
				ids[i], _, _ = strings.Cut(l, " ")
			}
			_ = exec.Command("scancel", ids...).Run()
			code = 1
		}
	}
	os.Exit(code)
}

func setupSlurm() {
	slurmEnv.prefix = "t" + strconv.Itoa(os.Getpid())
	mode := os.Getenv("RANKFARM_SLURM")
	switch {
	case mode == "off":
		slurmEnv.skip = "RANKFARM_SLURM=off"
		return
	case testing.Short():
		slurmEnv.skip = "-short"
		return
	case mode == "system":
		if out, err := exec.Command("sinfo", "-h", "-o", "%P %a").CombinedOutput(); err != nil {
			slurmEnv.fail = fmt.Sprintf("RANKFARM_SLURM=system, but sinfo fails: %v: %s", err, out)
		}
		return
	}
	script, err := filepath.Abs(filepath.Join("..", "ci", "slurm.sh"))
	if err != nil {
		slurmEnv.fail = err.Error()
		return
	}
	if os.Geteuid() == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, script, "start").CombinedOutput(); err != nil {
			slurmEnv.fail = fmt.Sprintf("%s start: %v\n%s", script, err, out)
			return
		}
	} else if err := exec.Command(script, "status").Run(); err != nil {
		slurmEnv.skip = "not root, and the test cluster is not up: run `sudo ci/slurm.sh start` (or the tests as root) for the Slurm tests"
		return
	}
	out, err := exec.Command(script, "env").Output()
	if err != nil {
		slurmEnv.fail = fmt.Sprintf("%s env: %v", script, err)
		return
	}
	conf := strings.TrimPrefix(strings.TrimSpace(string(out)), "export SLURM_CONF=")
	slurmEnv.env = []string{"SLURM_CONF=" + conf}
	// For the test's own squeue and scancel.
	_ = os.Setenv("SLURM_CONF", conf)
}

// needSlurm skips or fails t as setupSlurm decided.
func needSlurm(t *testing.T) {
	t.Helper()
	if slurmEnv.fail != "" {
		t.Fatal(slurmEnv.fail)
	}
	if slurmEnv.skip != "" {
		t.Skip("Slurm tests skipped: " + slurmEnv.skip)
	}
}

// leftoverJobs lists "id name" of this process's jobs still in the queue.
func leftoverJobs() []string {
	out, err := exec.Command("squeue", "-h", "-o", "%i %j").Output()
	if err != nil {
		return []string{"(squeue failed: " + err.Error() + ")"}
	}
	var left []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "rankfarm-"+slurmEnv.prefix+"-") {
			left = append(left, strings.TrimSpace(line))
		}
	}
	return left
}

// blockName names a block of this test process.
func blockName(name string) string { return slurmEnv.prefix + "-" + name }

// submit submits spec and makes sure the job has ended when the test does.
func submit(t *testing.T, p Provider, spec BlockSpec) Job {
	t.Helper()
	job, err := p.Submit(context.Background(), spec)
	require.NoError(t, err)
	t.Cleanup(func() {
		res, err := p.Status(context.Background(), []Job{job})
		if err == nil && res[job.ID].State.Final() {
			return
		}
		_ = p.Cancel(context.Background(), []Job{job})
		waitFinal(t, p, job)
	})
	return job
}

// waitState polls until job is in one of states or has ended, and reports
// how long it took to get there.
func waitState(t *testing.T, p Provider, job Job, states ...State) (JobStatus, time.Duration) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		res, err := p.Status(ctx, []Job{job})
		require.NoError(t, err)
		st := res[job.ID]
		for _, s := range states {
			if st.State == s {
				return st, time.Since(start)
			}
		}
		if st.State.Final() {
			return st, time.Since(start)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s: still %s (%s)", job.ID, st.State, st.Message)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func TestSlurmMPIRunJob(t *testing.T) {
	needSlurm(t)
	t.Parallel()
	p := &Slurm{Env: slurmEnv.env}
	env := map[string]string{"RF_X": "hello world"}
	cmd, err := launch.MPIRun{}.Command(2, "/bin/sh", []string{"-c", `echo "rank=$OMPI_COMM_WORLD_RANK$PMI_RANK x=$RF_X"`}, env)
	require.NoError(t, err)
	dir := t.TempDir()
	spec := BlockSpec{Name: blockName("mpirun"), Command: Command(cmd), Env: env, RanksPerNode: 2, Walltime: 5 * time.Minute, RunDir: dir}
	start := time.Now()
	job := submit(t, p, spec)
	submitted := time.Since(start)
	assert.Equal(t, filepath.Join(dir, spec.Name+".sbatch"), job.Script)
	script, err := os.ReadFile(job.Script)
	require.NoError(t, err)
	assert.Contains(t, string(script), "#SBATCH --ntasks-per-node=2\n")

	st, toRun := waitState(t, p, job, Running)
	st2 := waitFinal(t, p, job)
	t.Logf("sbatch took %v; then %v until %s; job ended: %s", submitted, toRun, st.State, st2.Message)
	require.Equal(t, Done, st2.State, "%s\n%s", st2.Message, st2.Tail)
	out, err := os.ReadFile(job.Stdout)
	require.NoError(t, err)
	assert.Contains(t, string(out), "rank=0 x=hello world\n")
	assert.Contains(t, string(out), "rank=1 x=hello world\n")
}

func TestSlurmSrunJob(t *testing.T) {
	needSlurm(t)
	t.Parallel()
	p := &Slurm{Env: slurmEnv.env}
	env := map[string]string{"RF_X": "via srun"}
	cmd, err := Srun{}.Command(2, "/bin/sh", []string{"-c", `echo "task=$SLURM_PROCID x=$RF_X"`}, env)
	require.NoError(t, err)
	job := submit(t, p, BlockSpec{Name: blockName("srun"), Command: Command(cmd), Env: env, RanksPerNode: 2, RunDir: t.TempDir()})
	st := waitFinal(t, p, job)
	require.Equal(t, Done, st.State, "%s\n%s", st.Message, st.Tail)
	out, err := os.ReadFile(job.Stdout)
	require.NoError(t, err)
	assert.Contains(t, string(out), "task=0 x=via srun\n")
	assert.Contains(t, string(out), "task=1 x=via srun\n")
}

func TestSlurmFailures(t *testing.T) {
	needSlurm(t)
	t.Parallel()
	p := &Slurm{Env: slurmEnv.env}
	dir := t.TempDir()

	// The batch system's own words reach the caller: sbatch's refusal …
	_, err := p.Submit(context.Background(), BlockSpec{Name: blockName("nopart"), Command: []string{"/bin/true"}, Partition: "no-such-partition", RunDir: dir})
	var ce *CommandError
	require.True(t, errors.As(err, &ce), "%v", err)
	assert.Contains(t, err.Error(), "Invalid partition name specified")

	// … a failed job's state, reason, exit code and error output …
	job := submit(t, p, BlockSpec{Name: blockName("exit3"), Command: []string{"/bin/sh", "-c", "echo boom >&2; exit 3"}, RunDir: dir})
	st := waitFinal(t, p, job)
	assert.Equal(t, Failed, st.State)
	assert.Equal(t, "FAILED, Reason=NonZeroExitCode, ExitCode=3:0", st.Message)
	assert.Equal(t, "boom", st.Tail)

	// … and the reason a job will never start.
	job = submit(t, p, BlockSpec{Name: blockName("toobig"), Command: []string{"/bin/true"}, NodesPerBlock: 64, RunDir: dir})
	st, _ = waitState(t, p, job, Pending)
	assert.Equal(t, Pending, st.State)
	if !st.Stuck { // the controller may not have looked at it yet
		st, _ = waitStuck(t, p, job)
	}
	assert.True(t, st.Stuck, st.Message)
	assert.Contains(t, st.Message, "PENDING, Reason=Partition") // PartitionNodeLimit or PartitionConfig
	require.NoError(t, p.Cancel(context.Background(), []Job{job}))
	assert.Equal(t, Cancelled, waitFinal(t, p, job).State)

	// A job Slurm never had is Unknown, and cancelling it is no error.
	res, err := p.Status(context.Background(), []Job{{ID: "999999"}})
	require.NoError(t, err)
	assert.Equal(t, Unknown, res["999999"].State)
	require.NoError(t, p.Cancel(context.Background(), []Job{{ID: "999999"}}))
}

func waitStuck(t *testing.T, p Provider, job Job) (JobStatus, time.Duration) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < time.Minute {
		res, err := p.Status(context.Background(), []Job{job})
		require.NoError(t, err)
		if st := res[job.ID]; st.Stuck || st.State != Pending {
			return st, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %s never said it was stuck", job.ID)
	return JobStatus{}, 0
}

func TestSlurmCancelRunning(t *testing.T) {
	needSlurm(t)
	t.Parallel()
	p := &Slurm{Env: slurmEnv.env}
	job := submit(t, p, BlockSpec{Name: blockName("long"), Command: []string{"/bin/sleep", "600"}, RunDir: t.TempDir()})
	st, _ := waitState(t, p, job, Running)
	require.Equal(t, Running, st.State, st.Message)
	require.NoError(t, p.Cancel(context.Background(), []Job{job}))
	st = waitFinal(t, p, job)
	assert.Equal(t, Cancelled, st.State)
	assert.True(t, strings.HasPrefix(st.Message, "CANCELLED"), st.Message)
}

var rankfarmBin struct {
	once sync.Once
	path string
	err  error
}

// buildRankfarm builds cmd/rankfarm once per test process.
func buildRankfarm(t *testing.T) string {
	t.Helper()
	rankfarmBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "rankfarm-provider-test-")
		if err != nil {
			rankfarmBin.err = err
			return
		}
		rankfarmBin.path = filepath.Join(dir, "rankfarm")
		// The binding of this test's build, to match what MPIRun{} picks.
		args := append(append([]string{"build"}, launch.Built.GoBuildFlags()...), "-o", rankfarmBin.path, "github.com/rankfarm/rankfarm/cmd/rankfarm")
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			rankfarmBin.err = fmt.Errorf("go build ./cmd/rankfarm: %v\n%s", err, out)
		}
	})
	require.NoError(t, rankfarmBin.err)
	return rankfarmBin.path
}

// TestSlurmBlockConnectsBack runs the executor as a Slurm job, the way the
// front end will: a token file and a listener here, the block's variables
// in the job script, mpirun of rankfarm exec in the job. Rank 0 dials back
// and names its block; a scancel mid-run breaks the link and reads as
// Cancelled in Slurm's words; a second block connects and is shut down
// cleanly.
func TestSlurmBlockConnectsBack(t *testing.T) {
	needSlurm(t)
	t.Parallel()
	bin := buildRankfarm(t)
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(bin)) })
	dir := t.TempDir()
	token, err := link.NewToken()
	require.NoError(t, err)
	tokenFile, err := link.WriteTokenFile(dir, token)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ln, err := link.Listen(ctx, "127.0.0.1:0", link.ListenOptions{Token: token, Run: "provider-test"})
	require.NoError(t, err)
	defer ln.Close()
	p := &Slurm{Env: slurmEnv.env}

	startBlock := func(name string) (Job, link.Conn) {
		env := map[string]string{
			"RANKFARM_EXEC":       "1",
			link.EnvAddr:          ln.Addr(),
			link.EnvTokenFile:     tokenFile,
			link.EnvBlock:         name,
			"RANKFARM_LOG":        "info",
			"RANKFARM_SOME_OTHER": "x",
		}
		cmd, err := launch.MPIRun{}.Command(2, bin, []string{"exec"}, env)
		require.NoError(t, err)
		start := time.Now()
		job := submit(t, p, BlockSpec{Name: name, Command: Command(cmd), Env: env, RanksPerNode: 2, Walltime: 10 * time.Minute, RunDir: dir})
		script, err := os.ReadFile(job.Script)
		require.NoError(t, err)
		assert.False(t, bytes.Contains(script, token), "the token is in the job script")
		assert.NotContains(t, string(script), hex.EncodeToString(token))
		assert.Contains(t, string(script), "export RANKFARM_TOKEN_FILE="+tokenFile+"\n")

		conn, hello, err := ln.Accept(ctx)
		if err != nil {
			res, _ := p.Status(context.Background(), []Job{job})
			t.Fatalf("block %s did not connect: %v; job %s: %+v; its error output:\n%s", name, err, job.ID, res[job.ID], tailOf(job.Stderr, 4<<10))
		}
		t.Logf("block %s (job %s): sbatch to rank 0's handshake in %v; %d ranks on %s", name, job.ID, time.Since(start), hello.Ranks, hello.Host)
		assert.Equal(t, name, hello.Block)
		return job, conn
	}

	// A block cancelled mid-run: the link breaks, Slurm says CANCELLED.
	job1, conn1 := startBlock(blockName("b1"))
	defer conn1.Close()
	st, _ := waitState(t, p, job1, Running)
	require.Equal(t, Running, st.State, st.Message)
	require.NoError(t, exec.Command("scancel", job1.ID).Run(), "scancel, as a user or an admin would")
	cancelled := time.Now()
	_, err = recvUntilError(ctx, conn1)
	assert.Error(t, err, "the link of a cancelled block breaks")
	broke := time.Since(cancelled)
	st, toFinal := waitState(t, p, job1)
	t.Logf("scancel: the link broke after %v (%v), squeue said %q %v after that", broke, err, st.Message, toFinal)
	assert.Equal(t, Cancelled, st.State, st.Message)
	assert.Contains(t, st.Message, "CANCELLED")

	// Its replacement connects, and ends cleanly on Shutdown.
	job2, conn2 := startBlock(blockName("b2"))
	defer conn2.Close()
	require.NoError(t, conn2.Send(&serialize.Shutdown{Reason: "the test is over"}))
	st = waitFinal(t, p, job2)
	assert.Equal(t, Done, st.State, "%s\n%s", st.Message, tailOf(job2.Stderr, 4<<10))
}

// recvUntilError reads from conn until it fails.
func recvUntilError(ctx context.Context, conn link.Conn) (serialize.Message, error) {
	for {
		m, err := conn.Recv(ctx)
		if err != nil {
			return m, err
		}
	}
}
