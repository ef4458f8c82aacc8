package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// WriteReport writes r into dir (made if missing): result.json; a short
// Markdown report (results.md) of a table per part that names command and
// the machine; and, for each part that has data, a plot as PNG and SVG:
// latency (the distribution of round trips), efficiency (against task
// duration, with the ideal), scaling (throughput, latency and efficiency
// against ranks) and memory (heap against pending tasks).
func (r Result) WriteReport(dir, command string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), js.Bytes(), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.Markdown(command)), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	for _, f := range r.figures() {
		for _, ext := range []string{"png", "svg"} {
			if err := f.save(filepath.Join(dir, f.name+"."+ext), ext); err != nil {
				return err
			}
		}
	}
	return nil
}

// Plots lists the base names of the plots WriteReport writes for r (each
// as .png and .svg).
func (r Result) Plots() []string {
	var names []string
	for _, f := range r.figures() {
		names = append(names, f.name)
	}
	return names
}

// Markdown returns r as a short Markdown report: a line naming command and
// the machine, then a small table per part that ran.
func (r Result) Markdown(command string) string {
	var b strings.Builder
	date := r.Date
	if t, err := time.Parse(time.RFC3339, r.Date); err == nil {
		date = t.Format("2006-01-02")
	} else if date == "" {
		date = time.Now().UTC().Format("2006-01-02")
	}
	fmt.Fprintf(&b, "`%s` on %s: %d cores", command, r.Host, r.Cores)
	if r.CPUModel != "" {
		fmt.Fprintf(&b, " (%s)", r.CPUModel)
	}
	for _, s := range []string{r.OS, r.MPI, r.GoVersion} {
		if s != "" {
			fmt.Fprintf(&b, ", %s", s)
		}
	}
	fmt.Fprintf(&b, ", %s link, %s", orTCP(r.Link), date)
	b.WriteString(":\n")
	if r.ran(PartThroughput) || r.ran(PartLatency) {
		b.WriteString("\n| ranks | worker slots | no-op tasks | tasks/s | latency p50 | p99 | p99.9 | max |\n")
		b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s |\n",
			r.NP, countOrDash(r.Workers), group(r.Tasks), group(int(r.TasksPerS+0.5)),
			fmtMicros(r.LatencyP50us), fmtMicros(r.LatencyP99us), fmtMicros(r.LatencyP999us), fmtMicros(r.LatencyMaxUs))
	}
	if len(r.Efficiency) > 0 {
		b.WriteString("\n| sleep task | tasks | worker slots | ideal | measured | efficiency |\n")
		b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, e := range r.Efficiency {
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s |\n",
				fmtMs(e.TaskMs), group(e.Tasks), e.Workers, fmtSeconds(e.IdealS), fmtSeconds(e.MakespanS), fmtPercent(e.Efficiency))
		}
	}
	if len(r.Scaling) > 0 {
		b.WriteString("\n| ranks | worker slots | no-op tasks/s | latency p50 | p99 | efficiency, 10 ms tasks |\n")
		b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range r.Scaling {
			fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %s |\n",
				s.NP, s.Workers, group(int(s.TasksPerS+0.5)), fmtMicros(s.LatencyP50us), fmtMicros(s.LatencyP99us), fmtPercent(s.Efficiency10ms))
		}
	}
	if len(r.Memory) > 0 {
		b.WriteString("\n| pending tasks | front-end heap | bytes per pending task |\n")
		b.WriteString("| ---: | ---: | ---: |\n")
		for _, m := range r.Memory {
			fmt.Fprintf(&b, "| %s | %s | %.0f |\n", group(m.Pending), fmtBytes(m.HeapBytes), m.BytesPerTask)
		}
	}
	fmt.Fprintf(&b, "\nEvery task's value was checked: %d wrong or failed.\n", r.Errors)
	return b.String()
}

func orTCP(link string) string {
	if link == "" {
		return "tcp"
	}
	return link
}

// group writes n with commas between groups of three digits.
func group(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func countOrDash(n int) string {
	if n == 0 {
		return "—"
	}
	return strconv.Itoa(n)
}

// fmtMicros writes a latency in µs, or in ms from 1 ms up.
func fmtMicros(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.2f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

// fmtMs writes a task duration given in ms.
func fmtMs(ms float64) string {
	switch {
	case ms >= 1000:
		return strconv.FormatFloat(ms/1000, 'g', 4, 64) + " s"
	case ms < 1:
		return strconv.FormatFloat(ms*1000, 'g', 4, 64) + " µs"
	}
	return strconv.FormatFloat(ms, 'g', 4, 64) + " ms"
}

func fmtSeconds(s float64) string { return fmt.Sprintf("%.3f s", s) }

func fmtPercent(f float64) string { return fmt.Sprintf("%.1f %%", 100*f) }

// fmtBytes writes a byte count in KiB or MiB.
func fmtBytes(n int64) string {
	switch f := float64(n); {
	case f >= 1<<20 || f <= -(1<<20):
		return fmt.Sprintf("%.1f MiB", f/(1<<20))
	case f >= 1<<10 || f <= -(1<<10):
		return fmt.Sprintf("%.0f KiB", f/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
