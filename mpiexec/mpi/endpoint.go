package mpi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/rankfarm/rankfarm/internal/cloexec"
)

// Packet is one received message: its sender (Src, a rank of
// MPI_COMM_WORLD), its tag and its bytes.
type Packet struct {
	Src, Tag int
	Data     []byte
}

// Options tune an Endpoint. The zero value is ready to use.
type Options struct {
	// MaxIdleSleep is the longest an idle loop sleeps between two polls for
	// incoming messages: the worst added latency on a rank that has been idle
	// for a while, and the bound on its wake-ups (1/MaxIdleSleep per second).
	// Default 1ms.
	MaxIdleSleep time.Duration
	// Logger receives the few log records of the endpoint (start-up at Debug,
	// failed MPI calls at Error). Default slog.Default().
	Logger *slog.Logger
	// RecvBuffer is the capacity of the Recv channel. Messages that arrive
	// while it is full wait in an unbounded queue inside the endpoint, so a
	// slow consumer never stalls MPI progress. Default 1024.
	RecvBuffer int
	// MaxInFlight bounds the sends posted to MPI and not yet complete; more
	// wait in the endpoint's queue, in order. Default 1024.
	MaxInFlight int
	// Spin is how long the loop keeps polling, without sleeping, after its
	// last activity. It buys a few microseconds of latency for a core: worth
	// it only when every rank has a core of its own. Default 0 (a few
	// immediate re-polls, then sleeps).
	Spin time.Duration
	// NoDoorbells keeps the ranks of a node from waking each other: an idle
	// rank then notices a message only when its sleep ends. By default the
	// ranks of a node share a page of doorbells (see the package doc), and
	// a rank that sends to a sleeping neighbour wakes it.
	NoDoorbells bool
	// NoNetWake keeps ranks on other nodes from waking each other with a
	// datagram (see netwake.go): an idle rank then notices a message from
	// another host only when its sleep ends.
	NoNetWake bool
}

const (
	defaultMaxIdleSleep = time.Millisecond
	defaultRecvBuffer   = 1024
	defaultMaxInFlight  = 1024

	// minIdleSleep is the shortest sleep of an idle loop; later sleeps are
	// the time idle so far divided by sleepDivisor, up to MaxIdleSleep.
	minIdleSleep = 5 * time.Microsecond
	sleepDivisor = 8
	// spinRounds is how many empty rounds the loop runs at once, without
	// yielding, before it starts to sleep.
	spinRounds = 4
	// yieldEvery bounds how long the loop keeps its P without a
	// runtime.Gosched.
	yieldEvery = time.Millisecond
	// recvBatch bounds the messages received in one round, so sends still
	// progress under a flood of incoming messages.
	recvBatch = 256
)

