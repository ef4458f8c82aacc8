package frontend

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rankfarm/rankfarm/monitor"
	"github.com/rankfarm/rankfarm/serialize"
)

// Environment variables that turn monitoring on when the Options leave it
// off.
const (
	// EnvMonitor names the monitoring database (Options.Monitor).
	EnvMonitor = "RANKFARM_MONITOR"
	// EnvMetricsAddr is the Prometheus address (Options.MetricsAddr).
	EnvMetricsAddr = "RANKFARM_METRICS_ADDR"
)

// How often the monitor hands buffered events to its writer and samples
// the counters.
const (
	monitorFlushEvery  = 250 * time.Millisecond
	monitorSampleEvery = 250 * time.Millisecond
	// monitorMaxBuffered bounds the events kept while the writer lags;
	// past it events are dropped (and counted in the run's row).
	monitorMaxBuffered = 1 << 21
)

// monState is an executor's monitoring: the events buffered since the last
// hand-over (guarded by the executor's mu) and the goroutine that hands
// them over. A nil *monState is monitoring off: every hook is a nil check.
type monState struct {
	// clock is the time in Unix ns of the batch being sent or received
	// (stamp): the hooks of its tasks read it instead of calling time.Now
	// (about 100 ns on some VMs) for every task.
	clock   atomic.Int64
	rec     *monitor.Recorder
	buf     []monitor.Event
	dropped int64
	stop    chan struct{}
	done    chan struct{}

	metrics     *http.Server
	metricsAddr string
}

// startMonitor opens the monitoring database and the metrics endpoint that
// opt (or the environment) asks for.
func (e *Executor) startMonitor(opt Options) error {
	path, addr := opt.Monitor, opt.MetricsAddr
	if path == "" {
		path = os.Getenv(EnvMonitor)
	}
	if addr == "" {
		addr = os.Getenv(EnvMetricsAddr)
	}
	if path == "" && addr == "" {
		return nil
	}
	m := &monState{stop: make(chan struct{}), done: make(chan struct{})}
	if path != "" {
		rec, err := monitor.Create(monitor.Path(path), strings.Join(os.Args, " "), e.log)
		if err != nil {
			return fmt.Errorf("frontend: monitoring: %w", err)
		}
		m.rec, m.buf = rec, rec.Buffer()
		e.log.Info("monitoring the run", "db", monitor.Path(path), "run", rec.Run())
	}
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if m.rec != nil {
				_ = m.rec.Close(nil, 0)
			}
			return fmt.Errorf("frontend: metrics: %w", err)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(newCollector(e))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		m.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		m.metricsAddr = ln.Addr().String()
		go func() { _ = m.metrics.Serve(ln) }()
		e.log.Info("serving Prometheus metrics", "addr", "http://"+m.metricsAddr+"/metrics")
	}
	e.mon = m
	go e.monitorLoop(m)
	return nil
}

// MetricsAddr returns the address the Prometheus endpoint listens on, or ""
// when it is off.
func (e *Executor) MetricsAddr() string {
	if e.mon == nil {
		return ""
	}
	return e.mon.metricsAddr
}

// monitorLoop hands buffered events to the writer and samples the counters
// until stopMonitor.
func (e *Executor) monitorLoop(m *monState) {
	defer close(m.done)
	if m.rec == nil {
		<-m.stop
		return
	}
	flush := time.NewTicker(monitorFlushEvery)
	defer flush.Stop()
	lastSample := time.Time{}
	for {
		select {
		case <-m.stop:
			return
		case now := <-flush.C:
			e.mu.Lock()
			if len(m.buf) > 0 {
				m.handOver()
			}
			e.mu.Unlock()
			if now.Sub(lastSample) >= monitorSampleEvery {
				lastSample = now
				m.rec.Sample(e.sample())
			}
		}
	}
}

