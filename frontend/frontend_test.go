package frontend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/internal/registry"
	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if serveTestBlockProcess() {
		return
	}
	goleak.VerifyTestMain(m)
}

// Apps of the tests, declared at package level as a user would.
var (
	add    = NewApp2("ft.add", func(_ context.Context, a, b int64) (int64, error) { return a + b, nil })
	inc    = NewApp1("ft.inc", func(_ context.Context, a int64) (int64, error) { return a + 1, nil })
	sum    = NewApp1("ft.sum", func(_ context.Context, xs []int64) (int64, error) { return sumOf(xs), nil })
	concat = NewApp3("ft.concat", func(_ context.Context, a string, b int, c []string) (string, error) {
		return fmt.Sprintf("%s%d%s", a, b, strings.Join(c, "")), nil
	})
	point = NewApp1("ft.point", func(_ context.Context, p Point) (Point, error) { return Point{X: p.Y, Y: p.X, Tag: p.Tag + "!"}, nil })
	boom  = NewApp1("ft.boom", func(_ context.Context, msg string) (int64, error) { panic("boom: " + msg) })
	fail  = NewApp1("ft.fail", func(_ context.Context, msg string) (int64, error) {
		return 0, errors.New("failed on purpose: " + msg)
	})
	nap = NewApp1("ft.nap", func(_ context.Context, d time.Duration) (int64, error) {
		time.Sleep(d) // ignores its context: the walltime must hold anyway
		return 1, nil
	})
	wait = NewApp1("ft.wait", func(ctx context.Context, d time.Duration) (int64, error) {
		select {
		case <-time.After(d):
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	counted      atomic.Int64
	countedApp   = NewApp1("ft.counted", func(_ context.Context, x int64) (int64, error) { counted.Add(1); return x, nil })
	attemptsSeen sync.Map // key → []int
	flaky        = NewApp2("ft.flaky", func(ctx context.Context, key string, okOn int) (int, error) {
		a := Attempt(ctx)
		v, _ := attemptsSeen.LoadOrStore(key, &[]int{})
		*v.(*[]int) = append(*v.(*[]int), a)
		if a < okOn {
			return a, fmt.Errorf("attempt %d fails", a)
		}
		return a, nil
	})
	missing = Declare1[int64, int64]("ft.no-such-app")
	wrongly = Declare1[string, int64]("ft.inc") // the real ft.inc takes an int64
)

// Point is a struct argument and result.
type Point struct {
	X, Y int
	Tag  string
}

func sumOf(xs []int64) int64 {
	var s int64
	for _, x := range xs {
		s += x
	}
	return s
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestTypedFutures(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	ctx := ctxFor(t, 30*time.Second)

	f := add.Call(ex, V(int64(40)), V(int64(2)))
	<-f.Done()
	v, err := f.Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(42), v)
	v, err = f.Get(ctx) // the same again
	require.NoError(t, err)
	assert.Equal(t, int64(42), v)

	p, err := point.Call(ex, V(Point{X: 1, Y: 2, Tag: "p"})).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, Point{X: 2, Y: 1, Tag: "p!"}, p)

	a := EchoApp[string]().Call(ex, V("a"))
	s, err := concat.Call(ex, a, V(7), V([]string{"x", "y"})).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, "a7xy", s)

	g := wait.Call(ex, V(time.Hour))
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = g.Get(short)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Get gives up with its context")
	select {
	case <-g.Done():
		t.Fatal("done before it ran")
	default:
	}
	assert.NotEqual(t, f.ID(), a.ID())
}

func TestBuiltinClients(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	ctx := ctxFor(t, 30*time.Second)

	_, err := Noop.Call(ex, V(struct{}{})).Get(ctx)
	require.NoError(t, err)
	_, err = Sleep.Call(ex, V(0.01)).Get(ctx)
	require.NoError(t, err)
	_, err = Sleep.Call(ex, V(5.0), Walltime(20*time.Millisecond)).Get(ctx)
	assert.ErrorIs(t, err, ErrWalltime)

	out, err := Shell.Call(ex, V("echo hi")).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, ShellResult{Stdout: "hi\n"}, out)
	_, err = Shell.Call(ex, V("echo sad >&2; exit 4")).Get(ctx)
	assert.ErrorIs(t, err, ErrApp)
	assert.ErrorContains(t, err, "exit status 4: sad")

	type pair struct {
		A string
		B []float64
	}
	pv, err := EchoApp[pair]().Call(ex, V(pair{"a", []float64{1.5}})).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, pair{"a", []float64{1.5}}, pv)
}

