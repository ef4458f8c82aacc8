package bench

import (
	"cmp"
	"fmt"
	"image/color"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	// The formats of NewFormattedCanvas.
	_ "gonum.org/v1/plot/vg/vgimg"
	_ "gonum.org/v1/plot/vg/vgsvg"
)

// figure is one plot file: a column of panels sharing its width.
type figure struct {
	name   string
	panels []*plot.Plot
}

// Sizes of a figure.
const (
	figureWidth = 6 * vg.Inch
	panelHeight = 4 * vg.Inch
	stackHeight = 2.6 * vg.Inch // a panel's height in a column of several
)

// figures returns r's plots: one per part that has data.
func (r Result) figures() []figure {
	var fs []figure
	if len(r.Latencies) > 0 {
		fs = append(fs, figure{"latency", []*plot.Plot{r.latencyPlot()}})
	}
	if len(r.Efficiency) > 0 {
		fs = append(fs, figure{"efficiency", []*plot.Plot{r.efficiencyPlot()}})
	}
	if len(r.Scaling) > 0 {
		fs = append(fs, figure{"scaling", r.scalingPlots()})
	}
	if len(r.Memory) > 0 {
		fs = append(fs, figure{"memory", []*plot.Plot{r.memoryPlot()}})
	}
	return fs
}

