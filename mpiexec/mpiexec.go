// Package mpiexec is the executor process: every rank of a block runs it.
// Main wires a rank to its role in the rank tree (rank 0 schedules and holds
// the link to the front end, sub-masters relay, workers run apps), moves the
// tree's messages over MPI, and runs the tasks with the apps registered in
// the program.
//
// A user's program calls Main first thing in main: when the front end has
// re-run the program under mpirun as a block, Main becomes the rank and never
// returns; otherwise it returns at once and the program goes on as the front
// end.
package mpiexec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/internal/qlink"
	"github.com/rankfarm/rankfarm/internal/registry"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/mpiexec/mpi"
	"github.com/rankfarm/rankfarm/rankpool"
	"github.com/rankfarm/rankfarm/serialize"
)

// Environment variables that start and tune an executor rank. A launcher
// sets them; the token travels only as a path (link.EnvTokenFile).
const (
	EnvExec     = "RANKFARM_EXEC"     // "1": this process is a rank of a block
	EnvSlots    = "RANKFARM_SLOTS"    // tasks a worker runs at once
	EnvPrefetch = "RANKFARM_PREFETCH" // credit per slot
	// EnvMaxPrefetch bounds the credit per slot that adaptive prefetch
	// grows to for short tasks.
	EnvMaxPrefetch = "RANKFARM_MAX_PREFETCH"
	EnvFanout      = "RANKFARM_FANOUT" // most children of one rank in the tree
	EnvLogLevel    = "RANKFARM_LOG"    // debug, info, warn or error
	// EnvSpin is how long an idle rank keeps polling MPI before it sleeps
	// (a Go duration, e.g. "50us"): lower latency for a core per rank.
	EnvSpin = "RANKFARM_SPIN"
	// EnvMaxSleep bounds an idle rank's sleep between two polls of MPI (a
	// Go duration; default 1ms).
	EnvMaxSleep = "RANKFARM_MAX_SLEEP"
	// EnvDoorbells set to "off" keeps the ranks of a node from waking each
	// other through shared doorbells (see mpi.Options.NoDoorbells); "on",
	// the default, uses them where /dev/shm allows.
	EnvDoorbells = "RANKFARM_DOORBELLS"
	// EnvNetWake set to "off" keeps ranks on different hosts from waking
	// each other with a datagram (see mpi.Options.NoNetWake); "on", the
	// default, uses them in a block of several nodes.
	EnvNetWake = "RANKFARM_NET_WAKE"
	// EnvFinalizeTimeout bounds a rank's MPI_Finalize once the block has
	// shut down (a Go duration; default 5s): past it the rank logs a
	// warning and exits with status 0, its work done. Debian's MPICH over
	// UCX 1.13's TCP transport can hang in MPI_Finalize for ever once
	// ranks on two hosts have talked; a block must still end.
	EnvFinalizeTimeout = "RANKFARM_FINALIZE_TIMEOUT"
	// EnvReconnectGrace is how long rank 0 dials the front end again after
	// their connection broke (a Go duration; the front end sets it).
	EnvReconnectGrace = "RANKFARM_RECONNECT_GRACE"
)

