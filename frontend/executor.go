// Package frontend is rankfarm's user library: declare plain Go functions as
// apps, call them with plain values or with futures of other calls, and get
// typed futures back. An Executor runs the tasks on a block of MPI ranks
// that it launches (by default mpirun re-running this same program), or on
// any connected link.
//
// Inside the front end a task waits until its dependencies resolve, then
// goes to the block in batches that never exceed the block's credit; its
// result resolves its future exactly once, releases its dependants, or is
// retried while its retry budget lasts.
package frontend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/internal/registry"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/rankpool"
	"github.com/rankfarm/rankfarm/serialize"
)

// Environment variables the front end sets for the block it launches (the
// executor, mpiexec, reads them).
const (
	EnvExec     = "RANKFARM_EXEC"     // "1": the process is a rank of a block
	EnvPrefetch = "RANKFARM_PREFETCH" // tasks a worker may hold per slot
	// EnvMaxPrefetch bounds the adaptive prefetch per slot.
	EnvMaxPrefetch = "RANKFARM_MAX_PREFETCH"
	EnvSlots       = "RANKFARM_SLOTS" // tasks a worker runs at once
)

// Defaults of Options.
const (
	DefaultListenAddr   = "127.0.0.1:0"
	DefaultStartTimeout = 60 * time.Second
	// DefaultMaxPending is Options.MaxPending's default: about 1 GiB of
	// pending tasks.
	DefaultMaxPending = 4 << 20
)

// maxBatch is the most tasks in one TaskBatch, and maxBatchBytes about the
// most bytes (a bigger single task travels alone).
const (
	maxBatch      = 4096
	maxBatchBytes = rankpool.DefaultMaxBatchBytes
)

// shutdownTimeout bounds Close's wait for the block's acknowledgement, and
// stopGrace the launcher's time between SIGTERM and SIGKILL.
const (
	shutdownTimeout = 10 * time.Second
	stopGrace       = 5 * time.Second
)

// Options configure an Executor. The zero value launches a local block of
// runtime.NumCPU() ranks with mpirun.
type Options struct {
	// NP is the number of ranks in the block; 0 means runtime.NumCPU().
	NP int
	// Retries is every task's retry budget unless a call says otherwise.
	Retries int
	// Walltime bounds every run of a task unless a call says otherwise;
	// 0 means no bound.
	Walltime time.Duration
	// MaxPrefetch bounds the tasks per slot a worker holds when tasks are
	// short: its credit adapts between Prefetch and MaxPrefetch to keep
	// about 2 ms of work queued (RANKFARM_MAX_PREFETCH; 0 means 256).
	MaxPrefetch int
	// Prefetch and Slots tune the block's workers (RANKFARM_PREFETCH,
	// RANKFARM_SLOTS); 0 means the executor's defaults.
	Prefetch, Slots int
	// WorkerBinary is the program the launcher starts as the ranks, with
	// WorkerArgs; "" means this program (os.Executable), whose main must
	// call mpiexec.Main first.
	WorkerBinary string
	WorkerArgs   []string
	// Launcher builds the launch command; nil means launch.MPIRun{}.
	Launcher launch.Launcher
	// ListenAddr is where the block connects to; "" means 127.0.0.1:0.
	// Name an interface the ranks can reach when they run on other nodes.
	ListenAddr string
	// RunDir holds the run's files (the token file); "" means a fresh 0700
	// temporary directory, removed on Close.
	RunDir string
	// StartTimeout bounds how long the block may take to connect; 0 means
	// 60 s.
	StartTimeout time.Duration
	// Conn, if set, is a connected link to a block to use instead of
	// launching one (tests, the in-process local mode). The Executor owns
	// it and closes it on Close.
	Conn link.Conn
	// MaxPending bounds the tasks submitted and not yet resolved: past it a
	// Call waits until one resolves (or the executor closes), so a workflow
	// that submits without end runs in bounded memory (about 250 bytes per
	// pending task). 0 means DefaultMaxPending.
	MaxPending int
	// FailFast makes a Call past MaxPending fail at once with an error that
	// matches ErrFull instead of waiting.
	FailFast bool
	// Logger receives the executor's log lines; nil means slog.Default().
	Logger *slog.Logger
}

