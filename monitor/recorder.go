package monitor

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, "sqlite"
)

// ErrDependency is the ErrKind of a task that failed because a dependency
// did (beyond serialize's kinds).
const ErrDependency = 100

// errKindName names an ErrKind for the database.
func errKindName(k uint8) string {
	if k == ErrDependency {
		return "dependency failed"
	}
	return serialize.ErrKind(k).String()
}

// schema creates the tables. Times are Unix nanoseconds.
const schema = `
CREATE TABLE IF NOT EXISTS runs (
	id INTEGER PRIMARY KEY,
	started INTEGER NOT NULL,
	ended INTEGER,
	host TEXT,
	pid INTEGER,
	command TEXT,
	dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
	run INTEGER NOT NULL,
	id INTEGER NOT NULL,
	app TEXT,
	state TEXT NOT NULL,
	submitted INTEGER,
	ready INTEGER,
	dispatched INTEGER,
	started INTEGER,
	ended INTEGER,
	finished INTEGER,
	block TEXT,
	rank INTEGER,
	host TEXT,
	attempts INTEGER,
	requeues INTEGER,
	err_kind TEXT,
	error TEXT
);
CREATE TABLE IF NOT EXISTS task_chunks (
	run INTEGER NOT NULL,
	n INTEGER NOT NULL,
	data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS task_events (
	run INTEGER NOT NULL,
	ts INTEGER NOT NULL,
	task INTEGER NOT NULL,
	app TEXT,
	attempt INTEGER,
	event TEXT NOT NULL,
	block TEXT,
	rank INTEGER,
	err_kind TEXT,
	message TEXT
);
CREATE TABLE IF NOT EXISTS blocks (
	run INTEGER NOT NULL,
	ts INTEGER NOT NULL,
	block TEXT NOT NULL,
	event TEXT NOT NULL,
	host TEXT,
	ranks INTEGER,
	workers INTEGER,
	detail TEXT
);
CREATE TABLE IF NOT EXISTS block_nodes (
	run INTEGER NOT NULL,
	block TEXT NOT NULL,
	host TEXT NOT NULL,
	ranks TEXT NOT NULL,
	sub_masters TEXT
);
CREATE TABLE IF NOT EXISTS samples (
	run INTEGER NOT NULL,
	ts INTEGER NOT NULL,
	submitted INTEGER, done INTEGER, failed INTEGER,
	retried INTEGER, requeued INTEGER,
	inflight INTEGER, queued INTEGER, waiting INTEGER,
	blocks INTEGER, workers INTEGER, dropped INTEGER,
	memoized INTEGER, block_restarts INTEGER
);
`

// pragmas make writes cheap and let readers (the dashboard) read while the
// run writes: write-ahead log, no fsync per commit.
const pragmas = `PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA busy_timeout=5000;`

// Queue sizes of a Recorder.
const (
	// BatchCap is the capacity of the event buffers a Recorder hands out.
	BatchCap = 8192
	// queueLen bounds the batches waiting for the writer.
	queueLen = 16
	// idleMaterialize and closeMaterialize bound the time spent expanding
	// chunks into the tasks table after an idle second and at Close; what
	// is left a Reader still reads, and "rankfarm monitor" expands.
	idleMaterialize  = 100 * time.Millisecond
	closeMaterialize = 2 * time.Second
)

// Recorder writes one run into a monitoring database on a goroutine of its
// own. Put, Sample and Block never block: when the writer lags they report
// false and the caller keeps (or drops) what it had.
type Recorder struct {
	db  *sql.DB
	run int64
	log *slog.Logger

	in      chan []Event
	free    chan []Event
	samples chan Sample
	blocks  chan BlockEvent
	done    chan struct{}

	closeOnce sync.Once
	closeErr  error
	err       error // the writer's first error (logged once)

	// The writer's own state.
	// The tasks in progress, as indexes into slab: by id in a window of
	// recent ids (win[winHead+k] is id winBase+k, 1 + the index, 0 for
	// none), and in the map pending for those older than the window.
	// freeRecs lists the slab's unused records (no allocation per task).
	win      []int32
	winHead  int
	winBase  uint64
	pending  map[uint64]int32
	slab     slab
	freeRecs []int32
	hosts    map[string]string // block → host
	rows     []int32           // settled (slab indexes), to insert
	extra    []taskEvent       // task_events rows to insert
	enc      *chunkEncoder
	// closeBudget bounds the expansion of chunks at Close.
	closeBudget time.Duration
	dropped     int64
}

