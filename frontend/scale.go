package frontend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/provider"
	"github.com/rankfarm/rankfarm/serialize"
)

// Defaults of Scaling.
const (
	// DefaultIdleTimeout is Scaling.IdleTimeout's default.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultScaleInterval is Scaling.Interval's default.
	DefaultScaleInterval = time.Second
	// DefaultPollInterval is Scaling.PollInterval's default.
	DefaultPollInterval = 3 * time.Second
)

// Scaling is the executor's block strategy, as Parsl's: how many blocks to
// start with, the bounds it grows and shrinks between, and when a block is
// idle enough to give back. It is used when Options.Provider is set or
// Max is above 1; otherwise the executor runs one block and replaces it
// when it is lost.
//
// Every Interval the strategy compares the work (tasks ready and tasks in
// flight) with the task slots of the blocks connected and starting: while
// the work exceeds them and there are fewer than Max blocks it asks for as
// many blocks as the excess fills; it keeps at least Min; and with no task
// waiting it drains a block whose slots have all been free for IdleTimeout
// (no task is sent to it any more, it is told to shut down once its last
// task is answered, and its job ends) down to Min. A block that fails to
// start, or is lost, counts against Options.BlockRestarts: past it no block
// is asked for any more, and Err reports the last failure in the batch
// system's own words.
type Scaling struct {
	// Init is how many blocks Start asks for; 0 means 1 (or Min, if more).
	Init int
	// Min and Max bound the blocks, running or starting. Max 0 means
	// max(Init, Min, 1).
	Min, Max int
	// IdleTimeout is how long a block may have nothing to run before it is
	// drained and given back (down to Min); 0 means DefaultIdleTimeout, a
	// negative value never.
	IdleTimeout time.Duration
	// Interval is the strategy's period; 0 means DefaultScaleInterval.
	Interval time.Duration
	// PollInterval is how often the provider is asked how the blocks' jobs
	// stand (one Status call for all of them); 0 means
	// DefaultPollInterval.
	PollInterval time.Duration
	// Now is the strategy's clock, for tests; nil means time.Now.
	Now func() time.Time
}

// blockProc is what runs a block: the launcher's process group, or a job a
// Provider started.
type blockProc interface {
	// Pid is the launcher's process id, or 0 for a batch job.
	Pid() int
	// Done is closed when the block has ended.
	Done() <-chan struct{}
	// Wait returns how the block ended, once Done is closed.
	Wait(ctx context.Context) error
	// Stop ends the block: at once after grace if it has not ended by
	// itself.
	Stop(grace time.Duration) error
}

// localProc is a launcher's process group run by the executor itself.
type localProc struct{ *launch.Process }

// running returns a closed channel: a local launcher runs at once.
func running(p blockProc) <-chan struct{} {
	if j, ok := p.(*jobProc); ok {
		return j.running
	}
	return closedChan
}

// jobProc is a block's job at a Provider. The executor's job watcher moves
// it along from the provider's Status.
type jobProc struct {
	prov provider.Provider
	job  provider.Job

	once    sync.Once
	runOnce sync.Once
	running chan struct{} // closed when the job is first seen running
	done    chan struct{} // closed when the job has ended
	err     error         // how it ended; set before done is closed
}

func newJobProc(p provider.Provider, job provider.Job) *jobProc {
	return &jobProc{prov: p, job: job, running: make(chan struct{}), done: make(chan struct{})}
}

// Pid implements blockProc: a batch job has no process here.
func (*jobProc) Pid() int { return 0 }

// Done implements blockProc.
func (j *jobProc) Done() <-chan struct{} { return j.done }