// Stats counts an executor's tasks.
type Stats struct {
	Submitted int64 // tasks submitted (retries not counted again)
	Done      int64 // resolved with a value
	Failed    int64 // resolved with an error
	Retried   int64 // runs repeated after a failure
	InFlight  int64 // sent to a block and not answered yet
	Queued    int64 // ready and waiting for credit
	Waiting   int64 // waiting for their dependencies
}

type taskState uint8

const (
	stateWaiting  taskState = iota // for its dependencies
	stateReady                     // in the ready queue
	stateInFlight                  // sent to a block
	stateDone                      // resolved
)

// task is the front end's record of one call.
type task struct {
	id  uint64
	app string
	ex  *Executor
	// data is the msgpack argument array once built, then, once the task
	// has settled, its msgpack result (nil on failure).
	data     []byte
	parts    []part // arguments still to splice, until args is built
	walltime int64
	pending  int32 // unresolved dependencies
	attempt  uint32
	retries  int32
	state    taskState
	// resolved is set, after the outcome is written, when the task settles:
	// a Future reads the outcome without the executor's lock once it is.
	resolved atomic.Bool

	dependants []*task
	prev, next *task // in the executor's list of unresolved tasks

	// The error, written with data before resolved is set.
	err error
	// done is made on demand (most futures are never selected on) and
	// closed when the task settles. Guarded by the executor's mu.
	done chan struct{}
}