// Config is what one rank needs to know.
type Config struct {
	// Addr is the front end's host:port; rank 0 dials it.
	Addr string
	// TokenFile holds the run's secret token (0600).
	TokenFile string
	// Block names this block in the handshake.
	Block string
	// QueueDir, when set, makes rank 0 serve the shared-filesystem queue in
	// that directory instead of dialling Addr (RANKFARM_QUEUE).
	QueueDir string
	// Slots, Prefetch, MaxPrefetch and Fanout tune the tree; zero values
	// mean defaults (see rankpool.Config).
	Slots, Prefetch, MaxPrefetch, Fanout int
	// TLSFingerprint, when set, makes rank 0 speak TLS to the front end and
	// accept only the certificate with this SHA-256 fingerprint
	// (RANKFARM_TLS_FINGERPRINT).
	TLSFingerprint []byte
	// ReconnectGrace is how long rank 0 keeps dialling the front end again
	// after their connection broke before it shuts the block down; 0 means
	// no second try.
	ReconnectGrace time.Duration
	// Spin and MaxSleep tune the MPI progress loop's idling (see
	// mpi.Options); zero values mean its defaults.
	Spin, MaxSleep time.Duration
	// NoDoorbells turns the node's shared doorbells off (mpi.Options).
	NoDoorbells bool
	// NoNetWake turns the wake-up datagrams between hosts off
	// (mpi.Options).
	NoNetWake bool
	// FinalizeTimeout bounds MPI_Finalize at the end (see
	// EnvFinalizeTimeout); 0 means DefaultFinalizeTimeout.
	FinalizeTimeout time.Duration
	// PeerTimeout is how long rank 0 waits without a word from the front end
	// before it shuts the block down; 0 means 30 s.
	PeerTimeout time.Duration
	// Logger receives the rank's log lines; nil means stderr at warn level.
	Logger *slog.Logger
}

