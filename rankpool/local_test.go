package rankpool

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/rankfarm/rankfarm/serialize"
)

// echo is a Runner that answers at once.
func echo(_ context.Context, t serialize.Task) serialize.Result {
	return serialize.Result{ID: t.ID, Value: t.Args}
}

// stallTimeout is how long the test front end waits for any message from a
// tree with work in flight before it reports a stall.
const stallTimeout = 10 * time.Second

// frontEnd plays the front end of a Local tree: it sends n tasks, never
// more than the credit the tree granted, at most batch per message, and
// checks that every result comes back exactly once and the credit balances.
// Then it asks the tree to shut down and waits for the acknowledgement.
type frontEnd struct {
	n       int
	batch   int
	workers map[int32]bool // ranks allowed to run tasks; nil: any
}

func (f frontEnd) drive(ctx context.Context, l *Local) error {
	seen := make([]uint8, f.n)
	var (
		credit, sent, got, maxCredit int
		next                         uint64
	)
	stall := time.NewTimer(stallTimeout)
	defer stall.Stop()
	for got < f.n {
		stall.Reset(stallTimeout)
		for credit > 0 && sent < f.n {
			k := min(credit, f.n-sent, f.batch)
			ts := make([]serialize.Task, k)
			for i := range ts {
				ts[i] = serialize.Task{ID: next, App: "echo"}
				next++
			}
			l.UpSend(&serialize.TaskBatch{Tasks: ts})
			credit -= k
			sent += k
		}
		var e Envelope
		select {
		case e = <-l.UpInbox():
		case <-ctx.Done():
			return fmt.Errorf("front end: %d of %d results: %w", got, f.n, ctx.Err())
		case <-stall.C:
			return fmt.Errorf("front end: stalled at %d of %d results, %d sent, credit %d", got, f.n, sent, credit)
		}
		if e.From != 0 || e.To != Upstream {
			return fmt.Errorf("front end: envelope %d→%d", e.From, e.To)
		}
		switch m := e.Msg.(type) {
		case *serialize.Credit:
			credit += int(m.N)
		case *serialize.ResultBatch:
			credit += int(m.Credit)
			for _, r := range m.Results {
				if r.ID >= uint64(f.n) {
					return fmt.Errorf("front end: result for unknown task %d", r.ID)
				}
				if seen[r.ID]++; seen[r.ID] > 1 {
					return fmt.Errorf("front end: result %d came twice", r.ID)
				}
				if f.workers != nil && !f.workers[r.Rank] {
					return fmt.Errorf("front end: task %d ran on rank %d, not a worker", r.ID, r.Rank)
				}
				got++
			}
		default:
			return fmt.Errorf("front end: unexpected %T", e.Msg)
		}
		maxCredit = max(maxCredit, credit+sent-got)
	}
	// Every result is in: the tree has returned all the credit it used.
	if credit != maxCredit {
		return fmt.Errorf("front end: credit %d at the end, %d at most before", credit, maxCredit)
	}
	l.UpSend(&serialize.Shutdown{Reason: "done"})
	for {
		select {
		case e := <-l.UpInbox():
			switch e.Msg.(type) {
			case *serialize.Shutdown:
				return nil
			case *serialize.Credit, *serialize.ResultBatch:
			default:
				return fmt.Errorf("front end: unexpected %T while shutting down", e.Msg)
			}
		case <-ctx.Done():
			return fmt.Errorf("front end: no shutdown acknowledgement: %w", ctx.Err())
		}
	}
}

// runTree runs a Local tree of size ranks under f and returns RunLocal's and
// the front end's errors.
func runTree(ctx context.Context, size int, nodeOf []int, cfg Config, run Runner, f frontEnd) (runErr, feErr error) {
	l := NewLocal(size)
	defer l.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- RunLocal(ctx, l, nodeOf, 0, run, cfg) }()
	if feErr = f.drive(ctx, l); feErr != nil {
		cancel() // the tree will not be shut down in order
	}
	return <-done, feErr
}