// save writes f to path in format ("png" or "svg").
func (f figure) save(path, format string) error {
	h := panelHeight
	if len(f.panels) > 1 {
		h = stackHeight * vg.Length(len(f.panels))
	}
	c, err := draw.NewFormattedCanvas(figureWidth, h, format)
	if err != nil {
		return fmt.Errorf("bench: plot %s: %w", f.name, err)
	}
	rows := make([][]*plot.Plot, len(f.panels))
	for i, p := range f.panels {
		rows[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadX: vg.Points(4), PadY: vg.Points(12),
		PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8)}
	canvases := plot.Align(rows, tiles, draw.New(c))
	for i := range rows {
		rows[i][0].Draw(canvases[i][0])
	}
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if _, err := c.WriteTo(out); err != nil {
		out.Close()
		return fmt.Errorf("bench: plot %s: %w", path, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	return nil
}

// Colours of the plots' lines.
var (
	measuredColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	idealColor    = color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}
	secondColor   = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// newPlot is a plot with a title, axis labels and a grid.
func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	p.Add(plotter.NewGrid())
	return p
}

// addSeries adds xys as a line with points, named in the legend.
func addSeries(p *plot.Plot, name string, xys plotter.XYs, c color.Color) {
	line, pts, err := plotter.NewLinePoints(xys)
	if err != nil { // NaN or Inf: leave the series out
		return
	}
	line.Color, pts.Color = c, c
	pts.Shape = draw.CircleGlyph{}
	p.Add(line, pts)
	if name != "" {
		p.Legend.Add(name, line, pts)
	}
}

// addIdeal adds the ideal efficiency, 1, as a dashed line.
func addIdeal(p *plot.Plot) {
	one := plotter.NewFunction(func(float64) float64 { return 1 })
	one.Color = idealColor
	one.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(one)
	p.Legend.Add("ideal", one)
	p.Legend.Left, p.Legend.Top = true, false
}

// logX puts p's x axis on a log scale over [lo/2, hi*2].
func logX(p *plot.Plot, lo, hi float64) {
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Min, p.X.Max = lo/2, hi*2
}

// latencyPlot draws the latency run's distribution: the share of round
// trips at or under each latency.
func (r Result) latencyPlot() *plot.Plot {
	p := newPlot(fmt.Sprintf("single-task round trip, %d ranks on %s", r.NP, r.Host),
		"latency (µs, log scale)", "share of round trips at or under it")
	pts := make(plotter.XYs, len(r.Latencies))
	for i, d := range r.Latencies {
		pts[i].X = max(micros(d), 0.001)
		pts[i].Y = float64(i+1) / float64(len(r.Latencies))
	}
	if line, err := plotter.NewLine(pts); err == nil {
		line.Color = measuredColor
		p.Add(line)
	}
	logX(p, pts[0].X, pts[len(pts)-1].X)
	p.Y.Min, p.Y.Max = 0, 1
	return p
}

// efficiencyPlot draws the efficiency against the task duration, with the
// ideal.
func (r Result) efficiencyPlot() *plot.Plot {
	es := slices.Clone(r.Efficiency)
	slices.SortFunc(es, func(a, b Efficiency) int { return cmp.Compare(a.TaskMs, b.TaskMs) })
	workers := es[0].Workers
	p := newPlot(fmt.Sprintf("efficiency of sleep tasks, %d ranks (%d worker slots) on %s", r.NP, workers, r.Host),
		"task duration (ms, log scale)", "ideal makespan / measured")
	xys := make(plotter.XYs, len(es))
	top := 1.0
	for i, e := range es {
		xys[i].X, xys[i].Y = e.TaskMs, e.Efficiency
		top = max(top, e.Efficiency)
	}
	addSeries(p, "measured", xys, measuredColor)
	addIdeal(p)
	logX(p, xys[0].X, xys[len(xys)-1].X)
	p.Y.Min, p.Y.Max = 0, top*1.1
	return p
}

// scalingPlots draws throughput, latency and efficiency against ranks.
func (r Result) scalingPlots() []*plot.Plot {
	ss := slices.Clone(r.Scaling)
	slices.SortFunc(ss, func(a, b Scale) int { return a.NP - b.NP })
	tput := make(plotter.XYs, len(ss))
	p50 := make(plotter.XYs, len(ss))
	p99 := make(plotter.XYs, len(ss))
	eff := make(plotter.XYs, len(ss))
	topEff := 1.0
	for i, s := range ss {
		x := float64(s.NP)
		tput[i] = plotter.XY{X: x, Y: s.TasksPerS}
		p50[i] = plotter.XY{X: x, Y: s.LatencyP50us}
		p99[i] = plotter.XY{X: x, Y: s.LatencyP99us}
		eff[i] = plotter.XY{X: x, Y: s.Efficiency10ms}
		topEff = max(topEff, s.Efficiency10ms)
	}
	a := newPlot(fmt.Sprintf("scaling over ranks on %s (%d cores)", r.Host, r.Cores), "", "no-op tasks/s")
	addSeries(a, "", tput, measuredColor)
	b := newPlot("", "", "latency (µs)")
	addSeries(b, "p50", p50, measuredColor)
	addSeries(b, "p99", p99, secondColor)
	b.Legend.Top, b.Legend.Left = true, true // the lines rise to the right
	c := newPlot("", "ranks (rank 0 and the workers)", "efficiency, 10 ms tasks")
	addSeries(c, "measured", eff, measuredColor)
	addIdeal(c)
	ps := []*plot.Plot{a, b, c}
	lo, hi := float64(ss[0].NP), float64(ss[len(ss)-1].NP)
	if lo == hi {
		lo, hi = lo-1, hi+1
	}
	for _, p := range ps {
		p.X.Min, p.X.Max = lo-0.2, hi+0.2
		p.X.Tick.Marker = npTicks(ss)
		p.Y.Min = 0
	}
	c.Y.Max = topEff * 1.1
	return ps
}

// npTicks marks each rank count.
func npTicks(ss []Scale) plot.ConstantTicks {
	ts := make(plot.ConstantTicks, len(ss))
	for i, s := range ss {
		ts[i] = plot.Tick{Value: float64(s.NP), Label: fmt.Sprint(s.NP)}
	}
	return ts
}

// memoryPlot draws the front end's heap against pending tasks.
func (r Result) memoryPlot() *plot.Plot {
	ms := slices.Clone(r.Memory)
	slices.SortFunc(ms, func(a, b MemoryPoint) int { return a.Pending - b.Pending })
	p := newPlot(fmt.Sprintf("front-end heap per pending task on %s: %.0f bytes", r.Host, ms[len(ms)-1].BytesPerTask),
		"pending tasks", "heap growth (MiB)")
	xys := make(plotter.XYs, len(ms)+1) // from the origin
	for i, m := range ms {
		xys[i+1] = plotter.XY{X: float64(m.Pending), Y: float64(m.HeapBytes) / (1 << 20)}
	}
	addSeries(p, "", xys, measuredColor)
	p.X.Min, p.Y.Min = 0, min(0, xys[len(xys)-1].Y)
	return p
}