func (o Options) withDefaults() Options {
	if o.MaxIdleSleep <= 0 {
		o.MaxIdleSleep = defaultMaxIdleSleep
	}
	if o.MaxIdleSleep < minIdleSleep {
		o.MaxIdleSleep = minIdleSleep
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RecvBuffer <= 0 {
		o.RecvBuffer = defaultRecvBuffer
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = defaultMaxInFlight
	}
	return o
}

// started makes Start once-only per process: MPI cannot be initialised twice.
var started atomic.Bool

// Endpoint is this process's MPI rank. One goroutine, locked to its OS thread,
// makes every MPI call (thread level MPI_THREAD_FUNNELED); the methods of an
// Endpoint are safe to call from any goroutine.
type Endpoint struct {
	opt Options
	log *slog.Logger

	// Set once at start-up, read-only afterwards.
	rank, size           int
	localRank, localSize int
	tagUB                int
	nodeOf               []int
	hosts                []string // at rank 0: the host name of each node

	recv  chan Packet
	done  chan struct{} // closed when the loop has finished (MPI finalised)
	w     *waker
	sends *sendSet // used by the loop only
	// bells maps the world ranks of this node to their doorbells (local
	// ranks); nil without shared doorbells. Read-only after start-up.
	bells map[int]int32
	// net wakes ranks of other nodes (nil in a world of one node); used
	// by the loop only after start-up.
	net *netWaker

	// signal tells the loop to look at the shared state below; sleeping is
	// true while the loop sleeps in the waker (see poke).
	signal   atomic.Bool
	sleeping atomic.Bool
	pending  atomic.Int64 // sends queued or in flight
	woken    atomic.Int64 // sleeping neighbours this rank's sends woke

	// The send queue is a lock-free stack that the loop takes whole: a Send
	// never blocks and never waits for the loop, and the loop never wakes a
	// goroutine by unlocking a mutex (a goroutine readied by the locked loop
	// lands on the loop's P, where it may wait a long time: see loop).
	queue     atomic.Pointer[sendNode]
	senders   atomic.Int64 // Sends between their closing check and their push
	closing   atomic.Bool
	aborting  atomic.Bool
	abortCode atomic.Int64

	// Set by the loop before done is closed.
	closeErr error
}

// Start initialises MPI on a new goroutine locked to its OS thread
// (MPI_Init_thread with MPI_THREAD_FUNNELED), splits the world by node and
// gathers the node map, then runs the endpoint's loop on that goroutine. It
// returns once all that is done, or with its error. Start and every step of
// it are collective: all ranks must call it.
//
// Right after MPI_Init, Start marks every descriptor of the process but
// stdin, stdout and stderr close-on-exec (close_range, or a walk of
// /proc/self/fd), so that a program the rank starts inherits none of the
// launcher's and the library's sockets and pipes.
//
// MPI can be initialised only once per process, so a second Start fails with
// ErrStarted. ctx bounds the wait for start-up: if it ends first, Start
// returns its error and the start-up, once it completes, is finalised again
// in the background. Built with the nompi tag, Start returns an error
// wrapping ErrNoMPI.
func Start(ctx context.Context, opt Options) (*Endpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mpi: start: %w", err)
	}
	if !started.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("mpi: start: %w", ErrStarted)
	}
	opt = opt.withDefaults()
	e := &Endpoint{
		opt:  opt,
		log:  opt.Logger,
		recv: make(chan Packet, opt.RecvBuffer),
		done: make(chan struct{}),
	}
	ready := make(chan error)
	abandon := make(chan struct{})
	go e.run(ready, abandon)
	select {
	case err := <-ready:
		if err != nil {
			return nil, fmt.Errorf("mpi: start: %w", err)
		}
		return e, nil
	case <-ctx.Done():
		close(abandon)
		return nil, fmt.Errorf("mpi: start: %w", ctx.Err())
	}
}

// Rank returns this process's rank in MPI_COMM_WORLD.
func (e *Endpoint) Rank() int { return e.rank }

// Size returns the number of ranks in MPI_COMM_WORLD.
func (e *Endpoint) Size() int { return e.size }

// NodeOf returns the node map: NodeOf()[r] is the node of rank r, a number
// from 0 to nodes-1 given in order of first appearance in rank order (rank
// 0's node is node 0). A node is a shared-memory domain as MPI sees it
// (MPI_COMM_TYPE_SHARED). The slice is shared: do not modify it.
func (e *Endpoint) NodeOf() []int { return e.nodeOf }

// Hosts returns, at rank 0, the host name of each node of the node map
// (MPI_Get_processor_name of its first rank): Hosts()[k] names node k. Other
// ranks get nil. The slice is shared: do not modify it.
func (e *Endpoint) Hosts() []string { return e.hosts }

// LocalRank returns this rank's index among the ranks of its node, in world
// rank order.
func (e *Endpoint) LocalRank() int { return e.localRank }

// LocalSize returns the number of ranks on this rank's node.
func (e *Endpoint) LocalSize() int { return e.localSize }

