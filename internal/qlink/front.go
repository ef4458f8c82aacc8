package qlink

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/serialize"
)

// Defaults of FrontOptions and BlockOptions.
const (
	DefaultHeartbeat    = time.Second
	DefaultBlockTimeout = 30 * time.Second
	DefaultPeerTimeout  = 30 * time.Second
	DefaultMinPoll      = 100 * time.Microsecond
	DefaultMaxPoll      = 100 * time.Millisecond
	DefaultAhead        = 1024
)

// Bounds of the files a writer makes: a file holds at most about
// maxFileBytes of frames (a bigger single message travels alone) and, while
// several blocks serve the queue, the executor's batches are cut so that
// each block can take a share, but never into files of fewer than
// minFileTasks tasks.
const (
	maxFileBytes = 8 << 20
	maxFileTasks = 1 << 16
	minFileTasks = 64
)

// ErrNoBlock matches the error of a Front that had no live block for
// FrontOptions.NoBlockTimeout.
var ErrNoBlock = errors.New("qlink: no live block on the queue")

// FrontOptions configure Open. Zero values mean the defaults.
type FrontOptions struct {
	// Heartbeat is how often the front end and every block beat; the
	// blocks read it from run.json. Default 1 s.
	Heartbeat time.Duration
	// BlockTimeout: a block whose heartbeat has not moved for this long
	// is declared lost, its claimed batches go back to the queue, and
	// what it writes later is ignored. Default 30 s.
	BlockTimeout time.Duration
	// MinPoll and MaxPoll bound the adaptive poll interval, of the front
	// end and of the blocks: right after a poll that found work the next
	// comes at once, then the wait is an eighth of the time since work was
	// last seen, at least MinPoll and at most MaxPoll. Defaults 100 µs and
	// 100 ms.
	MinPoll, MaxPoll time.Duration
	// Ahead is how many tasks per live block may wait in the queue beyond
	// the credit the blocks announced: a block whose credit frees then
	// finds work at once, without waiting for the front end's round trip.
	// They wait in the queue, not in a block, so a lost block strands none
	// of them. The Front grants it to the executor as extra credit when a
	// block joins, and takes it back from later credit when it leaves. (A
	// block that claims a file larger than its credit hands the excess
	// straight back as credit, so the pool stays whole.) Default
	// DefaultAhead; negative means none.
	Ahead int
	// NoBlockTimeout, when positive, ends the link (Recv fails with an
	// error matching ErrNoBlock) once blocks have joined and none has
	// been live for this long. Zero waits for blocks for ever.
	NoBlockTimeout time.Duration
	// MaxFrame bounds one message, as serialize.Options.MaxFrame.
	MaxFrame int
	// Logger receives the queue's log lines (default slog.Default()).
	Logger *slog.Logger
}

// FrontStats counts what a Front did.
type FrontStats struct {
	Blocks       int   // blocks that joined
	Lost         int   // blocks declared lost (heartbeat timeout or a bad file)
	FilesWritten int64 // task files written (put-back ones included)
	FilesRead    int64 // result files read
	Requeued     int64 // tasks put back in the queue from lost blocks' claims
	Ignored      int64 // results dropped: late, from a lost block, or for a task not in flight
	Refused      int64 // files moved aside to bad/
}

type blockState uint8

const (
	blockLive   blockState = iota
	blockAcked             // acknowledged a Shutdown: it has stopped
	blockGone              // its heartbeat file vanished without a Shutdown
	blockFenced            // declared lost: everything it writes is ignored
)

// blockRec is the front end's record of one block on the queue.
type blockRec struct {
	id      string
	hello   *serialize.Hello
	state   blockState
	hbN     uint64    // the last heartbeat count seen
	hbSeen  time.Time // when it last changed
	lastSeq uint64    // the last result file read
	// gapSince is when a listing first showed a later file of the block
	// but not the next one (zero: no gap).
	gapSince time.Time
	// hbMissed is set when one listing of hb/ did not show the block's
	// heartbeat: a file renamed while the directory is listed may be
	// missed, so it takes a second listing to say the block left.
	hbMissed bool
}

// taskRec is an outstanding task: sent, not answered.
type taskRec struct {
	attempt uint32
	file    uint64 // the seq of the task file that holds it; 0 until written
}

// fileRec is a task file with unanswered tasks.
type fileRec struct {
	name    string
	pending int
	claimer string // the block that answered one of its tasks, once known
}