// ConfigFromEnv reads a Config from the environment a launcher set.
func ConfigFromEnv() (Config, error) {
	cfg := Config{
		Addr:      os.Getenv(link.EnvAddr),
		TokenFile: os.Getenv(link.EnvTokenFile),
		Block:     os.Getenv(link.EnvBlock),
		QueueDir:  os.Getenv(qlink.EnvQueue),
	}
	if s := os.Getenv(link.EnvTLSFingerprint); s != "" {
		fp, err := link.ParseFingerprint(s)
		if err != nil {
			return cfg, fmt.Errorf("mpiexec: %w", err)
		}
		cfg.TLSFingerprint = fp
	}
	for _, v := range []struct {
		env string
		dst *int
	}{{EnvSlots, &cfg.Slots}, {EnvPrefetch, &cfg.Prefetch}, {EnvMaxPrefetch, &cfg.MaxPrefetch}, {EnvFanout, &cfg.Fanout}} {
		s := os.Getenv(v.env)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1<<20 {
			return cfg, fmt.Errorf("mpiexec: %s=%q is not a count from 0 to %d", v.env, s, 1<<20)
		}
		*v.dst = n
	}
	for _, v := range []struct {
		env string
		dst *time.Duration
	}{{EnvSpin, &cfg.Spin}, {EnvMaxSleep, &cfg.MaxSleep}, {EnvReconnectGrace, &cfg.ReconnectGrace}, {EnvFinalizeTimeout, &cfg.FinalizeTimeout}} {
		s := os.Getenv(v.env)
		if s == "" {
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > time.Minute {
			return cfg, fmt.Errorf("mpiexec: %s=%q is not a duration from 0 to 1m", v.env, s)
		}
		*v.dst = d
	}
	switch s := os.Getenv(EnvDoorbells); s {
	case "", "on":
	case "off":
		cfg.NoDoorbells = true
	default:
		return cfg, fmt.Errorf("mpiexec: %s=%q: want on or off", EnvDoorbells, s)
	}
	switch s := os.Getenv(EnvNetWake); s {
	case "", "on":
	case "off":
		cfg.NoNetWake = true
	default:
		return cfg, fmt.Errorf("mpiexec: %s=%q: want on or off", EnvNetWake, s)
	}
	return cfg, nil
}

// Main makes this process a rank when a launcher started it as one (the
// environment has RANKFARM_EXEC=1): it serves the block and exits the
// process, never returning. Otherwise it returns at once. Call it first
// thing in main, after the apps are declared.
func Main() {
	if os.Getenv(EnvExec) != "1" {
		return
	}
	cfg, err := ConfigFromEnv()
	if err == nil {
		err = Run(context.Background(), cfg)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "rankfarm exec: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// LoggerFromEnv returns a stderr logger at the level RANKFARM_LOG names
// (warn by default), tagged with the rank.
func LoggerFromEnv() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(os.Getenv(EnvLogLevel))); err != nil {
		lvl = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// Run serves one rank of a block until the block shuts down: on the front
// end's request, on SIGTERM or SIGINT, or when the front end has been gone
// longer than the peer timeout.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = LoggerFromEnv()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dieWithParent()

	// The MPI progress loop keeps one locked thread, mostly asleep in a cgo
	// futex wait that holds its P until sysmon takes it back: one more P lets the
	// link, the role and the apps run meanwhile. Measured at np 2 on two
	// cores, it cuts rank 0's TCP receive from ~200 µs to ~45 µs and the
	// round trip from ~500 µs to ~300 µs.
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)

	ep, err := mpi.Start(ctx, mpi.Options{Logger: cfg.Logger, Spin: cfg.Spin, MaxIdleSleep: cfg.MaxSleep, NoDoorbells: cfg.NoDoorbells, NoNetWake: cfg.NoNetWake})
	if err != nil {
		return fmt.Errorf("mpiexec: start MPI: %w", err)
	}
	log := cfg.Logger.With("rank", ep.Rank())
	registry.SetMPIRun(familyLauncher)
	topo, err := rankpool.NewTopology(ep.Size(), ep.NodeOf(), cfg.Fanout)
	if err != nil {
		log.Error("no tree for this world; aborting the block", "err", err)
		ep.Abort(3)
		return fmt.Errorf("mpiexec: %w", err)
	}
	place := topo.Place(ep.Rank())
	// The task slots the block offers: its workers (not its sub-masters),
	// each running Slots tasks at once.
	slots := max(topo.Workers(), 1) * max(cfg.Slots, 1)
	tr := newTransport(ep, place.Rank)
	var hello serialize.Hello
	if place.Rank == 0 {
		hello = blockHello(cfg, ep, topo, slots)
		logLayout(log, &hello, topo)
	}

	if place.Rank == 0 && cfg.QueueDir != "" {
		// The shared-filesystem queue instead of TCP (see queue.go).
		conn, err := joinQueue(ctx, cfg, hello)
		if err != nil {
			log.Error("rank 0 cannot join the queue; aborting the block", "err", err)
			ep.Abort(3)
			return err
		}
		defer conn.Close()
		tr.upstream = conn
		go tr.pumpUpstream(ctx, conn, log)
		go tr.onSignal(ctx, log)
	} else if place.Rank == 0 {
		first, redial, err := dialFrontEnd(ctx, cfg, hello)
		var conn *link.Session
		if err == nil {
			conn, err = link.NewSession(first, cfg.ReconnectGrace, "front end", log)
		}
		if err != nil {
			log.Error("rank 0 cannot reach the front end; aborting the block", "err", err)
			ep.Abort(3)
			return err
		}
		go keepConnected(ctx, conn, redial, log)
		defer conn.Close()
		tr.upstream = conn
		go tr.pumpUpstream(ctx, conn, log)
		go tr.onSignal(ctx, log)
	} else {
		// Other ranks leave SIGTERM to rank 0's orderly shutdown; mpirun
		// kills them itself if that does not come.
		signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	}
	go tr.pumpMPI(ctx, log)

	rcfg := rankpool.Config{Slots: cfg.Slots, Prefetch: cfg.Prefetch, MaxPrefetch: cfg.MaxPrefetch}
	rank := place.Rank
	runner := func(ctx context.Context, t serialize.Task) serialize.Result {
		return registry.Default.Run(ctx, t, rank)
	}
	runErr := rankpool.Run(ctx, place, tr, runner, rcfg)
	tr.finished.Store(true) // the link's end from here on is expected
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		log.Error("rank stopped with an error; aborting the block", "err", runErr)
		ep.Abort(4)
		return runErr
	}
	fin := cfg.FinalizeTimeout
	if fin <= 0 {
		fin = DefaultFinalizeTimeout
	}
	closeCtx, closeCancel := context.WithTimeout(context.Background(), fin)
	defer closeCancel()
	if err := ep.Close(closeCtx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			// The block's work is done and delivered: a finalize that
			// hangs (see EnvFinalizeTimeout) must not keep it alive.
			log.Warn("MPI_Finalize did not return; exiting without it", "waited", fin)
			return nil
		}
		return fmt.Errorf("mpiexec: finalize: %w", err)
	}
	return nil
}

