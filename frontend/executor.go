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
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/internal/qlink"
	"github.com/rankfarm/rankfarm/internal/registry"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/monitor"
	"github.com/rankfarm/rankfarm/provider"
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
	// Checkpoint names a file where the results of memoized apps (see
	// App1.Memoize) are recorded; a later executor given the same file
	// takes them from it instead of running the calls again. "" keeps the
	// memo table in memory only.
	Checkpoint string
	// CheckpointSync says when records reach the disk; the zero value is
	// SyncEachTask.
	CheckpointSync SyncPolicy
	// CheckpointInterval is SyncPeriodic's period; 0 means 1 s.
	CheckpointInterval time.Duration
	// ReconnectGrace is how long a block whose connection broke may take to
	// connect again (its rank 0 dials again and proves the token again)
	// before it counts as lost; its tasks go on meanwhile and nothing is
	// lost or run twice. 0 means DefaultReconnectGrace, a negative value
	// no wait.
	ReconnectGrace time.Duration
	// TLS makes the link to the blocks speak TLS 1.3 with a per-run
	// self-signed certificate whose fingerprint the blocks check (it
	// reaches them in RANKFARM_TLS_FINGERPRINT); the token handshake runs
	// inside it.
	TLS bool
	// BlockAddr is the address blocks dial, when it is not ListenAddr's
	// (a NAT, a proxy, a tunnel); "" means the listener's address.
	BlockAddr string
	// QueueDir, when set, links the front end and its blocks through a
	// queue of batch files in this directory instead of TCP, for machines
	// whose compute nodes cannot open a socket to the front end but share
	// a filesystem with it (NFS, Lustre, GPFS). The directory is made with
	// mode 0700 and must belong to this user; each run and block gets its
	// own queue inside it. "" means $RANKFARM_QUEUE_DIR, and TCP when that
	// is unset too.
	QueueDir string
	// PeerTimeout is how long a launched block may stay silent (heartbeats
	// included) before it counts as hung and lost; 0 means 30 s.
	PeerTimeout time.Duration
	// BlockRestarts bounds how many blocks are launched to replace lost
	// ones, or ones that failed to start, over the executor's life; 0 means
	// DefaultBlockRestarts and a negative value none.
	BlockRestarts int
	// LostRetries bounds how many lost blocks a task may be caught on and
	// still be run again; 0 means DefaultLostRetries, a negative value none.
	// It is apart from Retries, which is for the app's own failures.
	LostRetries int
	// Provider, when set, gets the blocks from a batch system (provider.Slurm,
	// provider.PBSPro) or from this machine (provider.Local) instead of the
	// executor launching mpirun itself: each block is a job whose launch
	// command (Launcher's, by default mpirun) starts the ranks, whose rank 0
	// dials back to BlockAddr or the listener. The run directory (RunDir)
	// holds the job scripts and the token file, so compute nodes must see
	// it. With a Provider, Start returns at once and the blocks come and go
	// by Scaling; NP defaults to Block's nodes × ranks per node.
	Provider provider.Provider
	// Block is what each block asks the Provider for: nodes, ranks per
	// node, walltime, partition, account, QoS, directives, a worker-init
	// snippet, scheduler options. Its Name, Command and Env are the
	// executor's to fill; its RunDir defaults to the run directory.
	Block provider.BlockSpec
	// Scaling is the block strategy (init, min and max blocks, idle
	// timeout); see Scaling. It is used with a Provider or when it asks for
	// more than one block.
	Scaling Scaling
	// Monitor, when set, records the run in a SQLite database: this file,
	// or monitor.db in this directory (see package monitor and "rankfarm
	// monitor"). "" means $RANKFARM_MONITOR, and no monitoring when that
	// is unset too.
	Monitor string
	// MetricsAddr, when set, serves Prometheus metrics at
	// http://MetricsAddr/metrics (see Executor.MetricsAddr). "" means
	// $RANKFARM_METRICS_ADDR, and none when that is unset too.
	MetricsAddr string
	// Logger receives the executor's log lines; nil means slog.Default().
	Logger *slog.Logger
	// Progress, when set, gets a progress bar of the executor's tasks
	// (os.Stderr is the usual choice): done/submitted, failed, running,
	// the rate and the ETA, and the time taken once Close has drawn it a
	// last time. On a terminal it is redrawn in place 10 times a second;
	// on any other writer (a log file, a buffer) a plain line is written
	// every 10 s and at Close. It appears with the first task. nil means
	// no bar. See Executor.ProgressWriter for the program's own output.
	Progress io.Writer
}