// Doorbells reports whether the ranks of this node share doorbells: then a
// send to a sleeping neighbour wakes it at once (see Options.NoDoorbells).
func (e *Endpoint) Doorbells() bool { return e.bells != nil }

// PeersWoken returns how many times this rank's sends woke a sleeping
// neighbour through its doorbell.
func (e *Endpoint) PeersWoken() int64 { return e.woken.Load() }

// TagUB returns the largest tag Send accepts (MPI_TAG_UB, at least 32767).
func (e *Endpoint) TagUB() int { return e.tagUB }

// Send queues data for dest with tag and returns at once; it never blocks.
// The endpoint owns data afterwards: the caller must not modify it (the bytes
// are handed to MPI without a copy). Messages from one rank to another
// arrive in the order they were sent. Send returns an error wrapping
// ErrInvalid for a bad destination, tag or length and one wrapping ErrClosed
// once Close or Abort has begun.
func (e *Endpoint) Send(dest, tag int, data []byte) error {
	switch {
	case dest < 0 || dest >= e.size:
		return fmt.Errorf("mpi: send to rank %d of %d: %w", dest, e.size, ErrInvalid)
	case tag < 0 || tag > e.tagUB:
		return fmt.Errorf("mpi: send with tag %d (allowed 0..%d): %w", tag, e.tagUB, ErrInvalid)
	case len(data) > MaxMessage:
		return fmt.Errorf("mpi: send of %d bytes (at most %d): %w", len(data), MaxMessage, ErrInvalid)
	}
	// senders lets Close know when no Send that missed the closing flag
	// is still pushing (see loopState.finished).
	e.senders.Add(1)
	if e.closing.Load() || e.aborting.Load() {
		e.senders.Add(-1)
		return fmt.Errorf("mpi: send to rank %d: %w", dest, ErrClosed)
	}
	n := &sendNode{out: outgoing{dest: dest, tag: tag, data: data}}
	for {
		n.next = e.queue.Load()
		if e.queue.CompareAndSwap(n.next, n) {
			break
		}
	}
	e.pending.Add(1)
	e.senders.Add(-1)
	e.poke()
	return nil
}

// Recv returns the channel of every message received, in order per source.
// It is closed after MPI_Finalize. The consumer owns each Packet's Data.
func (e *Endpoint) Recv() <-chan Packet { return e.recv }

// Close stops accepting sends, waits until every queued and in-flight
// send has completed, then calls MPI_Finalize, closes the Recv channel and
// ends the MPI goroutine. Messages that arrive meanwhile are still received
// (a peer's send may need it to complete) and delivered while the Recv
// channel has room; the rest are dropped.
//
// MPI_Finalize is collective, so every rank must shut down, and a rank should
// do so only once no peer will send to it any more. If ctx ends first,
// Close returns an error wrapping ctx.Err() and the endpoint goes on trying
// in the background; a later Close may wait again. The error
// returned on success joins the first error of the loop's MPI calls, if any.
func (e *Endpoint) Close(ctx context.Context) error {
	e.closing.Store(true)
	e.poke()
	select {
	case <-e.done:
		return e.closeErr
	case <-ctx.Done():
		return fmt.Errorf("mpi: close not finished (%d sends queued or in flight): %w", e.pending.Load(), ctx.Err())
	}
}

// Done is closed once the endpoint has finalised MPI.
func (e *Endpoint) Done() <-chan struct{} { return e.done }

// Abort ends the whole MPI job with code: MPI_Abort(MPI_COMM_WORLD, code)
// runs on the MPI thread. It does not return; if MPI is already finalised
// (or MPI_Abort fails) the process exits with code.
func (e *Endpoint) Abort(code int) {
	e.abortCode.CompareAndSwap(0, int64(code))
	e.aborting.Store(true)
	e.poke()
	<-e.done
	os.Exit(code)
}

