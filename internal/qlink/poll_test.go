package qlink

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

func TestBackoff(t *testing.T) {
	t0 := time.Unix(1000, 0)
	bo := backoff{min: 100 * time.Microsecond, max: 100 * time.Millisecond}
	bo.active(t0)
	for _, tc := range []struct {
		quiet time.Duration
		want  time.Duration
	}{
		{0, 100 * time.Microsecond},
		{500 * time.Microsecond, 100 * time.Microsecond},
		{8 * time.Millisecond, time.Millisecond},
		{400 * time.Millisecond, 50 * time.Millisecond},
		{800 * time.Millisecond, 100 * time.Millisecond},
		{time.Hour, 100 * time.Millisecond},
	} {
		assert.Equal(t, tc.want, bo.next(t0.Add(tc.quiet)), "after %v without work", tc.quiet)
	}
}

// listCounter counts the listings of each queue subdirectory, through
// listHook, for the rest of the test.
type listCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func countListings(t *testing.T) *listCounter {
	c := &listCounter{n: map[string]int{}}
	hook := func(dir string) {
		c.mu.Lock()
		c.n[filepath.Base(dir)]++
		c.mu.Unlock()
	}
	listHook.Store(&hook)
	t.Cleanup(func() { listHook.Store(nil) })
	return c
}

func (c *listCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.n))
	for k, v := range c.n {
		m[k] = v
	}
	return m
}

// TestIdleQueueCostsLittle: with the default intervals, an idle block and
// an idle front end back off, after a quiet spell, to one listing per
// MaxPoll of the directory they wait on (a block without credit only to
// one per heartbeat), plus the heartbeat's. The test bounds the listings
// from above only (a loaded machine makes fewer), and logs the rates.
func TestIdleQueueCostsLittle(t *testing.T) {
	const window = 2 * time.Second
	for _, tc := range []struct {
		name   string
		credit uint32
		// perMaxPoll: the block polls tasks/ every MaxPoll (it has
		// credit), not only on its heartbeat.
		perMaxPoll bool
	}{
		{"block with credit, no tasks", 8, true},
		{"block without credit", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := countListings(t)
			f, _ := openFront(t, func(o *FrontOptions) {
				o.Heartbeat, o.MinPoll, o.MaxPoll = DefaultHeartbeat, DefaultMinPoll, DefaultMaxPoll
			})
			b := joinBlock(t, f.Dir(), "idle")
			if tc.credit > 0 {
				require.NoError(t, b.Send(&serialize.Credit{N: tc.credit}))
			}
			_, err := f.WaitBlock(testCtx(t, 10*time.Second))
			require.NoError(t, err)
			// The poll interval reaches MaxPoll after 2^backoffShift
			// MaxPolls without work.
			time.Sleep(DefaultMaxPoll<<backoffShift + 200*time.Millisecond)
			before, t0 := c.snapshot(), time.Now()
			time.Sleep(window)
			after, w := c.snapshot(), time.Since(t0)
			n := func(dir string) int { return after[dir] - before[dir] }
			rate := func(dir string) float64 { return float64(n(dir)) / w.Seconds() }
			t.Logf("idle over %v: block lists %s/ %.1f/s and %s/ %.1f/s; front end lists %s/ %.1f/s, %s/ %.1f/s, %s/ %.1f/s",
				w.Round(time.Millisecond), dirTasks, rate(dirTasks), dirCtl, rate(dirCtl),
				dirResults, rate(dirResults), dirHB, rate(dirHB), dirBad, rate(dirBad))

			beats := int(w / DefaultHeartbeat)
			polls := int(w / DefaultMaxPoll)
			wantTasks := beats + 2
			if tc.perMaxPoll {
				wantTasks += polls
			}
			assert.LessOrEqual(t, n(dirTasks), wantTasks, "block: listings of tasks/")
			assert.LessOrEqual(t, n(dirCtl), beats+2, "block: listings of ctl/")
			assert.LessOrEqual(t, n(dirResults), polls+beats+2, "front end: listings of results/")
			assert.LessOrEqual(t, n(dirHB), beats+2, "front end: listings of hb/")
			assert.LessOrEqual(t, n(dirBad), beats+2, "front end: listings of bad/")
		})
	}
}