type taskRec struct {
	id                                                uint64
	app                                               string
	submitted, ready, dispatched, started, ended, fin int64
	block                                             string
	rank                                              int32
	attempts, requeues                                uint32
	failed, unresolved                                bool
	errKind                                           uint8
	errMsg                                            string
	errVal                                            error
	// lastFail is the failed attempt that a retry will record (a final
	// failure is the task's own row).
	lastFail *taskEvent
}

type taskEvent struct {
	ts      int64
	task    uint64
	app     string
	attempt uint32
	event   string
	block   string
	rank    int32
	errKind uint8
	msg     string
}

// Create opens (or creates) the database file path, starts a new run in it
// and the writer goroutine. command describes the run (its command line).
func Create(path, command string, log *slog.Logger) (*Recorder, error) {
	if log == nil {
		log = slog.Default()
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("monitor: make the database's directory: %w", err)
		}
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return nil, fmt.Errorf("monitor: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	for _, q := range []string{pragmas, schema} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("monitor: prepare %s: %w", path, err)
		}
	}
	host, _ := os.Hostname()
	res, err := db.ExecContext(ctx, `INSERT INTO runs (started, host, pid, command) VALUES (?, ?, ?, ?)`,
		time.Now().UnixNano(), host, os.Getpid(), command)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("monitor: start a run in %s: %w", path, err)
	}
	run, err := res.LastInsertId()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("monitor: start a run in %s: %w", path, err)
	}
	r := &Recorder{
		db: db, run: run, log: log,
		in:          make(chan []Event, queueLen),
		free:        make(chan []Event, queueLen+2),
		samples:     make(chan Sample, 64),
		blocks:      make(chan BlockEvent, 256),
		done:        make(chan struct{}),
		pending:     make(map[uint64]int32),
		winBase:     1,
		hosts:       make(map[string]string),
		enc:         newChunkEncoder(),
		closeBudget: closeMaterialize,
	}
	go r.loop()
	return r, nil
}

// Run returns the run's id in the database.
func (r *Recorder) Run() int64 { return r.run }

// Buffer returns an empty event buffer, a recycled one when there is one.
func (r *Recorder) Buffer() []Event {
	select {
	case b := <-r.free:
		return b[:0]
	default:
		return make([]Event, 0, BatchCap)
	}
}

// Put hands a batch of events to the writer, which owns it from then on;
// it reports false, without taking it, when the writer's queue is full.
func (r *Recorder) Put(batch []Event) bool {
	select {
	case r.in <- batch:
		return true
	default:
		return false
	}
}

// Sample hands a counter snapshot to the writer; false when its queue is
// full (the snapshot is dropped).
func (r *Recorder) Sample(s Sample) bool {
	select {
	case r.samples <- s:
		return true
	default:
		return false
	}
}

// Block hands a block's event to the writer; false when its queue is full.
func (r *Recorder) Block(ev BlockEvent) bool {
	select {
	case r.blocks <- ev:
		return true
	default:
		return false
	}
}

// Close writes the last batch (the caller's final one, may be nil), every
// queued one, marks tasks never settled as "unresolved", ends the run and
// closes the database. dropped counts events the caller could not hand
// over. No Put, Sample or Block may follow or race with it.
func (r *Recorder) Close(last []Event, dropped int64) error {
	r.closeOnce.Do(func() {
		if len(last) > 0 {
			r.in <- last // blocks until the writer has room
		}
		r.dropped = dropped
		close(r.in)
		<-r.done
		r.closeErr = errors.Join(r.err, r.db.Close())
	})
	return r.closeErr
}

func (r *Recorder) loop() {
	defer close(r.done)
	in := r.in
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	busy := false
	for in != nil {
		select {
		case <-tick.C:
			// Idle for a second: expand chunks into rows for a while.
			if !busy {
				_, err := materialize(context.Background(), r.db, time.Now().Add(idleMaterialize))
				r.check(err)
			}
			busy = false
		case b, ok := <-in:
			if !ok {
				in = nil
				break
			}
			busy = true
			r.events(b)
			select {
			case r.free <- b[:0]:
			default:
			}
		case s := <-r.samples:
			r.writeSamples(s)
		case ev := <-r.blocks:
			r.writeBlocks(ev)
		}
	}
	// Drain what came before Close.
	for {
		select {
		case s := <-r.samples:
			r.writeSamples(s)
			continue
		case ev := <-r.blocks:
			r.writeBlocks(ev)
			continue
		default:
		}
		break
	}
	now := time.Now().UnixNano()
	for _, i := range r.pending {
		t := r.slab.at(i)
		t.fin, t.unresolved = now, true
		r.rows = append(r.rows, i)
	}
	clear(r.pending)
	for _, v := range r.win[r.winHead:] {
		if v != 0 {
			t := r.slab.at(v - 1)
			t.fin, t.unresolved = now, true
			r.rows = append(r.rows, v-1)
		}
	}
	r.win, r.winHead = r.win[:0], 0
	r.flush()
	r.check(r.exec(`UPDATE runs SET ended = ?, dropped = ? WHERE id = ?`, now, r.dropped, r.run))
	if r.closeBudget > 0 {
		_, err := materialize(context.Background(), r.db, time.Now().Add(r.closeBudget))
		r.check(err)
	}
}