// Front is the front end's end of a queue link: a link.Conn whose peer is
// every block that serves the queue. Send writes task batches into the
// queue and the Shutdown order; Recv yields the blocks' results, credit,
// and one Shutdown acknowledgement once every live block has stopped. The
// blocks' Hellos do not surface: WaitBlock returns the first.
type Front struct {
	root    string
	created bool // Open made root, and Close removes it when empty
	run     RunID
	opt     FrontOptions
	log     *slog.Logger
	in      *mailbox
	seq     atomic.Uint64 // task file numbers

	mu           sync.Mutex
	out          []serialize.Message
	tasks        map[uint64]taskRec
	files        map[uint64]*fileRec
	blocks       map[string]*blockRec
	firstHello   *serialize.Hello
	shutdownSent bool
	ackSent      bool
	everLive     bool
	maxGrant     int    // the most credit a block granted in one message
	debt         uint64 // Ahead credit of blocks that left, still to take back
	lastLive     time.Time
	closing      bool
	err          error
	stats        FrontStats

	helloCh chan struct{} // closed on the first Hello
	failCh  chan struct{} // closed when err is set
	wakeW   chan struct{}
	wakeP   chan struct{}
	stopW   chan struct{}
	done    chan struct{}
	wgW     sync.WaitGroup
	wgP     sync.WaitGroup

	frontN uint64 // owned by the heartbeat goroutine
	// Owned by the poller goroutine.
	reclaim []string // blocks whose claims to put back after this scan
	unlink  []string // claimed files whose every task is answered
	rbuf    []byte
}

// Open makes dir a queue for a new run and returns the front end's end of
// it. dir is created with mode 0700 when missing; an existing one must
// belong to this user, have mode 0700, and hold nothing but a queue's
// files (a previous run's are cleared, except bad/). Open refuses a queue
// that another live front end serves. ctx bounds only the opening.
func Open(ctx context.Context, dir string, opt FrontOptions) (*Front, error) {
	opt = opt.withDefaults()
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("qlink: queue directory %q: %w", dir, err)
	}
	created := false
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return nil, fmt.Errorf("qlink: make the queue directory: %w", err)
		}
		created = true
	}
	if err := checkDir(root); err != nil {
		return nil, err
	}
	if err := checkLeftovers(ctx, root); err != nil {
		return nil, err
	}
	for _, d := range subdirs {
		p := filepath.Join(root, d)
		if d != dirBad {
			if err := os.RemoveAll(p); err != nil {
				return nil, fmt.Errorf("qlink: clear a previous run's %s: %w", p, err)
			}
		}
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("qlink: make %s: %w", p, err)
		}
		if err := checkDir(p); err != nil {
			return nil, err
		}
	}
	f := &Front{
		root:    root,
		created: created,
		opt:     opt,
		in:      newMailbox(),
		tasks:   make(map[uint64]taskRec),
		files:   make(map[uint64]*fileRec),
		blocks:  make(map[string]*blockRec),
		helloCh: make(chan struct{}),
		failCh:  make(chan struct{}),
		wakeW:   make(chan struct{}, 1),
		wakeP:   make(chan struct{}, 1),
		stopW:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	if _, err := rand.Read(f.run[:]); err != nil {
		return nil, fmt.Errorf("qlink: new run ID: %w", err)
	}
	f.log = opt.Logger.With("queue", root, "run", f.run.String()[:8])
	host, _ := os.Hostname()
	info, _ := json.MarshalIndent(runInfo{
		Format:    FileVersion,
		Run:       f.run.String(),
		Host:      host,
		PID:       os.Getpid(),
		Created:   time.Now().UTC().Format(time.RFC3339Nano),
		Heartbeat: int64(opt.Heartbeat),
		MinPoll:   int64(opt.MinPoll),
		MaxPoll:   int64(opt.MaxPoll),
	}, "", "  ")
	if err := writeAtomic(f.path(dirTmp, "front-"+runFile), f.path(runFile), append(info, '\n')); err != nil {
		return nil, fmt.Errorf("qlink: write run.json: %w", err)
	}
	if err := writeAtomic(f.path(dirTmp, "front.hb"), f.path(dirCtl, f.frontBeat(0)), nil); err != nil {
		return nil, fmt.Errorf("qlink: write the front end's heartbeat: %w", err)
	}
	f.wgW.Add(1)
	go f.writeLoop()
	f.wgP.Add(2)
	go f.pollLoop()
	go f.beatLoop()
	f.log.Debug("queue open")
	return f, nil
}

