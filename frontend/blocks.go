package frontend

import (
	"context"
	"encoding/hex"
	"fmt"
	"github.com/rankfarm/rankfarm/provider"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/internal/qlink"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/serialize"
)

// Defaults of the fault-tolerance options.
const (
	// DefaultBlockRestarts is Options.BlockRestarts' default.
	DefaultBlockRestarts = 3
	// DefaultLostRetries is Options.LostRetries' default.
	DefaultLostRetries = 3
	// DefaultReconnectGrace is Options.ReconnectGrace's default.
	DefaultReconnectGrace = 10 * time.Second
)

// EnvReconnectGrace tells rank 0 how long to keep dialling again after its
// link to the front end broke (a Go duration).
const EnvReconnectGrace = "RANKFARM_RECONNECT_GRACE"

// launchSpec is what every launch of a block needs; Start fills it once.
type launchSpec struct {
	np           int
	exe          string
	args         []string
	launcher     launch.Launcher
	env          map[string]string // without the block's name
	startTimeout time.Duration
	prov         provider.Provider  // nil: the executor launches the blocks itself
	block        provider.BlockSpec // the resources each block asks prov for
	runDir       string
}

// setup prepares what the blocks share: the run directory, the token file
// and the listener. release undoes it.
func (e *Executor) setup(ctx context.Context, opt Options) (err error) {
	if os.Getenv(EnvExec) == "1" {
		return fmt.Errorf("frontend: this process is a rank of a block (%s=1) and must not start another; call mpiexec.Main() first thing in main", EnvExec)
	}
	s := &launchSpec{np: opt.NP, exe: opt.WorkerBinary, args: opt.WorkerArgs, launcher: opt.Launcher, startTimeout: opt.StartTimeout,
		prov: opt.Provider, block: opt.Block}
	if s.np <= 0 && s.prov != nil && s.block.RanksPerNode > 0 {
		s.np = max(s.block.NodesPerBlock, 1) * s.block.RanksPerNode
	}
	if s.np <= 0 {
		s.np = runtime.NumCPU()
	}
	if s.exe == "" {
		if s.exe, err = os.Executable(); err != nil {
			return fmt.Errorf("frontend: find this program to re-run as the ranks: %w", err)
		}
	}
	if s.launcher == nil {
		s.launcher = launch.MPIRun{}
	}
	if s.startTimeout <= 0 {
		s.startTimeout = DefaultStartTimeout
	}
	addr := opt.ListenAddr
	if addr == "" {
		addr = DefaultListenAddr
	}
	if opt.RunDir == "" {
		if e.runDir, err = os.MkdirTemp("", "rankfarm-"); err != nil {
			return fmt.Errorf("frontend: make the run directory: %w", err)
		}
		opt.RunDir = e.runDir
	} else if err = os.MkdirAll(opt.RunDir, 0o700); err != nil {
		return fmt.Errorf("frontend: make the run directory: %w", err)
	}
	s.runDir = opt.RunDir
	if root := queueRoot(opt); root != "" {
		return e.setupQueue(root, opt, s) // no socket, no token: see queue.go
	}
	token, err := link.NewToken()
	if err != nil {
		return fmt.Errorf("frontend: %w", err)
	}
	if e.tokenFile, err = link.WriteTokenFile(opt.RunDir, token); err != nil {
		return fmt.Errorf("frontend: %w", err)
	}
	runID := fmt.Sprintf("%d-%x", os.Getpid(), token[:4])
	lopt := link.ListenOptions{Token: token, Run: runID, Logger: e.log}
	var fingerprint []byte
	if opt.TLS {
		if lopt.TLS, fingerprint, err = link.NewTLSIdentity(30 * 24 * time.Hour); err != nil {
			return fmt.Errorf("frontend: %w", err)
		}
	}
	if opt.PeerTimeout > 0 {
		lopt.PeerTimeout = opt.PeerTimeout
		lopt.Heartbeat = max(opt.PeerTimeout/4, time.Millisecond)
	}
	if e.listener, err = link.Listen(ctx, addr, lopt); err != nil {
		return fmt.Errorf("frontend: %w", err)
	}
	blockAddr := opt.BlockAddr
	if blockAddr == "" {
		blockAddr = e.listener.Addr()
	}
	e.grace = opt.ReconnectGrace
	if e.grace == 0 {
		e.grace = DefaultReconnectGrace
	}
	e.grace = max(e.grace, 0)
	s.env = map[string]string{
		EnvExec:           "1",
		link.EnvAddr:      blockAddr,
		link.EnvTokenFile: e.tokenFile,
		EnvReconnectGrace: e.grace.String(),
	}
	if fingerprint != nil {
		s.env[link.EnvTLSFingerprint] = hex.EncodeToString(fingerprint)
	}
	if opt.MaxPrefetch > 0 {
		s.env[EnvMaxPrefetch] = strconv.Itoa(opt.MaxPrefetch)
	}
	if opt.Prefetch > 0 {
		s.env[EnvPrefetch] = strconv.Itoa(opt.Prefetch)
	}
	if opt.Slots > 0 {
		s.env[EnvSlots] = strconv.Itoa(opt.Slots)
	}
	forwardTuning(s.env)
	e.spec = s
	e.awaiting = make(map[string]chan accepted)
	e.bg.Add(1)
	go e.acceptLoop()
	return nil
}