// Stats counts an executor's tasks.
type Stats struct {
	Submitted int64 // tasks submitted (retries not counted again)
	Done      int64 // resolved with a value
	Failed    int64 // resolved with an error
	Retried   int64 // runs repeated after a failure
	InFlight  int64 // sent to a block and not answered yet
	Requeued  int64 // runs sent again because their block was lost
	Memoized  int64 // calls resolved from the memo table or checkpoint
	// BlockRestarts counts the blocks launched to replace lost ones.
	BlockRestarts int64
	Queued        int64 // ready and waiting for credit
	Waiting       int64 // waiting for their dependencies
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
	lost     uint8 // runs lost with their block
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
	layout   []NodeInfo // from hello, worked out by nodes()
	credit   int64
	inflight map[uint64]*task
	lost     bool
	proc     blockProc     // the block's launcher or job; nil for Options.Conn
	sess     *link.Session // conn as a resumable session; nil for Options.Conn
	// draining is set when the strategy gives the block back: no task is
	// sent to it any more. idleSince is when its last task was answered
	// (zero while it has tasks).
	draining  bool
	idleSince time.Time

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
	blockScratch []*block // the dispatcher's own

	mon        *monState // monitoring (monitor.go); nil when off
	prog       *progress // the progress bar (progress.go); nil when off
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
	ckpt        *checkpoint
	memoApps    map[string]string // memoized app → its version

	// The blocks, guarded by mu: those connected, and those starting.
	blocks        []*block
	nextBlock     int // number of the last block launched
	starting      int // replacements being launched
	restarts      int // replacements launched so far
	restartBudget int
	lostBudget    int
	bg            sync.WaitGroup      // receivers, replacements, stops
	scaling       Scaling             // the strategy; Max 0 when it is off
	failures      int                 // blocks that failed to start or were lost (strategy)
	scaleErr      error               // set when failures passed the budget
	jobs          map[string]*jobProc // a Provider's jobs, by id (mu)

	// What Start set up to launch blocks; nil with Options.Conn.
	spec      *launchSpec
	grace     time.Duration
	awaiting  map[string]chan accepted // blocks being started, by name (mu)
	listener  *link.Listener
	queueRun  string             // the run's queue directory (queue.go); "" with TCP
	queueOpt  qlink.FrontOptions // each block's queue's options
	runDir    string             // removed on Close when Start made it
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
	e.scaling = initScaling(opt)
	e.jobs = make(map[string]*jobProc)
	ckpt, err := openCheckpoint(opt.Checkpoint, opt.CheckpointSync, opt.CheckpointInterval, log)
	if err != nil {
		return nil, err
	}
	e.ckpt = ckpt
	if err := e.startMonitor(opt); err != nil { // monitor.go
		_ = e.ckpt.close()
		return nil, err
	}
	e.startProgress(opt.Progress) // progress.go
	go e.dispatch()
	if opt.Conn != nil {
		e.serve(&block{name: "local", conn: opt.Conn})
		return e, nil
	}
	if err := e.setup(ctx, opt); err != nil {
		e.cancel()
		<-e.dispatchDone
		e.bg.Wait()
		_ = e.release()
		_ = e.ckpt.close()
		e.stopMonitor()
		e.stopProgress()
		return nil, err
	}
	if e.elastic() {
		e.startElastic()
		watchSignals(e)
		return e, nil
	}
	b, err := e.startBlock(ctx, "b0")
	if err != nil {
		e.cancel()
		<-e.dispatchDone
		e.bg.Wait()
		_ = e.release()
		_ = e.ckpt.close()
		e.stopMonitor()
		e.stopProgress()
		return nil, err
	}
	e.serve(b)
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
	e.restartBudget = opt.BlockRestarts
	if e.restartBudget == 0 {
		e.restartBudget = DefaultBlockRestarts
	}
	e.restartBudget = max(e.restartBudget, 0)
	e.lostBudget = opt.LostRetries
	if e.lostBudget == 0 {
		e.lostBudget = DefaultLostRetries
	}
	e.lostBudget = min(max(e.lostBudget, 0), 255)
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e
}