// closedChan is the Done channel of a task that had settled before anyone
// asked for one.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// doneChan returns a channel that is closed when t settles.
func (e *Executor) doneChan(t *task) <-chan struct{} {
	if t.resolved.Load() {
		return closedChan
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if t.state == stateDone {
		return closedChan
	}
	if t.done == nil {
		t.done = make(chan struct{})
	}
	return t.done
}

// block is the front end's state of one block (one link).
type block struct {
	name     string
	conn     link.Conn
	hello    *serialize.Hello
	credit   int64
	inflight map[uint64]*task
	lost     bool

	sendMu   sync.Mutex    // orders TaskBatches before Shutdown
	acked    chan struct{} // closed on the block's Shutdown acknowledgement
	recvDone chan struct{} // closed when the receiver goroutine ends
}

// Executor runs tasks on a block and resolves their futures. It is safe for
// concurrent use.
type Executor struct {
	log      *slog.Logger
	retries  int
	walltime time.Duration

	ctx          context.Context // ends when Close gives up on the block
	cancel       context.CancelFunc
	kick         chan struct{} // wakes the dispatcher
	dispatchDone chan struct{}

	mu         sync.Mutex
	room       sync.Cond // signalled when a task settles below maxPending
	nextID     uint64
	live       int // tasks submitted and not settled
	maxPending int
	failFast   bool
	// roomWaiters counts the calls waiting in waitForRoom.
	roomWaiters int
	closing     bool
	broken      error // set when no block is left
	ready       []*task
	readyHead   int
	unresolved  task // sentinel of a ring of unresolved tasks
	stats       Stats
	scratch     []*task
	block       *block

	// What Start launched; nil with Options.Conn.
	listener  *link.Listener
	proc      *launch.Process
	runDir    string // removed on Close when Start made it
	tokenFile string

	closeOnce sync.Once
	closeErr  error
}

// Start starts an executor: it launches a block of opt.NP ranks and waits
// until the block has connected and proved that it holds the run's token,
// or connects to opt.Conn. ctx bounds only the start; the executor lives
// until Close. While a launched block runs, SIGINT or SIGTERM to this
// process closes the executor (so no rank is left behind) and then exits
// with status 130 or 143.
func Start(ctx context.Context, opt Options) (*Executor, error) {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	e := newExecutor(opt, log)
	if opt.Conn != nil {
		e.run(&block{name: "local", conn: opt.Conn})
		return e, nil
	}
	b, err := e.launch(ctx, opt)
	if err != nil {
		e.cancel()
		return nil, err
	}
	e.run(b)
	watchSignals(e)
	return e, nil
}

func newExecutor(opt Options, log *slog.Logger) *Executor {
	e := &Executor{
		log:          log,
		retries:      max(opt.Retries, 0),
		walltime:     max(opt.Walltime, 0),
		kick:         make(chan struct{}, 1),
		dispatchDone: make(chan struct{}),
	}
	e.unresolved.prev, e.unresolved.next = &e.unresolved, &e.unresolved
	e.room.L = &e.mu
	e.maxPending = opt.MaxPending
	if e.maxPending <= 0 {
		e.maxPending = DefaultMaxPending
	}
	e.failFast = opt.FailFast
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e
}

// run starts serving block b.
func (e *Executor) run(b *block) {
	b.inflight = make(map[uint64]*task)
	b.acked = make(chan struct{})
	b.recvDone = make(chan struct{})
	e.block = b
	go e.receive(b)
	go e.dispatch()
}

// launch starts the block's job and waits for it to connect.
func (e *Executor) launch(ctx context.Context, opt Options) (_ *block, err error) {
	if os.Getenv(EnvExec) == "1" {
		return nil, fmt.Errorf("frontend: this process is a rank of a block (%s=1) and must not start another; call mpiexec.Main() first thing in main", EnvExec)
	}
	np := opt.NP
	if np <= 0 {
		np = runtime.NumCPU()
	}
	exe := opt.WorkerBinary
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("frontend: find this program to re-run as the ranks: %w", err)
		}
	}
	launcher := opt.Launcher
	if launcher == nil {
		launcher = launch.MPIRun{}
	}
	addr := opt.ListenAddr
	if addr == "" {
		addr = DefaultListenAddr
	}
	startTimeout := opt.StartTimeout
	if startTimeout <= 0 {
		startTimeout = DefaultStartTimeout
	}

	// Undo what was set up if the start fails.
	defer func() {
		if err != nil {
			e.release()
		}
	}()
	if opt.RunDir == "" {
		if e.runDir, err = os.MkdirTemp("", "rankfarm-"); err != nil {
			return nil, fmt.Errorf("frontend: make the run directory: %w", err)
		}
		opt.RunDir = e.runDir
	} else if err = os.MkdirAll(opt.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("frontend: make the run directory: %w", err)
	}
	token, err := link.NewToken()
	if err != nil {
		return nil, fmt.Errorf("frontend: %w", err)
	}
	if e.tokenFile, err = link.WriteTokenFile(opt.RunDir, token); err != nil {
		return nil, fmt.Errorf("frontend: %w", err)
	}
	runID := fmt.Sprintf("%d-%x", os.Getpid(), token[:4])
	if e.listener, err = link.Listen(ctx, addr, link.ListenOptions{Token: token, Run: runID, Logger: e.log}); err != nil {
		return nil, fmt.Errorf("frontend: %w", err)
	}
	const blockName = "b0"
	env := map[string]string{
		EnvExec:           "1",
		link.EnvAddr:      e.listener.Addr(),
		link.EnvTokenFile: e.tokenFile,
		link.EnvBlock:     blockName,
	}
	if opt.MaxPrefetch > 0 {
		env[EnvMaxPrefetch] = strconv.Itoa(opt.MaxPrefetch)
	}
	if opt.Prefetch > 0 {
		env[EnvPrefetch] = strconv.Itoa(opt.Prefetch)
	}
	if opt.Slots > 0 {
		env[EnvSlots] = strconv.Itoa(opt.Slots)
	}
	cmd, err := launcher.Command(np, exe, opt.WorkerArgs, env)
	if err != nil {
		return nil, fmt.Errorf("frontend: %w", err)
	}
	tail := &tailWriter{max: 4 << 10}
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = teeWriter{os.Stderr, tail}
	}
	if e.proc, err = launch.Start(ctx, cmd); err != nil {
		return nil, fmt.Errorf("frontend: %w", err)
	}
	e.log.Debug("block launched", "block", blockName, "np", np, "pid", e.proc.Pid(), "addr", e.listener.Addr())

	actx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	go func() {
		select {
		case <-e.proc.Done():
			cancel()
		case <-actx.Done():
		}
	}()
	conn, hello, err := e.listener.Accept(actx)
	if err != nil {
		select {
		case <-e.proc.Done():
			err = fmt.Errorf("the launcher exited before the block connected: %v; its last output:\n%s", e.proc.Wait(context.Background()), tail.String())
		default:
			if ctx.Err() == nil && actx.Err() != nil {
				err = fmt.Errorf("the block did not connect within %v; the launcher's last output:\n%s", startTimeout, tail.String())
			}
		}
		return nil, fmt.Errorf("frontend: start the block: %w", err)
	}
	e.log.Debug("block connected", "block", hello.Block, "ranks", hello.Ranks, "workers", hello.Workers, "host", hello.Host)
	return &block{name: blockName, conn: conn, hello: hello}, nil
}