// rec returns the record of task id, making it when new.
// The pointer is valid until the next call.
func (r *Recorder) rec(id uint64) (*taskRec, int32) {
	var slot *int32
	if id >= r.winBase {
		k := id - r.winBase
		if k >= maxWindow {
			r.slide(id)
			k = id - r.winBase
		}
		for uint64(len(r.win)-r.winHead) <= k {
			r.win = append(r.win, 0)
		}
		slot = &r.win[r.winHead+int(k)]
		if *slot != 0 {
			i := *slot - 1
			return r.slab.at(i), i
		}
	}
	i, ok := r.pending[id]
	if !ok {
		if n := len(r.freeRecs); n > 0 {
			i = r.freeRecs[n-1]
			r.freeRecs = r.freeRecs[:n-1]
		} else {
			i = r.slab.grow()
		}
		r.slab.at(i).id = id
		if slot != nil {
			*slot = i + 1
		} else {
			r.pending[id] = i
		}
	}
	return r.slab.at(i), i
}

// slab holds task records in pages that never move: growing it copies
// nothing.
type slab struct {
	pages [][]taskRec
	n     int32
}

const slabPage = 4096

func (s *slab) at(i int32) *taskRec { return &s.pages[i/slabPage][i%slabPage] }

// grow adds a record and returns its index.
func (s *slab) grow() int32 {
	if int(s.n) == len(s.pages)*slabPage {
		s.pages = append(s.pages, make([]taskRec, slabPage))
	}
	s.n++
	return s.n - 1
}

// maxWindow bounds the ids the window spans; older tasks still in
// progress move to the map.
const maxWindow = 1 << 20

// slide moves the window's oldest entries to the map until id fits.
func (r *Recorder) slide(id uint64) {
	for id-r.winBase >= maxWindow/2 && r.winHead < len(r.win) {
		if v := r.win[r.winHead]; v != 0 {
			r.pending[r.winBase] = v - 1
		}
		r.winHead++
		r.winBase++
	}
	if r.winHead == len(r.win) {
		r.win, r.winHead = r.win[:0], 0
		r.winBase = max(r.winBase, id-min(id, maxWindow/2))
	}
	r.compact()
}

// compact reclaims the window's front once it is mostly dead.
func (r *Recorder) compact() {
	if r.winHead > 4096 && r.winHead > len(r.win)/2 {
		n := copy(r.win, r.win[r.winHead:])
		r.win, r.winHead = r.win[:n], 0
	}
}

// events folds a batch into the tasks in progress and writes those that
// settled.
func (r *Recorder) events(b []Event) {
	for i := range b {
		ev := &b[i]
		switch ev.Kind {
		case Submitted:
			t, _ := r.rec(ev.Task)
			t.app, t.submitted = ev.Text, ev.Time
		case Ready:
			t, _ := r.rec(ev.Task)
			t.ready = ev.Time
		case Dispatched:
			t, _ := r.rec(ev.Task)
			t.dispatched, t.block, t.attempts = ev.Time, ev.Block, ev.Attempt+1
			if t.lastFail != nil { // it was retried
				r.extra = append(r.extra, *t.lastFail)
				t.lastFail = nil
			}
		case Requeued:
			t, _ := r.rec(ev.Task)
			t.requeues++
			r.extra = append(r.extra, taskEvent{ts: ev.Time, task: ev.Task, app: t.app, attempt: ev.Attempt, event: "requeued", block: ev.Block, rank: -1})
		case Result:
			t, ti := r.rec(ev.Task)
			t.started, t.ended, t.rank, t.block, t.attempts = ev.Start, ev.End, ev.Rank, ev.Block, ev.Attempt+1
			if ev.ErrKind == 0 {
				t.fin = ev.Time
				r.settle(t.id, ti)
				break
			}
			// A failed attempt: retried, or settled by the Settled event
			// that follows.
			t.errKind, t.errMsg = ev.ErrKind, ev.Text
			t.lastFail = &taskEvent{ts: ev.Time, task: ev.Task, app: t.app, attempt: ev.Attempt, event: "attempt failed", block: ev.Block, rank: ev.Rank, errKind: ev.ErrKind, msg: ev.Text}
		case Settled:
			t, ti := r.rec(ev.Task)
			t.fin = ev.Time
			if ev.ErrKind != 0 {
				t.failed, t.errKind, t.errVal = true, ev.ErrKind, ev.Err
				if ev.Text != "" {
					t.errMsg = ev.Text
				}
			} else {
				t.errKind, t.errMsg = 0, ""
			}
			r.settle(t.id, ti)
		}
	}
	r.flush()
}