func TestHundredThousandEcho(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 1024, Options{}, nil)
	ctx := ctxFor(t, 2*time.Minute)
	const n = 100000
	echo := EchoApp[int64]()
	futs := make([]*Future[int64], n)
	for i := range futs {
		futs[i] = echo.Call(ex, V(int64(i)))
	}
	ids := make(map[uint64]bool, n)
	for i, f := range futs {
		v, err := f.Get(ctx)
		require.NoError(t, err, "task %d", i)
		require.Equal(t, int64(i), v, "task %d", i)
		require.False(t, ids[f.ID()])
		ids[f.ID()] = true
	}
	st := ex.Stats()
	assert.Equal(t, Stats{Submitted: n, Done: n}, st)
}

func TestDiamond(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	top := inc.Call(ex, V(int64(1)))         // 2
	left := inc.Call(ex, top)                // 3
	right := add.Call(ex, top, V(int64(10))) // 12
	bottom := add.Call(ex, left, right)      // 15
	twice := add.Call(ex, top, top)          // 4: the same future twice
	v, err := bottom.Get(ctxFor(t, 30*time.Second))
	require.NoError(t, err)
	assert.Equal(t, int64(15), v)
	v, err = twice.Get(ctxFor(t, 30*time.Second))
	require.NoError(t, err)
	assert.Equal(t, int64(4), v)
}

func TestChainOfThousand(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	f := inc.Call(ex, V(int64(0)))
	for range 999 {
		f = inc.Call(ex, f)
	}
	v, err := f.Get(ctxFor(t, time.Minute))
	require.NoError(t, err)
	assert.Equal(t, int64(1000), v)
}

func TestFanInOfTenThousand(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 64, Options{}, nil)
	const n = 10000
	futs := make([]*Future[int64], n)
	for i := range futs {
		futs[i] = inc.Call(ex, V(int64(i)))
	}
	total := sum.Call(ex, All(futs))
	v, err := total.Get(ctxFor(t, time.Minute))
	require.NoError(t, err)
	assert.Equal(t, int64(n*(n+1)/2), v)
	// Fan-ins of resolved futures, of none, and of a small set.
	v, err = sum.Call(ex, All(futs[:3])).Get(ctxFor(t, time.Minute))
	require.NoError(t, err)
	assert.Equal(t, int64(6), v)
	v, err = sum.Call(ex, All([]*Future[int64]{})).Get(ctxFor(t, time.Minute))
	require.NoError(t, err)
	assert.Equal(t, int64(0), v)
}