// Addr returns the address the executor listens on for its blocks, or ""
// when it serves a given Conn.
func (e *Executor) Addr() string {
	if e.listener == nil {
		return ""
	}
	return e.listener.Addr()
}

// submit records one call and queues it once its dependencies resolve.
func (e *Executor) submit(app string, c *call, opts []CallOption) *task {
	var o callOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	t := &task{app: app, ex: e, retries: int32(e.retries), walltime: int64(e.walltime)}
	if o.retriesSet {
		t.retries = int32(min(o.retries, math.MaxInt32))
	}
	if o.wallSet {
		t.walltime = int64(o.walltime)
	}
	for _, d := range o.after {
		if d != nil && d.depTask() != nil {
			c.deps++
		} else {
			c.fail(errors.New("a nil dependency in After"))
		}
	}
	// Copy the encoded values out of the pooled buffer.
	var args []byte
	if c.err == nil {
		args = append([]byte(nil), c.es.buf.Bytes()...)
		if c.deps > 0 {
			t.parts = make([]part, c.n)
			for i := range c.n {
				p := c.parts[i]
				if p.value {
					p.raw = args[p.start:p.end:p.end]
				}
				t.parts[i] = p
			}
		} else {
			t.data = args
		}
	}
	c.release()

	e.mu.Lock()
	full := e.waitForRoom()
	e.nextID++
	t.id = e.nextID
	e.stats.Submitted++
	e.live++
	e.link(t)
	switch {
	case full:
		e.settle(t, nil, &TaskError{ID: t.id, App: app, Kind: serialize.ErrLost, Msg: fmt.Sprintf("%d tasks are pending already (Options.MaxPending) and the executor fails fast", e.maxPending), Rank: -1, full: true})
	case e.closing:
		e.settle(t, nil, &TaskError{ID: t.id, App: app, Kind: serialize.ErrLost, Msg: "submitted after Close", Rank: -1, Attempts: 0, closed: true})
	case c.err != nil:
		e.settle(t, nil, &TaskError{ID: t.id, App: app, Kind: serialize.ErrArgs, Msg: c.err.Error(), Rank: -1})
	case len(args) > registry.MaxValue:
		e.settle(t, nil, &TaskError{ID: t.id, App: app, Kind: serialize.ErrArgs, Msg: fmt.Sprintf("the arguments are %d bytes, more than the %d a task may take: pass big inputs as files", len(args), registry.MaxValue), Rank: -1})
	default:
		e.addDeps(t, c, o.after)
	}
	kick := t.state == stateReady && e.block.credit > 0
	e.mu.Unlock()
	if kick {
		e.wake()
	}
	return t
}

// addDeps links t to its dependencies, or fails it at once if one has
// failed already, or queues it if none is pending. Called with e.mu held.
func (e *Executor) addDeps(t *task, c *call, after []Dependency) {
	if c.deps > 0 {
		var failed *task
		check := func(d *task) bool {
			if d.ex != e {
				e.settle(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrArgs, Msg: fmt.Sprintf("dependency task %d (%s) belongs to another executor", d.id, d.app), Rank: -1})
				return false
			}
			if d.state == stateDone && d.err != nil && failed == nil {
				failed = d
			}
			return true
		}
		visit := func(f func(d *task) bool) bool {
			for i := range c.n {
				p := &c.parts[i]
				if p.dep != nil && !f(p.dep) {
					return false
				}
				for _, d := range p.all {
					if !f(d) {
						return false
					}
				}
			}
			for _, dep := range after {
				if !f(dep.depTask()) {
					return false
				}
			}
			return true
		}
		if !visit(check) {
			return
		}
		if failed != nil {
			e.settle(t, nil, &DependencyError{ID: t.id, App: t.app, DepID: failed.id, DepApp: failed.app, Err: failed.err})
			return
		}
		visit(func(d *task) bool {
			if d.state != stateDone {
				d.dependants = append(d.dependants, t)
				t.pending++
			}
			return true
		})
	}
	if t.pending == 0 {
		e.buildArgs(t)
		e.pushReady(t)
	}
}