// DefaultFinalizeTimeout bounds MPI_Finalize when Config.FinalizeTimeout
// is 0.
const DefaultFinalizeTimeout = 5 * time.Second

// familyLauncher returns the launcher of this rank's MPI family on $PATH
// (launch.MPIRun's choice: mpirun.openmpi or mpirun.mpich first), for a
// task's RANKFARM_MPIRUN; "" when there is none, or only another family's.
func familyLauncher() string {
	family, path, err := launch.MPIRun{}.Resolve()
	if err != nil || family != launch.Built {
		return ""
	}
	return path
}

// blockHello is the Hello rank 0 introduces the block with: its size, task
// slots and host, and its layout (the node of every rank, the host of every
// node, the tree's fan-out), so that the front end can tell which host each
// rank runs on and which ranks are sub-masters.
func blockHello(cfg Config, ep *mpi.Endpoint, topo *rankpool.Topology, slots int) serialize.Hello {
	host, _ := os.Hostname()
	h := serialize.Hello{
		Block:   cfg.Block,
		Ranks:   int32(ep.Size()),
		Workers: int32(slots),
		Host:    host,
		PID:     int32(os.Getpid()),
		Fanout:  int32(topo.Fanout()),
	}
	if hosts := ep.Hosts(); len(hosts) > 0 {
		h.NodeHosts = hosts
		h.NodeRuns = serialize.NodeRunsOf(ep.NodeOf())
	}
	return h
}

// logLayout logs, at rank 0, the hosts of the block with their ranks and
// sub-masters.
func logLayout(log *slog.Logger, h *serialize.Hello, topo *rankpool.Topology) {
	nodeOf := h.NodeOf()
	for k, host := range h.NodeHosts {
		var ranks, relays []int
		for r, n := range nodeOf {
			if n != k {
				continue
			}
			ranks = append(ranks, r)
			if topo.Place(r).Role == rankpool.RoleSubMaster {
				relays = append(relays, r)
			}
		}
		log.Info("block layout", "node", k, "host", host, "ranks", rankpool.FormatRanks(ranks), "sub_masters", relays)
	}
}

// dialFrontEnd connects rank 0 to the front end and returns the link and a
// function that dials again with the same proof (the token file is read
// once, here).
func dialFrontEnd(ctx context.Context, cfg Config, hello serialize.Hello) (link.Conn, func(context.Context) (link.Conn, error), error) {
	if cfg.Addr == "" || cfg.TokenFile == "" {
		return nil, nil, fmt.Errorf("mpiexec: rank 0 needs %s and %s", link.EnvAddr, link.EnvTokenFile)
	}
	token, err := link.ReadTokenFile(cfg.TokenFile)
	if err != nil {
		return nil, nil, err
	}
	dial := func(ctx context.Context) (link.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		conn, _, err := link.Dial(dctx, cfg.Addr, link.DialOptions{
			Token:          token,
			Hello:          hello,
			PeerTimeout:    cfg.PeerTimeout,
			Logger:         cfg.Logger,
			TLSFingerprint: cfg.TLSFingerprint,
		})
		if err != nil {
			return nil, fmt.Errorf("mpiexec: dial front end %s: %w", cfg.Addr, err)
		}
		return conn, nil
	}
	// A front end starved of CPU for a while (a loaded login node; 64 ranks
	// busy-polling on 2 cores) may not answer within one dial's timeout:
	// dial again while the attempts time out, up to firstDialWindow. A
	// refused connection or a missing route fails at once.
	deadline := time.Now().Add(firstDialWindow)
	for {
		conn, err := dial(ctx)
		if err == nil || !isTimeout(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return conn, dial, err
		}
		cfg.Logger.Warn("dial front end timed out; dialling again", "addr", cfg.Addr, "err", err)
	}
}

