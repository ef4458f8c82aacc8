package qlink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/serialize"
)

// ErrLost matches the error of a Block that the front end declared lost
// (its heartbeat stalled): it must stop, since its tasks run elsewhere now.
var ErrLost = errors.New("qlink: the front end declared this block lost")

// ErrFrontGone matches the error of a Block whose front end closed the
// queue, or gave it over to another run.
var ErrFrontGone = errors.New("qlink: the front end left the queue")

// BlockOptions configure Join.
type BlockOptions struct {
	// Hello describes the block: Block, Ranks, Workers, Host and PID; Join
	// fills in Version.
	Hello serialize.Hello
	// PeerTimeout: when the front end's heartbeat has not moved for this
	// long, Recv fails with an error that matches link.ErrPeerTimeout.
	// Default 30 s.
	PeerTimeout time.Duration
	// MaxFrame bounds one message, as serialize.Options.MaxFrame.
	MaxFrame int
	// Logger receives the queue's log lines (default slog.Default()).
	Logger *slog.Logger
}

// Block is rank 0's end of a queue link. Recv yields the task batches it
// claims from the queue, as long as the credit it announced through Send
// allows, and the front end's Shutdown; Send writes its results, credit and
// shutdown acknowledgement into the queue.
type Block struct {
	root     string
	id       string
	claimDir string
	run      RunID
	info     runInfo
	opt      BlockOptions
	log      *slog.Logger
	in       *mailbox

	// avail is the credit the block announced minus the tasks it claimed,
	// never below zero (see claim): it claims a batch only while avail is
	// positive.
	avail atomic.Int64

	mu      sync.Mutex
	out     []serialize.Message
	closing bool
	err     error

	wakeW, wakeP chan struct{}
	stopW, done  chan struct{}
	wgW, wgP     sync.WaitGroup

	// Owned by the writer goroutine.
	seq uint64
	// Owned by the heartbeat goroutine (and by Close once it ended).
	hbN uint64
	// Owned by the poller goroutine.
	frontN       uint64
	frontSeen    time.Time
	shutdownSeen bool
	rbuf         []byte
}