// buildArgs splices t's arguments, values of its dependencies included, into
// one msgpack array. Called with e.mu held, once every dependency succeeded.
func (e *Executor) buildArgs(t *task) {
	if t.parts == nil {
		return
	}
	size := 1
	for i := range t.parts {
		p := &t.parts[i]
		switch {
		case p.value:
			size += len(p.raw)
		case p.dep != nil:
			size += len(p.dep.data)
		case p.isAll:
			size += 5
			for _, d := range p.all {
				size += len(d.data)
			}
		}
	}
	b := make([]byte, 0, size)
	b = append(b, 0x90|byte(len(t.parts)))
	for i := range t.parts {
		p := &t.parts[i]
		switch {
		case p.value:
			b = append(b, p.raw...)
		case p.dep != nil:
			b = append(b, p.dep.data...)
		case p.isAll:
			b = appendArrayHeader(b, len(p.all))
			for _, d := range p.all {
				b = append(b, d.data...)
			}
		}
	}
	t.data, t.parts = b, nil
}

// link adds t to the ring of unresolved tasks.
func (e *Executor) link(t *task) {
	h := &e.unresolved
	t.prev, t.next = h.prev, h
	h.prev.next = t
	h.prev = t
}

// waitForRoom waits, with e.mu held, until fewer than MaxPending tasks are
// unresolved, the executor closes or loses its block. With FailFast it
// reports at once whether the bound is reached instead.
func (e *Executor) waitForRoom() (full bool) {
	for e.live >= e.maxPending && !e.closing && e.broken == nil {
		if e.failFast {
			return true
		}
		e.roomWaiters++
		e.room.Wait()
		e.roomWaiters--
	}
	return false
}

// pushReady queues t, whose dependencies all succeeded, or fails it at once
// when no block is left to run it; it reports whether t was queued. Called
// with e.mu held.
func (e *Executor) pushReady(t *task) bool {
	if len(t.data) > registry.MaxValue { // dependencies' values spliced in
		e.settle(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrArgs, Msg: fmt.Sprintf("the arguments are %d bytes with the dependencies' values, more than the %d a task may take: pass big inputs as files", len(t.data), registry.MaxValue), Rank: -1})
		return false
	}
	if e.broken != nil {
		e.settle(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrLost, Msg: e.broken.Error(), Rank: -1, Attempts: int(t.attempt)})
		return false
	}
	t.state = stateReady
	e.ready = append(e.ready, t)
	e.stats.Queued++
	return true
}

// settle resolves t once: it records the outcome and closes done. It does
// not touch t's dependants (see resolve). Called with e.mu held.
func (e *Executor) settle(t *task, value []byte, err error) {
	if t.state == stateDone {
		return
	}
	switch t.state {
	case stateReady:
		e.stats.Queued--
	case stateInFlight:
		e.stats.InFlight--
	}
	t.state = stateDone
	t.data, t.err = value, err
	t.parts = nil
	t.prev.next, t.next.prev = t.next, t.prev
	t.prev, t.next = nil, nil
	if err != nil {
		e.stats.Failed++
	} else {
		e.stats.Done++
	}
	e.live--
	if e.roomWaiters > 0 && e.live < e.maxPending {
		e.room.Signal()
	}
	t.resolved.Store(true)
	if t.done != nil {
		close(t.done)
	}
}

// resolve settles t and releases its dependants: they run once their last
// dependency succeeded, and fail with a DependencyError (transitively) when
// one failed. Called with e.mu held.
func (e *Executor) resolve(t *task, value []byte, err error) {
	if t.state == stateDone {
		return
	}
	e.settle(t, value, err)
	stack := append(e.scratch[:0], t)
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		deps := d.dependants
		d.dependants = nil
		for _, w := range deps {
			if w.state == stateDone {
				continue
			}
			if d.err != nil {
				e.settle(w, nil, &DependencyError{ID: w.id, App: w.app, DepID: d.id, DepApp: d.app, Err: d.err})
				stack = append(stack, w)
				continue
			}
			w.pending--
			if w.pending == 0 {
				e.buildArgs(w)
				if !e.pushReady(w) {
					stack = append(stack, w) // failed: fail its dependants too
				}
			}
		}
	}
	clear(stack[:cap(stack)][:0])
	e.scratch = stack[:0]
}