// serve adds block b to the executor's blocks and starts its receiver.
func (e *Executor) serve(b *block) {
	b.inflight = make(map[uint64]*task)
	b.acked = make(chan struct{})
	b.recvDone = make(chan struct{})
	e.mu.Lock()
	e.blocks = append(e.blocks, b)
	e.mon.blockEvent(monitor.BlockConnected, b, "", nil)
	nodes := b.nodes()
	e.mu.Unlock()
	for _, n := range nodes {
		e.log.Info("block layout", "block", b.name, "host", n.Host, "ranks", rankpool.FormatRanks(n.Ranks), "sub_masters", n.SubMasters)
	}
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		e.receive(b)
	}()
	if b.proc != nil {
		// A launcher that exits while its block serves (mpirun killed, or
		// the job aborted) takes the block with it, even if rank 0's link
		// outlives it for a while.
		e.bg.Add(1)
		go func() {
			defer e.bg.Done()
			select {
			case <-b.proc.Done():
				e.blockLost(b, fmt.Errorf("its launcher exited: %v", b.proc.Wait(context.Background())))
			case <-b.recvDone:
			}
		}()
	}
}

// BlockInfo describes one block that serves the executor.
type BlockInfo struct {
	// Name is the block's name (b0, b1, … in launch order; "local" for
	// Options.Conn).
	Name string
	// PID is the launcher's process id (mpirun's), 0 for Options.Conn and
	// for a batch job.
	PID int
	// Job is the block's job id at the Provider ("4242" for Slurm), "" when
	// the executor launched the block itself.
	Job string
	// Ranks and Workers are the block's world size and task slots; Host is
	// rank 0's host.
	Ranks, Workers int
	Host           string
	// Nodes are the block's hosts in the order of their first rank, with
	// the ranks on each and the sub-masters among them, as the block
	// reported them when it connected (nil for a block that did not).
	Nodes []NodeInfo
	// InFlight counts the block's tasks sent and not answered.
	InFlight int
	// Credit is how many more tasks the block has asked for and not been
	// sent yet.
	Credit int64
}

// Blocks describes the blocks that serve the executor now.
func (e *Executor) Blocks() []BlockInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]BlockInfo, 0, len(e.blocks))
	for _, b := range e.blocks {
		bi := BlockInfo{Name: b.name, InFlight: len(b.inflight), Credit: b.credit}
		if b.proc != nil {
			bi.PID = b.proc.Pid()
		}
		if j, ok := b.proc.(*jobProc); ok {
			bi.Job = j.job.ID
		}
		if b.hello != nil {
			bi.Ranks, bi.Workers, bi.Host = int(b.hello.Ranks), int(b.hello.Workers), b.hello.Host
			bi.Nodes = b.nodes()
		}
		out = append(out, bi)
	}
	return out
}

// haveCredit reports whether a block may be sent a task now. Called with
// e.mu held.
func (e *Executor) haveCredit() bool {
	for _, b := range e.blocks {
		if b.credit > 0 {
			return true
		}
	}
	return false
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
	if c.memo {
		if e.memoApps == nil {
			e.memoApps = make(map[string]string)
		}
		e.memoApps[app] = c.memoVersion
	}
	full := e.waitForRoom()
	e.nextID++
	t.id = e.nextID
	e.stats.Submitted++
	e.live++
	e.link(t)
	e.mon.submitted(t)
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
	kick := t.state == stateReady && e.haveCredit()
	e.mu.Unlock()
	if kick && !e.sendIdle() {
		e.wake()
	}
	return t
}