func TestTaskErrors(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	ctx := ctxFor(t, 30*time.Second)
	tests := []struct {
		name     string
		fut      func() *Future[int64]
		sentinel error
		kind     serialize.ErrKind
		msg      []string
		stack    string
		maxTime  time.Duration
	}{
		{name: "panic", fut: func() *Future[int64] { return boom.Call(ex, V("kaboom")) }, sentinel: ErrPanic, kind: serialize.ErrPanic,
			msg: []string{"panicked", "boom: kaboom", "ft.boom"}, stack: "frontend"},
		{name: "app error", fut: func() *Future[int64] { return fail.Call(ex, V("x")) }, sentinel: ErrApp, kind: serialize.ErrApp,
			msg: []string{"failed on purpose: x", "ft.fail"}},
		{name: "walltime", fut: func() *Future[int64] { return nap.Call(ex, V(400*time.Millisecond), Walltime(30*time.Millisecond)) },
			sentinel: ErrWalltime, kind: serialize.ErrWalltime, msg: []string{"walltime of 30ms exceeded"}, maxTime: 300 * time.Millisecond},
		{name: "unknown app", fut: func() *Future[int64] { return missing.Call(ex, V(int64(1))) }, sentinel: ErrUnknownApp, kind: serialize.ErrUnknownApp,
			msg: []string{`no app named "ft.no-such-app"`, "registered:"}},
		{name: "bad args", fut: func() *Future[int64] { return wrongly.Call(ex, V("one")) }, sentinel: ErrArgs, kind: serialize.ErrArgs,
			msg: []string{"bad arguments", "argument 1"}},
		{name: "nil dependency", fut: func() *Future[int64] { return wrongly.Call(ex, V("x"), After(nil)) }, sentinel: ErrArgs, kind: serialize.ErrArgs,
			msg: []string{"nil dependency"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := tt.fut().Get(ctx)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.sentinel)
			var te *TaskError
			require.ErrorAs(t, err, &te)
			assert.Equal(t, tt.kind, te.Kind)
			for _, m := range tt.msg {
				assert.Contains(t, err.Error(), m)
			}
			if tt.stack != "" {
				assert.Contains(t, te.Stack, tt.stack)
				assert.NotContains(t, err.Error(), "goroutine", "the stack is not in the message")
			}
			if tt.maxTime > 0 {
				assert.Less(t, time.Since(start), tt.maxTime)
			}
		})
	}
	// The workers survived all that.
	v, err := inc.Call(ex, V(int64(1))).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
	time.Sleep(400 * time.Millisecond) // the abandoned nap ends
}

func TestDependencyFailure(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	ctx := ctxFor(t, 30*time.Second)
	counted.Store(0)

	bad := fail.Call(ex, V("dep"))
	dependant := countedApp.Call(ex, bad)
	further := countedApp.Call(ex, dependant) // transitively
	viaAll := sum.Call(ex, All([]*Future[int64]{inc.Call(ex, V(int64(1))), bad}))
	viaAfter := countedApp.Call(ex, V(int64(5)), After(bad))

	_, err := dependant.Get(ctx)
	var de *DependencyError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, bad.ID(), de.DepID, "the error names the failed task")
	assert.Equal(t, "ft.fail", de.DepApp)
	assert.Equal(t, dependant.ID(), de.ID)
	assert.ErrorIs(t, err, ErrApp, "the cause shows through")
	assert.Contains(t, err.Error(), "failed on purpose: dep")

	_, err = further.Get(ctx)
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dependant.ID(), de.DepID)
	var te *TaskError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, bad.ID(), te.ID, "the first failure at the bottom of the chain")

	for _, f := range []*Future[int64]{viaAll, viaAfter} {
		_, err = f.Get(ctx)
		require.ErrorAs(t, err, &de)
		assert.Equal(t, bad.ID(), de.DepID)
	}

	// A dependency that has failed already fails its dependant at once.
	late := countedApp.Call(ex, bad)
	select {
	case <-late.Done():
	default:
		t.Fatal("a dependant of a failed task should fail at submission")
	}
	_, err = late.Get(ctx)
	require.ErrorAs(t, err, &de)

	// Dependants with a successful After run, without the value.
	ok := inc.Call(ex, V(int64(1)))
	v, err := countedApp.Call(ex, V(int64(9)), After(ok)).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(9), v)
	assert.Equal(t, int64(1), counted.Load(), "no dependant of the failed task ran")
}

func TestRetries(t *testing.T) {
	attemptsSeen.Clear()
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	ctx := ctxFor(t, 30*time.Second)
	seen := func(key string) []int {
		v, _ := attemptsSeen.Load(key)
		return *v.(*[]int)
	}

	v, err := flaky.Call(ex, V("a"), V(2), Retries(2)).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, v, "the app saw attempt 2")
	assert.Equal(t, []int{0, 1, 2}, seen("a"))

	_, err = flaky.Call(ex, V("b"), V(2), Retries(1)).Get(ctx)
	var te *TaskError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, 2, te.Attempts)
	assert.Contains(t, te.Msg, "attempt 1 fails")
	assert.Equal(t, []int{0, 1}, seen("b"))

	before := ex.Stats().Retried
	_, err = missing.Call(ex, V(int64(1)), Retries(5)).Get(ctx)
	require.ErrorIs(t, err, ErrUnknownApp)
	_, err = wrongly.Call(ex, V("x"), Retries(5)).Get(ctx)
	require.ErrorIs(t, err, ErrArgs)
	assert.Equal(t, before, ex.Stats().Retried, "unknown apps and bad arguments are never retried")
	assert.Equal(t, int64(3), before)
}

