package qlink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/rankfarm/rankfarm/serialize"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(envHelperBlock); dir != "" {
		os.Exit(helperBlockMain(dir))
	}
	goleak.VerifyTestMain(m)
}

// logBuf collects log lines for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger(t testing.TB) (*slog.Logger, *logBuf) {
	b := &logBuf{}
	var w io.Writer = b
	if testing.Verbose() {
		w = io.MultiWriter(b, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// fastOptions make a Front whose heartbeats and polls suit tests.
func fastOptions(log *slog.Logger) FrontOptions {
	return FrontOptions{
		Heartbeat:    20 * time.Millisecond,
		BlockTimeout: 5 * time.Second,
		MinPoll:      50 * time.Microsecond,
		MaxPoll:      5 * time.Millisecond,
		Ahead:        -1, // the tests count credit exactly
		Logger:       log,
	}
}

// openFront opens a queue in a fresh directory, closed at the test's end.
func openFront(t testing.TB, mod func(*FrontOptions)) (*Front, *logBuf) {
	t.Helper()
	log, buf := newLogger(t)
	opt := fastOptions(log)
	if mod != nil {
		mod(&opt)
	}
	f, err := Open(testCtx(t, 10*time.Second), filepath.Join(t.TempDir(), "queue"), opt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f, buf
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// joinBlock joins the queue as a block, closed at the test's end.
func joinBlock(t testing.TB, dir, name string) *Block {
	t.Helper()
	log, _ := newLogger(t)
	b, err := Join(testCtx(t, 10*time.Second), dir, BlockOptions{
		Hello:       serialize.Hello{Block: name, Ranks: 2, Workers: 1, Host: "test", PID: int32(os.Getpid())},
		PeerTimeout: 5 * time.Second,
		Logger:      log.With("side", name),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// echoServer serves a block link the way rank 0 does: it grants capacity
// credit, answers each task with its arguments (after delay), returns the
// credit with the results, and acknowledges Shutdown. ran records the IDs
// it ran, in order.
type echoServer struct {
	conn     interface{ Send(serialize.Message) error }
	capacity int
	delay    time.Duration

	mu  sync.Mutex
	ran []uint64
}

func (s *echoServer) serve(ctx context.Context, recv func(context.Context) (serialize.Message, error)) error {
	if err := s.conn.Send(&serialize.Credit{N: uint32(s.capacity)}); err != nil {
		return err
	}
	for {
		m, err := recv(ctx)
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *serialize.TaskBatch:
			res := make([]serialize.Result, 0, len(m.Tasks))
			for _, t := range m.Tasks {
				if s.delay > 0 {
					time.Sleep(s.delay)
				}
				res = append(res, serialize.Result{ID: t.ID, Value: t.Args, Rank: 1})
			}
			s.mu.Lock()
			for _, t := range m.Tasks {
				s.ran = append(s.ran, t.ID)
			}
			s.mu.Unlock()
			if err := s.conn.Send(&serialize.ResultBatch{Credit: uint32(len(res)), Results: res}); err != nil {
				return err
			}
		case *serialize.Shutdown:
			return s.conn.Send(&serialize.Shutdown{Reason: "stopped: " + m.Reason})
		}
	}
}

func (s *echoServer) ranIDs() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.ran...)
}

// startEcho serves block b with an echoServer on a goroutine; the returned
// channel yields serve's error.
func startEcho(t testing.TB, b *Block, capacity int, delay time.Duration) (*echoServer, <-chan error) {
	s := &echoServer{conn: b, capacity: capacity, delay: delay}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { done <- s.serve(ctx, b.Recv) }()
	return s, done
}

// driver plays the executor over a Front: it sends tasks 1..n (Args the
// task's ID as a msgpack uint64) in batches within the credit it was
// granted, and counts the results per ID, checking each value.
type driver struct {
	f       *Front
	credit  int64
	nextID  uint64 // tasks below it were sent
	results map[uint64]int
	lost    map[uint64]string
	bad     []string
}

func newDriver(f *Front) *driver {
	return &driver{f: f, results: make(map[uint64]int), lost: make(map[uint64]string)}
}

func taskArgs(id uint64) []byte { return fmt.Appendf(nil, "%d", id) }

// run sends tasks first..last and waits until each has an answer. onResult,
// if set, runs after every ResultBatch.
func (d *driver) run(ctx context.Context, first, last uint64, onResult func()) error {
	next := max(first, d.nextID)
	defer func() { d.nextID = max(d.nextID, next) }()
	answered := func() bool {
		for id := first; id <= last; id++ {
			if d.results[id] == 0 && d.lost[id] == "" {
				return false
			}
		}
		return true
	}
	for !answered() {
		for d.credit > 0 && next <= last {
			n := min(uint64(d.credit), last-next+1, 500)
			tasks := make([]serialize.Task, 0, n)
			for range n {
				tasks = append(tasks, serialize.Task{ID: next, App: "echo", Args: taskArgs(next)})
				next++
			}
			d.credit -= int64(n)
			if err := d.f.Send(&serialize.TaskBatch{Tasks: tasks}); err != nil {
				return err
			}
		}
		m, err := d.f.Recv(ctx)
		if err != nil {
			return fmt.Errorf("after %d results: %w", len(d.results), err)
		}
		switch m := m.(type) {
		case *serialize.Credit:
			d.credit += int64(m.N)
		case *serialize.ResultBatch:
			d.credit += int64(m.Credit)
			for _, r := range m.Results {
				if r.Err == serialize.ErrLost {
					d.lost[r.ID] = r.Msg
					continue
				}
				d.results[r.ID]++
				if !bytes.Equal(r.Value, taskArgs(r.ID)) {
					d.bad = append(d.bad, fmt.Sprintf("task %d: value %q", r.ID, r.Value))
				}
			}
			if onResult != nil {
				onResult()
			}
		case *serialize.Shutdown:
			return errors.New("unexpected Shutdown: " + m.Reason)
		default:
			return fmt.Errorf("unexpected %v", m.Kind())
		}
	}
	return nil
}

// requireExactlyOnce checks that tasks first..last each got one answer.
func (d *driver) requireExactlyOnce(t testing.TB, first, last uint64) {
	t.Helper()
	require.Empty(t, d.bad)
	require.Empty(t, d.lost)
	var missing, twice []uint64
	for id := first; id <= last; id++ {
		switch d.results[id] {
		case 0:
			missing = append(missing, id)
		case 1:
		default:
			twice = append(twice, id)
		}
	}
	require.Empty(t, missing, "tasks with no result")
	require.Empty(t, twice, "tasks with more than one result")
	require.Len(t, d.results, int(last-first+1))
}

// waitLog waits until one log line holds every one of want.
func waitLog(t testing.TB, l *logBuf, want ...string) {
	t.Helper()
	ok := func() bool {
		for line := range strings.Lines(l.String()) {
			all := true
			for _, w := range want {
				all = all && strings.Contains(line, w)
			}
			if all {
				return true
			}
		}
		return false
	}
	require.Eventually(t, ok, 10*time.Second, 5*time.Millisecond, "no log line with %q in:\n%s", want, l)
}
