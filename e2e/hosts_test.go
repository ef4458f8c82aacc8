package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/mpiexec/mpi"
	"github.com/rankfarm/rankfarm/rankpool"
)

// The test cluster of ci/hosts.sh: emulated hosts, each with its own network,
// hostname, IPC, /dev/shm and /tmp, a bridge between them, and a directory
// shared over sshfs. `make test` starts it (as root) before the suite.
const (
	envHostsDir   = "RANKFARM_HOSTS_DIR"
	hostsDirDflt  = "/run/rankfarm-hosts"
	hostsLoginIP  = "198.18.0.1"
	hostsNetwork  = "198.18.0.0/24"
	ranksPerHost  = 4
	hostsTestSize = 200_000
)

// cluster is the test cluster as a test sees it.
type cluster struct {
	dir    string   // ci/hosts.sh's directory
	hosts  []string // rfhost1, rfhost2, …
	agent  string   // the rsh agent
	shared string   // the sshfs mount, the same path on every host
}

// testCluster returns the running test cluster, or skips the test with one
// line saying why when there is none (not root, or not started). Under
// CI=true as root a missing cluster fails the test: make test starts it.
func testCluster(t *testing.T) *cluster {
	t.Helper()
	dir := os.Getenv(envHostsDir)
	if dir == "" {
		dir = hostsDirDflt
	}
	c := &cluster{dir: dir, agent: filepath.Join(dir, "bin", "rsh"), shared: filepath.Join(dir, "shared")}
	b, err := os.ReadFile(filepath.Join(dir, "count"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	switch {
	case os.Geteuid() != 0:
		t.Skip("the test cluster needs root (ci/hosts.sh); skipping the tests across hosts")
	case err != nil || n < 1:
		if os.Getenv("CI") == "true" {
			t.Fatalf("no test cluster in %s (make test starts it with ci/hosts.sh start): %v", dir, err)
		}
		t.Skipf("no test cluster in %s; start one with `ci/hosts.sh start` (or make hosts)", dir)
	}
	for i := 1; i <= n; i++ {
		c.hosts = append(c.hosts, fmt.Sprintf("rfhost%d", i))
	}
	return c
}

// slots returns the Hosts entries that put k ranks on each host.
func (c *cluster) slots(k int) []string {
	out := make([]string, len(c.hosts))
	for i, h := range c.hosts {
		out[i] = fmt.Sprintf("%s:%d", h, k)
	}
	return out
}

// launcher is the mpirun of the block's family over the cluster's hosts.
func (c *cluster) launcher(k int) launch.MPIRun {
	return launch.MPIRun{Hosts: c.slots(k), Agent: c.agent, Network: hostsNetwork}
}

// options are the executor options of a block of perHost ranks on every
// host of the cluster, running bin, whose front end listens on the login
// host's address and keeps its run directory on the shared filesystem.
func (c *cluster) options(t *testing.T, bin string, perHost int) frontend.Options {
	t.Helper()
	return frontend.Options{
		NP:           perHost * len(c.hosts),
		WorkerBinary: bin,
		Launcher:     withEnv{c.launcher(perHost), clusterEnv()},
		ListenAddr:   hostsLoginIP + ":0",
		RunDir:       filepath.Join(c.sharedDir(t, "run"), "run"),
		StartTimeout: 2 * time.Minute,
	}
}

// sharedDir makes a directory of the test's own on the shared filesystem,
// removed at the end.
func (c *cluster) sharedDir(t *testing.T, name string) string {
	t.Helper()
	d, err := os.MkdirTemp(c.shared, name+"-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// worker copies this test binary to the shared filesystem: the hosts have
// /tmp of their own, where go test keeps it, so they run the copy, as a
// cluster's nodes run programs from a shared filesystem.
func (c *cluster) worker(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	dst := filepath.Join(c.sharedDir(t, "bin"), "e2e.test")
	in, err := os.Open(self)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	return dst
}

// clusterEnv is what every rank of a block across hosts needs on top of
// the suite's environment: the front end's own settings for one machine
// (Open MPI's vader directory in this machine's /dev/shm, MPICH's UCX on
// shared memory only) do not hold across hosts.
func clusterEnv() map[string]string {
	env := map[string]string{}
	if launch.Built == launch.MPICH {
		env["UCX_TLS"] = "self,sm,tcp"
	}
	return env
}

// hostsTestEnv undoes, for the test's duration, the suite's settings for
// one machine that would break ranks on other hosts.
func hostsTestEnv(t *testing.T) {
	t.Helper()
	if d, ok := os.LookupEnv("OMPI_MCA_btl_vader_backing_directory"); ok {
		os.Unsetenv("OMPI_MCA_btl_vader_backing_directory")
		t.Cleanup(func() { os.Setenv("OMPI_MCA_btl_vader_backing_directory", d) })
	}
}

// placedApp tells which rank and host ran it: "i rank host".
var placedApp = frontend.NewApp1("e2e.placed", func(_ context.Context, i int64) (string, error) {
	h, _ := os.Hostname()
	return fmt.Sprintf("%d %d %s", i, worldRank(), h), nil
})

// TestBlockAcrossHosts runs a block of 4 ranks on each of the cluster's
// hosts, the front end on the login host (the bridge's address), the run
// directory and the worker binary on the shared filesystem; over TCP, then
// over the queue in a directory of the shared filesystem. The block must
// report each host with its ranks and its sub-master as the Topology places
// them, every rank must say it runs on the host the block reported, and
// 200,000 tasks must each resolve once, with their own value, on workers
// only.
func TestBlockAcrossHosts(t *testing.T) {
	c := testCluster(t)
	if overQueue() {
		t.Skip("runs its own queue subtest on the shared filesystem; the suite's queue is on this host's /tmp")
	}
	hostsTestEnv(t)
	bin := c.worker(t)
	for _, link := range []string{"tcp", "queue"} {
		t.Run(link, func(t *testing.T) {
			opt := c.options(t, bin, ranksPerHost)
			if link == "queue" {
				opt.QueueDir = filepath.Join(c.sharedDir(t, "queue"), "q")
			}
			runAcrossHosts(t, c, opt)
		})
	}
}

func runAcrossHosts(t *testing.T, c *cluster, opt frontend.Options) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	ex, err := frontend.Start(ctx, opt)
	cancel()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, ex.Close()) })

	bs := ex.Blocks()
	require.Len(t, bs, 1)
	b := bs[0]
	require.Len(t, b.Nodes, len(c.hosts), "one node per host: %+v", b.Nodes)
	np := opt.NP
	nodeOf := make([]int, np)
	hostOf := map[int64]string{}
	for k, n := range b.Nodes {
		assert.Equal(t, c.hosts[k], n.Host, "node %d", k)
		assert.Len(t, n.Ranks, ranksPerHost, "ranks on %s", n.Host)
		for _, r := range n.Ranks {
			nodeOf[r] = k
			hostOf[int64(r)] = n.Host
		}
	}
	topo, err := rankpool.NewTopology(np, nodeOf, 0)
	require.NoError(t, err)
	require.Equal(t, 2, topo.Depth(), "three levels: rank 0, a sub-master per other host, workers")
	isWorker := map[int64]bool{}
	for k, n := range b.Nodes {
		var want []int
		for _, r := range n.Ranks {
			switch topo.Place(r).Role {
			case rankpool.RoleSubMaster:
				want = append(want, r)
			case rankpool.RoleWorker:
				isWorker[int64(r)] = true
			}
		}
		assert.Equal(t, want, n.SubMasters, "sub-masters on %s", n.Host)
		if k > 0 {
			assert.Len(t, n.SubMasters, 1, "one sub-master on %s", n.Host)
		}
	}
	t.Logf("block %s: %+v", b.Name, b.Nodes)

	ctx = testCtx(t, 8*time.Minute)
	n := hostsTestSize
	if mpi.Family == string(launch.MPICH) || opt.QueueDir != "" {
		n = hostsTestSize / 4
	}
	start := time.Now()
	futs := make([]*frontend.Future[string], n)
	for i := range futs {
		futs[i] = placedApp.Call(ex, frontend.V(int64(i)))
	}
	seen := make(map[uint64]bool, n)
	perHost := map[string]int{}
	for i, f := range futs {
		v, err := f.Get(ctx)
		require.NoError(t, err, "task %d", i)
		var id, rank int64
		var host string
		_, err = fmt.Sscanf(v, "%d %d %s", &id, &rank, &host)
		require.NoError(t, err, "task %d: %q", i, v)
		require.Equal(t, int64(i), id, "task %d came back with another task's value", i)
		require.True(t, isWorker[rank], "task %d ran on rank %d, which is not a worker", i, rank)
		require.Equal(t, hostOf[rank], host, "task %d: rank %d says it runs on %s", i, rank, host)
		perHost[host]++
		require.False(t, seen[f.ID()], "task id %d twice", f.ID())
		seen[f.ID()] = true
	}
	took := time.Since(start)
	assert.Len(t, seen, n)
	assert.Len(t, perHost, len(c.hosts), "every host ran tasks: %v", perHost)
	st := ex.Stats()
	assert.Equal(t, int64(n), st.Done)
	assert.Zero(t, st.Failed)
	t.Logf("%d tasks in %v (%.0f tasks/s); per host: %v", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), perHost)
}

