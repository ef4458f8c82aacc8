package frontend

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/internal/registry"
	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/require"
)

// testBlock serves the far end of a link.Pipe the way a block does: it
// grants credit, runs each task with registry.Default.Run on a pool of
// workers, answers with ResultBatches that return the credit, and
// acknowledges Shutdown. It checks that the front end never sends more
// tasks than it was granted.
type testBlock struct {
	conn     link.Conn
	capacity int
	workers  int

	outstanding    atomic.Int64 // received and not yet answered
	maxOutstanding atomic.Int64
	violations     atomic.Int64
	received       atomic.Int64
	batches        atomic.Int64

	// duplicate makes the block answer every task twice, plus once for an
	// id it never got.
	duplicate bool
	// dropAfter makes the block close the link after receiving that many
	// tasks (0: never).
	dropAfter int64

	work    chan serialize.Task
	results chan serialize.Result
	done    chan struct{}
}

// startTestBlock starts a test block of workers goroutines with the given
// capacity (the credit it grants) and returns the front end's end of the
// link. It stops when the front end shuts it down or closes the link.
func startTestBlock(t testing.TB, workers, capacity int, tweak func(*testBlock)) (*testBlock, link.Conn) {
	t.Helper()
	fe, be := link.Pipe()
	b := newTestBlock(be, workers, capacity)
	if tweak != nil {
		tweak(b)
	}
	go b.serve()
	t.Cleanup(func() { <-b.done })
	return b, fe
}

func newTestBlock(conn link.Conn, workers, capacity int) *testBlock {
	return &testBlock{
		conn:     conn,
		capacity: capacity,
		workers:  workers,
		work:     make(chan serialize.Task, capacity+maxBatch),
		results:  make(chan serialize.Result, capacity+maxBatch),
		done:     make(chan struct{}),
	}
}

func (b *testBlock) serve() {
	defer close(b.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for rank := 1; rank <= b.workers; rank++ {
		wg.Go(func() {
			for t := range b.work {
				b.results <- registry.Default.Run(ctx, t, rank)
			}
		})
	}
	senderDone := make(chan struct{})
	go b.sendResults(senderDone)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			close(b.work)
			wg.Wait()
			close(b.results)
			<-senderDone
		})
	}
	defer stop()
	if err := b.conn.Send(&serialize.Credit{N: uint32(b.capacity)}); err != nil {
		return
	}
	for {
		m, err := b.conn.Recv(ctx)
		if err != nil {
			cancel()
			return
		}
		switch m := m.(type) {
		case *serialize.TaskBatch:
			b.batches.Add(1)
			n := b.outstanding.Add(int64(len(m.Tasks)))
			if n > int64(b.capacity) {
				b.violations.Add(1)
			}
			for {
				old := b.maxOutstanding.Load()
				if n <= old || b.maxOutstanding.CompareAndSwap(old, n) {
					break
				}
			}
			if got := b.received.Add(int64(len(m.Tasks))); b.dropAfter > 0 && got >= b.dropAfter {
				// A lost link: nothing more reaches the front end, not even
				// the results of the tasks the stop cancels.
				_ = b.conn.Close()
				stop()
				return
			}
			for _, t := range m.Tasks {
				b.work <- t
			}
		case *serialize.Shutdown:
			stop()
			_ = b.conn.Send(&serialize.Shutdown{Reason: "stopped"})
			return
		}
	}
}

// sendResults batches results: it blocks for one, then takes what else is
// ready, up to a batch.
func (b *testBlock) sendResults(done chan struct{}) {
	defer close(done)
	for r := range b.results {
		batch := []serialize.Result{r}
	more:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-b.results:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		b.outstanding.Add(-int64(len(batch)))
		if b.duplicate {
			dup := append([]serialize.Result(nil), batch...)
			dup = append(dup, serialize.Result{ID: 1 << 60, Value: []byte{0xc0}})
			_ = b.conn.Send(&serialize.ResultBatch{Results: dup})
		}
		_ = b.conn.Send(&serialize.ResultBatch{Credit: uint32(len(batch)), Results: batch})
	}
}

// newTestExecutor starts an executor on a fresh test block.
func newTestExecutor(t testing.TB, workers, capacity int, opt Options, tweak func(*testBlock)) (*Executor, *testBlock) {
	t.Helper()
	b, conn := startTestBlock(t, workers, capacity, tweak)
	opt.Conn = conn
	if opt.Logger == nil {
		opt.Logger = quietLogger()
	}
	ex, err := Start(context.Background(), opt)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ex.Close()) })
	return ex, b
}