// Join joins the queue in dir as a block: it checks the directory (owned by
// this user, mode 0700), waits for a front end to open a run in it (as long
// as ctx allows), starts the block's heartbeat and announces the block with
// its Hello.
func Join(ctx context.Context, dir string, opt BlockOptions) (*Block, error) {
	if opt.PeerTimeout <= 0 {
		opt.PeerTimeout = DefaultPeerTimeout
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("qlink: queue directory %q: %w", dir, err)
	}
	if err := checkDir(root); err != nil {
		return nil, err
	}
	b := &Block{
		root:  root,
		opt:   opt,
		in:    newMailbox(),
		wakeW: make(chan struct{}, 1),
		wakeP: make(chan struct{}, 1),
		stopW: make(chan struct{}),
		done:  make(chan struct{}),
	}
	// Wait for the front end's run.
	bo := backoff{min: time.Millisecond, max: 250 * time.Millisecond, last: time.Now()}
	for {
		b.info, b.run, err = readRunInfo(root)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		t := time.NewTimer(bo.next(time.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("qlink: no front end opened the queue %s: %w", root, ctx.Err())
		case <-t.C:
		}
	}
	for _, d := range subdirs {
		if err := checkDir(filepath.Join(root, d)); err != nil {
			return nil, err
		}
	}
	var r [3]byte
	_, _ = rand.Read(r[:])
	b.id = sanitize(opt.Hello.Block) + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(r[:])
	b.claimDir = filepath.Join(root, dirClaimed, b.id)
	b.log = opt.Logger.With("queue", root, "block_id", b.id)

	// The heartbeat comes first: a claim directory without one would be
	// taken for a lost block's.
	if err := writeAtomic(b.path(dirTmp, b.id+".hb"), b.path(dirHB, beatName(b.id, 0)), nil); err != nil {
		return nil, fmt.Errorf("qlink: start the heartbeat: %w", err)
	}
	if err := os.Mkdir(b.claimDir, 0o700); err != nil {
		_ = os.Remove(b.path(dirHB, beatName(b.id, 0)))
		return nil, fmt.Errorf("qlink: make the claim directory: %w", err)
	}
	b.frontN, _ = b.frontBeat()
	b.frontSeen = time.Now()
	hello := opt.Hello
	hello.Version = serialize.ProtocolVersion
	codec := serialize.NewCodec(serialize.Options{MaxFrame: opt.MaxFrame})
	if _, err := b.writeUp(codec, nil, []serialize.Message{&hello}); err != nil {
		_ = os.Remove(b.path(dirHB, beatName(b.id, 0)))
		_ = os.Remove(b.claimDir)
		return nil, err
	}
	b.wgW.Add(1)
	go b.writeLoop()
	b.wgP.Add(2)
	go b.pollLoop()
	go b.beatLoop()
	b.log.Debug("joined the queue", "run", b.run.String()[:8])
	return b, nil
}

func (b *Block) path(elem ...string) string {
	return filepath.Join(append([]string{b.root}, elem...)...)
}

// ID returns the block's name in the queue (its Hello's Block, the process
// ID and a random suffix).
func (b *Block) ID() string { return b.id }

// Send queues m for the front end: a ResultBatch or a Credit (whose credit
// lets the block claim more tasks), or the Shutdown acknowledgement.
// Heartbeats are dropped. Send takes ownership of m.
func (b *Block) Send(m serialize.Message) error {
	if m == nil {
		return errors.New("qlink: cannot send nil")
	}
	if v := reflect.ValueOf(m); v.Kind() == reflect.Pointer && v.IsNil() {
		return fmt.Errorf("qlink: cannot send a nil %T", m)
	}
	var grant int64
	switch m := m.(type) {
	case *serialize.ResultBatch:
		grant = int64(m.Credit)
	case *serialize.Credit:
		grant = int64(m.N)
	case *serialize.Shutdown:
	case *serialize.Heartbeat:
		return nil
	default:
		return fmt.Errorf("qlink: a block cannot send %v", m.Kind())
	}
	b.mu.Lock()
	switch {
	case b.err != nil:
		err := b.err
		b.mu.Unlock()
		return err
	case b.closing:
		b.mu.Unlock()
		return link.ErrClosed
	}
	b.out = append(b.out, m)
	b.mu.Unlock()
	signal(b.wakeW)
	if grant > 0 && b.avail.Add(grant) > 0 {
		signal(b.wakeP)
	}
	return nil
}

// Recv returns the next message for the block: a TaskBatch it claimed or
// the front end's Shutdown. Once the block is closed or has failed, and
// what came before is delivered, it fails with an error that matches
// link.ErrClosed and the cause: ErrLost, ErrFrontGone, or
// link.ErrPeerTimeout.
func (b *Block) Recv(ctx context.Context) (serialize.Message, error) {
	m, ok, err := b.in.get(ctx)
	if ok {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	return nil, link.ErrClosed
}

// Close writes what Send queued, stops the block's heartbeat and leaves the
// queue. Batches it claimed and did not answer go back to the queue when
// the front end sees it gone. Close is idempotent.
func (b *Block) Close() error {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return nil
	}
	b.closing = true
	b.mu.Unlock()
	close(b.stopW)
	b.wgW.Wait()
	close(b.done)
	b.wgP.Wait()
	b.in.close()
	// The heartbeat goes last: the front end then reads it as a block that
	// left (and reads the files above first).
	_ = os.Remove(b.path(dirHB, beatName(b.id, b.hbN)))
	return nil
}

func (b *Block) fail(err error) {
	b.mu.Lock()
	if b.err != nil {
		b.mu.Unlock()
		return
	}
	b.err = err
	b.mu.Unlock()
	b.in.close()
	b.log.Debug("queue link ended", "err", err)
}

// ---- writing ----

func (b *Block) writeLoop() {
	defer b.wgW.Done()
	codec := serialize.NewCodec(serialize.Options{MaxFrame: b.opt.MaxFrame})
	var batch []serialize.Message
	var buf []byte
	for {
		stopping := false
		select {
		case <-b.wakeW:
		case <-b.stopW:
			stopping = true
		}
		b.mu.Lock()
		batch, b.out = b.out, batch[:0]
		b.mu.Unlock()
		if len(batch) > 0 {
			var err error
			if buf, err = b.writeUp(codec, buf, batch); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					b.fail(b.goneError(ErrFrontGone, err.Error()))
				} else {
					b.fail(fmt.Errorf("%w: %w", link.ErrClosed, err))
				}
			}
		}
		clear(batch)
		if stopping {
			return
		}
	}
}

// writeUp writes msgs as result files: one, unless they exceed the size of
// a file.
func (b *Block) writeUp(codec *serialize.Codec, buf []byte, msgs []serialize.Message) ([]byte, error) {
	for len(msgs) > 0 {
		k, size := 0, 0
		for k < len(msgs) && (k == 0 || size < maxFileBytes) {
			size += upSize(msgs[k])
			k++
		}
		b.seq++
		name := resultFileName(b.id, b.seq)
		var err error
		buf, err = AppendFile(buf[:0], codec, KindUp, b.run, msgs[:k])
		if err == nil {
			err = writeAtomic(b.path(dirTmp, name), b.path(dirResults, name), buf)
		}
		if err != nil {
			return buf, fmt.Errorf("qlink: write result file %s: %w", name, err)
		}
		msgs = msgs[k:]
	}
	return buf, nil
}

