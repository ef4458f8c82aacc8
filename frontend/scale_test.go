package frontend

import (
	"context"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/provider"
	"github.com/rankfarm/rankfarm/serialize"
)

// envLauncher starts the test binary as a test block in mode through
// env(1): a Provider passes on only the launch command line, not the
// command's environment.
type envLauncher struct{ mode string }

func (l envLauncher) Command(_ int, exe string, args []string, _ map[string]string) (*exec.Cmd, error) {
	return exec.Command("/usr/bin/env", append([]string{envTestBlock + "=" + l.mode, exe}, args...)...), nil
}

// fakeClock is the strategy's clock in the tests: it moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// countingProvider counts the blocks submitted to a provider.
type countingProvider struct {
	provider.Provider
	submits atomic.Int64
}

func (p *countingProvider) Submit(ctx context.Context, spec provider.BlockSpec) (provider.Job, error) {
	p.submits.Add(1)
	return p.Provider.Submit(ctx, spec)
}

// TestScalingOutAndIn: a growing backlog adds blocks up to Max and never
// more; once the work is done and the clock passes the idle timeout, the
// idle blocks are drained and given back down to Min; no task is lost.
func TestScalingOutAndIn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	prov := &countingProvider{Provider: &provider.Local{}}
	ex, err := Start(ctx, Options{
		NP: 3, Launcher: envLauncher{"serve"}, Provider: prov, Logger: quietLogger(),
		Scaling: Scaling{Init: 1, Min: 1, Max: 3, IdleTimeout: time.Minute,
			Interval: 20 * time.Millisecond, PollInterval: 50 * time.Millisecond, Now: clock.Now},
	})
	require.NoError(t, err)
	defer func() { assert.NoError(t, ex.Close()) }()
	require.Eventually(t, func() bool { return len(ex.Blocks()) == 1 }, time.Minute, 10*time.Millisecond, "the initial block connects")

	var most atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := int64(len(ex.Blocks())); n > most.Load() {
				most.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	futs := make([]*Future[int64], 120)
	for i := range futs {
		futs[i] = nap.Call(ex, V(50*time.Millisecond))
	}
	require.Eventually(t, func() bool { return len(ex.Blocks()) == 3 }, time.Minute, 10*time.Millisecond, "the backlog adds blocks up to Max")
	for i, f := range futs {
		_, err := f.Get(ctx)
		require.NoError(t, err, "task %d", i)
	}
	close(stop)
	<-sampled
	assert.Equal(t, int64(3), most.Load(), "never more blocks than Max")
	assert.Equal(t, int64(3), prov.submits.Load(), "one job per block")
	assert.Len(t, ex.Blocks(), 3, "idle blocks stay until the idle timeout")

	clock.Advance(2 * time.Minute)
	require.Eventually(t, func() bool { return len(ex.Blocks()) == 1 }, time.Minute, 10*time.Millisecond, "idle blocks drain down to Min")
	// The block that stays still runs tasks.
	v, err := inc.Call(ex, V(int64(41))).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(42), v)
	assert.NoError(t, ex.Err())
	st := ex.Stats()
	assert.Zero(t, st.Requeued, "draining lost nothing")
	assert.Zero(t, st.Failed)
}

// TestScalingGivesUpOnBlocksThatCannotStart: a block whose job fails before
// it connects is asked for again a bounded number of times; then the
// executor reports the failure in the job's own words, and the tasks fail
// with it instead of waiting for ever.
func TestScalingGivesUpOnBlocksThatCannotStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prov := &countingProvider{Provider: &provider.Local{}}
	ex, err := Start(ctx, Options{
		NP: 3, Launcher: envLauncher{"exit"}, Provider: prov, Logger: quietLogger(), BlockRestarts: 2,
		Scaling: Scaling{Max: 2, Interval: 20 * time.Millisecond, PollInterval: 50 * time.Millisecond},
	})
	require.NoError(t, err, "with a provider Start does not wait for a block")
	defer func() { assert.NoError(t, ex.Close()) }()

	_, err = inc.Call(ex, V(int64(1))).Get(ctx)
	require.Error(t, err)
	var te *TaskError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, serialize.ErrLost, te.Kind)
	assert.Contains(t, err.Error(), "cannot start, on purpose", "the job's own error output")
	require.Error(t, ex.Err())
	assert.Contains(t, ex.Err().Error(), "more than BlockRestarts (2)")
	assert.Contains(t, ex.Err().Error(), "local job local-")
	assert.Equal(t, int64(3), prov.submits.Load(), "the first block and 2 restarts, then no more")
	time.Sleep(200 * time.Millisecond) // ten strategy periods: still no more
	assert.Equal(t, int64(3), prov.submits.Load())
}