// sendIdle sends a lone ready task from the caller's goroutine when a block
// with credit has no task in flight, and reports whether it did: a
// workflow that calls one task at a time then skips the dispatcher's
// wake-up, one goroutine hand-off on its critical path. Under load (tasks
// in flight) the dispatcher batches as before.
func (e *Executor) sendIdle() bool {
	e.mu.Lock()
	var idle *block
	if len(e.ready)-e.readyHead == 1 {
		for _, b := range e.blocks {
			if b.credit > 0 && len(b.inflight) == 0 && !b.draining && !b.lost {
				idle = b
				break
			}
		}
	}
	e.mu.Unlock()
	if idle == nil {
		return false
	}
	e.sendBatch(idle)
	return true
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
	if t.app == appDataFuture { // resolved here, never sent (file.go)
		e.settle(t, dataFutureValue(t.data), nil)
		return false
	}
	if version, ok := e.memoApps[t.app]; ok && t.attempt == 0 && t.lost == 0 {
		if v, ok := e.ckpt.lookup(makeMemoKey(t.app, version, t.data)); ok {
			e.stats.Memoized++
			e.settle(t, v, nil)
			return false
		}
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
	e.mon.settled(t, err)
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
				e.mon.ready(w)
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
		for {
			e.mu.Lock()
			blocks := append(e.blockScratch[:0], e.blocks...)
			e.mu.Unlock()
			more := false
			for _, b := range blocks {
				if e.sendBatch(b) {
					more = true
				}
			}
			clear(blocks)
			e.blockScratch = blocks[:0]
			if !more {
				break
			}
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
	if e.closing || b.lost || b.draining || n <= 0 {
		e.mu.Unlock()
		return false
	}
	e.mon.stamp()
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
		e.mon.dispatched(t, b)
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
	if len(tasks) > 0 {
		b.idleSince = time.Time{}
	}
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
			e.blockLost(b, fmt.Errorf("the block shut down: %s", m.Reason)) // or, drained, retires
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
	e.mon.stamp()
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
		e.mon.result(t, b, r)
		if r.Err == serialize.ErrNone {
			if version, ok := e.memoApps[t.app]; ok {
				e.ckpt.record(makeMemoKey(t.app, version, t.data), r.Value)
			}
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
	if len(b.inflight) == 0 && b.idleSince.IsZero() {
		b.idleSince = e.scaling.now()
	}
	e.mu.Unlock()
	if len(unknown) > 0 {
		e.log.Warn("results for tasks not in flight ignored (unknown or already resolved)", "block", b.name, "ids", unknown)
	}
	e.wake()
}

// blockLost takes b out of service. Its tasks in flight run again on
// another block while their LostRetries budget lasts (a block's failure is
// not the app's: it does not count against Retries), and fail with ErrLost
// once it is spent. A launched block is stopped and, while BlockRestarts
// lasts, replaced. With no block left nor coming, queued and later tasks
// fail with ErrLost.
func (e *Executor) blockLost(b *block, cause error) {
	e.mu.Lock()
	if b.lost {
		e.mu.Unlock()
		return
	}
	b.lost = true
	if i := slices.Index(e.blocks, b); i >= 0 {
		e.blocks = slices.Delete(e.blocks, i, i+1)
	}
	msg := fmt.Sprintf("block %s lost: %v", b.name, cause)
	retired := b.draining // given back by the strategy: not a failure
	e.mon.blockLost(b, retired, cause)
	requeued, failed := 0, 0
	for id, t := range b.inflight {
		delete(b.inflight, id)
		if retired && !e.closing {
			e.stats.InFlight--
			e.mon.requeued(t, b)
			requeued++
			e.pushReady(t)
			continue
		}
		if int(t.lost) < e.lostBudget && !e.closing {
			t.lost++
			e.stats.InFlight--
			e.stats.Requeued++
			e.mon.requeued(t, b)
			requeued++
			e.pushReady(t)
			continue
		}
		failed++
		e.resolve(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrLost, Msg: fmt.Sprintf("%s (the task was on %d lost blocks)", msg, t.lost+1), Rank: -1, Attempts: int(t.attempt) + 1})
	}
	restart := e.spec != nil && !e.closing && !e.elastic() && e.restarts < e.restartBudget
	if restart {
		e.restarts++
		e.starting++
		e.bg.Add(1)
	}
	closing := e.closing
	switch {
	case e.closing:
	case e.elastic() && !retired:
		e.blockFailed(errors.New(msg)) // the strategy asks for another
	case !e.elastic() && len(e.blocks) == 0 && e.starting == 0:
		e.breakDown(errors.New("no block to run on: " + msg))
	}
	e.mu.Unlock()
	switch {
	case retired:
		e.log.Info("block scaled in", "block", b.name, "ended", cause, "requeued", requeued)
	case closing && requeued+failed == 0:
		// Its launcher ended before its link did while the executor
		// closes: over a queue on a network filesystem the block's last
		// files may show up after its processes are gone.
		e.log.Info("block ended while the executor closes", "block", b.name, "ended", cause)
	default:
		e.log.Error("block lost", "block", b.name, "err", cause, "requeued", requeued, "failed", failed, "replacing", restart)
	}
	_ = b.conn.Close()
	if b.proc != nil {
		e.bg.Add(1)
		go func() {
			defer e.bg.Done()
			_ = b.proc.Stop(stopGrace)
		}()
	}
	if restart {
		go e.replace(errors.New(msg))
	}
	e.wake()
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
	e.mu.Lock()
	e.closing = true
	e.room.Broadcast()
	blocks := slices.Clone(e.blocks)
	e.mu.Unlock()
	// Shutdown goes after any TaskBatch being sent (sendMu).
	var live []*block
	for _, b := range blocks {
		b.sendMu.Lock()
		if err := b.conn.Send(&serialize.Shutdown{Reason: "the front end closed the executor"}); err == nil {
			live = append(live, b)
		}
		b.sendMu.Unlock()
	}
	deadline := time.NewTimer(shutdownTimeout)
	acked := map[*block]bool{}
	for _, b := range live {
		select {
		case <-b.acked:
			acked[b] = true
			// The ranks finalize MPI and exit on their own: give the
			// launcher a moment to end before it is signalled.
			if b.proc != nil {
				select {
				case <-b.proc.Done():
				case <-deadline.C:
				}
			}
		case <-b.recvDone:
		case <-deadline.C:
			e.log.Warn("the block did not acknowledge the shutdown", "block", b.name, "waited", shutdownTimeout)
		}
	}
	deadline.Stop()
	e.cancel()
	var errs []error
	for _, b := range blocks {
		if err := b.conn.Close(); err != nil && !errors.Is(err, link.ErrClosed) {
			errs = append(errs, err)
		}
		if b.proc != nil {
			err := b.proc.Stop(stopGrace)
			switch {
			case err == nil:
			case acked[b]:
				// The block had answered every task and acknowledged
				// its shutdown: how its launcher ended (MPICH's Hydra
				// says 255 when a rank had to exit without
				// MPI_Finalize, see mpiexec.EnvFinalizeTimeout) loses
				// nothing.
				e.log.Warn("a block's launcher failed after the block shut down", "block", b.name, "err", err)
			default:
				errs = append(errs, fmt.Errorf("frontend: block %s's launcher: %w", b.name, err))
			}
		}
	}
	<-e.dispatchDone
	e.bg.Wait() // receivers, replacements and stops of lost blocks

	e.mu.Lock()
	for t := e.unresolved.next; t != &e.unresolved; t = e.unresolved.next {
		e.settle(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrLost, Msg: "the executor was closed before the task finished", Rank: -1, Attempts: int(t.attempt), closed: true})
	}
	for _, b := range blocks {
		clear(b.inflight)
	}
	e.ready, e.readyHead = nil, 0
	e.mu.Unlock()
	e.stopMonitor() // every task has settled: write the last events
	e.stopProgress()

	if err := e.release(); err != nil {
		errs = append(errs, err)
	}
	if err := e.ckpt.close(); err != nil {
		errs = append(errs, err)
	}
	unwatchSignals(e)
	return errors.Join(errs...)
}

// release stops what launch set up: the job, the listener, the run files.
func (e *Executor) release() error {
	var errs []error
	if e.listener != nil {
		_ = e.listener.Close()
	}
	e.releaseQueue()
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
