package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
)

// Efficiency is one efficiency run: Tasks sleep tasks of TaskMs each on
// Workers worker slots, submitted at once.
type Efficiency struct {
	TaskMs  float64 `json:"task_ms"`
	Tasks   int     `json:"tasks"`
	Workers int     `json:"workers"`
	// MakespanS is the time from the first submit to the last result.
	MakespanS float64 `json:"makespan_s"`
	// IdealS is Ideal's makespan: full waves of tasks on every slot with
	// no overhead.
	IdealS float64 `json:"ideal_s"`
	// Efficiency is IdealS / MakespanS: 1 is no overhead at all.
	Efficiency float64 `json:"efficiency"`
	Errors     int     `json:"errors"`
}

// Ideal is the makespan of tasks tasks of d each on slots worker slots
// without any overhead: ceil(tasks / slots) waves of d. It is 0 when there
// are no tasks or no slots.
func Ideal(tasks, slots int, d time.Duration) time.Duration {
	if tasks <= 0 || slots <= 0 {
		return 0
	}
	waves := (tasks + slots - 1) / slots
	return time.Duration(waves) * d
}

// EfficiencyOf is ideal / measured, or 0 when measured is not positive.
func EfficiencyOf(ideal, measured time.Duration) float64 {
	if measured <= 0 {
		return 0
	}
	return ideal.Seconds() / measured.Seconds()
}

// AutoWaves is how many tasks per worker slot make an ideal makespan of
// about target with tasks of d: at least MinWaves, so that even long tasks
// run more than one wave.
func AutoWaves(d, target time.Duration) int {
	if d <= 0 {
		return MinWaves
	}
	return max(MinWaves, int((target+d-1)/d))
}

// RunEfficiency submits tasks sleep tasks of d each to ex at once (the
// built-in sleep app) and waits for all; the ideal makespan counts ex's
// worker slots now.
func RunEfficiency(ctx context.Context, ex *frontend.Executor, d time.Duration, tasks int) (Efficiency, error) {
	e := Efficiency{TaskMs: float64(d.Nanoseconds()) / 1e6, Tasks: tasks, Workers: Workers(ex)}
	secs := d.Seconds()
	futs := make([]*frontend.Future[struct{}], tasks)
	start := time.Now()
	for i := range futs {
		futs[i] = frontend.Sleep.Call(ex, frontend.V(secs))
	}
	for _, f := range futs {
		if _, err := f.Get(ctx); err != nil {
			if ctx.Err() != nil {
				return e, fmt.Errorf("bench: %w", ctx.Err())
			}
			e.Errors++
		}
	}
	measured := time.Since(start)
	ideal := Ideal(tasks, e.Workers, d)
	e.MakespanS, e.IdealS, e.Efficiency = measured.Seconds(), ideal.Seconds(), EfficiencyOf(ideal, measured)
	if tasks == 0 {
		e.MakespanS = 0
	}
	return e, nil
}