// accepted is a block's connection with its Hello.
type accepted struct {
	conn  link.Conn
	hello *serialize.Hello
}

// acceptLoop takes every block that connects and proves the token: a block
// being started goes to its startBlock, a known block that lost its
// connection resumes its session on the new one, and anything else is
// closed.
func (e *Executor) acceptLoop() {
	defer e.bg.Done()
	for {
		conn, hello, err := e.listener.Accept(e.ctx)
		if err != nil {
			if e.ctx.Err() == nil {
				e.log.Error("the listener failed; no block can connect any more", "err", err)
			}
			return
		}
		e.mu.Lock()
		wait, starting := e.awaiting[hello.Block]
		if starting {
			delete(e.awaiting, hello.Block)
		}
		var known *block
		for _, b := range e.blocks {
			if b.name == hello.Block {
				known = b
			}
		}
		e.mu.Unlock()
		switch {
		case starting:
			wait <- accepted{conn, hello} // buffered
		case known != nil && known.sess != nil:
			if err := known.sess.Resume(conn); err != nil {
				e.log.Warn("a block came back too late", "block", hello.Block, "err", err)
				_ = conn.Close()
				continue
			}
			e.log.Info("block reconnected", "block", hello.Block, "host", hello.Host)
		default:
			e.log.Warn("a block that is not awaited connected; closing it", "block", hello.Block, "host", hello.Host, "pid", hello.PID)
			_ = conn.Close()
		}
	}
}

// forwardTuning adds to env the rank settings of this process's own
// environment (RANKFARM_LOG, RANKFARM_FANOUT, RANKFARM_MAX_SLEEP,
// RANKFARM_DOORBELLS, RANKFARM_NET_WAKE, …: every RANKFARM_ variable that
// env does not set already). Ranks on this host inherit them anyway, but
// Open MPI passes ranks on other hosts only the variables it is told to
// (-x), so a setting would otherwise hold on one host and not on the others.
//
// The variables that tell a rank which block it is and where its front end
// is are never taken from the environment: a stale one (of another run)
// would send the block elsewhere.
func forwardTuning(env map[string]string) {
	for _, kv := range os.Environ() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "RANKFARM_") || strings.ContainsAny(k, ",") {
			continue
		}
		switch k {
		case EnvExec, link.EnvAddr, link.EnvTokenFile, link.EnvBlock, link.EnvTLSFingerprint, qlink.EnvQueue:
			continue
		}
		if _, set := env[k]; !set {
			env[k] = v
		}
	}
}