func TestRunLocalEndToEnd(t *testing.T) {
	tests := []struct {
		name   string
		size   int
		nodeOf []int
		cfg    Config
	}{
		{name: "1 rank", size: 1},
		{name: "2 ranks", size: 2},
		{name: "8 ranks on one node", size: 8},
		{name: "12 ranks on 3 uneven nodes", size: 12, nodeOf: []int{0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2}},
		{name: "12 ranks, nodes interleaved", size: 12, nodeOf: []int{4, 8, 8, 2, 8, 4, 2, 8, 8, 2, 9, 8}},
		{name: "slots and small batches", size: 6, nodeOf: []int{0, 1, 1, 1, 2, 2}, cfg: Config{Slots: 3, Prefetch: 4, MaxBatch: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			workers := map[int32]bool{}
			for r := range tt.size {
				if Layout(r, tt.size, tt.nodeOf, 0).Role == RoleWorker {
					workers[int32(r)] = true
				}
			}
			runErr, feErr := runTree(ctx, tt.size, tt.nodeOf, tt.cfg, echo, frontEnd{n: 100_000, batch: 4096, workers: workers})
			require.NoError(t, feErr)
			require.NoError(t, runErr)
		})
	}
}

func TestRunLocalCancel(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := NewLocal(5)
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 64)
	slow := func(ctx context.Context, t serialize.Task) serialize.Result {
		started <- struct{}{}
		<-ctx.Done() // runs until the rank stops
		return serialize.Result{ID: t.ID, Err: serialize.ErrLost}
	}
	done := make(chan error, 1)
	go func() { done <- RunLocal(ctx, l, nil, 0, slow, Config{}) }()
	l.UpSend(&serialize.TaskBatch{Tasks: tasks(0, 4)}) // sent before any credit: kept anyway
	<-started
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

func TestRunLocalRejectsBadNodeMap(t *testing.T) {
	l := NewLocal(3)
	defer l.Close()
	require.Error(t, RunLocal(context.Background(), l, []int{0, 1}, 0, echo, Config{}))
}

func TestLocalSend(t *testing.T) {
	l := NewLocal(3)
	tr := l.Rank(1)
	require.NoError(t, tr.Send(2, &serialize.Heartbeat{Seq: 1}))
	require.Error(t, tr.Send(Upstream, &serialize.Heartbeat{}), "only rank 0 talks upstream")
	require.Error(t, tr.Send(3, &serialize.Heartbeat{}))
	e := <-l.Rank(2).Inbox()
	assert.Equal(t, Envelope{From: 1, To: 2, Msg: &serialize.Heartbeat{Seq: 1}}, e)

	require.NoError(t, l.Rank(0).Send(Upstream, &serialize.Heartbeat{Seq: 2}))
	assert.Equal(t, Envelope{From: 0, To: Upstream, Msg: &serialize.Heartbeat{Seq: 2}}, <-l.UpInbox())
	l.UpSend(&serialize.Heartbeat{Seq: 3})
	assert.Equal(t, Envelope{From: Upstream, To: 0, Msg: &serialize.Heartbeat{Seq: 3}}, <-l.Rank(0).Inbox())

	l.Close()
	l.Close()
	require.ErrorIs(t, tr.Send(2, &serialize.Heartbeat{}), ErrLocalClosed)
}

func TestLocalMailboxIsUnboundedAndOrdered(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := NewLocal(2)
	defer l.Close()
	const n = 10 * mailboxBuffer
	for i := range n { // far more than the channel holds, and nobody reads
		require.NoError(t, l.Rank(1).Send(0, &serialize.Heartbeat{Seq: uint64(i)}))
	}
	for i := range n {
		e := <-l.Rank(0).Inbox()
		require.Equal(t, uint64(i), e.Msg.(*serialize.Heartbeat).Seq)
	}
}

// fakeTransport records what a rank sends and lets a test feed its inbox.
type fakeTransport struct {
	inbox   chan Envelope
	sent    chan Envelope
	failFor serialize.Kind // Send fails for this kind
}

func newFake() *fakeTransport {
	return &fakeTransport{inbox: make(chan Envelope, 1024), sent: make(chan Envelope, 1024)}
}

func (f *fakeTransport) Send(to int, m serialize.Message) error {
	if m.Kind() == f.failFor {
		return errors.New("link down")
	}
	f.sent <- Envelope{To: to, Msg: m}
	return nil
}

func (f *fakeTransport) Inbox() <-chan Envelope { return f.inbox }

func (f *fakeTransport) next(t *testing.T) Envelope {
	t.Helper()
	select {
	case e := <-f.sent:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("nothing sent")
		return Envelope{}
	}
}

