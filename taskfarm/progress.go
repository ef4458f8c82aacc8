package taskfarm

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// Counts is a farm's progress at one moment.
type Counts struct {
	// Total counts the tasks to run in this run; Skipped those done in an
	// earlier one.
	Total, Skipped int
	// Done, Failed and Running count this run's tasks that succeeded,
	// failed, and are running now (at most one per worker).
	Done, Failed, Running int
}

// Progress reports a farm's progress. Start is called once before the
// first task with a function that returns the counts at any moment (safe
// for concurrent use); Stop once after the last, before the summary.
type Progress interface {
	Start(counts func() Counts)
	Stop()
}

type noProgress struct{}

func (noProgress) Start(func() Counts) {}
func (noProgress) Stop()               {}

// rateETA returns the tasks finished per second since start, and the time
// left at that rate ("?" before the first task ends).
func rateETA(c Counts, elapsed time.Duration) (float64, string) {
	finished := c.Done + c.Failed
	if finished == 0 || elapsed <= 0 {
		return 0, "?"
	}
	rate := float64(finished) / elapsed.Seconds()
	left := time.Duration(float64(c.Total-finished) / rate * float64(time.Second))
	return rate, left.Round(time.Second).String()
}

// Lines reports progress as a plain line every interval, for output that
// is not a terminal (a batch job's log).
type Lines struct {
	w     io.Writer
	every time.Duration

	stop chan struct{}
	done chan struct{}
}

// NewLines returns a Progress that writes a line to w every interval.
func NewLines(w io.Writer, every time.Duration) *Lines {
	return &Lines{w: w, every: every}
}

// Start implements Progress.
func (l *Lines) Start(counts func() Counts) {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	start := time.Now()
	c := counts()
	fmt.Fprintf(l.w, "rankfarm run: %d tasks to run", c.Total)
	if c.Skipped > 0 {
		fmt.Fprintf(l.w, " (%d done in an earlier run)", c.Skipped)
	}
	fmt.Fprintln(l.w)
	go func() {
		defer close(l.done)
		if l.every <= 0 {
			<-l.stop
			return
		}
		t := time.NewTicker(l.every)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				c := counts()
				rate, eta := rateETA(c, time.Since(start))
				fmt.Fprintf(l.w, "rankfarm run: %d/%d done, %d failed, %d running, %.1f/s, ETA %s\n",
					c.Done+c.Failed, c.Total, c.Failed, c.Running, rate, eta)
			}
		}
	}()
}

// Stop implements Progress.
func (l *Lines) Stop() {
	close(l.stop)
	<-l.done
}

// Bar draws a live progress bar on a terminal: done, failed, running, rate
// and ETA. Lines written to its Writer print above the bar.
type Bar struct {
	w io.Writer

	mu     sync.Mutex
	p      *mpb.Progress
	bar    *mpb.Bar
	counts func() Counts
	stop   chan struct{}
	done   chan struct{}
}

// NewBar returns a Progress that draws on the terminal w.
func NewBar(w io.Writer) *Bar { return &Bar{w: w} }

// Writer returns a writer whose lines print above the bar while it is
// drawn, and straight to the terminal otherwise.
func (b *Bar) Writer() io.Writer { return barWriter{b} }

type barWriter struct{ b *Bar }

func (w barWriter) Write(p []byte) (int, error) {
	w.b.mu.Lock()
	prog := w.b.p
	w.b.mu.Unlock()
	if prog != nil {
		if n, err := prog.Write(p); err == nil {
			return n, nil
		}
	}
	return w.b.w.Write(p)
}

// refresh is how often the bar is redrawn.
const refresh = 150 * time.Millisecond

// Start implements Progress.
func (b *Bar) Start(counts func() Counts) {
	start := time.Now()
	c := counts()
	p := mpb.New(mpb.WithOutput(b.w), mpb.WithWidth(30), mpb.WithRefreshRate(refresh), mpb.WithAutoRefresh())
	name := "tasks"
	if c.Skipped > 0 {
		name = fmt.Sprintf("tasks (+%d earlier)", c.Skipped)
	}
	bar := p.AddBar(int64(c.Total),
		mpb.PrependDecorators(
			decor.Name(name+" ", decor.WC{C: decor.DindentRight}),
			decor.CountersNoUnit("%d/%d "),
		),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
			c := counts()
			rate, eta := rateETA(c, time.Since(start))
			return fmt.Sprintf(" %d failed  %d running  %.1f/s  ETA %s", c.Failed, c.Running, rate, eta)
		})),
	)
	b.mu.Lock()
	b.p, b.bar, b.counts = p, bar, counts
	b.stop, b.done = make(chan struct{}), make(chan struct{})
	b.mu.Unlock()
	go func() {
		defer close(b.done)
		t := time.NewTicker(refresh / 2)
		defer t.Stop()
		for {
			c := counts()
			bar.SetCurrent(int64(c.Done + c.Failed))
			select {
			case <-b.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// Stop implements Progress: it draws the bar a last time and leaves it on
// the screen.
func (b *Bar) Stop() {
	close(b.stop)
	<-b.done
	b.mu.Lock()
	p, bar := b.p, b.bar
	b.p = nil
	b.mu.Unlock()
	c := b.counts()
	bar.SetCurrent(int64(c.Done + c.Failed))
	if !bar.Completed() {
		bar.Abort(false) // stopped early: leave it as it is
	}
	p.Wait()
}