// TestHostsAgentRunsOnHost checks the test cluster itself: the agent runs
// a command on the host it names, which has its own name, /tmp and
// /dev/shm, and refuses a host that is not there with a line naming it.
func TestHostsAgentRunsOnHost(t *testing.T) {
	c := testCluster(t)
	out, err := exec.Command(c.agent, c.hosts[0], "hostname; mktemp /tmp/rf-probe.XXXXXX; mktemp /dev/shm/rf-probe.XXXXXX").CombinedOutput()
	require.NoError(t, err, "%s", out)
	lines := strings.Fields(string(out))
	require.Len(t, lines, 3, "%s", out)
	assert.Equal(t, c.hosts[0], lines[0], "the host's own name")
	for _, f := range lines[1:] {
		assert.NoFileExists(t, f, "a file the host made in its own /tmp or /dev/shm shows on the login host")
	}
	out, err = exec.Command(c.agent, c.hosts[0], "rm "+lines[1]+" "+lines[2]).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(c.agent, "-x", "-o", "BatchMode=yes", "rfhost99", "true").CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "no host named 'rfhost99'")
}

// TestFrontEndUnreachableFromHosts starts a block on the cluster's hosts
// while the front end listens on loopback, which no other host reaches:
// the start must fail within the start timeout with an error that names
// the address, and leave no process behind.
func TestFrontEndUnreachableFromHosts(t *testing.T) {
	c := testCluster(t)
	if overQueue() {
		t.Skip("tests the TCP connect-back")
	}
	hostsTestEnv(t)
	bin := c.worker(t)
	for _, tt := range []struct{ name, listen, block string }{
		{"loopback", "127.0.0.1:0", ""},
		{"no such host", hostsLoginIP + ":0", "198.18.0.250:9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opt := c.options(t, bin, 2)
			opt.ListenAddr, opt.BlockAddr = tt.listen, tt.block
			opt.StartTimeout, opt.BlockRestarts = 45*time.Second, -1
			start := time.Now()
			ctx := testCtx(t, 2*time.Minute)
			ex, err := frontend.Start(ctx, opt)
			if ex != nil {
				_ = ex.Close()
			}
			took := time.Since(start)
			require.Error(t, err)
			t.Logf("after %v: %v", took.Round(time.Millisecond), err)
			want := tt.block
			if want == "" {
				want = "127.0.0.1:"
			}
			assert.Contains(t, err.Error(), want, "the error names the address the block could not reach")
			assert.Less(t, took, opt.StartTimeout+15*time.Second)
		})
	}
}