// poke tells the loop to look at the queue and flags, waking it if it
// sleeps. The loop sets sleeping before it checks signal and sleeps; poke
// sets signal before it checks sleeping; both are sequentially consistent
// atomics, so one of the two always sees the other and no wake-up is lost.
func (e *Endpoint) poke() {
	e.signal.Store(true)
	if e.sleeping.CompareAndSwap(true, false) {
		e.w.wake()
	}
}

// run is the MPI goroutine: start-up, then the loop.
func (e *Endpoint) run(ready chan<- error, abandon <-chan struct{}) {
	// The goroutine never unlocks: its thread holds MPI's state and ends
	// with it.
	runtime.LockOSThread()
	err := e.setup()
	if err != nil && errors.Is(err, ErrNoMPI) {
		started.Store(false) // MPI was never initialised: a retry may work
	}
	select {
	case ready <- err:
	case <-abandon:
		if err == nil {
			if ferr := Finalize(); ferr != nil {
				e.log.Error("mpi: finalize after abandoned start", "err", ferr)
			}
			e.w.close()
			e.sends.free()
		}
		return
	}
	if err != nil {
		return
	}
	e.loop()
}

func (e *Endpoint) setup() error {
	provided, err := Init(ThreadFunneled)
	if err != nil {
		return err
	}
	// The launcher's and the library's descriptors (PMIx and daemon
	// sockets, Hydra's PMI_FD and its proxy's pipes) are mostly inheritable:
	// a program this rank starts must get none of them.
	if err := cloexec.MarkAll(); err != nil {
		e.log.Warn("mpi: descriptors left inheritable by programs this rank starts", "err", err)
	}
	if provided < ThreadFunneled {
		e.log.Warn("mpi: library provides less than MPI_THREAD_FUNNELED; going on since one thread makes every MPI call",
			"provided", provided.String())
	}
	if e.rank, err = WorldRank(); err != nil {
		return err
	}
	if e.size, err = WorldSize(); err != nil {
		return err
	}
	if e.tagUB, err = TagUB(); err != nil {
		return err
	}
	var leader int
	if e.localRank, e.localSize, leader, err = NodeSplit(); err != nil {
		return err
	}
	leaders, err := AllgatherInt(leader)
	if err != nil {
		return err
	}
	e.nodeOf = nodeMap(leaders)
	if e.hosts, err = GatherHosts(e.rank, e.nodeOf); err != nil {
		return err
	}
	if e.w, err = newWaker(); err != nil {
		return err
	}
	if e.sends, err = newSendSet(e.opt.MaxInFlight); err != nil {
		return err
	}
	if e.localRank == 0 && !e.opt.NoDoorbells {
		if n := sweepBells(bellDir); n > 0 {
			e.log.Debug("mpi: removed doorbell pages left by dead blocks", "count", n)
		}
	}
	shared, err := e.w.setup(e.opt.NoDoorbells)
	if err != nil {
		return err
	}
	if shared {
		e.bells = localRanks(e.nodeOf, e.rank)
	}
	if e.net, err = e.setupNetWake(e.opt.NoNetWake); err != nil {
		return err
	}
	threadSetup()
	e.log.Debug("mpi: started", "rank", e.rank, "size", e.size, "local_rank", e.localRank,
		"local_size", e.localSize, "node", e.nodeOf[e.rank], "thread_level", provided.String(),
		"doorbells", shared, "net_wake", e.net != nil)
	return nil
}

// localRanks maps the world ranks on rank me's node to their local ranks
// (their index among the node's ranks in world rank order, as the node split
// numbers them).
func localRanks(nodeOf []int, me int) map[int]int32 {
	m := make(map[int]int32)
	for r, n := range nodeOf {
		if n == nodeOf[me] {
			m[r] = int32(len(m))
		}
	}
	return m
}

// nodeMap numbers the distinct leaders by first appearance in rank order.
func nodeMap(leaders []int) []int {
	ids := make(map[int]int)
	out := make([]int, len(leaders))
	for r, l := range leaders {
		id, ok := ids[l]
		if !ok {
			id = len(ids)
			ids[l] = id
		}
		out[r] = id
	}
	return out
}