func TestExecutorDefaults(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 8, Options{Retries: 3, Walltime: 30 * time.Millisecond}, nil)
	ctx := ctxFor(t, 30*time.Second)
	v, err := flaky.Call(ex, V("c"), V(3)).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, v)
	_, err = flaky.Call(ex, V("d"), V(3), Retries(0)).Get(ctx)
	assert.ErrorIs(t, err, ErrApp, "the call's budget wins")

	_, err = wait.Call(ex, V(time.Second)).Get(ctx)
	assert.ErrorIs(t, err, ErrWalltime)
	v2, err := wait.Call(ex, V(50*time.Millisecond), Walltime(0)).Get(ctx)
	require.NoError(t, err, "Walltime(0) lifts the default")
	assert.Equal(t, int64(1), v2)
}

func TestCreditNeverExceeded(t *testing.T) {
	for _, capacity := range []int{1, 3, 100} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			ex, b := newTestExecutor(t, 2, capacity, Options{}, nil)
			ctx := ctxFor(t, time.Minute)
			futs := make([]*Future[int64], 3000)
			for i := range futs {
				futs[i] = inc.Call(ex, V(int64(i)))
			}
			for i, f := range futs {
				v, err := f.Get(ctx)
				require.NoError(t, err)
				require.Equal(t, int64(i+1), v)
			}
			assert.Zero(t, b.violations.Load(), "tasks beyond the credit")
			assert.LessOrEqual(t, b.maxOutstanding.Load(), int64(capacity))
			assert.Equal(t, int64(len(futs)), b.received.Load())
		})
	}
}

func TestDuplicateResults(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 16, Options{}, func(b *testBlock) { b.duplicate = true })
	ctx := ctxFor(t, 30*time.Second)
	futs := make([]*Future[int64], 500)
	for i := range futs {
		futs[i] = inc.Call(ex, V(int64(i)))
	}
	for i, f := range futs {
		v, err := f.Get(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(i+1), v)
	}
	st := ex.Stats()
	assert.Equal(t, int64(500), st.Done)
	assert.Zero(t, st.Failed)
}

