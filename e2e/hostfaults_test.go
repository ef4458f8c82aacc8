package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
)

// netnsInode is the inode of host's network namespace, which every process
// of the host shares.
func (c *cluster) netnsInode(t *testing.T, host string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat("/run/netns/"+host, &st))
	return st.Ino
}

// hostPIDs lists the processes of host, but its sshfs client (sshfs and
// its ssh): on a real host the network filesystem's client is the kernel's,
// which dies with the host's processes, not before them; killed first, it
// would fail a task's file access with EIO while its rank still runs.
func (c *cluster) hostPIDs(t *testing.T, host string) []int {
	t.Helper()
	want := c.netnsInode(t, host)
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil || st.Ino != want {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		if c := strings.TrimSpace(string(comm)); c == "sshfs" || c == "ssh" {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// killHost SIGKILLs every process of host (see hostPIDs) until none is left.
func (c *cluster) killHost(t *testing.T, host string) int {
	t.Helper()
	killed := 0
	for range 50 {
		pids := c.hostPIDs(t, host)
		if len(pids) == 0 {
			return killed
		}
		for _, p := range pids {
			if syscall.Kill(p, syscall.SIGKILL) == nil {
				killed++
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("processes of %s outlived SIGKILL: %v", host, c.hostPIDs(t, host))
	return killed
}

// cutHost takes host's network interface down for d, in the background;
// the returned function waits until it is up again.
func (c *cluster) cutHost(t *testing.T, host string, d time.Duration) (wait func()) {
	t.Helper()
	link := func(state string) error {
		out, err := exec.Command("ip", "-n", host, "link", "set", "eth0", state).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip -n %s link set eth0 %s: %w: %s", host, state, err, out)
		}
		return nil
	}
	require.NoError(t, link("down"))
	done := make(chan struct{})
	t.Cleanup(func() { _ = link("up") })
	go func() {
		defer close(done)
		time.Sleep(d)
		_ = link("up")
	}()
	return func() { <-done }
}

// stallStorage stops every process of the storage host (its sshd and the
// SFTP servers of the hosts' mounts) with SIGSTOP for d, in the background;
// the returned function waits until they run again.
func (c *cluster) stallStorage(t *testing.T, d time.Duration) (wait func()) {
	t.Helper()
	pids := c.hostPIDs(t, "rfstore")
	require.NotEmpty(t, pids, "the storage host runs nothing")
	for _, p := range pids {
		require.NoError(t, syscall.Kill(p, syscall.SIGSTOP))
	}
	cont := func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
	}
	t.Cleanup(cont)
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(d)
		cont()
	}()
	return func() { <-done }
}

// exportOf is dir (under the shared mount) as the storage host stores it.
func (c *cluster) exportOf(t *testing.T, dir string) string {
	t.Helper()
	rel, err := filepath.Rel(c.shared, dir)
	require.NoError(t, err)
	require.False(t, strings.HasPrefix(rel, ".."), "%s is not under %s", dir, c.shared)
	return filepath.Join(c.dir, "export", rel)
}

// TestHostFaults runs 10,000 marked tasks on a block of 4 hosts × 2 ranks
// and injects a fault of a whole host once a fifth of them are done: every
// task must resolve once with its value, none lost, and only tasks in flight
// on a lost block may run twice. The faults: a host killed (every process
// SIGKILLed), the host of rank 0 killed, a host cut off the network for 5 s
// (shorter than the peer timeout: the block rides it out), and the host of
// rank 0 cut off for longer than the peer timeout (the block is lost, its
// tasks run on a new one once the host is back), and, over the queue in the
// shared directory, the storage host stalled for 5 s (every host's
// filesystem calls wait; the block rides it out).
func TestHostFaults(t *testing.T) {
	c := testCluster(t)
	if overQueue() {
		t.Skip("the faults of hosts run over TCP; the queue has its own tests")
	}
	if launch.Built == launch.MPICH && os.Getenv("RANKFARM_E2E_MPICH_HOST_FAULTS") == "" {
		// It passes under MPICH too, but takes 8 minutes there (Hydra is
		// slow to end a job that lost a host: a block's loss takes about
		// a minute to show, 2.5 minutes for a cut-off rank 0) and has not
		// yet run the ten times in a row a test must pass before it runs
		// in make test. RANKFARM_E2E_MPICH_HOST_FAULTS=1 runs it.
		t.Skip("the faults of hosts run under Open MPI; set RANKFARM_E2E_MPICH_HOST_FAULTS=1 to run them under MPICH (8 min)")
	}
	require.GreaterOrEqual(t, len(c.hosts), 3, "the faults need 3 hosts at least")
	hostsTestEnv(t)
	bin := c.worker(t)
	victim := c.hosts[2]
	tests := []struct {
		name     string
		peer     time.Duration
		inject   func(t *testing.T) (wait func())
		lost     bool // the block is lost and replaced
		requeues bool // tasks in flight are requeued
		queue    bool // over the queue in the shared directory
	}{
		{"host killed", 0, func(t *testing.T) func() {
			t.Logf("killed %d processes of %s", c.killHost(t, victim), victim)
			return nil
		}, true, true, false},
		{"rank 0's host killed", 0, func(t *testing.T) func() {
			t.Logf("killed %d processes of %s", c.killHost(t, c.hosts[0]), c.hosts[0])
			return nil
		}, true, true, false},
		{"host cut off for 5s", 0, func(t *testing.T) func() {
			return c.cutHost(t, victim, 5*time.Second)
		}, false, false, false},
		{"rank 0's host cut off past the peer timeout", 3 * time.Second, func(t *testing.T) func() {
			return c.cutHost(t, c.hosts[0], 8*time.Second)
		}, true, true, false},
		{"storage host stalled for 5s (queue)", 0, func(t *testing.T) func() {
			return c.stallStorage(t, 5*time.Second)
		}, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.queue && os.Getenv("RANKFARM_E2E_STORAGE_STALL") == "" {
				// It failed once in ten runs: the hosts' sshfs gave up on
				// the stalled storage after 6 s and failed a task's close
				// with EIO. The mounts now wait 30 s; until that has run
				// ten times in a row it stays out of make test.
				t.Skip("the storage stall runs with RANKFARM_E2E_STORAGE_STALL=1")
			}
			opt := c.options(t, bin, 2)
			opt.PeerTimeout, opt.ReconnectGrace = tt.peer, time.Second
			// Replacements of a block lost with its host's network fail
			// until the host is back.
			opt.BlockRestarts = 6
			opt.Logger = quietLog()
			if tt.queue {
				opt.QueueDir = filepath.Join(c.sharedDir(t, "queue"), "q")
			}
			ctx := testCtx(t, 5*time.Minute)
			ex, err := frontend.Start(ctx, opt)
			require.NoError(t, err)
			defer func() { assert.NoError(t, ex.Close()) }()
			first := ex.Blocks()[0].PID
			dir := c.sharedDir(t, "marks")
			const n = 10000
			var wait func()
			r := runMarkedIn(ctx, t, ex, dir, c.exportOf(t, dir), n, func() { wait = tt.inject(t) }, nil)
			if wait != nil {
				wait()
			}
			st := ex.Stats()
			assert.Equal(t, int64(n), st.Done)
			assert.Zero(t, st.Failed)
			assert.LessOrEqual(t, int64(r.twice), st.Requeued, "only tasks in flight on the lost block may run twice")
			if tt.lost {
				assert.GreaterOrEqual(t, st.BlockRestarts, int64(1), "a replacement block ran the rest")
				require.NotEmpty(t, ex.Blocks())
				assert.NotEqual(t, first, ex.Blocks()[0].PID)
			} else {
				assert.Zero(t, st.BlockRestarts, "the block rode the fault out")
				assert.Zero(t, r.twice)
			}
			if tt.requeues {
				assert.Positive(t, st.Requeued)
			}
			t.Logf("fault table: | %s (%d hosts × 2 ranks) | %d tasks | 0 lost | %d ran twice | %d requeued | recovered in %v |",
				tt.name, len(c.hosts), n, r.twice, st.Requeued, r.recovered.Round(10*time.Millisecond))
		})
	}
}
