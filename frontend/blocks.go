package frontend

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/serialize"
)

// Defaults of the fault-tolerance options.
const (
	// DefaultBlockRestarts is Options.BlockRestarts' default.
	DefaultBlockRestarts = 3
	// DefaultLostRetries is Options.LostRetries' default.
	DefaultLostRetries = 3
)

// launchSpec is what every launch of a block needs; Start fills it once.
type launchSpec struct {
	np           int
	exe          string
	args         []string
	launcher     launch.Launcher
	env          map[string]string // without the block's name
	startTimeout time.Duration
}

// setup prepares what the blocks share: the run directory, the token file
// and the listener. release undoes it.
func (e *Executor) setup(ctx context.Context, opt Options) (err error) {
	if os.Getenv(EnvExec) == "1" {
		return fmt.Errorf("frontend: this process is a rank of a block (%s=1) and must not start another; call mpiexec.Main() first thing in main", EnvExec)
	}
	s := &launchSpec{np: opt.NP, exe: opt.WorkerBinary, args: opt.WorkerArgs, launcher: opt.Launcher, startTimeout: opt.StartTimeout}
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
	token, err := link.NewToken()
	if err != nil {
		return fmt.Errorf("frontend: %w", err)
	}
	if e.tokenFile, err = link.WriteTokenFile(opt.RunDir, token); err != nil {
		return fmt.Errorf("frontend: %w", err)
	}
	runID := fmt.Sprintf("%d-%x", os.Getpid(), token[:4])
	lopt := link.ListenOptions{Token: token, Run: runID, Logger: e.log}
	if opt.PeerTimeout > 0 {
		lopt.PeerTimeout = opt.PeerTimeout
		lopt.Heartbeat = max(opt.PeerTimeout/4, time.Millisecond)
	}
	if e.listener, err = link.Listen(ctx, addr, lopt); err != nil {
		return fmt.Errorf("frontend: %w", err)
	}
	s.env = map[string]string{
		EnvExec:           "1",
		link.EnvAddr:      e.listener.Addr(),
		link.EnvTokenFile: e.tokenFile,
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
	e.spec = s
	return nil
}

// startBlock launches one block under the given name and waits until it has
// connected and proved that it holds the token. A connection from another
// block (one that was given up on) is closed and the wait goes on.
func (e *Executor) startBlock(ctx context.Context, name string) (*block, error) {
	s := e.spec
	env := make(map[string]string, len(s.env)+1)
	for k, v := range s.env {
		env[k] = v
	}
	env[link.EnvBlock] = name
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
	proc, err := launch.Start(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("frontend: %w", err)
	}
	e.log.Debug("block launched", "block", name, "np", s.np, "pid", proc.Pid(), "addr", e.listener.Addr())

	actx, cancel := context.WithTimeout(ctx, s.startTimeout)
	defer cancel()
	go func() {
		select {
		case <-proc.Done():
			cancel()
		case <-actx.Done():
		}
	}()
	for {
		conn, hello, err := e.listener.Accept(actx)
		if err != nil {
			select {
			case <-proc.Done():
				err = fmt.Errorf("the launcher exited before the block connected: %v; its last output:\n%s", proc.Wait(context.Background()), tail.String())
			default:
				if ctx.Err() == nil && actx.Err() != nil {
					err = fmt.Errorf("the block did not connect within %v; the launcher's last output:\n%s", s.startTimeout, tail.String())
				}
			}
			_ = proc.Stop(stopGrace)
			return nil, fmt.Errorf("frontend: start block %s: %w", name, err)
		}
		if hello.Block != name {
			e.log.Warn("a block that is not awaited connected; closing it", "block", hello.Block, "awaited", name, "host", hello.Host, "pid", hello.PID)
			_ = conn.Close()
			continue
		}
		e.log.Debug("block connected", "block", hello.Block, "ranks", hello.Ranks, "workers", hello.Workers, "host", hello.Host)
		return &block{name: name, conn: conn, hello: hello, proc: proc}, nil
	}
}

// replace launches a block in place of a lost one, and again after a
// failed start while the restart budget lasts. With the budget spent and no
// block left, the executor breaks: queued and later tasks fail with
// ErrLost, and the error names the last failure.
func (e *Executor) replace(cause error) {
	defer e.bg.Done()
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
			case <-time.After(time.Second):
			case <-e.ctx.Done():
			}
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
