package mpi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/launch"
)

// The tests named TestMPI... run inside mpirun: TestUnderMPIRun starts this
// very test binary under mpirun with envInner=1, and only then do they run.
// MPI can be initialised once per process, so everything that needs MPI is
// one test function with subtests.

const (
	envInner    = "RANKFARM_MPI_TEST"
	envPingPong = "RANKFARM_MPI_PINGPONG_N" // round trips in the pingpong subtest
	envSpin     = "RANKFARM_MPI_SPIN"       // Options.Spin of the inner test, e.g. 50us
	envNoBells  = "RANKFARM_MPI_NO_BELLS"   // "1": Options.NoDoorbells in the inner test
)

// runMPI runs this test binary under mpirun with np ranks and the given
// -test.* arguments and returns its combined output.
func runMPI(t testing.TB, np int, timeout time.Duration, extraEnv []string, testArgs ...string) (string, error) {
	t.Helper()
	if !builtWithMPI {
		t.Skip("built with the nompi tag: no MPI to run under")
	}
	env := map[string]string{
		envInner: "1",
		// Keep Open MPI and MPICH's UCX off the network: one machine,
		// shared memory.
		"OMPI_MCA_btl": "self,vader",
		"UCX_TLS":      "self,sm",
	}
	for _, kv := range extraEnv {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	// The launcher that a front end would use: the one of this binary's
	// MPI family (mpirun.openmpi, or mpirun.mpich under -tags mpich).
	lc, err := launch.MPIRun{}.Command(np, os.Args[0], testArgs, env)
	if errors.Is(err, launch.ErrNoLauncher) {
		t.Skipf("this %s build cannot run under MPI here: %v", Family, err)
	}
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, lc.Path, lc.Args[1:]...)
	cmd.Env = lc.Env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (mpirun ran out of its %v)", ctx.Err(), timeout)
	}
	return string(out), err
}

func TestUnderMPIRun(t *testing.T) {
	if os.Getenv(envInner) == "1" {
		t.Skip("already under mpirun")
	}
	for _, tc := range []struct {
		np      int
		noBells bool
	}{{2, false}, {4, false}, {2, true}} {
		np := tc.np
		name := fmt.Sprintf("np=%d", np)
		var env []string
		if tc.noBells {
			name += " no doorbells"
			env = append(env, envNoBells+"=1")
		}
		t.Run(name, func(t *testing.T) {
			out, err := runMPI(t, np, 4*time.Minute, env,
				"-test.run", "^TestMPI", "-test.v", "-test.count=1", "-test.timeout=3m")
			t.Logf("mpirun output:\n%s", out)
			require.NoError(t, err, "mpirun -np %d failed", np)
			assert.Equal(t, np, strings.Count(out, "--- PASS: TestMPIEndpoint "),
				"every rank must pass TestMPIEndpoint")
		})
	}
}

var pingPongLine = regexp.MustCompile(`pingpong: n=(\d+) mean_ns=(\d+) p50_ns=(\d+) p90_ns=(\d+) p99_ns=(\d+)`)

// BenchmarkPingPong measures the round trip of a 16-byte message between two
// ranks through their Endpoints: rank 0 sends, rank 1 echoes. It runs one
// mpirun with b.N round trips and reports the inner timings (ns/op is the
// mean round trip; mpirun's start-up is not counted). Run it with a fixed
// count, e.g. -bench PingPong -benchtime 20000x.
func BenchmarkPingPong(b *testing.B) {
	n := max(b.N, 100)
	out, err := runMPI(b, 2, 5*time.Minute, []string{envPingPong + "=" + strconv.Itoa(n)},
		"-test.run", "^TestMPIEndpoint$/^pingpong$", "-test.v", "-test.count=1")
	if err != nil {
		b.Fatalf("mpirun: %v\n%s", err, out)
	}
	m := pingPongLine.FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("no pingpong result in the output:\n%s", out)
	}
	num := func(i int) float64 { v, _ := strconv.ParseFloat(m[i], 64); return v }
	b.ReportMetric(num(2), "ns/op")
	b.ReportMetric(num(3), "p50-ns")
	b.ReportMetric(num(4), "p90-ns")
	b.ReportMetric(num(5), "p99-ns")
}