// sample snapshots the counters.
func (e *Executor) sample() monitor.Sample {
	st := e.Stats()
	e.mu.Lock()
	var workers int64
	for _, b := range e.blocks {
		if b.hello != nil {
			workers += int64(b.hello.Workers)
		}
	}
	s := monitor.Sample{
		Time: time.Now().UnixNano(), Submitted: st.Submitted, Done: st.Done, Failed: st.Failed,
		Retried: st.Retried, Requeued: st.Requeued, InFlight: st.InFlight, Queued: st.Queued, Waiting: st.Waiting,
		Blocks: int64(len(e.blocks)), Workers: workers, Memoized: st.Memoized, BlockRestarts: st.BlockRestarts,
	}
	if e.mon != nil {
		s.Dropped = e.mon.dropped
	}
	e.mu.Unlock()
	return s
}

// stopMonitor writes what is buffered, a last sample, and closes the
// database and the metrics endpoint. Called once, by Close (after every
// task settled) or by a Start that failed.
func (e *Executor) stopMonitor() {
	m := e.mon
	if m == nil {
		return
	}
	close(m.stop)
	<-m.done
	if m.metrics != nil {
		_ = m.metrics.Close()
	}
	if m.rec == nil {
		return
	}
	m.rec.Sample(e.sample())
	e.mu.Lock()
	last, dropped := m.buf, m.dropped
	m.buf = nil
	e.mu.Unlock()
	if err := m.rec.Close(last, dropped); err != nil {
		e.log.Error("monitoring database", "err", err)
	}
}

// handOver gives the buffer to the writer, or keeps it while the writer's
// queue is full (dropping it past monitorMaxBuffered). Called with e.mu
// held.
func (m *monState) handOver() {
	if m.rec.Put(m.buf) {
		m.buf = m.rec.Buffer()
		return
	}
	if len(m.buf) >= monitorMaxBuffered {
		m.dropped += int64(len(m.buf))
		m.buf = m.buf[:0]
	}
}

// add appends one event. Called with e.mu held.
func (m *monState) add(ev monitor.Event) {
	m.buf = append(m.buf, ev)
	if len(m.buf) >= monitor.BatchCap {
		m.handOver()
	}
}

// The hooks the executor calls with its mu held. Each is a nil check when
// monitoring is off.

// stamp reads the clock once for a batch of tasks sent or received.
func (m *monState) stamp() {
	if m != nil && m.rec != nil {
		m.clock.Store(time.Now().UnixNano())
	}
}

func (m *monState) submitted(t *task) {
	if m != nil && m.rec != nil {
		m.add(monitor.Event{Time: time.Now().UnixNano(), Task: t.id, Kind: monitor.Submitted, Text: t.app})
	}
}

func (m *monState) ready(t *task) {
	if m != nil && m.rec != nil {
		m.add(monitor.Event{Time: time.Now().UnixNano(), Task: t.id, Kind: monitor.Ready})
	}
}

func (m *monState) dispatched(t *task, b *block) {
	if m != nil && m.rec != nil {
		m.add(monitor.Event{Time: m.clock.Load(), Task: t.id, Kind: monitor.Dispatched, Block: b.name, Attempt: t.attempt})
	}
}

func (m *monState) result(t *task, b *block, r *serialize.Result) {
	if m != nil && m.rec != nil {
		m.add(monitor.Event{Time: m.clock.Load(), Task: t.id, Kind: monitor.Result, Block: b.name, Attempt: t.attempt,
			Rank: r.Rank, Start: r.Start, End: r.End, ErrKind: uint8(r.Err), Text: r.Msg})
	}
}

func (m *monState) requeued(t *task, b *block) {
	if m != nil && m.rec != nil {
		m.add(monitor.Event{Time: time.Now().UnixNano(), Task: t.id, Kind: monitor.Requeued, Block: b.name, Attempt: t.attempt})
	}
}

// settled records a task that resolved other than by a successful result
// (which result recorded already): called before settle changes its state.
func (m *monState) settled(t *task, err error) {
	if m != nil && m.rec != nil && (t.state != stateInFlight || err != nil) {
		m.add(monitor.Event{Time: time.Now().UnixNano(), Task: t.id, Kind: monitor.Settled, Attempt: t.attempt, ErrKind: errCode(err), Err: err})
	}
}