func (e *Executor) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// dispatch sends ready tasks to the block as its credit allows.
func (e *Executor) dispatch() {
	defer close(e.dispatchDone)
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-e.kick:
		}
		for e.sendBatch(e.block) {
		}
	}
}

// sendBatch sends one TaskBatch to b and reports whether there may be more
// to send.
func (e *Executor) sendBatch(b *block) bool {
	b.sendMu.Lock()
	defer b.sendMu.Unlock()
	e.mu.Lock()
	n := min(b.credit, int64(len(e.ready)-e.readyHead), maxBatch)
	if e.closing || b.lost || n <= 0 {
		e.mu.Unlock()
		return false
	}
	tasks := make([]serialize.Task, 0, n)
	size := 0
	for int64(len(tasks)) < n && e.readyHead < len(e.ready) && (size < maxBatchBytes || len(tasks) == 0) {
		t := e.ready[e.readyHead]
		e.ready[e.readyHead] = nil
		e.readyHead++
		if t.state != stateReady {
			continue // resolved while it waited
		}
		t.state = stateInFlight
		e.stats.Queued--
		e.stats.InFlight++
		b.inflight[t.id] = t
		tasks = append(tasks, serialize.Task{ID: t.id, App: t.app, Args: t.data, Attempt: t.attempt, Walltime: t.walltime})
		size += rankpool.TaskSize(&tasks[len(tasks)-1])
	}
	if e.readyHead == len(e.ready) {
		e.ready, e.readyHead = e.ready[:0], 0
	} else if e.readyHead > 4096 && e.readyHead > len(e.ready)/2 {
		k := copy(e.ready, e.ready[e.readyHead:])
		clear(e.ready[k:])
		e.ready, e.readyHead = e.ready[:k], 0
	}
	b.credit -= int64(len(tasks))
	e.mu.Unlock()
	if len(tasks) == 0 {
		return true
	}
	if err := b.conn.Send(&serialize.TaskBatch{Tasks: tasks}); err != nil {
		e.blockLost(b, fmt.Errorf("send: %w", err))
		return false
	}
	return true
}

// receive handles the block's messages until the link ends.
func (e *Executor) receive(b *block) {
	defer close(b.recvDone)
	for {
		m, err := b.conn.Recv(e.ctx)
		if err != nil {
			e.mu.Lock()
			closing := e.closing
			e.mu.Unlock()
			if !closing {
				e.blockLost(b, err)
			}
			return
		}
		switch m := m.(type) {
		case *serialize.ResultBatch:
			e.onResults(b, m)
		case *serialize.Credit:
			e.mu.Lock()
			b.credit += int64(m.N)
			e.mu.Unlock()
			e.wake()
		case *serialize.Shutdown:
			e.mu.Lock()
			closing := e.closing
			e.mu.Unlock()
			if closing {
				close(b.acked)
				return
			}
			e.blockLost(b, fmt.Errorf("the block shut down: %s", m.Reason))
			return
		default:
			e.log.Warn("unexpected message from the block", "block", b.name, "kind", m.Kind())
		}
	}
}

// onResults resolves, retries or fails the tasks of one ResultBatch, with
// one lock for the batch.
func (e *Executor) onResults(b *block, rb *serialize.ResultBatch) {
	var unknown []uint64
	e.mu.Lock()
	b.credit += int64(rb.Credit)
	for i := range rb.Results {
		r := &rb.Results[i]
		t, ok := b.inflight[r.ID]
		if !ok {
			if len(unknown) < 16 {
				unknown = append(unknown, r.ID)
			}
			continue
		}
		delete(b.inflight, r.ID)
		if r.Err == serialize.ErrNone {
			e.resolve(t, r.Value, nil)
			continue
		}
		if e.closing {
			// The block cancels its running apps when it shuts down: their
			// failures are the close's doing, not the apps'.
			e.resolve(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrLost, Msg: "the executor was closed before the task finished (the worker said: " + r.Msg + ")", Rank: int(r.Rank), Attempts: int(t.attempt) + 1, closed: true})
			continue
		}
		if retryable(r.Err) && int64(t.attempt) < int64(t.retries) {
			t.attempt++
			e.stats.InFlight--
			e.stats.Retried++
			e.pushReady(t)
			continue
		}
		e.resolve(t, nil, &TaskError{ID: t.id, App: t.app, Kind: r.Err, Msg: r.Msg, Stack: r.Stack, Rank: int(r.Rank), Attempts: int(t.attempt) + 1})
	}
	e.mu.Unlock()
	if len(unknown) > 0 {
		e.log.Warn("results for tasks not in flight ignored (unknown or already resolved)", "block", b.name, "ids", unknown)
	}
	e.wake()
}