// inbox reads the endpoint's Recv channel and keeps packets of other tags for
// later, so that each subtest sees only its own tags.
type inbox struct {
	e     *Endpoint
	stash map[int][]Packet
}

// next returns the next packet with tag, failing the test at the deadline.
func (b *inbox) next(t testing.TB, tag int, deadline <-chan time.Time) Packet {
	t.Helper()
	if q := b.stash[tag]; len(q) > 0 {
		b.stash[tag] = q[1:]
		return q[0]
	}
	for {
		select {
		case p, ok := <-b.e.Recv():
			require.True(t, ok, "Recv channel closed while waiting for tag %d", tag)
			if p.Tag == tag {
				return p
			}
			b.stash[p.Tag] = append(b.stash[p.Tag], p)
		case <-deadline:
			require.FailNow(t, "timed out", "waiting for a packet with tag %d", tag)
		}
	}
}

// barrier: every rank tells rank 0, which answers all once it heard them.
func (b *inbox) barrier(t testing.TB, tag int) {
	t.Helper()
	deadline := time.After(time.Minute)
	e := b.e
	if e.Rank() == 0 {
		for range e.Size() - 1 {
			b.next(t, tag, deadline)
		}
		for r := 1; r < e.Size(); r++ {
			require.NoError(t, e.Send(r, tag, nil))
		}
		return
	}
	require.NoError(t, e.Send(0, tag, nil))
	b.next(t, tag, deadline)
}

// Tags of the inner test, one set per subtest.
const (
	tagBarrier  = 1
	tagRing     = 100 // +case index
	tagFanIn    = 200
	tagPingPong = 300
	tagEmpty    = 400
	tagBells    = 500
)

// pattern fills n bytes that depend on seed, to check what arrives.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed*13)
	}
	return b
}