// outgoing is a queued send.
type outgoing struct {
	dest, tag int
	data      []byte
}

// sendNode is an entry of the lock-free send stack.
type sendNode struct {
	next *sendNode
	out  outgoing
}

// loopState is the loop's own state, touched by no other goroutine.
type loopState struct {
	sends    *sendSet
	backlog  []outgoing // taken from the queue, not yet posted, in order
	head     int        // next backlog entry to post
	overflow []Packet   // received, waiting for room in the Recv channel
	closing  bool
	// delivered is set when a packet went into the Recv channel since the
	// loop last yielded its P.
	delivered bool
	// ring lists the doorbells (local ranks) of the node's ranks sent to in
	// this round, once each; rung marks them, indexed by local rank.
	ring     []int32
	rung     []bool
	firstErr error
	errs     int
}

func (e *Endpoint) loop() {
	st := loopState{sends: e.sends, rung: make([]bool, len(e.bells))}
	var idleSince time.Time // zero while active
	idleRounds := 0
	lastYield := time.Now()
	for rounds := 0; ; rounds++ {
		did := e.round(&st)
		if st.closing && e.finished(&st) {
			break
		}
		if did {
			idleSince, idleRounds = time.Time{}, 0
			if rounds%64 == 0 && time.Since(lastYield) > yieldEvery {
				runtime.Gosched()
				lastYield = time.Now()
			}
			continue
		}
		if idleRounds++; idleRounds <= spinRounds {
			continue
		}
		now := time.Now()
		if idleSince.IsZero() {
			idleSince = now
		}
		if now.Sub(idleSince) < e.opt.Spin {
			// Spinning keeps the P: let a consumer the loop readied run.
			if st.delivered {
				st.delivered = false
				runtime.Gosched()
				lastYield = time.Now()
			}
			continue
		}
		// Before sleeping, give up the P if a goroutine may be waiting on
		// it: one the loop readied (a Recv consumer), or any, now and then.
		if st.delivered || now.Sub(lastYield) > yieldEvery {
			st.delivered = false
			runtime.Gosched()
			now = time.Now()
			lastYield = now
		}
		// Sleep an eighth of the time idle so far: a message that arrives
		// after an idle time t waits at most about t/8 more. (Doubling
		// sleeps would let two ranks in a ping-pong drift to the longest
		// sleep: each waits about as long as the round trip takes.)
		sleep := min(max(minIdleSleep, now.Sub(idleSince)/sleepDivisor), e.opt.MaxIdleSleep)
		e.sleeping.Store(true)
		if !e.signal.Load() {
			e.w.wait(int64(sleep))
		}
		e.sleeping.Store(false)
	}
	e.finish(&st)
}

// take moves the sends queued by Send to the end of the backlog, in the
// order they were sent.
func (e *Endpoint) take(st *loopState) bool {
	top := e.queue.Swap(nil)
	if top == nil {
		return false
	}
	if st.head == len(st.backlog) {
		st.backlog, st.head = st.backlog[:0], 0
	}
	k := 0
	for n := top; n != nil; n = n.next {
		k++
	}
	st.backlog = slices.Grow(st.backlog, k)[:len(st.backlog)+k]
	i := len(st.backlog) - 1
	for n := top; n != nil; n = n.next {
		st.backlog[i] = n.out
		i--
	}
	return true
}

// finished reports whether, closing, the loop has nothing left to send. A
// Send that read closing as false has raised senders before the loop read
// closing as true, so once senders is back to 0 every such Send has pushed,
// and the take below sees it.
func (e *Endpoint) finished(st *loopState) bool {
	if e.senders.Load() != 0 {
		return false
	}
	e.take(st)
	return st.head == len(st.backlog) && st.sends.len() == 0
}