// blockLost fails what b had in flight with ErrLost. With no other block to
// run on, the queued tasks fail too and later calls fail at once.
func (e *Executor) blockLost(b *block, cause error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b.lost {
		return
	}
	b.lost = true
	msg := fmt.Sprintf("block %s lost: %v", b.name, cause)
	e.log.Error("block lost", "block", b.name, "err", cause, "in_flight", len(b.inflight))
	for id, t := range b.inflight {
		delete(b.inflight, id)
		e.resolve(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrLost, Msg: msg, Rank: -1, Attempts: int(t.attempt) + 1})
	}
	e.broken = errors.New("no block to run on: " + msg)
	e.room.Broadcast()
	ready := e.ready[e.readyHead:]
	e.ready, e.readyHead = nil, 0
	for _, t := range ready {
		e.resolve(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrLost, Msg: e.broken.Error(), Rank: -1, Attempts: int(t.attempt)})
	}
}

// Stats returns the executor's task counts.
func (e *Executor) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Waiting = s.Submitted - s.Done - s.Failed - s.InFlight - s.Queued
	return s
}

// Close shuts the block down: it sends Shutdown, waits (up to 10 s) for the
// block's acknowledgement or the link's end, stops the launched job
// (SIGTERM to its process group, SIGKILL after a grace) and removes the run
// directory. Futures still unresolved then fail with an error that matches
// ErrClosed. Close is idempotent; later calls return the first's result.
func (e *Executor) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.close() })
	return e.closeErr
}

func (e *Executor) close() error {
	b := e.block
	b.sendMu.Lock()
	e.mu.Lock()
	e.closing = true
	lost := b.lost
	e.room.Broadcast()
	e.mu.Unlock()
	var errs []error
	if !lost {
		if err := b.conn.Send(&serialize.Shutdown{Reason: "the front end closed the executor"}); err != nil {
			lost = true
		}
	}
	b.sendMu.Unlock()
	if !lost {
		t := time.NewTimer(shutdownTimeout)
		select {
		case <-b.acked:
			// The ranks finalize MPI and exit on their own: give the
			// launcher a moment to end before it is signalled.
			if e.proc != nil {
				select {
				case <-e.proc.Done():
				case <-t.C:
				}
			}
		case <-b.recvDone:
		case <-t.C:
			e.log.Warn("the block did not acknowledge the shutdown", "block", b.name, "waited", shutdownTimeout)
		}
		t.Stop()
	}
	e.cancel()
	if err := b.conn.Close(); err != nil && !errors.Is(err, link.ErrClosed) {
		errs = append(errs, err)
	}
	<-b.recvDone
	<-e.dispatchDone

	e.mu.Lock()
	for t := e.unresolved.next; t != &e.unresolved; t = e.unresolved.next {
		e.settle(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrLost, Msg: "the executor was closed before the task finished", Rank: -1, Attempts: int(t.attempt), closed: true})
	}
	clear(b.inflight)
	e.ready, e.readyHead = nil, 0
	e.mu.Unlock()

	if err := e.release(); err != nil {
		errs = append(errs, err)
	}
	unwatchSignals(e)
	return errors.Join(errs...)
}

// release stops what launch set up: the job, the listener, the run files.
func (e *Executor) release() error {
	var errs []error
	if e.proc != nil {
		if err := e.proc.Stop(stopGrace); err != nil {
			errs = append(errs, fmt.Errorf("frontend: the block's launcher: %w", err))
		}
	}
	if e.listener != nil {
		_ = e.listener.Close()
	}
	if e.runDir != "" {
		if err := os.RemoveAll(e.runDir); err != nil {
			errs = append(errs, err)
		}
	} else if e.tokenFile != "" {
		if err := os.Remove(e.tokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