func TestRunRelayStepsEverythingWaitingBeforeReady(t *testing.T) {
	defer goleak.VerifyNone(t)
	f := newFake()
	// Everything is waiting before Run starts: one Ready must cover it all.
	f.inbox <- credit(1, 0, 2)
	f.inbox <- credit(2, 0, 2)
	f.inbox <- credit(3, 0, 2)
	f.inbox <- resultBatch(1, 0, 1, results(1))
	f.inbox <- resultBatch(2, 0, 1, results(2))
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), scheduler(1, 2, 3), f, nil, Config{}) }()

	e := f.next(t)
	rb, ok := e.Msg.(*serialize.ResultBatch)
	require.True(t, ok, "got %T", e.Msg)
	assert.Equal(t, Upstream, e.To)
	assert.Equal(t, uint32(8), rb.Credit)
	assert.Len(t, rb.Results, 2)

	f.inbox <- shutdown(Upstream, 0)
	for range 3 {
		assert.IsType(t, &serialize.Shutdown{}, f.next(t).Msg)
	}
	for _, kid := range []int{1, 2, 3} {
		f.inbox <- shutdown(kid, 0)
	}
	assert.Equal(t, Envelope{To: Upstream, Msg: &serialize.Shutdown{Reason: "test"}}, f.next(t))
	require.NoError(t, <-done)
}

func TestRunWorkerSlots(t *testing.T) {
	defer goleak.VerifyNone(t)
	f := newFake()
	const slots = 3
	started := make(chan uint64, 16)
	release := make(chan struct{})
	run := func(ctx context.Context, t serialize.Task) serialize.Result {
		started <- t.ID
		select {
		case <-release:
		case <-ctx.Done():
		}
		return serialize.Result{ID: t.ID}
	}
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), workerAt(5, 2), f, run, Config{Slots: slots}) }()
	assert.Equal(t, Envelope{To: 2, Msg: &serialize.Credit{N: 2 * slots}}, f.next(t))

	f.inbox <- taskBatch(2, 5, tasks(0, 2*slots))
	for range slots {
		<-started
	}
	select {
	case id := <-started:
		t.Fatalf("task %d started with every slot busy", id)
	case <-time.After(50 * time.Millisecond):
	}
	release <- struct{}{}
	e := f.next(t)
	rb := e.Msg.(*serialize.ResultBatch)
	assert.Equal(t, uint32(1), rb.Credit)
	assert.Equal(t, int32(5), rb.Results[0].Rank, "Run stamps the worker's rank")
	<-started // the freed slot takes the next task

	// Shutdown with tasks running: acknowledged at once, running tasks
	// cancelled, queued ones dropped.
	f.inbox <- shutdown(2, 5)
	for {
		e := f.next(t)
		if _, ok := e.Msg.(*serialize.Shutdown); ok {
			break
		}
	}
	require.NoError(t, <-done)
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name  string
		place Place
		run   Runner
		setup func(f *fakeTransport, cancel context.CancelFunc)
		want  error
	}{
		{
			name:  "inbox closed",
			place: scheduler(1),
			setup: func(f *fakeTransport, _ context.CancelFunc) { close(f.inbox) },
			want:  ErrTransportClosed,
		},
		{
			name:  "worker inbox closed",
			place: workerAt(1, 0),
			run:   echo,
			setup: func(f *fakeTransport, _ context.CancelFunc) { close(f.inbox) },
			want:  ErrTransportClosed,
		},
		{
			name:  "send fails",
			place: workerAt(1, 0),
			run:   echo,
			setup: func(f *fakeTransport, _ context.CancelFunc) { f.failFor = serialize.KindCredit },
			want:  errors.New("link down"),
		},
		{
			name:  "context ends",
			place: scheduler(1),
			setup: func(_ *fakeTransport, cancel context.CancelFunc) { cancel() },
			want:  context.Canceled,
		},
		{
			name:  "worker without a runner",
			place: workerAt(1, 0),
			want:  errors.New("needs a Runner"),
		},
		{
			name:  "unknown role",
			place: Place{Role: Role(7)},
			want:  errors.New("unknown role"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			f := newFake()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.setup != nil {
				tt.setup(f, cancel)
			}
			err := Run(ctx, tt.place, f, tt.run, Config{})
			require.Error(t, err)
			if errors.Is(tt.want, context.Canceled) || errors.Is(tt.want, ErrTransportClosed) {
				require.ErrorIs(t, err, tt.want)
			} else {
				require.ErrorContains(t, err, tt.want.Error())
			}
		})
	}
}
