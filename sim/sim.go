// Package sim runs rankfarm's real scheduler on a virtual clock: the very
// rankpool.Relay and rankpool.Worker state machines that serve an mpirun
// block, placed by the same rankpool.Topology, driven by a discrete-event
// loop instead of MPI, so that a block of a million workers can be studied on
// one machine.
//
// There is no goroutine per rank: every rank is its state machine plus a few
// words of simulator state, and an event heap orders message arrivals,
// message handling and task completions in virtual time. A synthetic front
// end above rank 0 sends tasks as fast as rank 0's credit allows and checks
// that every task comes back exactly once.
//
// # The cost model
//
// Each rank handles one thing at a time, like the one goroutine of a real
// rank that owns all its MPI calls (LogGP without the gap). A message of B
// bytes (its exact uncompressed wire size) costs its sender Overhead +
// B×PerByte of busy time, travels Latency, and costs its receiver Overhead +
// B×PerByte again. A rank takes all messages that have reached it while it
// was busy in one round, as rankpool.Run does, and only then asks its state
// machine what to send. A worker's task runs beside its message handling, on
// its slot, for a time drawn from the task-time distribution. The front end
// is one more such rank above rank 0, which sends tasks as soon as it holds
// credit for them and has no other work.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rankfarm/rankfarm/rankpool"
	"github.com/rankfarm/rankfarm/serialize"
)

// The default cost model, which `rankfarm sim` starts from: an HPC
// interconnect (2 µs latency, 10 GB/s) and a microsecond of CPU per message
// at each end. The Go codec on a slow core costs more per byte (2 to 10 ns);
// PerByte is the knob for that.
const (
	DefaultLatency  = 2 * time.Microsecond
	DefaultOverhead = time.Microsecond
	DefaultPerByte  = 0.1 // ns
)

// Dist is a distribution of task run times.
type Dist uint8

// Task time distributions; each has mean Config.TaskTime.
const (
	// DistConstant gives every task exactly the mean.
	DistConstant Dist = iota
	// DistExponential draws from the exponential distribution.
	DistExponential
	// DistLognormal draws from the log-normal distribution with shape
	// Config.Sigma.
	DistLognormal
)

// String returns the distribution's name, as ParseDist takes it.
func (d Dist) String() string {
	switch d {
	case DistConstant:
		return "constant"
	case DistExponential:
		return "exponential"
	case DistLognormal:
		return "lognormal"
	}
	return fmt.Sprintf("Dist(%d)", uint8(d))
}

// ParseDist returns the distribution named s: constant, exponential or
// lognormal.
func ParseDist(s string) (Dist, error) {
	for _, d := range []Dist{DistConstant, DistExponential, DistLognormal} {
		if s == d.String() {
			return d, nil
		}
	}
	return 0, fmt.Errorf("sim: unknown task time distribution %q (want constant, exponential or lognormal)", s)
}

// Config describes one simulated run. Zero values mean the defaults noted.
type Config struct {
	// Workers is the number of worker ranks; the world holds them plus the
	// scheduler and the sub-masters the tree needs. Default 1.
	Workers int
	// Ranks, when positive, fixes the world size instead (as mpirun -np
	// does), and Workers is ignored.
	Ranks int
	// RanksPerNode puts consecutive ranks on nodes of this many; 0 means one
	// node.
	RanksPerNode int
	// Fanout bounds the children of a rank; 0 means rankpool.DefaultFanout.
	Fanout int
	// Tasks is the number of tasks to run.
	Tasks int
	// TaskTime is the mean run time of a task; 0 makes no-op tasks.
	TaskTime time.Duration
	// Dist is the distribution of run times.
	Dist Dist
	// Sigma is the shape of the log-normal distribution; default 1.
	Sigma float64
	// Latency is a message's time in flight.
	Latency time.Duration
	// Overhead is the busy time a message costs its sender and its receiver.
	Overhead time.Duration
	// PerByte is the busy time one byte costs its sender and its receiver, in
	// nanoseconds (fractions allowed).
	PerByte float64
	// App is the tasks' app name; default "noop". ArgBytes and ValueBytes
	// are the sizes of a task's arguments and of its result's value.
	App                  string
	ArgBytes, ValueBytes int
	// Pool tunes the state machines as it tunes a real block.
	Pool rankpool.Config
	// Seed seeds the task time draws: a run is a pure function of its
	// Config.
	Seed uint64
	// PerWorker asks for Report.TasksPerWorker.
	PerWorker bool
}