// Wait implements blockProc.
func (j *jobProc) Wait(ctx context.Context) error {
	select {
	case <-j.done:
		return j.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// end records that the job ended, and how.
func (j *jobProc) end(err error) {
	j.once.Do(func() {
		j.err = err
		close(j.done)
	})
}

// Stop implements blockProc: a job still in the queue is cancelled at once;
// a running one may take up to grace to end by itself (a drained block's
// ranks exit on their own), asked about twice a second, and is cancelled
// then.
func (j *jobProc) Stop(grace time.Duration) error {
	select {
	case <-j.running:
	default:
		grace = 0
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		select {
		case <-j.done:
			return nil
		case <-time.After(min(500*time.Millisecond, time.Until(deadline))):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := j.prov.Status(ctx, []provider.Job{j.job})
		cancel()
		if st, ok := res[j.job.ID]; err == nil && ok && st.State.Final() {
			j.end(jobError(j.prov, j.job, st))
			return nil
		}
	}
	select {
	case <-j.done:
		return nil
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := j.prov.Cancel(ctx, []provider.Job{j.job}); err != nil {
		return fmt.Errorf("frontend: cancel %s job %s: %w", j.prov.Name(), j.job.ID, err)
	}
	j.end(fmt.Errorf("%s job %s cancelled by the front end", j.prov.Name(), j.job.ID))
	return nil
}

// jobError is how a job ended, in the batch system's own words.
func jobError(p provider.Provider, job provider.Job, st provider.JobStatus) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s job %s %s: %s", p.Name(), job.ID, st.State, st.Message)
	if st.Stuck {
		b.WriteString(" (it can never start as asked; cancelled)")
	}
	if st.Tail != "" {
		fmt.Fprintf(&b, "; its last error output:\n%s", st.Tail)
	}
	return errors.New(b.String())
}

// submitJob asks the provider for one block running cmd with env.
func (e *Executor) submitJob(ctx context.Context, name string, argv []string, env map[string]string) (*jobProc, error) {
	spec := e.spec.block
	spec.Name = name
	spec.Command = argv
	spec.Env = env
	if spec.RunDir == "" {
		spec.RunDir = e.spec.runDir
	}
	job, err := e.spec.prov.Submit(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("frontend: submit block %s to %s: %w", name, e.spec.prov.Name(), err)
	}
	j := newJobProc(e.spec.prov, job)
	e.mu.Lock()
	e.jobs[job.ID] = j
	e.mu.Unlock()
	e.log.Info("block submitted", "block", name, "provider", e.spec.prov.Name(), "job", job.ID, "script", job.Script)
	return j, nil
}

// watchJobs asks the provider how the blocks' jobs stand, all in one call,
// every PollInterval, and moves their jobProcs along: running, ended (a
// lost block for the executor), or stuck in the queue (cancelled, and
// reported in the batch system's words).
func (e *Executor) watchJobs() {
	defer e.bg.Done()
	t := time.NewTicker(e.scaling.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		jobs := make([]provider.Job, 0, len(e.jobs))
		procs := make(map[string]*jobProc, len(e.jobs))
		for id, j := range e.jobs {
			select {
			case <-j.done:
				delete(e.jobs, id)
				continue
			default:
			}
			jobs = append(jobs, j.job)
			procs[id] = j
		}
		e.mu.Unlock()
		if len(jobs) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
		res, err := e.spec.prov.Status(ctx, jobs)
		cancel()
		if err != nil {
			e.log.Warn("cannot ask the batch system how the blocks stand; asking again later", "provider", e.spec.prov.Name(), "err", err)
			continue
		}
		for id, st := range res {
			j := procs[id]
			if j == nil {
				continue
			}
			switch {
			case st.State == provider.Running:
				j.runOnce.Do(func() { close(j.running) })
			case st.State.Final():
				j.end(jobError(e.spec.prov, j.job, st))
			case st.Stuck:
				e.log.Error("a block's job can never start as asked; cancelling it", "block", j.job.Block, "job", id, "says", st.Message)
				cctx, ccancel := context.WithTimeout(e.ctx, time.Minute)
				_ = e.spec.prov.Cancel(cctx, []provider.Job{j.job})
				ccancel()
				j.end(jobError(e.spec.prov, j.job, st))
			}
		}
	}
}

// elastic reports whether the strategy runs the blocks.
func (e *Executor) elastic() bool { return e.scaling.Max > 0 }

// initScaling applies Scaling's defaults; Max stays 0 when the strategy is
// off.
func initScaling(opt Options) Scaling {
	s := opt.Scaling
	if opt.Provider == nil && s.Max <= 1 && s.Min <= 1 && s.Init <= 1 {
		return Scaling{PollInterval: DefaultPollInterval}
	}
	s.Min = max(s.Min, 0)
	if s.Init <= 0 {
		s.Init = max(1, s.Min)
	}
	if s.Max <= 0 {
		s.Max = max(s.Init, s.Min, 1)
	}
	s.Init = min(max(s.Init, s.Min), s.Max)
	s.Min = min(s.Min, s.Max)
	if s.IdleTimeout == 0 {
		s.IdleTimeout = DefaultIdleTimeout
	}
	if s.Interval <= 0 {
		s.Interval = DefaultScaleInterval
	}
	if s.PollInterval <= 0 {
		s.PollInterval = DefaultPollInterval
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	return s
}

// startElastic asks for the strategy's initial blocks and starts the
// strategy (and, with a provider, the job watcher). Start returns at once:
// tasks wait until blocks connect.
func (e *Executor) startElastic() {
	e.mu.Lock()
	n := e.scaling.Init
	e.starting += n
	e.bg.Add(n)
	e.mu.Unlock()
	for range n {
		go e.scaleOut()
	}
	e.bg.Add(1)
	go e.strategy()
	if e.spec.prov != nil {
		e.bg.Add(1)
		go e.watchJobs()
	}
}

// strategy runs scaleStep every Interval until the executor closes.
func (e *Executor) strategy() {
	defer e.bg.Done()
	t := time.NewTicker(e.scaling.Interval)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		e.scaleStep()
	}
}

// slotsPerBlock is the task slots a block brings: its workers, as it said
// in its Hello, or for one still starting the ranks it was launched with
// but one.
func (e *Executor) slotsPerBlock() int {
	return max(e.spec.np-1, 1)
}

// scaleStep is one decision of the strategy: scale out, keep Min, or drain
// idle blocks.
func (e *Executor) scaleStep() {
	s := e.scaling
	now := s.Now()
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return
	}
	active, slots := 0, 0
	var idle []*block
	for _, b := range e.blocks {
		if b.draining {
			continue
		}
		active++
		if b.hello != nil && b.hello.Workers > 0 {
			slots += int(b.hello.Workers)
		} else {
			slots += e.slotsPerBlock()
		}
		if len(b.inflight) == 0 && !b.idleSince.IsZero() && s.IdleTimeout > 0 && now.Sub(b.idleSince) >= s.IdleTimeout {
			idle = append(idle, b)
		}
	}
	total := active + e.starting
	queued := len(e.ready) - e.readyHead
	work := queued + int(e.stats.InFlight)
	want := 0
	if e.scaleErr == nil {
		switch per := e.slotsPerBlock(); {
		case total < s.Min:
			want = s.Min - total
		case queued > 0 && work > slots+e.starting*per && total < s.Max:
			want = min((work-slots-e.starting*per+per-1)/per, s.Max-total)
		}
	}
	e.starting += want
	e.bg.Add(want)
	var drain []*block
	if queued == 0 && want == 0 {
		for _, b := range idle {
			if active <= s.Min {
				break
			}
			b.draining = true
			active--
			drain = append(drain, b)
		}
	}
	e.mu.Unlock()
	for range want {
		go e.scaleOut()
	}
	for _, b := range drain {
		e.log.Info("scaling in: draining an idle block", "block", b.name, "idle", now.Sub(b.idleSince).Round(time.Millisecond))
		b.sendMu.Lock()
		err := b.conn.Send(&serialize.Shutdown{Reason: "scaled in: idle"})
		b.sendMu.Unlock()
		if err != nil {
			e.blockLost(b, fmt.Errorf("drain: %w", err))
		}
	}
}

// scaleOut starts one block for the strategy (e.starting and e.bg count
// it already). A failed start counts against the restart budget.
func (e *Executor) scaleOut() {
	defer e.bg.Done()
	e.mu.Lock()
	if e.closing {
		e.starting--
		e.mu.Unlock()
		return
	}
	e.nextBlock++
	name := "b" + fmt.Sprint(e.nextBlock-1)
	e.mu.Unlock()
	b, err := e.startBlock(e.ctx, name)
	e.mu.Lock()
	e.starting--
	switch {
	case err == nil && !e.closing:
		e.mu.Unlock()
		e.serve(b)
		e.log.Info("block connected", "block", name, "workers", b.hello.Workers, "host", b.hello.Host)
		e.wake()
		return
	case err == nil: // closing meanwhile: nothing will use it
		e.mu.Unlock()
		_ = b.conn.Close()
		_ = b.proc.Stop(stopGrace)
		return
	case e.closing:
		e.mu.Unlock()
		return
	}
	e.log.Error("a block failed to start", "block", name, "err", err)
	e.blockFailed(err)
	e.mu.Unlock()
}

// blockFailed counts a block that failed to start or was lost against the
// restart budget; past it the strategy asks for no more blocks, and with
// none left the executor breaks. Called with e.mu held.
func (e *Executor) blockFailed(err error) {
	e.failures++
	if e.failures > e.restartBudget && e.scaleErr == nil {
		e.scaleErr = fmt.Errorf("frontend: %d blocks failed to start or were lost, more than BlockRestarts (%d) allows; no more are asked for; the last: %w", e.failures, e.restartBudget, err)
		e.log.Error("giving up on blocks", "err", e.scaleErr)
	}
	if e.scaleErr != nil && len(e.blocks) == 0 && e.starting == 0 {
		e.breakDown(e.scaleErr)
	}
}

// Err reports why the executor cannot run tasks any more: no block is left
// and none is coming, or the blocks failed more often than BlockRestarts
// allows (the error then carries the batch system's own words). It is nil
// while the executor can run tasks.
func (e *Executor) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.scaleErr != nil {
		return e.scaleErr
	}
	return e.broken
}

// now is the strategy's clock; time.Now when the strategy is off.
func (s Scaling) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// fmtErr prefixes a launch error with the package's name.
func fmtErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("frontend: %w", err)
}