// upSize estimates a message's encoded size.
func upSize(m serialize.Message) int {
	rb, ok := m.(*serialize.ResultBatch)
	if !ok {
		return 64
	}
	n := 16
	for i := range rb.Results {
		r := &rb.Results[i]
		n += len(r.Value) + len(r.Msg) + len(r.Stack) + 48
	}
	return n
}

// ---- polling for tasks ----

func (b *Block) pollLoop() {
	defer b.wgP.Done()
	codec := serialize.NewCodec(serialize.Options{MaxFrame: b.opt.MaxFrame})
	hb := time.Duration(b.info.Heartbeat)
	bo := backoff{min: time.Duration(b.info.MinPoll), max: time.Duration(b.info.MaxPoll), last: time.Now()}
	sl := newSleeper()
	next := time.Now().Add(hb)
	for {
		select {
		case <-b.done:
			return
		default:
		}
		now := time.Now()
		tick := !now.Before(next)
		if tick {
			if err := b.checkFront(now); err != nil {
				b.fail(err)
				return
			}
			next = now.Add(hb)
		}
		hungry := b.avail.Load() > 0 && !b.shutdownSeen
		if tick || hungry {
			n, err := b.poll(codec)
			if err != nil {
				b.fail(err)
				return
			}
			if n > 0 {
				bo.active(now)
				continue
			}
		}
		wait := max(time.Until(next), 0)
		if hungry {
			wait = min(wait, bo.next(now))
		}
		// Fresh credit (wakeP) makes the block hungry: poll at once.
		if sl.wait(wait, b.wakeP, b.done) {
			bo.active(time.Now())
		}
	}
}

// beatLoop moves the block's heartbeat on every heartbeat interval, on a
// goroutine of its own so that no long poll delays it.
func (b *Block) beatLoop() {
	defer b.wgP.Done()
	t := time.NewTicker(time.Duration(b.info.Heartbeat))
	defer t.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
		}
		if err := b.beat(); err != nil {
			b.fail(err)
			return
		}
	}
}

// beat renames the heartbeat file to the next count.
func (b *Block) beat() error {
	old, nxt := b.path(dirHB, beatName(b.id, b.hbN)), b.path(dirHB, beatName(b.id, b.hbN+1))
	if err := os.Rename(old, nxt); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: heartbeat: %w", link.ErrClosed, err)
		}
		if _, serr := os.Stat(nxt); serr != nil { // not an NFS retry that did happen
			return b.goneError(ErrLost, "its heartbeat file was removed")
		}
	}
	b.hbN++
	return nil
}

// checkFront checks the front end's heartbeat.
func (b *Block) checkFront(now time.Time) error {
	n, state := b.frontBeat()
	switch state {
	case frontBeating:
		if n != b.frontN {
			b.frontN, b.frontSeen = n, now
		}
	case frontReplaced:
		return fmt.Errorf("%w: %w: another run took the queue over", link.ErrClosed, ErrFrontGone)
	case frontMissing:
		return b.goneError(ErrFrontGone, "its heartbeat is gone")
	}
	if since := now.Sub(b.frontSeen); since > b.opt.PeerTimeout {
		return fmt.Errorf("%w: the front end's heartbeat has not moved for %v (%w)", link.ErrPeerTimeout, since.Round(time.Millisecond), link.ErrClosed)
	}
	return nil
}

// goneError tells a fenced block from one whose front end left.
func (b *Block) goneError(cause error, what string) error {
	if _, err := os.Stat(b.path(dirCtl, "fenced-"+b.id)); err == nil {
		return fmt.Errorf("%w: %w: %s", link.ErrClosed, ErrLost, what)
	}
	if _, err := os.Stat(b.path(runFile)); err != nil {
		return fmt.Errorf("%w: %w: it closed the queue", link.ErrClosed, ErrFrontGone)
	}
	return fmt.Errorf("%w: %w: %s", link.ErrClosed, cause, what)
}

type frontState uint8

const (
	frontBeating frontState = iota
	frontMissing
	frontReplaced
)

// frontBeat reads the front end's heartbeat count from ctl/.
func (b *Block) frontBeat() (uint64, frontState) {
	names, err := listDir(b.path(dirCtl))
	if err != nil {
		return 0, frontMissing
	}
	other := false
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, "front-")
		if !ok {
			continue
		}
		if id, k, ok := parseBeat(rest); ok {
			if id == b.run.String() {
				return k, frontBeating
			}
			other = true
		}
	}
	if other {
		return 0, frontReplaced
	}
	return 0, frontMissing
}