func (c Config) withDefaults() Config {
	c.Workers = max(c.Workers, 1)
	if c.Sigma <= 0 {
		c.Sigma = 1
	}
	if c.App == "" {
		c.App = "noop"
	}
	return c
}

func (c Config) check() error {
	switch {
	case c.Workers < 0 || c.Ranks < 0 || c.Tasks < 0 || c.RanksPerNode < 0 || c.Fanout < 0:
		return errors.New("sim: counts must not be negative")
	case c.TaskTime < 0 || c.Latency < 0 || c.Overhead < 0 || c.PerByte < 0 || math.IsNaN(c.PerByte) || math.IsInf(c.PerByte, 0):
		return errors.New("sim: times and costs must not be negative")
	case c.ArgBytes < 0 || c.ValueBytes < 0 || c.ArgBytes > 1<<20 || c.ValueBytes > 1<<20:
		return errors.New("sim: argument and value sizes must be from 0 to 1 MiB")
	case c.Workers > 1<<27 || c.Ranks > 1<<27:
		return fmt.Errorf("sim: %d workers or ranks is more than the %d this simulator takes", max(c.Workers, c.Ranks), 1<<27)
	case c.Tasks > 1<<34:
		return fmt.Errorf("sim: %d tasks is more than the %d this simulator takes", c.Tasks, int64(1)<<34)
	case c.Dist > DistLognormal:
		return fmt.Errorf("sim: unknown distribution %v", c.Dist)
	}
	return nil
}

// Report is what a run measured. Times are virtual seconds unless named
// wall; rates are per second of virtual time over the makespan.
type Report struct {
	Workers    int     `json:"workers"`
	Ranks      int     `json:"ranks"`
	SubMasters int     `json:"sub_masters"`
	Nodes      int     `json:"nodes"`
	Fanout     int     `json:"fanout"`
	Depth      int     `json:"depth"`
	Tasks      int     `json:"tasks"`
	TaskTime   float64 `json:"task_seconds"`
	Dist       string  `json:"task_dist"`

	// Makespan runs from the start (every rank announces its credit) to the
	// front end's receipt of the last result. Ideal is a lower bound on it:
	// ceil(tasks/slots)×task time for constant tasks, else the larger of the
	// total work per slot and the longest task. Efficiency is Ideal/Makespan.
	Makespan   float64 `json:"makespan_s"`
	Ideal      float64 `json:"ideal_s"`
	Efficiency float64 `json:"efficiency"`
	// Utilization is the share of worker slot time spent running tasks
	// from the start to the moment the last task started: while work was
	// still waiting, so every idle slot there is the scheduler's doing.
	// UtilizationMakespan is the same share over the whole makespan, which
	// also counts the slots that ran out of work at the end: it cannot
	// exceed tasks/(ceil(tasks/slots)×slots), 0.954 for 10⁷ tasks on 2²⁰
	// workers, however good the scheduler.
	Utilization         float64 `json:"utilization"`
	UtilizationMakespan float64 `json:"utilization_makespan"`
	Throughput          float64 `json:"tasks_per_s"`
	// TasksPerWorkerMin and Max are the fewest and most tasks one worker
	// ran.
	TasksPerWorkerMin int `json:"tasks_per_worker_min"`
	TasksPerWorkerMax int `json:"tasks_per_worker_max"`

	// Rank 0: messages and bytes it sent and received, per second; Busy is
	// the share of the makespan it was busy; Capacity is tasks per second
	// of its busy time: the throughput at which rank 0 would be the
	// bottleneck.
	Rank0Msgs     float64 `json:"rank0_msgs_per_s"`
	Rank0Bytes    float64 `json:"rank0_bytes_per_s"`
	Rank0Busy     float64 `json:"rank0_busy"`
	Rank0Capacity float64 `json:"rank0_capacity_tasks_per_s"`
	// The sub-master that handled the most messages, and its figures.
	BusiestSubMaster      int     `json:"busiest_submaster_rank"`
	BusiestSubMasterMsgs  float64 `json:"busiest_submaster_msgs_per_s"`
	BusiestSubMasterBytes float64 `json:"busiest_submaster_bytes_per_s"`
	BusiestSubMasterBusy  float64 `json:"busiest_submaster_busy"`

	// The deepest queues: tasks waiting in one worker, tasks a relay held
	// beyond its children's credit (sampled), messages waiting for one
	// rank.
	MaxWorkerQueue  int `json:"max_worker_queue"`
	MaxRelayBacklog int `json:"max_relay_backlog"`
	MaxInbox        int `json:"max_inbox"`

	Messages int64   `json:"messages"`
	Bytes    int64   `json:"bytes"`
	Events   int64   `json:"events"`
	Shutdown float64 `json:"shutdown_s"`

	Latency  float64 `json:"latency_s"`
	Overhead float64 `json:"overhead_s"`
	PerByte  float64 `json:"per_byte_s"`

	PeakRSS int64   `json:"peak_rss_bytes"`
	Wall    float64 `json:"wall_s"`

	// TasksPerWorker is how many tasks each worker ran, by rank (relays
	// hold 0); only with Config.PerWorker.
	TasksPerWorker []int `json:"-"`
}