func TestCloseWithUnresolvedFutures(t *testing.T) {
	b, conn := startTestBlock(t, 2, 4, nil)
	ex, err := Start(context.Background(), Options{Conn: conn})
	require.NoError(t, err)
	ctx := ctxFor(t, 30*time.Second)
	running := wait.Call(ex, V(time.Hour))
	queued := make([]*Future[int64], 10)
	for i := range queued {
		queued[i] = wait.Call(ex, V(time.Hour))
	}
	waiting := inc.Call(ex, running)
	require.Eventually(t, func() bool { return b.received.Load() == 4 }, 5*time.Second, time.Millisecond)

	start := time.Now()
	require.NoError(t, ex.Close())
	assert.Less(t, time.Since(start), 5*time.Second)
	require.NoError(t, ex.Close(), "Close twice")
	for _, f := range append(queued, running, waiting) {
		select {
		case <-f.Done():
		default:
			t.Fatal("a future is unresolved after Close")
		}
		_, err := f.Get(ctx)
		assert.Error(t, err)
	}
	_, err = queued[9].Get(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	var te *TaskError
	require.ErrorAs(t, err, &te)

	_, err = inc.Call(ex, V(int64(1))).Get(ctx)
	assert.ErrorIs(t, err, ErrClosed, "a call after Close fails at once")
	st := ex.Stats()
	assert.Zero(t, st.InFlight+st.Queued+st.Waiting)
}

func TestLinkLost(t *testing.T) {
	_, conn := startTestBlock(t, 2, 8, func(b *testBlock) { b.dropAfter = 3 })
	ex, err := Start(context.Background(), Options{Conn: conn, Logger: quietLogger()})
	require.NoError(t, err)
	defer func() { require.NoError(t, ex.Close()) }()
	ctx := ctxFor(t, 30*time.Second)
	futs := make([]*Future[int64], 20)
	for i := range futs {
		futs[i] = wait.Call(ex, V(time.Hour))
	}
	dependant := inc.Call(ex, futs[0])
	for _, f := range futs {
		_, err := f.Get(ctx)
		require.ErrorIs(t, err, ErrLost)
	}
	_, err = dependant.Get(ctx)
	var de *DependencyError
	require.ErrorAs(t, err, &de)
	assert.ErrorIs(t, err, ErrLost)
	_, err = inc.Call(ex, V(int64(1))).Get(ctx)
	assert.ErrorIs(t, err, ErrLost, "no block left")
}

func TestBlockShutsDownOnItsOwn(t *testing.T) {
	fe, be := link.Pipe()
	ex, err := Start(context.Background(), Options{Conn: fe, Logger: quietLogger()})
	require.NoError(t, err)
	defer func() { require.NoError(t, ex.Close()) }()
	require.NoError(t, be.Send(&serialize.Credit{N: 4}))
	f := inc.Call(ex, V(int64(1)))
	m, err := be.Recv(context.Background())
	require.NoError(t, err)
	require.IsType(t, &serialize.TaskBatch{}, m)
	require.NoError(t, be.Send(&serialize.Shutdown{Reason: "signal terminated"}))
	_, err = f.Get(ctxFor(t, 10*time.Second))
	assert.ErrorIs(t, err, ErrLost)
	assert.ErrorContains(t, err, "signal terminated")
	_ = be.Close()
}

func TestNilArguments(t *testing.T) {
	ex, _ := newTestExecutor(t, 1, 4, Options{}, nil)
	ctx := ctxFor(t, 10*time.Second)
	var nilFut *Future[int64]
	_, err := inc.Call(ex, nilFut).Get(ctx)
	assert.ErrorIs(t, err, ErrArgs)
	_, err = inc.Call(ex, nil).Get(ctx)
	assert.ErrorIs(t, err, ErrArgs)
	_, err = sum.Call(ex, All([]*Future[int64]{nil})).Get(ctx)
	assert.ErrorIs(t, err, ErrArgs)
	_, err = EchoApp[chan int]().Call(ex, V(make(chan int))).Get(ctx)
	assert.ErrorIs(t, err, ErrArgs, "a value msgpack cannot encode")
}

func TestForeignDependency(t *testing.T) {
	ex1, _ := newTestExecutor(t, 1, 4, Options{}, nil)
	ex2, _ := newTestExecutor(t, 1, 4, Options{}, nil)
	ctx := ctxFor(t, 10*time.Second)
	f := inc.Call(ex1, V(int64(1)))
	_, err := inc.Call(ex2, f).Get(ctx)
	assert.ErrorIs(t, err, ErrArgs)
	assert.ErrorContains(t, err, "another executor")
}

func TestDuplicateAppPanics(t *testing.T) {
	assert.PanicsWithValue(t, `frontend: registry: app "ft.inc" is registered twice`, func() {
		NewApp1("ft.inc", func(_ context.Context, a int64) (int64, error) { return a, nil })
	})
}

func TestAttemptOutsideApp(t *testing.T) {
	assert.Equal(t, 0, Attempt(context.Background()))
	assert.Equal(t, 3, Attempt(registry.WithInfo(context.Background(), registry.TaskInfo{Attempt: 3})))
}

func TestErrorMessages(t *testing.T) {
	te := &TaskError{ID: 7, App: "a", Kind: serialize.ErrPanic, Msg: "oops", Stack: "goroutine 1", Rank: 3, Attempts: 2}
	assert.Equal(t, "task 7 (a) panicked: oops [rank 3, 2 attempts]", te.Error())
	de := &DependencyError{ID: 8, App: "b", DepID: 7, DepApp: "a", Err: te}
	assert.Equal(t, "task 8 (b) not run: its dependency task 7 (a) failed: task 7 (a) panicked: oops [rank 3, 2 attempts]", de.Error())
	assert.ErrorIs(t, de, ErrPanic)
	assert.NotErrorIs(t, de, ErrApp)
}

func FuzzDecodeArgs(f *testing.F) {
	h2, ok := registry.Default.Lookup("ft.concat")
	require.True(f, ok)
	h1, ok := registry.Default.Lookup("ft.point")
	require.True(f, ok)
	f.Add([]byte{0x93, 0xa1, 'a', 0x07, 0x91, 0xa1, 'b'})
	f.Add([]byte{0x91, 0x83, 0xa1, 'X', 0x01, 0xa1, 'Y', 0x02, 0xa3, 'T', 'a', 'g', 0xa0})
	f.Add([]byte{0x93, 0xa0, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, h := range []registry.Handler{h1, h2} {
			v, err := h(context.Background(), b)
			if err != nil {
				require.ErrorIs(t, err, registry.ErrArgs)
				continue
			}
			require.NoError(t, registry.Validate(v))
		}
	})
}

func TestMapStreamsInOrder(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 64, Options{MaxPending: 1000}, nil)
	ctx := ctxFor(t, time.Minute)
	const n = 50000
	seq := func(yield func(int64) bool) {
		for i := range int64(n) {
			if !yield(i) {
				return
			}
			if p := ex.Stats(); p.Submitted-p.Done-p.Failed > 1000 {
				panic(fmt.Sprintf("%d tasks pending, bound 1000", p.Submitted-p.Done-p.Failed))
			}
		}
	}
	want := int64(0)
	for v, err := range inc.Map(ctx, ex, seq) {
		require.NoError(t, err)
		want++
		require.Equal(t, want, v, "results come in order")
	}
	assert.Equal(t, int64(n), want)

	// Errors are yielded in place and the stream goes on.
	var errs, oks int
	for _, err := range fail.Map(ctx, ex, func(yield func(string) bool) {
		for range 10 {
			if !yield("m") {
				return
			}
		}
	}) {
		if err != nil {
			errs++
			assert.ErrorIs(t, err, ErrApp)
		} else {
			oks++
		}
	}
	assert.Equal(t, 10, errs)
	assert.Zero(t, oks)

	// Breaking out early stops the stream.
	count := 0
	for range inc.Map(ctx, ex, seq) {
		if count++; count == 5 {
			break
		}
	}
	assert.Equal(t, 5, count)

	// A cancelled context ends the stream with its error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var last error
	for _, err := range inc.Map(cctx, ex, seq) {
		last = err
	}
	assert.ErrorIs(t, last, context.Canceled)
}