// startBlock launches one block under the given name and waits until it has
// connected and proved that it holds the token. A connection from another
// block (one that was given up on) is closed and the wait goes on.
func (e *Executor) startBlock(ctx context.Context, name string) (b *block, err error) {
	s := e.spec
	env := make(map[string]string, len(s.env)+1)
	for k, v := range s.env {
		env[k] = v
	}
	env[link.EnvBlock] = name
	wait := make(chan accepted, 1)
	var front *qlink.Front // the block's queue, when it has one instead of TCP
	if e.queueRun != "" {
		f, stop, err := e.openQueue(ctx, name, env, wait)
		if err != nil {
			return nil, err
		}
		front = f
		defer stop()
		defer func() {
			if b == nil {
				_ = front.Close()
			}
		}()
	}
	cmd, err := s.launcher.Command(s.np, s.exe, s.args, env)
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
	e.mu.Lock()
	e.awaiting[name] = wait
	e.mon.blockRequested(name)
	e.mu.Unlock()
	var proc blockProc
	if s.prov != nil {
		proc, err = e.submitJob(ctx, name, provider.Command(cmd), env)
	} else {
		var p *launch.Process
		if p, err = launch.Start(ctx, cmd); err == nil {
			proc = localProc{p}
		}
		err = fmtErr(err)
	}
	if err != nil {
		e.mu.Lock()
		delete(e.awaiting, name)
		e.mu.Unlock()
		return nil, err
	}
	e.log.Debug("block launched", "block", name, "np", s.np, "pid", proc.Pid(), "addr", e.Addr(), "queue", e.queueRun)

	// Where the block must reach the front end, for the errors below: a
	// rank 0 that cannot may die before its own message is passed on.
	where := " (its rank 0 dials " + env[link.EnvAddr] + ")"
	if front != nil {
		where = " (its rank 0 joins the queue " + front.Dir() + ")"
	}
	// The start timeout counts from when the block runs: a batch job may
	// wait in the queue for hours.
	var timeout <-chan time.Time
	started := running(proc)
	var got accepted
	for got.conn == nil && err == nil {
		select {
		case got = <-wait:
		case <-started:
			started = nil
			timer := time.NewTimer(s.startTimeout)
			defer timer.Stop()
			timeout = timer.C
		case <-proc.Done():
			err = fmt.Errorf("the launcher or job exited before the block connected%s: %v; the launcher's last output:\n%s", where, proc.Wait(context.Background()), tail.String())
		case <-timeout:
			err = fmt.Errorf("the block did not connect within %v%s; the launcher's last output:\n%s", s.startTimeout, where, tail.String())
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if got.conn == nil {
		e.mu.Lock()
		delete(e.awaiting, name)
		e.mu.Unlock()
		select {
		case late := <-wait: // connected just now: too late
			_ = late.conn.Close()
		default:
		}
		_ = proc.Stop(stopGrace)
		return nil, fmt.Errorf("frontend: start block %s: %w", name, err)
	}
	conn, hello := got.conn, got.hello
	if front != nil {
		e.mu.Lock()
		delete(e.awaiting, name)
		e.mu.Unlock()
		e.log.Debug("block joined its queue", "block", hello.Block, "ranks", hello.Ranks, "workers", hello.Workers, "host", hello.Host, "queue", front.Dir())
		return &block{name: name, conn: front, hello: hello, proc: proc, idleSince: e.scaling.now()}, nil
	}
	sess, err := link.NewSession(conn, e.grace, name, e.log)
	if err != nil {
		_ = conn.Close()
		_ = proc.Stop(stopGrace)
		return nil, fmt.Errorf("frontend: %w", err)
	}
	e.log.Debug("block connected", "block", hello.Block, "ranks", hello.Ranks, "workers", hello.Workers, "host", hello.Host)
	return &block{name: name, conn: sess, sess: sess, hello: hello, proc: proc, idleSince: e.scaling.now()}, nil
}

// replace launches a block in place of a lost one, and again after a
// failed start while the restart budget lasts. With the budget spent and no
// block left, the executor breaks: queued and later tasks fail with
// ErrLost, and the error names the last failure.
func (e *Executor) replace(cause error) {
	defer e.bg.Done()
	// Failed starts wait longer each time (1 s, 2 s, 4 s, … up to
	// maxRestartWait): a host that is down for a few seconds must not use
	// up the restart budget before it is back.
	wait := time.Second
	for {
		e.mu.Lock()
		if e.closing {
			e.starting--
			e.mu.Unlock()
			return
		}
		e.nextBlock++
		name := "b" + strconv.Itoa(e.nextBlock)
		e.mu.Unlock()

		e.log.Warn("starting a replacement block", "block", name, "cause", cause)
		b, err := e.startBlock(e.ctx, name)
		e.mu.Lock()
		if err == nil && !e.closing {
			e.starting--
			e.stats.BlockRestarts++
			e.mu.Unlock()
			e.serve(b)
			e.log.Info("replacement block connected", "block", name)
			e.wake()
			return
		}
		if err == nil { // closing meanwhile: nothing will use it
			e.starting--
			e.mu.Unlock()
			_ = b.conn.Close()
			_ = b.proc.Stop(stopGrace)
			return
		}
		if e.closing {
			e.starting--
			e.mu.Unlock()
			return
		}
		cause = err
		e.log.Error("a replacement block failed to start", "block", name, "err", err)
		if e.restarts < e.restartBudget {
			e.restarts++
			e.mu.Unlock()
			select {
			case <-time.After(wait):
			case <-e.ctx.Done():
			}
			wait = min(2*wait, maxRestartWait)
			continue
		}
		e.starting--
		if len(e.blocks) == 0 {
			e.breakDown(fmt.Errorf("no block to run on: %d block restarts failed, the last: %w", e.restartBudget, err))
		}
		e.mu.Unlock()
		return
	}
}

// maxRestartWait bounds the wait between two failed starts of a
// replacement block.
const maxRestartWait = 30 * time.Second

// breakDown records that no block is left nor coming: queued tasks fail
// with ErrLost, and so will later ones. Called with e.mu held.
func (e *Executor) breakDown(err error) {
	if e.broken != nil {
		return
	}
	e.broken = err
	e.room.Broadcast()
	ready := e.ready[e.readyHead:]
	e.ready, e.readyHead = nil, 0
	for _, t := range ready {
		if t.state == stateReady {
			e.resolve(t, nil, &TaskError{ID: t.id, App: t.app, Kind: serialize.ErrLost, Msg: err.Error(), Rank: -1, Attempts: int(t.attempt)})
		}
	}
}
