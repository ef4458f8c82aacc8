package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// WriteReport writes r into dir (made if missing): result.json, a short
// Markdown table (results.md) that names command and the machine, and the
// latency distribution as latency.png and latency.svg.
func (r Result) WriteReport(dir, command string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), js.Bytes(), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.Markdown(command)), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if len(r.Latencies) == 0 {
		return nil
	}
	p, err := r.latencyPlot()
	if err != nil {
		return err
	}
	for _, ext := range []string{"png", "svg"} {
		if err := p.Save(6*vg.Inch, 4*vg.Inch, filepath.Join(dir, "latency."+ext)); err != nil {
			return fmt.Errorf("bench: plot: %w", err)
		}
	}
	return nil
}

// Markdown returns r as a short Markdown table naming command and the
// machine.
func (r Result) Markdown(command string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "`%s` on %s (%d cores, %s), %s link, %s:\n\n", command, r.Host, r.Cores, r.GoVersion, orTCP(r.Link), time.Now().UTC().Format("2006-01-02"))
	b.WriteString("| ranks | no-op tasks | tasks/s | latency p50 | p99 | p99.9 | max | errors |\n")
	b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	fmt.Fprintf(&b, "| %d | %d | %.0f | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %d |\n",
		r.NP, r.Tasks, r.TasksPerS, r.LatencyP50us, r.LatencyP99us, r.LatencyP999us, r.LatencyMaxUs, r.Errors)
	return b.String()
}

func orTCP(link string) string {
	if link == "" {
		return "tcp"
	}
	return link
}

// latencyPlot draws the latency run's distribution: the share of round
// trips at or under each latency.
func (r Result) latencyPlot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("single-task round trip, %d ranks on %s", r.NP, r.Host)
	p.X.Label.Text = "latency (µs)"
	p.Y.Label.Text = "share of round trips at or under it"
	pts := make(plotter.XYs, len(r.Latencies))
	for i, d := range r.Latencies {
		pts[i].X = float64(d.Nanoseconds()) / 1e3
		pts[i].Y = float64(i+1) / float64(len(r.Latencies))
	}
	line, err := plotter.NewLine(pts)
	if err != nil {
		return nil, fmt.Errorf("bench: plot: %w", err)
	}
	p.Add(line, plotter.NewGrid())
	p.Y.Max = 1
	return p, nil
}