func TestMaxPendingBlocksAndFailsFast(t *testing.T) {
	// A block that grants no credit: every task stays pending.
	ex, _ := newTestExecutor(t, 1, 0, Options{MaxPending: 10}, nil)
	for range 10 {
		inc.Call(ex, V(int64(1)))
	}
	blocked := make(chan *Future[int64])
	go func() { blocked <- inc.Call(ex, V(int64(2))) }()
	select {
	case <-blocked:
		t.Fatal("a Call past MaxPending returned instead of waiting")
	case <-time.After(100 * time.Millisecond):
	}
	require.NoError(t, ex.Close())
	f := <-blocked
	_, err := f.Get(ctxFor(t, time.Minute))
	assert.ErrorIs(t, err, ErrClosed, "Close releases a waiting Call")

	fast, _ := newTestExecutor(t, 1, 0, Options{MaxPending: 3, FailFast: true}, nil)
	for range 3 {
		inc.Call(fast, V(int64(1)))
	}
	_, err = inc.Call(fast, V(int64(1))).Get(ctxFor(t, time.Minute))
	assert.ErrorIs(t, err, ErrFull)
	assert.Contains(t, err.Error(), "MaxPending")
}

func TestOversizedArguments(t *testing.T) {
	ex, _ := newTestExecutor(t, 1, 8, Options{}, nil)
	ctx := ctxFor(t, time.Minute)
	big := make([]byte, registry.MaxValue+1)
	_, err := EchoApp[[]byte]().Call(ex, V(big)).Get(ctx)
	require.ErrorIs(t, err, ErrArgs)
	assert.Contains(t, err.Error(), "pass big inputs as files")
	v, err := inc.Call(ex, V(int64(1))).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
}