func TestMPIEndpoint(t *testing.T) {
	if os.Getenv(envInner) != "1" {
		t.Skip("runs only under mpirun, started by TestUnderMPIRun")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	var opt Options
	if s := os.Getenv(envSpin); s != "" {
		opt.Spin, err = time.ParseDuration(s)
		require.NoError(t, err, envSpin)
	}
	opt.NoDoorbells = os.Getenv(envNoBells) == "1"
	e, err := Start(ctx, opt)
	require.NoError(t, err)
	box := &inbox{e: e, stash: map[int][]Packet{}}
	rank, size := e.Rank(), e.Size()
	t.Logf("rank %d of %d, local rank %d of %d, tag UB %d", rank, size, e.LocalRank(), e.LocalSize(), e.TagUB())

	_, err = Start(ctx, Options{})
	assert.ErrorIs(t, err, ErrStarted, "MPI starts once per process")

	t.Run("identity", func(t *testing.T) {
		for _, v := range [][2]string{
			{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"}, // OpenMPI
			{"PMI_RANK", "PMI_SIZE"},                         // MPICH (Hydra)
		} {
			if r, ok := os.LookupEnv(v[0]); ok {
				assert.Equal(t, r, strconv.Itoa(rank), v[0])
				assert.Equal(t, os.Getenv(v[1]), strconv.Itoa(size), v[1])
			}
		}
		require.Len(t, e.NodeOf(), size)
		assert.Equal(t, make([]int, size), e.NodeOf(), "one machine: every rank on node 0")
		assert.Equal(t, rank, e.LocalRank(), "one node: local rank is the world rank")
		assert.Equal(t, size, e.LocalSize())
		assert.GreaterOrEqual(t, e.TagUB(), 32767)
	})

	t.Run("descriptors close-on-exec", func(t *testing.T) {
		// The launcher's and the library's descriptors must not reach a
		// program the rank starts (many are inheritable before Start).
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		for _, en := range entries {
			fd, err := strconv.Atoi(en.Name())
			if err != nil || fd < 3 {
				continue
			}
			flags, err := fcntlGetFD(fd)
			if err != nil { // the directory listing's own, closed since
				continue
			}
			target, _ := os.Readlink("/proc/self/fd/" + en.Name())
			assert.NotZero(t, flags&syscall.FD_CLOEXEC, "fd %d (%s) is inheritable", fd, target)
		}
		out, err := exec.Command("/bin/sh", "-c", "ls /proc/$$/fd").Output()
		require.NoError(t, err)
		assert.Equal(t, []string{"0", "1", "2"}, strings.Fields(string(out)), "a child holds only stdin, stdout and stderr")
	})

	t.Run("bad sends", func(t *testing.T) {
		tests := []struct {
			name      string
			dest, tag int
		}{
			{"negative rank", -1, 0},
			{"rank past the end", size, 0},
			{"negative tag", 0, -1},
			{"tag above MPI_TAG_UB", 0, e.TagUB() + 1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				assert.ErrorIs(t, e.Send(tt.dest, tt.tag, []byte("x")), ErrInvalid)
			})
		}
	})

	t.Run("go panics still recover", func(t *testing.T) {
		// OpenMPI installs SIGSEGV/SIGBUS handlers unless some are set
		// already; Go's must stay, or a nil dereference kills the rank.
		var p *int
		assert.Panics(t, func() { _ = *p })
	})

	box.barrier(t, tagBarrier)
	t.Run("ring", func(t *testing.T) {
		next, prev := (rank+1)%size, (rank+size-1)%size
		sizes := []int{0, 16, 1 << 20, 3, 64 << 10}
		for i, n := range sizes {
			require.NoError(t, e.Send(next, tagRing+i, pattern(n, rank+i)))
		}
		deadline := time.After(time.Minute)
		for i, n := range sizes {
			p := box.next(t, tagRing+i, deadline)
			assert.Equal(t, prev, p.Src)
			assert.Len(t, p.Data, n)
			assert.True(t, bytes.Equal(pattern(n, prev+i), p.Data), "payload of %d bytes from %d", n, prev)
		}
	})

	box.barrier(t, tagBarrier)
	t.Run("fan in", func(t *testing.T) {
		const perRank = 10000
		if rank != 0 {
			for i := range perRank {
				msg := make([]byte, 8+i%32)
				binary.LittleEndian.PutUint64(msg, uint64(i))
				require.NoError(t, e.Send(0, tagFanIn, msg))
			}
			return
		}
		deadline := time.After(2 * time.Minute)
		nextSeq := make([]uint64, size)
		start := time.Now()
		for range (size - 1) * perRank {
			p := box.next(t, tagFanIn, deadline)
			require.Len(t, p.Data, 8+int(nextSeq[p.Src])%32)
			seq := binary.LittleEndian.Uint64(p.Data)
			require.Equal(t, nextSeq[p.Src], seq, "message from rank %d out of order", p.Src)
			nextSeq[p.Src]++
		}
		el := time.Since(start)
		for r := 1; r < size; r++ {
			assert.Equal(t, uint64(perRank), nextSeq[r], "messages from rank %d", r)
		}
		t.Logf("fan in: %d messages in %v (%.0f msg/s)", (size-1)*perRank, el, float64((size-1)*perRank)/el.Seconds())
	})

	box.barrier(t, tagBarrier)
	t.Run("pingpong", func(t *testing.T) {
		n := 2000
		if s := os.Getenv(envPingPong); s != "" {
			n, err = strconv.Atoi(s)
			require.NoError(t, err)
		}
		warm := min(n/10, 1000)
		deadline := time.After(4 * time.Minute)
		switch rank {
		case 0:
			lat := make([]time.Duration, 0, n)
			for i := range warm + n {
				t0 := time.Now()
				require.NoError(t, e.Send(1, tagPingPong, make([]byte, 16)))
				box.next(t, tagPingPong, deadline)
				if i >= warm {
					lat = append(lat, time.Since(t0))
				}
			}
			var sum time.Duration
			for _, d := range lat {
				sum += d
			}
			slices.Sort(lat)
			q := func(f float64) int64 { return lat[int(f*float64(len(lat)-1))].Nanoseconds() }
			t.Logf("pingpong: n=%d mean_ns=%d p50_ns=%d p90_ns=%d p99_ns=%d", n, (sum / time.Duration(n)).Nanoseconds(), q(.5), q(.9), q(.99))
		case 1:
			for range warm + n {
				p := box.next(t, tagPingPong, deadline)
				require.NoError(t, e.Send(0, tagPingPong, p.Data))
			}
		}
	})

	box.barrier(t, tagBarrier)
	t.Run("doorbells", func(t *testing.T) {
		// One machine: every rank shares the node's doorbells unless
		// they are turned off. Rank 0 pauses before each ping, so rank 1
		// has gone to sleep, and its send must ring rank 1's bell.
		bells := !opt.NoDoorbells
		assert.Equal(t, bells, e.Doorbells())
		before := e.PeersWoken()
		deadline := time.After(time.Minute)
		const rounds = 20
		switch rank {
		case 0:
			for range rounds {
				time.Sleep(2 * time.Millisecond)
				require.NoError(t, e.Send(1, tagBells, []byte("ping")))
				box.next(t, tagBells, deadline)
			}
			woken := e.PeersWoken() - before
			t.Logf("doorbells %v: rank 0 woke rank 1 %d times in %d pings", bells, woken, rounds)
			if bells {
				assert.Positive(t, woken, "no ping woke the sleeping rank 1")
			} else {
				assert.Zero(t, woken)
			}
		case 1:
			for range rounds {
				p := box.next(t, tagBells, deadline)
				require.NoError(t, e.Send(0, tagBells, p.Data))
			}
		}
	})

	box.barrier(t, tagBarrier)
	t.Run("idle rank sleeps", func(t *testing.T) {
		// An idle rank must not spin a core: over half a second of
		// idleness the whole process may use a small share of one.
		cpu := func() time.Duration {
			var ru syscall.Rusage
			require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
			return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		time.Sleep(50 * time.Millisecond) // let the loop's sleeps grow
		c0, t0 := cpu(), time.Now()
		time.Sleep(500 * time.Millisecond)
		share := float64(cpu()-c0) / float64(time.Since(t0))
		t.Logf("idle CPU: %.1f%% of a core", 100*share)
		assert.Less(t, share, 0.25, "an idle rank uses too much CPU")
	})

	box.barrier(t, tagBarrier)
	t.Run("empty message to self", func(t *testing.T) {
		require.NoError(t, e.Send(rank, tagEmpty, nil))
		p := box.next(t, tagEmpty, time.After(time.Minute))
		assert.Equal(t, rank, p.Src)
		assert.Empty(t, p.Data)
	})

	if t.Failed() {
		t.Logf("rank %d failed: aborting the job", rank)
		e.Abort(3)
	}
	box.barrier(t, tagBarrier)
	closeCtx, closeCancel := context.WithTimeout(context.Background(), time.Minute)
	defer closeCancel()
	require.NoError(t, e.Close(closeCtx), "close")
	assert.ErrorIs(t, e.Send(0, 0, nil), ErrClosed)
	_, open := <-e.Recv()
	assert.False(t, open, "Recv is closed after Close")
	select {
	case <-e.Done():
	default:
		t.Error("Done is not closed after Close")
	}
}

// fcntlGetFD returns fd's descriptor flags (fcntl F_GETFD).
func fcntlGetFD(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