// poll lists the queue's tasks, takes the front end's Shutdown if it is
// there, and claims batches, oldest first, while the block has credit. It
// returns how many batches it claimed.
func (b *Block) poll(codec *serialize.Codec) (int, error) {
	names, err := listDir(b.path(dirTasks))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, b.goneError(ErrFrontGone, "the queue's tasks directory is gone")
		}
		return 0, fmt.Errorf("%w: list the queue: %w", link.ErrClosed, err)
	}
	var cand []string
	for _, n := range names {
		if n == shutdownRFQ {
			if !b.shutdownSeen {
				b.readShutdown(codec)
			}
			continue
		}
		if _, ok := parseTaskFile(n); ok {
			cand = append(cand, n)
		}
	}
	if b.shutdownSeen || len(cand) == 0 {
		return 0, nil
	}
	slices.Sort(cand)
	claimed := 0
	for _, n := range cand {
		if b.avail.Load() <= 0 {
			break
		}
		ok, err := b.claim(codec, n)
		if err != nil {
			return claimed, err
		}
		if ok {
			claimed++
		}
	}
	return claimed, nil
}

// claim takes task file name by renaming it into the block's claim
// directory, and delivers its batches. It reports whether the file was
// claimed: false when another block took it first.
func (b *Block) claim(codec *serialize.Codec, name string) (bool, error) {
	src, dst := b.path(dirTasks, name), filepath.Join(b.claimDir, name)
	if err := os.Rename(src, dst); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("%w: claim %s: %w", link.ErrClosed, name, err)
		}
		if _, serr := os.Lstat(dst); serr != nil { // not an NFS retry that did happen
			if _, derr := os.Stat(b.claimDir); derr != nil {
				return false, b.goneError(ErrLost, "its claim directory was removed")
			}
			return false, nil // another block was first
		}
	}
	data, err := readFile(dst, b.rbuf)
	var h FileHeader
	var msgs []serialize.Message
	if err == nil {
		b.rbuf = data[:0]
		h, msgs, err = DecodeFile(codec, data)
		switch {
		case err != nil:
		case h.Kind != KindDown:
			err = fmt.Errorf("%w: a %v file among the tasks", ErrCorrupt, h.Kind)
		case h.Run != b.run:
			err = fmt.Errorf("%w: run %s, this run is %s", ErrOtherRun, h.Run, b.run)
		}
	}
	if err != nil {
		reason := "unreadable task file: " + err.Error()
		moved, merr := moveAside(b.root, dst, reason)
		b.log.Error("queue: refused a task file; the front end fails its tasks", "file", name, "reason", reason, "moved_to", moved, "move_err", merr)
		return false, nil
	}
	tasks := 0
	out := msgs[:0]
	for _, m := range msgs {
		if tb, ok := m.(*serialize.TaskBatch); ok {
			tasks += len(tb.Tasks)
			out = append(out, tb)
		} else {
			b.log.Warn("queue: ignored a message in a task file", "file", name, "kind", m.Kind())
		}
	}
	// A file may hold more tasks than the credit left. Rank 0's role takes
	// such an excess and pays it back from the credit its workers return,
	// announcing only what brings it above zero again (rankpool's ledger):
	// mirror that, or the excess would be counted twice and the block would
	// never claim again.
	//
	// The excess came out of the executor's Ahead credit, and the ledger
	// withholds it for good: hand it back to the executor at once, as
	// credit of the block's own, or every claim beyond the credit would
	// shrink the credit in circulation until the executor had none left
	// while the blocks sat idle.
	var excess int64
	for {
		old := b.avail.Load()
		if b.avail.CompareAndSwap(old, max(old-int64(tasks), 0)) {
			excess = max(int64(tasks)-old, 0)
			break
		}
	}
	if excess > 0 {
		b.mu.Lock()
		b.out = append(b.out, &serialize.Credit{N: uint32(min(excess, math.MaxUint32))})
		b.mu.Unlock()
		signal(b.wakeW)
	}
	b.in.putAll(out...)
	return true, nil
}

// readShutdown reads the front end's shutdown order and delivers it.
func (b *Block) readShutdown(codec *serialize.Codec) {
	path := b.path(dirTasks, shutdownRFQ)
	data, err := readFile(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	reason := "the front end asked"
	if err == nil {
		var h FileHeader
		var msgs []serialize.Message
		h, msgs, err = DecodeFile(codec, data)
		switch {
		case err != nil:
		case h.Run != b.run:
			return // a previous run's: not ours to obey
		case len(msgs) == 1 && msgs[0].Kind() == serialize.KindShutdown:
			reason = msgs[0].(*serialize.Shutdown).Reason
		default:
			err = fmt.Errorf("%w: the shutdown order holds %d messages", ErrCorrupt, len(msgs))
		}
	}
	if err != nil {
		// Only the front end writes this name: obey it even unreadable.
		b.log.Error("queue: the shutdown order is unreadable; stopping anyway", "file", path, "err", err)
		reason = "the front end asked (its shutdown order was unreadable: " + err.Error() + ")"
	}
	b.shutdownSeen = true
	b.in.putAll(&serialize.Shutdown{Reason: reason})
}
