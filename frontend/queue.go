package frontend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rankfarm/rankfarm/internal/qlink"
)

// EnvQueueDir, when set and Options.QueueDir is "", makes every executor
// talk to its blocks through a shared-filesystem queue under that directory
// instead of TCP: a site or a test suite can switch the link without
// changing the program.
const EnvQueueDir = "RANKFARM_QUEUE_DIR"

// queueRoot returns where the executor keeps its queues: Options.QueueDir,
// else $RANKFARM_QUEUE_DIR, else "" for TCP.
func queueRoot(opt Options) string {
	if opt.QueueDir != "" {
		return opt.QueueDir
	}
	return os.Getenv(EnvQueueDir)
}

// setupQueue prepares the queue link instead of the TCP listener: a fresh
// 0700 directory for this run under root (removed on Close), in which each
// block gets its own queue, named after it.
func (e *Executor) setupQueue(root string, opt Options, s *launchSpec) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("frontend: make the queue directory: %w", err)
	}
	dir, err := os.MkdirTemp(root, "run-") // mode 0700
	if err != nil {
		return fmt.Errorf("frontend: make the run's queue directory: %w", err)
	}
	e.queueRun = dir
	e.queueOpt = qlink.FrontOptions{
		// A block whose queue heartbeat stalls that long is lost, as a TCP
		// block silent for the peer timeout is.
		BlockTimeout: opt.PeerTimeout,
		// The link ends as soon as its block is gone or lost: the
		// executor then runs its tasks again elsewhere and replaces it.
		NoBlockTimeout: time.Nanosecond,
		Logger:         e.log,
	}
	if opt.PeerTimeout > 0 {
		e.queueOpt.Heartbeat = min(max(opt.PeerTimeout/4, time.Millisecond), qlink.DefaultHeartbeat)
	}
	s.env = map[string]string{EnvExec: "1"}
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
	e.awaiting = make(map[string]chan accepted)
	return nil
}

// openQueue opens the queue of block name, sets env to point the block at
// it, and waits in the background for the block's Hello, which it sends to
// wait (buffered). stop ends that wait.
func (e *Executor) openQueue(ctx context.Context, name string, env map[string]string, wait chan<- accepted) (front *qlink.Front, stop func(), err error) {
	opt := e.queueOpt
	opt.Logger = e.log.With("block", name)
	front, err = qlink.Open(ctx, filepath.Join(e.queueRun, name), opt)
	if err != nil {
		return nil, nil, fmt.Errorf("frontend: %w", err)
	}
	env[qlink.EnvQueue] = front.Dir()
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if h, err := front.WaitBlock(wctx); err == nil {
			wait <- accepted{conn: front, hello: h}
		}
	}()
	return front, func() { cancel(); <-done }, nil
}

// releaseQueue removes the run's queue directory, unless a queue kept
// refused files in it for inspection (each Front removed the rest). What a
// stale listing of a network filesystem hides for a moment is removed too.
func (e *Executor) releaseQueue() {
	if e.queueRun == "" {
		return
	}
	names, _ := os.ReadDir(e.queueRun)
	kept := false
	for _, n := range names {
		dir := filepath.Join(e.queueRun, n.Name())
		if bad, err := os.ReadDir(filepath.Join(dir, "bad")); err == nil && len(bad) > 0 {
			kept = true
			continue
		}
		if err := qlink.RemoveTree(dir, 3*time.Second); err != nil {
			e.log.Warn("a block's queue directory could not be removed", "dir", dir, "err", err)
		}
	}
	if kept {
		e.log.Warn("the queue directory keeps refused files for inspection", "dir", e.queueRun)
		return
	}
	if err := os.Remove(e.queueRun); err != nil && !errors.Is(err, os.ErrNotExist) {
		e.log.Warn("the queue directory could not be removed", "dir", e.queueRun, "err", err)
	}
}