// round does one pass of work and reports whether it did anything.
func (e *Endpoint) round(st *loopState) (did bool) {
	if e.signal.Swap(false) {
		did = true
		st.closing = e.closing.Load()
		if e.aborting.Load() {
			code := int(e.abortCode.Load())
			e.log.Error("mpi: aborting the job", "rank", e.rank, "code", code)
			err := Abort(code)
			e.log.Error("mpi: MPI_Abort returned", "err", err)
			os.Exit(code)
		}
		e.take(st)
	}

	// Post queued sends while there is room in flight, then wake those
	// of the node's ranks sent to that sleep.
	for st.head < len(st.backlog) && !st.sends.full() {
		p := st.backlog[st.head]
		st.backlog[st.head] = outgoing{}
		st.head++
		if err := st.sends.post(p.data, p.dest, p.tag); err != nil {
			st.fail(e.log, "send", err)
			e.pending.Add(-1)
		} else if b, ok := e.bells[p.dest]; ok && !st.rung[b] {
			st.rung[b] = true
			st.ring = append(st.ring, b)
		} else if e.net != nil {
			e.net.sentTo(p.dest, time.Now())
		}
		did = true
	}
	if len(st.ring) > 0 {
		if n := e.w.ringPeers(st.ring); n > 0 {
			e.woken.Add(int64(n))
		}
		for _, b := range st.ring {
			st.rung[b] = false
		}
		st.ring = st.ring[:0]
	}

	// Complete sends.
	if st.sends.len() > 0 {
		n, err := st.sends.testsome()
		if err != nil {
			st.fail(e.log, "test", err)
		}
		if n > 0 {
			e.pending.Add(int64(-n))
			did = true
		}
	}

	// Hand waiting packets to the consumer.
	for len(st.overflow) > 0 {
		select {
		case e.recv <- st.overflow[0]:
			st.delivered = true
			st.overflow[0] = Packet{}
			st.overflow = st.overflow[1:]
			did = true
			continue
		default:
		}
		break
	}
	if len(st.overflow) == 0 {
		st.overflow = nil
	}

	// Receive what has arrived.
	for range recvBatch {
		m, s, found, err := Improbe(AnySource, AnyTag)
		if err != nil {
			st.fail(e.log, "probe", err)
			break
		}
		if !found {
			break
		}
		buf := make([]byte, s.Count)
		if err := Mrecv(&m, buf); err != nil {
			st.fail(e.log, "receive", err)
			continue
		}
		p := Packet{Src: s.Source, Tag: s.Tag, Data: buf}
		if e.net != nil {
			e.net.touch(s.Source, time.Now())
		}
		did = true
		if len(st.overflow) == 0 {
			select {
			case e.recv <- p:
				st.delivered = true
				continue
			default:
			}
		}
		st.overflow = append(st.overflow, p)
	}
	return did
}

// fail records an error of the loop; the first is returned by Close and
// logged, later ones are counted.
func (st *loopState) fail(log *slog.Logger, what string, err error) {
	st.errs++
	if st.firstErr == nil {
		st.firstErr = fmt.Errorf("mpi: %s: %w", what, err)
		log.Error("mpi: loop error (later ones are only counted)", "op", what, "err", err)
	}
}

// finish finalises MPI and ends the endpoint.
func (e *Endpoint) finish(st *loopState) {
	dropped := 0
	for _, p := range st.overflow {
		select {
		case e.recv <- p:
		default:
			dropped++
		}
	}
	if dropped > 0 {
		e.log.Warn("mpi: dropped received messages at close: the Recv channel was full", "count", dropped)
	}
	var errs []error
	if st.firstErr != nil {
		errs = append(errs, fmt.Errorf("%w (%d loop errors in all)", st.firstErr, st.errs))
	}
	st.sends.free()
	e.net.close()
	if err := Finalize(); err != nil {
		errs = append(errs, err)
	}
	e.w.close()
	e.closeErr = errors.Join(errs...)
	close(e.recv)
	close(e.done)
}