func (r *Recorder) settle(id uint64, i int32) {
	r.rows = append(r.rows, i)
	if id < r.winBase || id-r.winBase >= uint64(len(r.win)-r.winHead) {
		delete(r.pending, id)
		return
	}
	r.win[r.winHead+int(id-r.winBase)] = 0
	for r.winHead < len(r.win) && r.win[r.winHead] == 0 {
		r.winHead++
		r.winBase++
	}
	r.compact()
}

// flush writes the settled tasks, as one chunk, and the extra events in
// one transaction.
func (r *Recorder) flush() {
	if len(r.rows) == 0 && len(r.extra) == 0 {
		return
	}
	r.check(r.writeTasks())
	for _, i := range r.rows {
		*r.slab.at(i) = taskRec{}
		r.freeRecs = append(r.freeRecs, i)
	}
	clear(r.rows)
	r.rows = r.rows[:0]
	clear(r.extra)
	r.extra = r.extra[:0]
}

func (r *Recorder) writeTasks() error {
	ctx := context.Background()
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	put := func() error {
		n := r.enc.n
		_, err := tx.ExecContext(ctx, `INSERT INTO task_chunks VALUES (?, ?, ?)`, r.run, n, r.enc.finish())
		return err
	}
	for _, i := range r.rows {
		t := r.slab.at(i)
		msg := t.errMsg
		if t.errVal != nil {
			msg = t.errVal.Error()
		}
		if t.unresolved {
			msg = "never settled while the run was monitored"
		}
		r.enc.add(t, msg)
		if r.enc.full() {
			if err := put(); err != nil {
				return err
			}
		}
	}
	if r.enc.n > 0 {
		if err := put(); err != nil {
			return err
		}
	}
	if len(r.extra) > 0 {
		st, err := tx.PrepareContext(ctx, `INSERT INTO task_events VALUES (?,?,?,?,?,?,?,?,?,?)`)
		if err != nil {
			return err
		}
		for _, x := range r.extra {
			var kind any
			if x.errKind != 0 {
				kind = errKindName(x.errKind)
			}
			if _, err := st.ExecContext(ctx, r.run, x.ts, int64(x.task), nullStr(x.app), x.attempt, x.event, nullStr(x.block), nullRank(x.rank), kind, nullStr(x.msg)); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

func nullTime(ns int64) any {
	if ns == 0 {
		return nil
	}
	return ns
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullRank(rank int32) any {
	if rank < 0 {
		return nil
	}
	return int64(rank)
}

func (r *Recorder) writeSamples(s Sample) {
	r.check(r.exec(`INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		r.run, s.Time, s.Submitted, s.Done, s.Failed, s.Retried, s.Requeued,
		s.InFlight, s.Queued, s.Waiting, s.Blocks, s.Workers, s.Dropped, s.Memoized, s.BlockRestarts))
}

func (r *Recorder) writeBlocks(ev BlockEvent) {
	if ev.Host != "" {
		r.hosts[ev.Block] = ev.Host
	}
	r.check(r.exec(`INSERT INTO blocks VALUES (?,?,?,?,?,?,?,?)`,
		r.run, ev.Time, ev.Block, ev.Kind.String(), nullStr(ev.Host), ev.Ranks, ev.Workers, nullStr(ev.Detail)))
	for _, n := range ev.Nodes {
		ranks, _ := json.Marshal(n.Ranks)
		subs, _ := json.Marshal(n.SubMasters)
		r.check(r.exec(`INSERT INTO block_nodes VALUES (?,?,?,?,?)`, r.run, ev.Block, n.Host, string(ranks), string(subs)))
	}
}

func (r *Recorder) exec(q string, args ...any) error {
	_, err := r.db.ExecContext(context.Background(), q, args...)
	return err
}

// check logs the writer's first error; monitoring never stops the run.
func (r *Recorder) check(err error) {
	if err == nil || r.err != nil {
		return
	}
	r.err = fmt.Errorf("monitor: write: %w", err)
	r.log.Error("the monitoring database could not be written; the run goes on", "err", err)
}