// errCode is the monitor's error kind of a task's error.
func errCode(err error) uint8 {
	if err == nil {
		return 0
	}
	var de *DependencyError
	if errors.As(err, &de) {
		return monitor.ErrDependency
	}
	var te *TaskError
	if errors.As(err, &te) && te.Kind != serialize.ErrNone {
		return uint8(te.Kind)
	}
	return uint8(serialize.ErrApp)
}

// blockEvent records a block's step. Called with or without e.mu.
func (m *monState) blockEvent(kind monitor.BlockEventKind, b *block, name string, detail error) {
	if m == nil || m.rec == nil {
		return
	}
	ev := monitor.BlockEvent{Time: time.Now().UnixNano(), Block: name, Kind: kind}
	if b != nil {
		ev.Block = b.name
		if b.hello != nil {
			ev.Host, ev.Ranks, ev.Workers = b.hello.Host, int(b.hello.Ranks), int(b.hello.Workers)
		}
		if kind == monitor.BlockConnected {
			for _, n := range b.nodes() {
				ev.Nodes = append(ev.Nodes, monitor.Node{Host: n.Host, Ranks: n.Ranks, SubMasters: n.SubMasters})
			}
		}
	}
	if detail != nil {
		ev.Detail = detail.Error()
	}
	m.rec.Block(ev)
}

// blockRequested records a block being launched or submitted.
func (m *monState) blockRequested(name string) {
	m.blockEvent(monitor.BlockRequested, nil, name, nil)
}

// blockLost records a block lost, or drained when the strategy retired it.
func (m *monState) blockLost(b *block, retired bool, cause error) {
	if retired {
		m.blockEvent(monitor.BlockDrained, b, "", cause)
	} else {
		m.blockEvent(monitor.BlockLost, b, "", cause)
	}
}

// collector exports an executor's counters to Prometheus, read at each
// scrape.
type collector struct {
	e                                                *Executor
	submitted, done, failed, retried, requeued       *prometheus.Desc
	inflight, queued, waiting, blocks, workers, rate *prometheus.Desc

	mu       sync.Mutex // scrapes may overlap
	last     time.Time
	lastDone int64
}

func newCollector(e *Executor) *collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("rankfarm_"+name, help, nil, nil)
	}
	return &collector{e: e,
		submitted: d("tasks_submitted_total", "Tasks submitted (retries not counted again)."),
		done:      d("tasks_done_total", "Tasks resolved with a value."),
		failed:    d("tasks_failed_total", "Tasks resolved with an error."),
		retried:   d("tasks_retried_total", "Runs repeated after a failure."),
		requeued:  d("tasks_requeued_total", "Runs sent again because their block was lost."),
		inflight:  d("tasks_in_flight", "Tasks sent to a block and not answered yet."),
		queued:    d("tasks_queued", "Tasks ready and waiting for a worker."),
		waiting:   d("tasks_waiting", "Tasks waiting for their dependencies."),
		blocks:    d("blocks", "Blocks connected."),
		workers:   d("workers", "Worker slots of the connected blocks."),
		rate:      d("tasks_settled_per_second", "Tasks settled per second since the previous scrape."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.submitted, c.done, c.failed, c.retried, c.requeued, c.inflight, c.queued, c.waiting, c.blocks, c.workers, c.rate} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.sample()
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(c.submitted, s.Submitted)
	counter(c.done, s.Done)
	counter(c.failed, s.Failed)
	counter(c.retried, s.Retried)
	counter(c.requeued, s.Requeued)
	gauge(c.inflight, float64(s.InFlight))
	gauge(c.queued, float64(s.Queued))
	gauge(c.waiting, float64(s.Waiting))
	gauge(c.blocks, float64(s.Blocks))
	gauge(c.workers, float64(s.Workers))
	now := time.Unix(0, s.Time)
	rate := 0.0
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.last.IsZero() && now.After(c.last) {
		rate = float64(s.Done+s.Failed-c.lastDone) / now.Sub(c.last).Seconds()
	}
	c.last, c.lastDone = now, s.Done+s.Failed
	gauge(c.rate, rate)
}
