package frontend

import (
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// How the progress bar (Options.Progress) polls and draws.
const (
	// progressPoll is how often the bar reads the executor's counters, and
	// redraws itself on a terminal.
	progressPoll = 100 * time.Millisecond
	// progressLogEvery is how often a line is written to a Progress that
	// is not a terminal.
	progressLogEvery = 10 * time.Second
	// progressRateWindow is the time constant of the rate's moving
	// average.
	progressRateWindow = 5 * time.Second
	// progressBarWidth bounds the bar itself (without its counts); the
	// whole line gets progressLineWidth when the writer is not a terminal.
	progressBarWidth  = 40
	progressLineWidth = 120
)

// progress draws an executor's progress bar (Options.Progress) with mpb.
// A nil *progress is the bar off: every method is then a nil check. It
// costs the executor nothing per task: a goroutine of its own polls Stats
// every progressPoll.
type progress struct {
	e     *Executor
	w     io.Writer
	tty   bool
	start time.Time

	// mu orders the program's writes through ProgressWriter before the
	// bar's end; held only to read or swap p, never across a call into the
	// bar (whose decorators read snap, without a lock).
	mu   sync.RWMutex
	p    *mpb.Progress // nil until the first task, and again after stop
	snap atomic.Pointer[progressSnap]

	// Owned by loop, then by stop once loop has ended.
	mp      *mpb.Progress
	bar     *mpb.Bar
	refresh chan any
	first   time.Time // the poll before the first task was seen
	lastT   time.Time
	lastN   int64
	rate    float64
	sampled bool

	stop chan struct{}
	done chan struct{}
}

// progressSnap is what the bar's decorators show besides done/total.
type progressSnap struct {
	failed, running int64
	rate            float64 // tasks settled per second
	left            int64   // submitted and not settled
	elapsed         time.Duration
	final           bool
}

// startProgress starts drawing the bar on w; a nil w leaves it off.
// Called once by Start, before the executor serves.
func (e *Executor) startProgress(w io.Writer) {
	if w == nil {
		return
	}
	now := time.Now()
	pr := &progress{e: e, w: w, tty: progressTerminal(w), start: now, lastT: now,
		stop: make(chan struct{}), done: make(chan struct{})}
	e.prog = pr
	go pr.loop()
}

// stopProgress draws the bar a last time, as complete when every task
// submitted has settled, and waits for its goroutines to end. Called once,
// by Close after every task settled (or by a Start that failed).
func (e *Executor) stopProgress() {
	pr := e.prog
	if pr == nil {
		return
	}
	close(pr.stop)
	<-pr.done
	if !pr.update(time.Now(), true) {
		return // no task: no bar
	}
	// Later writes through ProgressWriter go straight to the writer; those
	// before are in the bar's buffer and print with its last render.
	pr.mu.Lock()
	pr.p = nil
	pr.mu.Unlock()
	pr.bar.EnableTriggerComplete() // completes it when done == total
	if !pr.bar.Completed() {
		pr.bar.Abort(false) // unresolved tasks: leave it drawn as it is
	}
	pr.mp.Wait()
}

// progressTerminal tells whether the bar is redrawn in place (a test
// changes it).
var progressTerminal = isTerminal

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// loop polls the counters and redraws the bar until stop.
func (pr *progress) loop() {
	defer close(pr.done)
	tick := time.NewTicker(progressPoll)
	defer tick.Stop()
	lastLog := pr.start
	for {
		select {
		case <-pr.stop:
			return
		case now := <-tick.C:
			if !pr.update(now, false) {
				continue
			}
			if pr.tty || now.Sub(lastLog) >= progressLogEvery {
				lastLog = now
				select {
				case pr.refresh <- now:
				case <-pr.stop:
					return
				}
			}
		}
	}
}

// update reads the counters and hands them to the bar, making the bar at
// the first task. It reports whether there is a bar.
func (pr *progress) update(now time.Time, final bool) bool {
	s := pr.e.Stats()
	if pr.bar == nil {
		if s.Submitted == 0 {
			pr.lastT = now
			return false
		}
		pr.first = pr.lastT
		pr.create()
	}
	finished := s.Done + s.Failed
	elapsed := now.Sub(pr.first)
	if dt := now.Sub(pr.lastT).Seconds(); dt > 0 {
		inst := float64(finished-pr.lastN) / dt
		if !pr.sampled {
			pr.rate, pr.sampled = inst, true
		} else {
			pr.rate += (1 - math.Exp(-dt/progressRateWindow.Seconds())) * (inst - pr.rate)
		}
	}
	pr.lastT, pr.lastN = now, finished
	rate := pr.rate
	if final && elapsed > 0 {
		rate = float64(finished) / elapsed.Seconds() // the run's average
	}
	pr.snap.Store(&progressSnap{failed: s.Failed, running: s.InFlight, rate: rate,
		left: s.Submitted - finished, elapsed: elapsed, final: final})
	pr.bar.SetTotal(s.Submitted, false)
	pr.bar.SetCurrent(finished)
	return true
}

// create makes the mpb container and its bar. The bar's total starts
// unset (it never completes by itself while the program submits more);
// stopProgress completes it.
func (pr *progress) create() {
	pr.refresh = make(chan any)
	pr.mp = mpb.New(mpb.WithOutput(pr.w), mpb.WithManualRefresh(pr.refresh), mpb.WithWidth(progressLineWidth))
	pr.bar = pr.mp.AddBar(0, mpb.BarWidth(progressBarWidth),
		mpb.PrependDecorators(
			decor.Name("tasks "),
			decor.CountersNoUnit("%d/%d"),
		),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
			return pr.snap.Load().String()
		})),
	)
	pr.mu.Lock()
	pr.p = pr.mp
	pr.mu.Unlock()
}

// String is the part of the bar after it: "3 failed  96 running  1234/s
// ETA 4s" while it runs, "... elapsed 12s" at the end.
func (s *progressSnap) String() string {
	if s == nil {
		return ""
	}
	out := fmt.Sprintf("%d failed  %d running  %s/s", s.failed, s.running, fmtRate(s.rate))
	switch {
	case s.final:
		return out + "  elapsed " + fmtDuration(s.elapsed)
	case s.left == 0:
		return out + "  ETA 0s"
	case s.rate <= 0:
		return out + "  ETA ?"
	}
	return out + "  ETA " + fmtDuration(time.Duration(float64(s.left)/s.rate*float64(time.Second)))
}

func fmtRate(r float64) string {
	if r < 10 {
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.0f", r)
}

// fmtDuration writes d to a tenth of a second below 10 s, to the second
// above.
func fmtDuration(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// ProgressWriter returns a writer for the program's own output (its log
// lines, its prints) while a progress bar is drawn: on a terminal, lines
// written to it print above the bar instead of being overwritten by it
// (they appear at the bar's next redraw). Otherwise, and after Close, it
// writes straight to Options.Progress; with Progress nil it is os.Stderr.
func (e *Executor) ProgressWriter() io.Writer {
	if e.prog == nil {
		return os.Stderr
	}
	return progressWriter{e.prog}
}

type progressWriter struct{ pr *progress }

func (w progressWriter) Write(b []byte) (int, error) {
	if w.pr.tty {
		w.pr.mu.RLock()
		defer w.pr.mu.RUnlock()
		if w.pr.p != nil {
			if n, err := w.pr.p.Write(b); err == nil {
				return n, nil
			}
		}
	}
	return w.pr.w.Write(b)
}