// WorldFor returns the smallest tree with at least workers workers (exactly
// workers, since adding a rank adds at most one worker) on nodes of
// ranksPerNode ranks (0: one node) with the given fan-out.
func WorldFor(workers, ranksPerNode, fanout int) (*rankpool.Topology, error) {
	workers = max(workers, 1)
	lo, hi := workers, 2*workers+2 // hi always holds enough workers
	for lo < hi {
		mid := lo + (hi-lo)/2
		t, err := rankpool.NewTopologyUniform(mid, ranksPerNode, fanout)
		if err != nil {
			return nil, err
		}
		if t.Workers() >= workers {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return rankpool.NewTopologyUniform(lo, ranksPerNode, fanout)
}

// epoch is the Unix time of virtual time 0, so that Result.Start and End
// look like (and cost as many bytes as) real timestamps.
const epoch = int64(1_700_000_000) * int64(time.Second)

const upstream = int32(rankpool.Upstream)

// rankState is the simulator's part of one rank.
type rankState struct {
	busyUntil int64               // the rank is busy until then
	inbox     []rankpool.Envelope // messages that reached it and wait
	relay     int32               // index in sim.relays, or -1 for a worker
	scheduled bool                // a wake is scheduled
}

// relayState is a relay and its counters.
type relayState struct {
	r          *rankpool.Relay
	rank       int32
	msgs       int64 // sent and received
	bytes      int64
	busy       int64 // ns
	wakes      int64
	maxBacklog int
}

type sim struct {
	cfg  Config
	pool rankpool.Config
	topo *rankpool.Topology
	ctx  context.Context

	now     int64
	events  eventHeap
	ranks   []rankState        // by rank, then the front end
	fe      int32              // the front end's index in ranks
	workers []*rankpool.Worker // by rank; nil for relays
	relays  []relayState
	out     []rankpool.Envelope
	rng     *rand.Rand
	perByte float64
	// maxBatchBytes bounds the argument bytes of one front-end batch, as
	// Pool.MaxBatchBytes bounds a relay's.
	maxBatchBytes int
	args          []byte // every task's arguments
	value         []byte // every result's value

	// The front end.
	feCredit     int
	feNext       uint64
	feGot        int
	feSeen       []uint64 // bitset of task IDs resolved
	shutdownSent bool
	shutdownAck  int64 // when the acknowledgement arrived; -1 before
	makespan     int64
	counting     bool // before the last result: count messages

	// Workers.
	running        int64 // slots busy now
	runIntegral    float64
	runLast        int64
	satIntegral    float64 // runIntegral when the last task started
	lastStart      int64
	sumDur, maxDur int64
	perWorker      []int32 // tasks run, by rank
	maxQueue       int
	maxInbox       int

	messages, bytes, nevents int64
	err                      error
}

// Run simulates cfg and reports what it measured. It returns early with
// ctx's error when ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	wallStart := time.Now()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var topo *rankpool.Topology
	var err error
	if cfg.Ranks > 0 {
		topo, err = rankpool.NewTopologyUniform(cfg.Ranks, cfg.RanksPerNode, cfg.Fanout)
	} else {
		topo, err = WorldFor(cfg.Workers, cfg.RanksPerNode, cfg.Fanout)
	}
	if err != nil {
		return nil, fmt.Errorf("sim: build the tree: %w", err)
	}
	s := newSim(ctx, cfg, topo)
	if err := s.loop(); err != nil {
		return nil, err
	}
	rep := s.report()
	rep.PeakRSS = PeakRSS()
	rep.Wall = time.Since(wallStart).Seconds()
	return rep, nil
}

func newSim(ctx context.Context, cfg Config, topo *rankpool.Topology) *sim {
	size := topo.Size()
	s := &sim{
		cfg:         cfg,
		pool:        cfg.Pool,
		topo:        topo,
		ctx:         ctx,
		ranks:       make([]rankState, size+1),
		fe:          int32(size),
		workers:     make([]*rankpool.Worker, size),
		rng:         rand.New(rand.NewPCG(cfg.Seed, 0x5151)),
		perByte:     cfg.PerByte,
		feSeen:      make([]uint64, (cfg.Tasks+63)/64),
		shutdownAck: -1,
		counting:    true,
	}
	s.pool.Slots = max(s.pool.Slots, rankpool.DefaultSlots)
	if s.pool.MaxBatch <= 0 {
		s.pool.MaxBatch = rankpool.DefaultMaxBatch
	}
	s.maxBatchBytes = s.pool.MaxBatchBytes
	if s.maxBatchBytes <= 0 {
		s.maxBatchBytes = rankpool.DefaultMaxBatchBytes
	}
	if cfg.ArgBytes > 0 {
		s.args = make([]byte, cfg.ArgBytes)
	}
	if cfg.ValueBytes > 0 {
		s.value = make([]byte, cfg.ValueBytes)
	}
	s.perWorker = make([]int32, size)
	nrelays := size - topo.Workers()
	s.relays = make([]relayState, 0, nrelays)
	for r := range size {
		p := topo.Place(r)
		if p.Role.IsRelay() {
			s.ranks[r].relay = int32(len(s.relays))
			s.relays = append(s.relays, relayState{r: rankpool.NewRelay(p, cfg.Pool), rank: int32(r)})
		} else {
			s.ranks[r].relay = -1
			s.workers[r] = rankpool.NewWorker(p, cfg.Pool)
		}
	}
	s.ranks[s.fe].relay = -1
	return s
}

// loop runs the simulation to the end of the shutdown.
func (s *sim) loop() error {
	// Every rank announces what it has at time 0: the workers their credit.
	for r := range s.fe {
		s.flush(r, 0)
	}
	if s.cfg.Tasks == 0 {
		s.feSend(0)
	}
	for s.events.len() > 0 && s.err == nil {
		e := s.events.pop()
		s.now = e.at
		s.nevents++
		if s.nevents&0xffff == 0 {
			if err := s.ctx.Err(); err != nil {
				return fmt.Errorf("sim: stopped at %.3f s of virtual time: %w", float64(s.now)/1e9, err)
			}
		}
		switch e.kind {
		case evArrive:
			s.arrive(e)
		case evWake:
			s.wake(e.to)
		case evFinish:
			s.finish(e)
		}
	}
	switch {
	case s.err != nil:
		return s.err
	case s.feGot != s.cfg.Tasks:
		return fmt.Errorf("sim: the run stalled with %d of %d results at %.6f s", s.feGot, s.cfg.Tasks, float64(s.now)/1e9)
	case s.shutdownAck < 0:
		return errors.New("sim: the tree never acknowledged the shutdown")
	}
	return nil
}

func (s *sim) cost(bytes int) int64 {
	return int64(s.cfg.Overhead) + int64(float64(bytes)*s.perByte)
}

// arrive puts a message into its receiver's inbox and wakes the receiver
// once it is free. A free worker takes it at once: it has one sender, so
// there is nothing to gather first.
func (s *sim) arrive(e event) {
	to := e.to
	if to == upstream {
		to = s.fe
	}
	rs := &s.ranks[to]
	if to != s.fe && s.workers[to] != nil && !rs.scheduled && rs.busyUntil <= s.now {
		w := s.workers[to]
		c := s.cost(wireSize(e.msg))
		w.Step(rankpool.Envelope{From: int(e.from), To: int(e.to), Msg: e.msg})
		s.maxQueue = max(s.maxQueue, w.Queued())
		s.startTasks(to, w, s.now+c)
		s.flush(to, s.now+c)
		return
	}
	rs.inbox = append(rs.inbox, rankpool.Envelope{From: int(e.from), To: int(e.to), Msg: e.msg})
	s.maxInbox = max(s.maxInbox, len(rs.inbox))
	s.schedule(to)
}

// schedule makes sure rank r wakes when it is next free.
func (s *sim) schedule(r int32) {
	rs := &s.ranks[r]
	if !rs.scheduled {
		rs.scheduled = true
		s.events.push(event{at: max(s.now, rs.busyUntil), kind: evWake, to: r})
	}
}

// wake lets rank r take every message that waits for it, then send.
func (s *sim) wake(r int32) {
	rs := &s.ranks[r]
	rs.scheduled = false
	t := s.now
	if r == s.fe {
		for i := range rs.inbox {
			t += s.cost(wireSize(rs.inbox[i].Msg))
			s.feReceive(rs.inbox[i].Msg)
			rs.inbox[i] = rankpool.Envelope{}
		}
		rs.inbox = rs.inbox[:0]
		rs.busyUntil = s.feSend(t)
		return
	}
	w := s.workers[r]
	for i := range rs.inbox {
		e := rs.inbox[i]
		rs.inbox[i] = rankpool.Envelope{}
		n := wireSize(e.Msg)
		c := s.cost(n)
		t += c
		if w != nil {
			w.Step(e)
		} else {
			rl := &s.relays[rs.relay]
			rl.r.Step(e)
			if s.counting {
				rl.msgs++
				rl.bytes += int64(n)
				rl.busy += c
			}
		}
	}
	rs.inbox = rs.inbox[:0]
	if w != nil {
		s.maxQueue = max(s.maxQueue, w.Queued())
		s.startTasks(r, w, t)
	}
	s.flush(r, t)
}

// flush sends what rank r's state machine has to send, from time t on.
func (s *sim) flush(r int32, t int64) {
	rs := &s.ranks[r]
	var rl *relayState
	if w := s.workers[r]; w != nil {
		s.out = w.Ready(s.out[:0])
	} else {
		rl = &s.relays[rs.relay]
		s.out = rl.r.Ready(s.out[:0])
		rl.wakes++
		if rl.wakes&63 == 1 {
			rl.maxBacklog = max(rl.maxBacklog, rl.r.Stats().Backlog)
		}
	}
	for i, e := range s.out {
		s.out[i] = rankpool.Envelope{}
		n := wireSize(e.Msg)
		c := s.cost(n)
		t += c
		if s.counting {
			s.messages++
			s.bytes += int64(n)
			if rl != nil {
				rl.msgs++
				rl.bytes += int64(n)
				rl.busy += c
			}
		}
		s.events.push(event{at: t + int64(s.cfg.Latency), kind: evArrive, to: int32(e.To), from: r, msg: e.Msg})
	}
	rs.busyUntil = max(rs.busyUntil, t)
}

// startTasks starts the tasks worker w has a slot and a task for, at t.
func (s *sim) startTasks(r int32, w *rankpool.Worker, t int64) {
	for {
		task, ok := w.Next()
		if !ok {
			return
		}
		d := s.draw()
		s.advanceRunning(t)
		s.running++
		s.satIntegral = s.runIntegral
		s.lastStart = t
		s.events.push(event{at: t + d, kind: evFinish, to: r, id: task.ID, start: t})
	}
}

// advanceRunning integrates the number of busy slots up to t. Starts and
// finishes happen in time order, so t never goes back.
func (s *sim) advanceRunning(t int64) {
	s.runIntegral += float64(s.running) * float64(t-s.runLast)
	s.runLast = t
}

func (s *sim) draw() int64 {
	mean := float64(s.cfg.TaskTime)
	switch s.cfg.Dist {
	case DistExponential:
		return int64(mean * s.rng.ExpFloat64())
	case DistLognormal:
		sg := s.cfg.Sigma
		return int64(math.Exp(math.Log(mean) - sg*sg/2 + sg*s.rng.NormFloat64()))
	}
	return int64(s.cfg.TaskTime)
}

// finish ends a task on its worker, starts the next and sends the result as
// soon as the worker is free.
func (s *sim) finish(e event) {
	w := s.workers[e.to]
	s.advanceRunning(s.now)
	s.running--
	d := s.now - e.start
	s.sumDur += d
	s.maxDur = max(s.maxDur, d)
	s.perWorker[e.to]++
	w.Finished(serialize.Result{ID: e.id, Value: s.value, Rank: e.to, Start: epoch + e.start, End: epoch + s.now})
	s.startTasks(e.to, w, s.now)
	rs := &s.ranks[e.to]
	if !rs.scheduled && rs.busyUntil <= s.now {
		s.flush(e.to, s.now)
		return
	}
	s.schedule(e.to)
}

// feReceive is the front end taking a message from rank 0.
func (s *sim) feReceive(m serialize.Message) {
	switch m := m.(type) {
	case *serialize.Credit:
		s.feCredit += int(m.N)
	case *serialize.ResultBatch:
		s.feCredit += int(m.Credit)
		for i := range m.Results {
			id := m.Results[i].ID
			if id >= uint64(s.cfg.Tasks) {
				s.err = fmt.Errorf("sim: a result for task %d, which was never sent", id)
				return
			}
			word, bit := id/64, uint64(1)<<(id%64)
			if s.feSeen[word]&bit != 0 {
				s.err = fmt.Errorf("sim: task %d resolved twice", id)
				return
			}
			s.feSeen[word] |= bit
			s.feGot++
		}
	case *serialize.Shutdown:
		s.shutdownAck = s.now
	}
}

// feSend sends, from time t on, the tasks rank 0 has credit for, or the
// shutdown once every result is in, and returns when the front end is done
// sending.
func (s *sim) feSend(t int64) int64 {
	send := func(m serialize.Message) {
		n := wireSize(m)
		t += s.cost(n)
		if s.counting {
			s.messages++
			s.bytes += int64(n)
		}
		s.events.push(event{at: t + int64(s.cfg.Latency), kind: evArrive, to: 0, from: upstream, msg: m})
	}
	if s.feGot == s.cfg.Tasks {
		if !s.shutdownSent {
			s.shutdownSent = true
			s.makespan = t
			s.counting = false
			send(&serialize.Shutdown{Reason: "simulation done"})
		}
		return t
	}
	for s.feCredit > 0 && s.feNext < uint64(s.cfg.Tasks) {
		k := min(s.feCredit, s.cfg.Tasks-int(s.feNext), s.pool.MaxBatch)
		if s.cfg.ArgBytes > 0 {
			k = max(1, min(k, s.maxBatchBytes/s.cfg.ArgBytes))
		}
		ts := make([]serialize.Task, k)
		for i := range ts {
			ts[i] = serialize.Task{ID: s.feNext, App: s.cfg.App, Args: s.args}
			s.feNext++
		}
		s.feCredit -= k
		send(&serialize.TaskBatch{Tasks: ts})
	}
	return t
}

func (s *sim) report() *Report {
	cfg := s.cfg
	slots := float64(s.pool.Slots)
	w := s.topo.Workers()
	sec := func(ns int64) float64 { return float64(ns) / 1e9 }
	span := sec(s.makespan)
	per := func(x int64) float64 {
		if span == 0 {
			return 0
		}
		return float64(x) / span
	}
	rep := &Report{
		Workers:        w,
		Ranks:          s.topo.Size(),
		SubMasters:     max(s.topo.Size()-w-1, 0),
		Nodes:          s.topo.Nodes(),
		Fanout:         s.topo.Fanout(),
		Depth:          s.topo.Depth(),
		Tasks:          cfg.Tasks,
		TaskTime:       cfg.TaskTime.Seconds(),
		Dist:           cfg.Dist.String(),
		Makespan:       span,
		Messages:       s.messages,
		Bytes:          s.bytes,
		Events:         s.nevents,
		Shutdown:       sec(s.shutdownAck),
		Latency:        cfg.Latency.Seconds(),
		Overhead:       cfg.Overhead.Seconds(),
		PerByte:        cfg.PerByte / 1e9,
		MaxWorkerQueue: s.maxQueue,
		MaxInbox:       s.maxInbox,
	}
	if s.topo.Size() == 1 {
		rep.SubMasters = 0
	}
	if cfg.Dist == DistConstant {
		rounds := math.Ceil(float64(cfg.Tasks) / (float64(w) * slots))
		rep.Ideal = rounds * cfg.TaskTime.Seconds()
	} else {
		rep.Ideal = max(sec(s.sumDur)/(float64(w)*slots), sec(s.maxDur))
	}
	if span > 0 {
		rep.Efficiency = rep.Ideal / span
		rep.UtilizationMakespan = sec(s.sumDur) / (float64(w) * slots * span)
		rep.Throughput = float64(cfg.Tasks) / span
	}
	if s.lastStart > 0 {
		rep.Utilization = s.satIntegral / (float64(w) * slots * float64(s.lastStart))
	}
	if len(s.relays) > 0 {
		r0 := s.relays[0] // rank 0 is the first relay
		rep.Rank0Msgs = per(r0.msgs)
		rep.Rank0Bytes = per(r0.bytes)
		if span > 0 {
			rep.Rank0Busy = sec(r0.busy) / span
		}
		if r0.busy > 0 {
			rep.Rank0Capacity = float64(cfg.Tasks) / sec(r0.busy)
		}
		busiest := -1
		for i := range s.relays {
			rep.MaxRelayBacklog = max(rep.MaxRelayBacklog, s.relays[i].maxBacklog)
			if i > 0 && (busiest < 0 || s.relays[i].msgs > s.relays[busiest].msgs) {
				busiest = i
			}
		}
		if busiest > 0 {
			b := s.relays[busiest]
			rep.BusiestSubMaster = int(b.rank)
			rep.BusiestSubMasterMsgs = per(b.msgs)
			rep.BusiestSubMasterBytes = per(b.bytes)
			if span > 0 {
				rep.BusiestSubMasterBusy = sec(b.busy) / span
			}
		} else {
			rep.BusiestSubMaster = -1
		}
	} else {
		rep.BusiestSubMaster = -1
	}
	minT, maxT := math.MaxInt, 0
	for r, n := range s.perWorker {
		if s.workers[r] != nil {
			minT, maxT = min(minT, int(n)), max(maxT, int(n))
		}
	}
	rep.TasksPerWorkerMin, rep.TasksPerWorkerMax = minT, maxT
	if cfg.PerWorker {
		rep.TasksPerWorker = make([]int, len(s.perWorker))
		for r, n := range s.perWorker {
			rep.TasksPerWorker[r] = int(n)
		}
	}
	return rep
}

// PeakRSS returns the process's peak resident set size in bytes (VmHWM), or
// 0 where /proc/self/status does not tell.
func PeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}