func (o FrontOptions) withDefaults() FrontOptions {
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.BlockTimeout <= 0 {
		o.BlockTimeout = DefaultBlockTimeout
	}
	if o.MinPoll <= 0 {
		o.MinPoll = DefaultMinPoll
	}
	if o.MaxPoll <= 0 {
		o.MaxPoll = DefaultMaxPoll
	}
	o.MaxPoll = max(o.MaxPoll, o.MinPoll)
	if o.Ahead == 0 {
		o.Ahead = DefaultAhead
	}
	o.Ahead = min(max(o.Ahead, 0), 1<<24)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// checkLeftovers refuses a directory that holds anything but a queue's
// files, or whose run's front end still beats.
func checkLeftovers(ctx context.Context, root string) error {
	names, err := listDir(root)
	if err != nil {
		return fmt.Errorf("qlink: queue directory: %w", err)
	}
	known := map[string]bool{runFile: true}
	for _, d := range subdirs {
		known[d] = true
	}
	for _, n := range names {
		if !known[n] {
			return fmt.Errorf("qlink: %s holds %q, which is not part of a rankfarm queue: refusing to use it; name a new or empty directory", root, n)
		}
	}
	ri, run, err := readRunInfo(root)
	if err != nil {
		return nil // no previous run, or an unreadable one: nothing beats
	}
	// A front end that still beats owns the queue. Watch its heartbeat
	// for a little over two beats.
	beat := func() (uint64, bool) {
		names, _ := listDir(filepath.Join(root, dirCtl))
		for _, n := range names {
			if id, k, ok := parseBeat(strings.TrimPrefix(n, "front-")); ok && id == run.String() {
				return k, true
			}
		}
		return 0, false
	}
	first, ok := beat()
	if !ok {
		return nil
	}
	wait := time.Duration(ri.Heartbeat) * 5 / 2
	t := time.NewTimer(min(wait, 10*time.Second))
	defer t.Stop()
	tick := time.NewTicker(min(time.Duration(ri.Heartbeat)/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case <-tick.C:
			if k, ok := beat(); ok && k != first {
				return fmt.Errorf("qlink: %s is in use: the front end of run %s (pid %d on %s) still serves it", root, ri.Run, ri.PID, ri.Host)
			}
		}
	}
}

func (f *Front) path(elem ...string) string {
	return filepath.Join(append([]string{f.root}, elem...)...)
}

func (f *Front) frontBeat(n uint64) string { return "front-" + beatName(f.run.String(), n) }

// Dir returns the queue directory (an absolute path).
func (f *Front) Dir() string { return f.root }

// Run returns the run's ID.
func (f *Front) Run() RunID { return f.run }

// Send queues m for the blocks: a TaskBatch goes into the queue as one or
// more task files, a Shutdown as the order every block obeys. Heartbeats
// are dropped (the queue beats on its own). Send takes ownership of m.
func (f *Front) Send(m serialize.Message) error {
	if m == nil {
		return errors.New("qlink: cannot send nil")
	}
	if v := reflect.ValueOf(m); v.Kind() == reflect.Pointer && v.IsNil() {
		return fmt.Errorf("qlink: cannot send a nil %T", m)
	}
	f.mu.Lock()
	if err := f.sendable(); err != nil {
		f.mu.Unlock()
		return err
	}
	switch m := m.(type) {
	case *serialize.TaskBatch:
		for i := range m.Tasks {
			f.tasks[m.Tasks[i].ID] = taskRec{attempt: m.Tasks[i].Attempt}
		}
	case *serialize.Shutdown:
		f.shutdownSent = true
		if f.shutdownAcked() {
			f.in.putAll(&serialize.Shutdown{Reason: "no block serves the queue"})
		}
	case *serialize.Heartbeat:
		f.mu.Unlock()
		return nil
	default:
		f.mu.Unlock()
		return fmt.Errorf("qlink: the front end cannot send %v", m.Kind())
	}
	f.out = append(f.out, m)
	f.mu.Unlock()
	signal(f.wakeW)
	return nil
}

// sendable reports why Send must fail, if it must. Called with mu held.
func (f *Front) sendable() error {
	switch {
	case f.err != nil:
		return f.err
	case f.closing:
		return link.ErrClosed
	}
	return nil
}

// Recv returns the next message from the blocks. Once the Front is closed
// or has failed, and what came before is delivered, it fails with an error
// that matches link.ErrClosed (and the cause).
func (f *Front) Recv(ctx context.Context) (serialize.Message, error) {
	m, ok, err := f.in.get(ctx)
	if ok {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return nil, link.ErrClosed
}

// WaitBlock waits until a block has joined the queue and returns its Hello.
func (f *Front) WaitBlock(ctx context.Context) (*serialize.Hello, error) {
	select {
	case <-f.helloCh:
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.firstHello, nil
	case <-f.failCh:
		f.mu.Lock()
		defer f.mu.Unlock()
		return nil, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Abort ends the link with cause: what was received is still delivered,
// then Recv fails with an error that matches link.ErrClosed and cause.
// The queue stays in place until Close.
func (f *Front) Abort(cause error) {
	f.fail(fmt.Errorf("%w: %w", link.ErrClosed, cause))
}

// Stats returns the Front's counts.
func (f *Front) Stats() FrontStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Close stops the Front: it writes what Send queued, stops polling, and
// removes the run's files from the queue directory (bad/ stays when it
// holds refused files; the directory goes when Open made it and it is
// empty). Blocks still serving the queue then stop. Close is idempotent.
// removeWithin bounds how long Close tries again to remove a directory that
// a network filesystem's stale listing keeps from being removed.
const removeWithin = 3 * time.Second

func (f *Front) Close() error {
	f.mu.Lock()
	if f.closing {
		f.mu.Unlock()
		return nil
	}
	f.closing = true
	f.mu.Unlock()
	close(f.stopW)
	f.wgW.Wait()
	close(f.done)
	f.wgP.Wait()
	f.in.close()
	f.mu.Lock()
	st := f.stats
	f.mu.Unlock()
	f.log.Debug("queue closed", "blocks", st.Blocks, "lost", st.Lost, "files_written", st.FilesWritten, "files_read", st.FilesRead,
		"requeued", st.Requeued, "ignored", st.Ignored, "refused", st.Refused)

	var errs []error
	// run.json first: a block that looks now finds no run to join.
	if err := os.Remove(f.path(runFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, d := range subdirs {
		if d == dirBad {
			continue
		}
		if err := RemoveTree(f.path(d), removeWithin); err != nil {
			errs = append(errs, err)
		}
	}
	if names, err := listDir(f.path(dirBad)); err == nil && len(names) == 0 {
		_ = os.Remove(f.path(dirBad))
	}
	if f.created {
		_ = os.Remove(f.root) // only when empty
	}
	if len(errs) > 0 {
		return fmt.Errorf("qlink: clean the queue directory: %w", errors.Join(errs...))
	}
	return nil
}

// fail ends the link with err; only the first error counts.
func (f *Front) fail(err error) {
	f.mu.Lock()
	if f.err != nil {
		f.mu.Unlock()
		return
	}
	f.err = err
	close(f.failCh)
	f.mu.Unlock()
	f.in.close()
	f.log.Debug("queue link ended", "err", err)
}

// liveBlocks counts the live blocks. Called with mu held.
func (f *Front) liveBlocks() int {
	n := 0
	for _, b := range f.blocks {
		if b.state == blockLive {
			n++
		}
	}
	return n
}

// ---- writing task files ----

func (f *Front) writeLoop() {
	defer f.wgW.Done()
	codec := serialize.NewCodec(serialize.Options{MaxFrame: f.opt.MaxFrame})
	var batch []serialize.Message
	var buf []byte
	for {
		stopping := false
		select {
		case <-f.wakeW:
		case <-f.stopW:
			stopping = true
		}
		f.mu.Lock()
		batch, f.out = f.out, batch[:0]
		failed := f.err != nil
		f.mu.Unlock()
		if len(batch) > 0 && !failed {
			var err error
			if buf, err = f.writeDown(codec, buf, batch); err != nil {
				f.fail(fmt.Errorf("%w: %w", link.ErrClosed, err))
			}
		}
		clear(batch)
		if stopping {
			return
		}
	}
}

// writeDown writes a drained send queue as task files, then the shutdown
// order if the queue holds one.
func (f *Front) writeDown(codec *serialize.Codec, buf []byte, batch []serialize.Message) ([]byte, error) {
	total := 0
	for _, m := range batch {
		if tb, ok := m.(*serialize.TaskBatch); ok {
			total += len(tb.Tasks)
		}
	}
	f.mu.Lock()
	live := f.liveBlocks()
	grant := f.maxGrant
	f.mu.Unlock()
	// A block claims whole files while it has credit, so a file bigger
	// than a block's credit makes it take more than it asked for: files hold
	// at most what a block grants in one go (at least minFileTasks), and a
	// share of the batch when several blocks serve the queue.
	limit := max(minFileTasks, min(grant, maxFileTasks))
	if live > 1 {
		limit = min(limit, max(minFileTasks, (total+live-1)/live))
	}

	var (
		cur      []serialize.Message
		curTasks int
		curBytes int
		err      error
	)
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		buf, err = f.writeTaskFile(codec, buf, 't', cur)
		cur, curTasks, curBytes = cur[:0], 0, 0
		return err
	}
	for _, m := range batch {
		switch m := m.(type) {
		case *serialize.TaskBatch:
			tasks := m.Tasks
			for len(tasks) > 0 {
				if curTasks == limit || curBytes >= maxFileBytes {
					if err := flush(); err != nil {
						return buf, err
					}
				}
				k := min(limit-curTasks, len(tasks))
				part := &serialize.TaskBatch{Tasks: tasks[:k:k]}
				for i := range part.Tasks {
					curBytes += len(part.Tasks[i].Args) + len(part.Tasks[i].App) + 32
				}
				cur = append(cur, part)
				curTasks += k
				tasks = tasks[k:]
			}
		case *serialize.Shutdown:
			if err := flush(); err != nil {
				return buf, err
			}
			buf, err = AppendFile(buf[:0], codec, KindDown, f.run, []serialize.Message{m})
			if err == nil {
				err = writeAtomic(f.path(dirTmp, "front-"+shutdownRFQ), f.path(dirTasks, shutdownRFQ), buf)
			}
			if err != nil {
				return buf, fmt.Errorf("qlink: write the shutdown order: %w", err)
			}
		}
	}
	return buf, flush()
}

// writeTaskFile writes msgs (TaskBatches) as one new task file, named with
// prefix ('t' for new tasks, 'p' for put-back ones), after recording which
// file holds each task.
func (f *Front) writeTaskFile(codec *serialize.Codec, buf []byte, prefix byte, msgs []serialize.Message) ([]byte, error) {
	seq := f.seq.Add(1)
	name := taskFileName(prefix, seq)
	fr := &fileRec{name: name}
	f.mu.Lock()
	for _, m := range msgs {
		for _, t := range m.(*serialize.TaskBatch).Tasks {
			if rec, ok := f.tasks[t.ID]; ok && (rec.file == 0 || prefix == 'p') {
				rec.file = seq
				f.tasks[t.ID] = rec
				fr.pending++
			}
		}
	}
	f.files[seq] = fr
	f.stats.FilesWritten++
	f.mu.Unlock()
	var err error
	buf, err = AppendFile(buf[:0], codec, KindDown, f.run, msgs)
	if err == nil {
		err = writeAtomic(f.path(dirTmp, name), f.path(dirTasks, name), buf)
	}
	if err != nil {
		return buf, fmt.Errorf("qlink: write task file %s: %w", name, err)
	}
	signal(f.wakeP)
	return buf, nil
}

// ---- polling for results ----

func (f *Front) pollLoop() {
	defer f.wgP.Done()
	codec := serialize.NewCodec(serialize.Options{MaxFrame: f.opt.MaxFrame})
	bo := backoff{min: f.opt.MinPoll, max: f.opt.MaxPoll, last: time.Now()}
	sl := newSleeper()
	next := time.Now().Add(f.opt.Heartbeat)
	for {
		select {
		case <-f.done:
			return
		default:
		}
		now := time.Now()
		if !now.Before(next) {
			f.tick(codec, now)
			next = now.Add(f.opt.Heartbeat)
		}
		n := f.scanResults(codec)
		f.reclaimPending(codec)
		if n > 0 {
			bo.active(now)
			continue
		}
		// Tasks just written (wakeP) make results likely soon.
		if sl.wait(min(bo.next(now), max(time.Until(next), 0)), f.wakeP, f.done) {
			bo.active(time.Now())
		}
	}
}

// beatLoop moves the front end's heartbeat on every heartbeat interval, on
// a goroutine of its own so that no long scan delays it.
func (f *Front) beatLoop() {
	defer f.wgP.Done()
	t := time.NewTicker(f.opt.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-f.done:
			return
		case <-t.C:
		}
		old, nxt := f.path(dirCtl, f.frontBeat(f.frontN)), f.path(dirCtl, f.frontBeat(f.frontN+1))
		if err := os.Rename(old, nxt); err != nil {
			// Someone removed it: write it anew.
			if werr := writeAtomic(f.path(dirTmp, "front.hb"), nxt, nil); werr != nil {
				f.log.Warn("queue: the front end's heartbeat failed", "err", werr)
			}
		}
		f.frontN++
	}
}

// tick checks the blocks' heartbeats and the refused files.
func (f *Front) tick(codec *serialize.Codec, now time.Time) {
	f.checkBeats(codec, now)
	f.checkBad()

	if f.opt.NoBlockTimeout > 0 {
		f.mu.Lock()
		idle := f.everLive && f.liveBlocks() == 0 && now.Sub(f.lastLive) > f.opt.NoBlockTimeout
		f.mu.Unlock()
		if idle {
			f.fail(fmt.Errorf("%w: %w for %v", link.ErrClosed, ErrNoBlock, f.opt.NoBlockTimeout))
		}
	}
}

// checkBeats reads every block's heartbeat count from one listing of hb/
// and declares lost the live blocks whose count has not moved for the
// block timeout. A block whose heartbeat file is gone without a Shutdown,
// in two listings in a row, left: its claims go back to the queue once its
// last results are read.
func (f *Front) checkBeats(codec *serialize.Codec, now time.Time) {
	names, err := listDir(f.path(dirHB))
	if err != nil {
		f.log.Warn("queue: cannot list the heartbeats", "err", err)
		return
	}
	counts := make(map[string]uint64, len(names))
	for _, n := range names {
		if id, k, ok := parseBeat(n); ok {
			counts[id] = k
		}
	}
	var lost []*blockRec
	f.mu.Lock()
	for id, b := range f.blocks {
		if b.state != blockLive {
			continue
		}
		k, ok := counts[id]
		if ok {
			b.hbMissed = false
		}
		switch {
		case !ok && !b.hbMissed:
			b.hbMissed = true // look again at the next beat
		case !ok:
			f.left(b)
			b.state = blockGone
			f.reclaim = append(f.reclaim, id)
			f.log.Warn("queue: a block left without stopping; its claimed tasks go back to the queue", "block_id", id)
		case k != b.hbN:
			b.hbN, b.hbSeen = k, now
		case now.Sub(b.hbSeen) > f.opt.BlockTimeout:
			lost = append(lost, b)
		}
	}
	if f.liveBlocks() > 0 {
		f.lastLive = now
	}
	f.mu.Unlock()
	for _, b := range lost {
		f.fence(codec, b, fmt.Sprintf("its heartbeat has not moved for %v", now.Sub(b.hbSeen).Round(time.Millisecond)))
	}
	f.mu.Lock()
	if f.shutdownAcked() {
		f.in.putAll(&serialize.Shutdown{Reason: "every block stopped or was lost"})
	}
	f.mu.Unlock()
}

// shutdownAcked reports, once, that the Shutdown was sent and no block is
// live any more: the moment to acknowledge it to the executor. Called with
// mu held.
func (f *Front) shutdownAcked() bool {
	if f.shutdownSent && !f.ackSent && f.liveBlocks() == 0 {
		f.ackSent = true
		return true
	}
	return false
}

// fence declares block b lost: from now on whatever it writes is ignored,
// its heartbeat file is removed (so that it learns it at its next beat and
// stops), and its claimed batches go back to the queue.
func (f *Front) fence(codec *serialize.Codec, b *blockRec, why string) {
	f.mu.Lock()
	if b.state == blockFenced {
		f.mu.Unlock()
		return
	}
	f.left(b)
	b.state = blockFenced
	f.stats.Lost++
	hbN := b.hbN
	f.mu.Unlock()
	f.log.Warn("queue: block lost; its claimed tasks go back to the queue and its late results will be ignored", "block_id", b.id, "reason", why)
	_ = writeAtomic(f.path(dirTmp, "fenced-"+b.id), f.path(dirCtl, "fenced-"+b.id), []byte(why+"\n"))
	if err := os.Remove(f.path(dirHB, beatName(b.id, hbN))); err != nil {
		// The count moved meanwhile: remove whatever beat file it has.
		names, _ := listDir(f.path(dirHB))
		for _, n := range names {
			if id, _, ok := parseBeat(n); ok && id == b.id {
				_ = os.Remove(f.path(dirHB, n))
			}
		}
	}
	f.reclaimBlock(codec, b.id)
}

// reclaimPending puts back the claims of the blocks that left.
func (f *Front) reclaimPending(codec *serialize.Codec) {
	for len(f.reclaim) > 0 {
		id := f.reclaim[0]
		f.reclaim = f.reclaim[1:]
		f.reclaimBlock(codec, id)
	}
}

// reclaimBlock puts the unanswered tasks of every batch that block id
// claimed back into the queue, as new files, and removes its claim
// directory. A block can claim nothing once that directory is gone (the
// rename fails), and rmdir fails while a claim that raced the listing is
// inside, so no claim slips through.
func (f *Front) reclaimBlock(codec *serialize.Codec, id string) {
	dir := f.path(dirClaimed, id)
	for range 10 {
		names, err := listDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err != nil {
			f.log.Error("queue: cannot list a lost block's claims", "block_id", id, "err", err)
			return
		}
		for _, name := range names {
			f.reclaimFile(codec, id, filepath.Join(dir, name), name)
		}
		err = os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
	}
	f.log.Error("queue: a lost block's claim directory does not empty", "block_id", id, "dir", dir)
}

// reclaimFile puts back the unanswered tasks of one claimed file.
func (f *Front) reclaimFile(codec *serialize.Codec, block, path, name string) {
	seq, ok := parseTaskFile(name)
	if !ok {
		f.refuse(path, "not a task file name", nil)
		return
	}
	f.mu.Lock()
	fr := f.files[seq]
	f.mu.Unlock()
	if fr == nil { // every task answered
		_ = os.Remove(path)
		return
	}
	var err error
	var data []byte
	var h FileHeader
	var msgs []serialize.Message
	if data, err = readFile(path, f.rbuf); err == nil {
		f.rbuf = data[:0]
		h, msgs, err = DecodeFile(codec, data)
		if err == nil {
			err = f.checkHeader(h, KindDown)
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		f.refuse(path, "a lost block's claimed batch is unreadable", err)
		f.failFile(seq, fmt.Sprintf("its batch file %s, claimed by the lost block %s, is unreadable: %v", name, block, err))
		return
	}
	var keep []serialize.Task
	f.mu.Lock()
	for _, m := range msgs {
		tb, ok := m.(*serialize.TaskBatch)
		if !ok {
			continue
		}
		for _, t := range tb.Tasks {
			if rec, ok := f.tasks[t.ID]; ok && rec.file == seq && rec.attempt == t.Attempt {
				keep = append(keep, t)
			}
		}
	}
	delete(f.files, seq)
	f.stats.Requeued += int64(len(keep))
	f.mu.Unlock()
	if len(keep) > 0 {
		var werr error
		f.rbuf, werr = f.writeTaskFile(codec, f.rbuf, 'p', []serialize.Message{&serialize.TaskBatch{Tasks: keep}})
		if werr != nil {
			f.fail(fmt.Errorf("%w: %w", link.ErrClosed, werr))
			return
		}
		f.log.Info("queue: tasks put back in the queue", "from_block", block, "file", name, "tasks", len(keep))
	}
	_ = os.Remove(path)
}

// failFile answers the unanswered tasks of task file seq with ErrLost, and
// returns their credit: the file is gone from the queue.
func (f *Front) failFile(seq uint64, why string) {
	f.mu.Lock()
	fr := f.files[seq]
	if fr == nil {
		f.mu.Unlock()
		return
	}
	delete(f.files, seq)
	var res []serialize.Result
	for id, rec := range f.tasks {
		if rec.file == seq {
			delete(f.tasks, id)
			res = append(res, serialize.Result{ID: id, Err: serialize.ErrLost, Msg: "task lost in the queue: " + why, Rank: -1})
		}
	}
	f.mu.Unlock()
	if len(res) > 0 {
		f.log.Error("queue: tasks lost with an unreadable batch file", "tasks", len(res), "reason", why)
		f.in.putAll(&serialize.ResultBatch{Credit: uint32(len(res)), Results: res})
	}
}

// checkBad fails the tasks of task files that a block refused and moved to
// bad/.
func (f *Front) checkBad() {
	names, err := listDir(f.path(dirBad))
	if err != nil {
		return
	}
	for _, n := range names {
		seq, ok := parseTaskFile(badOriginal(n))
		if !ok {
			continue
		}
		f.mu.Lock()
		fr := f.files[seq]
		f.mu.Unlock()
		if fr == nil {
			continue
		}
		why, _ := os.ReadFile(f.path(dirBad, n+".why"))
		f.failFile(seq, fmt.Sprintf("its batch file %s was refused and moved to %s: %s", fr.name, f.path(dirBad, n), strings.TrimSpace(string(why))))
	}
}

// checkHeader checks a decoded file's kind and run.
func (f *Front) checkHeader(h FileHeader, want FileKind) error {
	if h.Kind != want {
		return fmt.Errorf("%w: a %v file where %v files belong", ErrCorrupt, h.Kind, want)
	}
	if h.Run != f.run {
		return fmt.Errorf("%w: run %s, this run is %s", ErrOtherRun, h.Run, f.run)
	}
	return nil
}

// refuse moves a bad file aside and logs why.
func (f *Front) refuse(path, what string, err error) {
	reason := what
	if err != nil {
		reason += ": " + err.Error()
	}
	dst, merr := moveAside(f.root, path, reason)
	f.mu.Lock()
	f.stats.Refused++
	f.mu.Unlock()
	f.log.Error("queue: refused a file", "file", path, "reason", reason, "moved_to", dst, "move_err", merr)
}

// scanResults reads every result file in the queue, in order per block,
// and hands what they carry to Recv. It returns how many files it read.
func (f *Front) scanResults(codec *serialize.Codec) int {
	names, err := listDir(f.path(dirResults))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			f.fail(fmt.Errorf("%w: the queue directory %s was removed", link.ErrClosed, f.root))
		} else {
			f.log.Warn("queue: cannot list the results", "err", err)
		}
		return 0
	}
	if len(names) == 0 {
		return 0
	}
	rs := make([]resultName, 0, len(names))
	for _, n := range names {
		if strings.HasPrefix(n, ".") { // NFS's .nfsXXXX files and the like
			continue
		}
		b, seq, ok := parseResultFile(n)
		if !ok {
			f.refuse(f.path(dirResults, n), "not a result file name", nil)
			continue
		}
		rs = append(rs, resultName{name: n, block: b, seq: seq})
	}
	sortResults(rs)
	var out []serialize.Message
	for _, r := range rs {
		out = f.readResult(codec, r, out)
	}
	f.in.putAll(out...)
	for i, p := range f.unlink {
		_ = os.Remove(p)
		f.unlink[i] = ""
	}
	f.unlink = f.unlink[:0]
	return len(rs)
}

// waitForGap reports whether result file r must wait for a later listing,
// because the block's file before it has not been seen yet. Called with mu
// held.
func (f *Front) waitForGap(b *blockRec, r resultName) bool {
	if b == nil {
		return r.seq > 1 // the Hello comes first
	}
	if r.seq <= b.lastSeq+1 {
		b.gapSince = time.Time{}
		return false
	}
	now := time.Now()
	if b.gapSince.IsZero() {
		b.gapSince = now
	}
	if now.Sub(b.gapSince) < f.opt.BlockTimeout {
		return true
	}
	b.gapSince = time.Time{}
	return false // the files between are lost: read on (and say so)
}

// readResult reads one result file and appends what to deliver to out.
func (f *Front) readResult(codec *serialize.Codec, r resultName, out []serialize.Message) []serialize.Message {
	path := f.path(dirResults, r.name)
	f.mu.Lock()
	b := f.blocks[r.block]
	fenced := b != nil && b.state == blockFenced
	if fenced {
		f.stats.FilesRead++
	}
	// One listing is no snapshot: a file renamed into the directory while
	// it is listed may be missed (readdir over a hashed directory, as ext4
	// and Lustre have, returns entries in hash order), while a later one
	// is returned. Read a block's files strictly in order: past a gap, wait
	// for a later listing to show the missing file, and give up on it only
	// after the block timeout.
	if !fenced && f.waitForGap(b, r) {
		f.mu.Unlock()
		return out
	}
	f.mu.Unlock()
	if fenced {
		_ = os.Remove(path)
		f.log.Debug("queue: ignored a file from a lost block", "file", r.name)
		return out
	}
	data, err := readFile(path, f.rbuf)
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	var h FileHeader
	var msgs []serialize.Message
	if err == nil {
		f.rbuf = data[:0]
		h, msgs, err = DecodeFile(codec, data)
		if err == nil {
			err = f.checkHeader(h, KindUp)
		}
	}
	if err != nil {
		f.refuse(path, "unreadable result file", err)
		if b != nil && b.state == blockLive {
			f.fence(codec, b, "it wrote an unreadable file, whose results are lost")
		}
		return out
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		// It would be read again and again: nothing sensible is left to do.
		f.fail(fmt.Errorf("%w: cannot remove the result file %s: %w", link.ErrClosed, path, err))
		return out
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.FilesRead++
	if b == nil {
		hello, ok := firstHello(msgs)
		if !ok {
			f.log.Warn("queue: ignored a file from a block that never said Hello", "file", r.name)
			return out
		}
		b = &blockRec{id: r.block, hello: hello, state: blockLive, hbN: ^uint64(0), hbSeen: now}
		f.blocks[r.block] = b
		f.stats.Blocks++
		f.everLive, f.lastLive = true, now
		f.log.Info("queue: block joined", "block_id", r.block, "name", hello.Block, "ranks", hello.Ranks, "workers", hello.Workers, "host", hello.Host, "pid", hello.PID)
		if f.firstHello == nil {
			f.firstHello = hello
			close(f.helloCh)
		}
		if f.opt.Ahead > 0 {
			out = append(out, &serialize.Credit{N: uint32(f.opt.Ahead)})
		}
		msgs = msgs[1:]
	}
	if r.seq <= b.lastSeq {
		f.log.Warn("queue: ignored a result file read before", "file", r.name)
		return out
	}
	if r.seq != b.lastSeq+1 {
		f.log.Warn("queue: result files missing from a block", "block_id", r.block, "after", b.lastSeq, "got", r.seq)
	}
	b.lastSeq = r.seq
	for _, m := range msgs {
		switch m := m.(type) {
		case *serialize.ResultBatch:
			f.maxGrant = max(f.maxGrant, int(m.Credit))
			if f.keepResults(b, m) {
				out = append(out, m)
			}
		case *serialize.Credit:
			f.maxGrant = max(f.maxGrant, int(m.N))
			if b.state == blockLive {
				m.N = f.repay(m.N)
				if m.N > 0 {
					out = append(out, m)
				}
			}
		case *serialize.Shutdown:
			if b.state == blockLive || b.state == blockGone {
				if b.state == blockLive {
					f.reclaim = append(f.reclaim, b.id)
				}
				f.left(b)
				b.state = blockAcked
				if !f.shutdownSent {
					f.log.Warn("queue: a block stopped on its own", "block_id", b.id, "reason", m.Reason)
				}
			}
			if f.shutdownAcked() {
				out = append(out, m)
			}
		case *serialize.Hello:
			f.log.Warn("queue: a block said Hello twice", "block_id", b.id)
		}
	}
	return out
}

func firstHello(msgs []serialize.Message) (*serialize.Hello, bool) {
	if len(msgs) == 0 {
		return nil, false
	}
	h, ok := msgs[0].(*serialize.Hello)
	return h, ok
}

// keepResults drops from rb the results of tasks that are not outstanding
// (answered already, or put back after their block was lost) and removes
// the claimed files whose every task is answered. It reports whether rb
// still carries anything. Called with mu held.
func (f *Front) keepResults(b *blockRec, rb *serialize.ResultBatch) bool {
	kept := rb.Results[:0]
	for _, r := range rb.Results {
		rec, ok := f.tasks[r.ID]
		if !ok {
			f.stats.Ignored++
			continue
		}
		fr := f.files[rec.file]
		if fr != nil {
			if fr.claimer == "" {
				fr.claimer = b.id
			} else if fr.claimer != b.id {
				f.stats.Ignored++
				continue
			}
			fr.pending--
			if fr.pending <= 0 {
				delete(f.files, rec.file)
				f.unlink = append(f.unlink, f.path(dirClaimed, fr.claimer, fr.name))
			}
		}
		delete(f.tasks, r.ID)
		kept = append(kept, r)
	}
	clear(rb.Results[len(kept):])
	rb.Results = kept
	if b.state != blockLive {
		rb.Credit = 0
	}
	rb.Credit = f.repay(rb.Credit)
	return len(kept) > 0 || rb.Credit > 0
}

// repay takes the Ahead credit of blocks that left back out of c, a credit
// about to go to the executor, and returns what is left of c. Called with
// mu held.
func (f *Front) repay(c uint32) uint32 {
	take := min(uint64(c), f.debt)
	f.debt -= take
	return c - uint32(take)
}

// left records that live block b stopped being live: its Ahead credit is
// to be taken back. Called with mu held.
func (f *Front) left(b *blockRec) {
	if b.state == blockLive {
		f.debt += uint64(f.opt.Ahead)
	}
}
