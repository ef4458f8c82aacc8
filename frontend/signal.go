package frontend

import (
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// sigs tracks the executors that launched a block, for the one handler of
// SIGINT and SIGTERM that closes them all before the process exits.
var sigs struct {
	mu   sync.Mutex
	live map[*Executor]struct{}
	ch   chan os.Signal
	stop chan struct{}
}

// exit is os.Exit, replaced in tests.
var exit = os.Exit

// watchSignals adds e to the executors closed on SIGINT or SIGTERM, and
// installs the handler if it is the first.
func watchSignals(e *Executor) {
	sigs.mu.Lock()
	defer sigs.mu.Unlock()
	if sigs.live == nil {
		sigs.live = make(map[*Executor]struct{})
	}
	sigs.live[e] = struct{}{}
	if sigs.ch != nil {
		return
	}
	ch, stop := make(chan os.Signal, 1), make(chan struct{})
	sigs.ch, sigs.stop = ch, stop
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-ch:
			onSignal(sig)
		case <-stop:
		}
	}()
}

// unwatchSignals removes e; the handler goes with the last executor.
func unwatchSignals(e *Executor) {
	sigs.mu.Lock()
	defer sigs.mu.Unlock()
	delete(sigs.live, e)
	if len(sigs.live) == 0 && sigs.ch != nil {
		signal.Stop(sigs.ch)
		close(sigs.stop)
		sigs.ch, sigs.stop = nil, nil
	}
}

// onSignal closes every live executor, so that no rank outlives the front
// end, and exits with 128 + the signal's number (130 for SIGINT, 143 for
// SIGTERM).
func onSignal(sig os.Signal) {
	sigs.mu.Lock()
	live := make([]*Executor, 0, len(sigs.live))
	for e := range sigs.live {
		live = append(live, e)
	}
	sigs.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range live {
		e.log.Warn("signal received; closing the executor", "signal", sig.String())
		wg.Go(func() { _ = e.Close() })
	}
	wg.Wait()
	code := 1
	if s, ok := sig.(syscall.Signal); ok {
		code = 128 + int(s)
	}
	exit(code)
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

// teeWriter writes to both writers; the second's failures are ignored.
type teeWriter struct {
	w    io.Writer
	tail io.Writer
}

func (t teeWriter) Write(p []byte) (int, error) {
	_, _ = t.tail.Write(p)
	return t.w.Write(p)
}