// firstDialWindow bounds how long rank 0 keeps dialling a front end whose
// dials time out.
const firstDialWindow = 2 * time.Minute

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// keepConnected dials the front end again each time the session's
// connection breaks, until it is back, the grace passes or ctx ends.
func keepConnected(ctx context.Context, sess *link.Session, dial func(context.Context) (link.Conn, error), log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.Broke():
		}
		for !sess.Connected() {
			c, err := dial(ctx)
			if err == nil {
				if err := sess.Resume(c); err != nil {
					_ = c.Close()
					return // the grace has passed: the block shuts down
				}
				log.Info("reconnected to the front end")
				break
			}
			log.Debug("dialling the front end again failed", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// transport carries one rank's messages: to and from other ranks over MPI,
// and for rank 0 to and from the front end over the link.
type transport struct {
	ep       *mpi.Endpoint
	rank     int
	upstream link.Conn
	inbox    chan rankpool.Envelope
	finished atomic.Bool // the role has returned: the block is shutting down

	mu    sync.Mutex // guards codec on the send side
	codec *serialize.Codec
}

func newTransport(ep *mpi.Endpoint, rank int) *transport {
	return &transport{
		ep:    ep,
		rank:  rank,
		inbox: make(chan rankpool.Envelope, 1024),
		codec: serialize.NewCodec(serialize.Options{}),
	}
}

// Send implements rankpool.Transport.
func (t *transport) Send(to int, m serialize.Message) error {
	if to == rankpool.Upstream {
		if t.upstream == nil {
			return fmt.Errorf("mpiexec: rank %d has no upstream link", t.rank)
		}
		// A broken link is noticed by pumpUpstream, which shuts the block
		// down; a send that fails meanwhile has nowhere better to go.
		if err := t.upstream.Send(m); err != nil && !errors.Is(err, link.ErrClosed) {
			return err
		}
		return nil
	}
	t.mu.Lock()
	body, err := t.codec.AppendBody(nil, m)
	t.mu.Unlock()
	if err != nil {
		return err
	}
	return t.ep.Send(to, int(m.Kind()), body)
}

// Inbox implements rankpool.Transport.
func (t *transport) Inbox() <-chan rankpool.Envelope { return t.inbox }

func (t *transport) deliver(ctx context.Context, e rankpool.Envelope) bool {
	select {
	case t.inbox <- e:
		return true
	case <-ctx.Done():
		return false
	}
}

// pumpMPI decodes what other ranks send and hands it to the role.
func (t *transport) pumpMPI(ctx context.Context, log *slog.Logger) {
	codec := serialize.NewCodec(serialize.Options{})
	for {
		select {
		case <-ctx.Done():
			return
		case p, ok := <-t.ep.Recv():
			if !ok {
				return
			}
			m, err := codec.DecodeBody(p.Data)
			if err != nil {
				log.Error("dropping an undecodable message", "from", p.Src, "tag", p.Tag, "err", err)
				continue
			}
			if !t.deliver(ctx, rankpool.Envelope{From: p.Src, To: t.rank, Msg: m}) {
				return
			}
		}
	}
}

// pumpUpstream hands the front end's messages to rank 0's role; when the
// link ends it asks the block to shut down.
func (t *transport) pumpUpstream(ctx context.Context, conn link.Conn, log *slog.Logger) {
	for {
		m, err := conn.Recv(ctx)
		if err != nil {
			if ctx.Err() == nil && !t.finished.Load() {
				log.Warn("front end link ended; shutting the block down", "err", err)
				t.deliver(ctx, rankpool.Envelope{From: rankpool.Upstream, To: 0, Msg: &serialize.Shutdown{Reason: "front end gone: " + err.Error()}})
			}
			return
		}
		if !t.deliver(ctx, rankpool.Envelope{From: rankpool.Upstream, To: 0, Msg: m}) {
			return
		}
	}
}

// onSignal turns SIGTERM or SIGINT at rank 0 into an orderly shutdown of the
// whole block.
func (t *transport) onSignal(ctx context.Context, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		log.Warn("signal received; shutting the block down", "signal", s.String())
		t.deliver(ctx, rankpool.Envelope{From: rankpool.Upstream, To: 0, Msg: &serialize.Shutdown{Reason: "signal " + s.String()}})
	case <-ctx.Done():
	}
}
