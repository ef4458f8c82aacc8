package monitor

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"
)

// materialize expands task chunks into rows of the tasks table, one chunk
// per transaction, until none is left or the deadline passes (a zero
// deadline means no limit). It returns the tasks it wrote.
func materialize(ctx context.Context, db *sql.DB, deadline time.Time) (int, error) {
	hosts, err := loadHostMap(ctx, db, 0)
	if err != nil {
		return 0, err
	}
	total := 0
	for deadline.IsZero() || time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, more, err := materializeOne(ctx, db, hosts)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
	return total, nil
}

func materializeOne(ctx context.Context, db *sql.DB, hosts *hostMap) (n int, more bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = tx.Rollback() }()
	var id, run int64
	var data []byte
	err = tx.QueryRowContext(ctx, `SELECT rowid, run, data FROM task_chunks ORDER BY rowid LIMIT 1`).Scan(&id, &run, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	st, err := tx.PrepareContext(ctx, `INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return 0, false, err
	}
	var insErr error
	derr := decodeChunk(data, func(t *TaskRow) {
		if insErr != nil {
			return
		}
		var rank, kind, msg any
		if t.Rank >= 0 {
			rank = int64(t.Rank)
		}
		if t.ErrKind != "" {
			kind = t.ErrKind
		}
		if t.Error != "" {
			msg = t.Error
		}
		_, insErr = st.ExecContext(ctx, run, int64(t.ID), t.App, t.State,
			nullTime(t.Submitted), nullTime(t.Ready), nullTime(t.Dispatched),
			nullTime(t.Started), nullTime(t.Ended), nullTime(t.Finished),
			nullStr(t.Block), rank, nullStr(hosts.host(run, t.Block, t.Rank)),
			t.Attempts, t.Requeues, kind, msg)
		n++
	})
	if insErr != nil {
		return 0, false, insErr
	}
	if derr != nil {
		// Keep the bad chunk out of the way rather than fail forever.
		return 0, true, errors.Join(derr, deleteChunk(ctx, tx, id), tx.Commit())
	}
	if err := deleteChunk(ctx, tx, id); err != nil {
		return 0, false, err
	}
	return n, true, tx.Commit()
}

func deleteChunk(ctx context.Context, tx *sql.Tx, id int64) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM task_chunks WHERE rowid = ?`, id)
	return err
}

// Reader reads a monitoring database, while its run writes it or after.
type Reader struct {
	db   *sql.DB
	path string
}

// OpenReader opens the database that target names (a run directory or the
// file; see Path).
func OpenReader(target string) (*Reader, error) {
	path := Path(target)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return nil, fmt.Errorf("monitor: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`PRAGMA busy_timeout=5000`); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("monitor: open %s: %w", path, err)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM runs`).Scan(&n); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("monitor: %s is not a rankfarm monitoring database: %w", path, err)
	}
	return &Reader{db: db, path: path}, nil
}

// Path returns the database file's path.
func (r *Reader) Path() string { return r.path }

// Close closes the database.
func (r *Reader) Close() error { return r.db.Close() }

// Materialize expands every task chunk into the tasks table (for plain SQL
// queries), within budget (0: no limit), and returns the tasks written.
func (r *Reader) Materialize(ctx context.Context, budget time.Duration) (int, error) {
	var deadline time.Time
	if budget > 0 {
		deadline = time.Now().Add(budget)
	}
	return materialize(ctx, r.db, deadline)
}

// RunInfo describes one run (one executor) in the database.
type RunInfo struct {
	ID      int64  `json:"id"`
	Started int64  `json:"started"`
	Ended   int64  `json:"ended"` // 0 while it runs (or if it crashed)
	Host    string `json:"host"`
	PID     int64  `json:"pid"`
	Command string `json:"command"`
	Dropped int64  `json:"dropped"`
}

// Runs lists the runs, oldest first.
func (r *Reader) Runs(ctx context.Context) ([]RunInfo, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT id, started, COALESCE(ended, 0), COALESCE(host, ''), COALESCE(pid, 0), COALESCE(command, ''), dropped FROM runs ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RunInfo
	for rows.Next() {
		var ri RunInfo
		if err := rows.Scan(&ri.ID, &ri.Started, &ri.Ended, &ri.Host, &ri.PID, &ri.Command, &ri.Dropped); err != nil {
			return nil, err
		}
		out = append(out, ri)
	}
	return out, rows.Err()
}

// Tasks calls f for each settled task of run, from the tasks table and the
// chunks not yet expanded, in one consistent read.
func (r *Reader) Tasks(ctx context.Context, run int64, f func(*TaskRow)) error {
	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	return tasksTx(ctx, tx, run, f)
}

func tasksTx(ctx context.Context, tx *sql.Tx, run int64, f func(*TaskRow)) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, COALESCE(app, ''), state, COALESCE(submitted, 0), COALESCE(ready, 0),
		COALESCE(dispatched, 0), COALESCE(started, 0), COALESCE(ended, 0), COALESCE(finished, 0),
		COALESCE(block, ''), COALESCE(rank, -1), COALESCE(attempts, 0), COALESCE(requeues, 0),
		COALESCE(err_kind, ''), COALESCE(error, '') FROM tasks WHERE run = ?`, run)
	if err != nil {
		return err
	}
	var t TaskRow
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id, &t.App, &t.State, &t.Submitted, &t.Ready, &t.Dispatched, &t.Started, &t.Ended, &t.Finished,
			&t.Block, &t.Rank, &t.Attempts, &t.Requeues, &t.ErrKind, &t.Error); err != nil {
			_ = rows.Close()
			return err
		}
		t.ID = uint64(id)
		f(&t)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	chunks, err := tx.QueryContext(ctx, `SELECT data FROM task_chunks WHERE run = ? ORDER BY rowid`, run)
	if err != nil {
		return err
	}
	defer chunks.Close()
	for chunks.Next() {
		var data []byte
		if err := chunks.Scan(&data); err != nil {
			return err
		}
		if err := decodeChunk(data, f); err != nil {
			return err
		}
	}
	return chunks.Err()
}

// Summary is a run's totals.
type Summary struct {
	Submitted  int64   `json:"submitted"`
	Done       int64   `json:"done"`
	Failed     int64   `json:"failed"`
	Unresolved int64   `json:"unresolved"`
	InFlight   int64   `json:"in_flight"`
	Queued     int64   `json:"queued"`
	Waiting    int64   `json:"waiting"`
	Retried    int64   `json:"retried"`
	Requeued   int64   `json:"requeued"`
	Memoized   int64   `json:"memoized"`
	Blocks     int64   `json:"blocks"`
	Workers    int64   `json:"workers"`
	Rate       float64 `json:"rate"`        // tasks settled per second lately
	Elapsed    float64 `json:"elapsed_s"`   // since the run started
	Live       bool    `json:"live"`        // the run has not ended
	MeanRunMs  float64 `json:"mean_run_ms"` // the apps' mean run time
}

// Point is one sample of the counters, for the charts.
type Point struct {
	T        float64 `json:"t"` // seconds since the run started
	Done     int64   `json:"done"`
	Failed   int64   `json:"failed"`
	InFlight int64   `json:"in_flight"`
	Queued   int64   `json:"queued"`
	Waiting  int64   `json:"waiting"`
	Rate     float64 `json:"rate"`
}

// RankRow is one rank's line of the timeline: the busy fraction of each
// time bucket.
type RankRow struct {
	Block string    `json:"block"`
	Rank  int32     `json:"rank"`
	Host  string    `json:"host"`
	Tasks int64     `json:"tasks"`
	Fails int64     `json:"failed"`
	Busy  []float64 `json:"busy"`
}

// Timeline is the per-rank timeline: Buckets columns of BucketS seconds
// from the run's start.
type Timeline struct {
	Buckets int       `json:"buckets"`
	BucketS float64   `json:"bucket_s"`
	Rows    []RankRow `json:"rows"`
}

// Failure is one failed task.
type Failure struct {
	Task     uint64  `json:"task"`
	App      string  `json:"app"`
	T        float64 `json:"t"` // seconds since the run started
	Block    string  `json:"block"`
	Rank     int32   `json:"rank"`
	Attempts uint32  `json:"attempts"`
	Kind     string  `json:"kind"`
	Error    string  `json:"error"`
	Final    bool    `json:"final"` // false: a failed attempt that was retried
}

// BlockRow is one block event.
type BlockRow struct {
	T       float64 `json:"t"`
	Block   string  `json:"block"`
	Event   string  `json:"event"`
	Host    string  `json:"host"`
	Ranks   int64   `json:"ranks"`
	Workers int64   `json:"workers"`
	Detail  string  `json:"detail"`
}

// AppStat sums one app's tasks.
type AppStat struct {
	App       string  `json:"app"`
	Done      int64   `json:"done"`
	Failed    int64   `json:"failed"`
	MeanRunMs float64 `json:"mean_run_ms"`
}

// Snapshot is everything the dashboard shows of one run.
type Snapshot struct {
	Run      RunInfo    `json:"run"`
	Runs     []RunInfo  `json:"runs"`
	Summary  Summary    `json:"summary"`
	Series   []Point    `json:"series"`
	Timeline Timeline   `json:"timeline"`
	Failures []Failure  `json:"failures"`
	Blocks   []BlockRow `json:"blocks"`
	Apps     []AppStat  `json:"apps"`
}

// Limits of a Snapshot.
const (
	maxPoints   = 300
	maxBuckets  = 120
	maxRankRows = 256
	maxFailures = 100
)

// Snapshot reads run (0: the latest) for the dashboard.
func (r *Reader) Snapshot(ctx context.Context, run int64) (*Snapshot, error) {
	runs, err := r.Runs(ctx)
	if err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, errors.New("monitor: the database has no run yet")
	}
	s := &Snapshot{Runs: runs, Run: runs[len(runs)-1]}
	if run != 0 {
		found := false
		for _, ri := range runs {
			if ri.ID == run {
				s.Run, found = ri, true
			}
		}
		if !found {
			return nil, fmt.Errorf("monitor: no run %d", run)
		}
	}
	run = s.Run.ID
	t0 := s.Run.Started
	sec := func(ns int64) float64 { return float64(ns-t0) / 1e9 }

	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()

	// Counters over time.
	var samples []Point
	var last struct {
		ts                                         int64
		p                                          Point
		submitted, retried, requeued, blocks, work int64
		memo                                       int64
	}
	rows, err := tx.QueryContext(ctx, `SELECT ts, submitted, done, failed, retried, requeued, inflight, queued, waiting, blocks, workers, memoized FROM samples WHERE run = ? ORDER BY ts`, run)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var p Point
		var ts int64
		if err := rows.Scan(&ts, &last.submitted, &p.Done, &p.Failed, &last.retried, &last.requeued, &p.InFlight, &p.Queued, &p.Waiting, &last.blocks, &last.work, &last.memo); err != nil {
			_ = rows.Close()
			return nil, err
		}
		p.T = sec(ts)
		if n := len(samples); n > 0 && p.T > samples[n-1].T {
			prev := samples[n-1]
			p.Rate = float64(p.Done+p.Failed-prev.Done-prev.Failed) / (p.T - prev.T)
		}
		samples = append(samples, p)
		last.ts, last.p = ts, p
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	s.Series = downsample(samples, maxPoints)
	end := s.Run.Ended
	if end == 0 {
		end = max(last.ts, time.Now().UnixNano())
	}
	s.Summary = Summary{
		Submitted: last.submitted, InFlight: last.p.InFlight, Queued: last.p.Queued, Waiting: last.p.Waiting,
		Retried: last.retried, Requeued: last.requeued, Memoized: last.memo, Blocks: last.blocks, Workers: last.work,
		Elapsed: sec(end), Live: s.Run.Ended == 0,
	}
	if n := len(samples); n > 0 {
		// The rate over about the last 5 s of samples.
		j := n - 1
		for j > 0 && samples[n-1].T-samples[j-1].T <= 5 {
			j--
		}
		if dt := samples[n-1].T - samples[j].T; dt > 0 {
			s.Summary.Rate = float64(samples[n-1].Done+samples[n-1].Failed-samples[j].Done-samples[j].Failed) / dt
		}
	}

	// Blocks.
	hosts, err := loadHostMap(ctx, tx, run)
	if err != nil {
		return nil, err
	}
	brows, err := tx.QueryContext(ctx, `SELECT ts, block, event, COALESCE(host, ''), COALESCE(ranks, 0), COALESCE(workers, 0), COALESCE(detail, '') FROM blocks WHERE run = ? ORDER BY ts`, run)
	if err != nil {
		return nil, err
	}
	for brows.Next() {
		var b BlockRow
		var ts int64
		if err := brows.Scan(&ts, &b.Block, &b.Event, &b.Host, &b.Ranks, &b.Workers, &b.Detail); err != nil {
			_ = brows.Close()
			return nil, err
		}
		b.T = sec(ts)
		s.Blocks = append(s.Blocks, b)
	}
	if err := brows.Err(); err != nil {
		return nil, err
	}

	// Tasks: totals, apps, the timeline and the final failures.
	nb := maxBuckets
	span := max(end-t0, int64(time.Second))
	width := (span + int64(nb) - 1) / int64(nb)
	type key struct {
		block string
		rank  int32
	}
	ranks := map[key]*RankRow{}
	apps := map[string]*AppStat{}
	var runNs, ran int64
	appRun := map[string]int64{}
	err = tasksTx(ctx, tx, run, func(t *TaskRow) {
		a := apps[t.App]
		if a == nil {
			a = &AppStat{App: t.App}
			apps[t.App] = a
		}
		switch t.State {
		case StateDone:
			s.Summary.Done++
			a.Done++
		case StateFailed:
			s.Summary.Failed++
			a.Failed++
			if len(s.Failures) < maxFailures*4 {
				s.Failures = append(s.Failures, Failure{Task: t.ID, App: t.App, T: sec(t.Finished), Block: t.Block, Rank: t.Rank, Attempts: t.Attempts, Kind: t.ErrKind, Error: t.Error, Final: true})
			}
		default:
			s.Summary.Unresolved++
		}
		if t.Rank < 0 || t.Started == 0 || t.Ended < t.Started {
			return
		}
		d := t.Ended - t.Started
		runNs += d
		ran++
		appRun[t.App] += d
		k := key{t.Block, t.Rank}
		row := ranks[k]
		if row == nil {
			row = &RankRow{Block: t.Block, Rank: t.Rank, Host: hosts.host(run, t.Block, t.Rank), Busy: make([]float64, nb)}
			ranks[k] = row
		}
		row.Tasks++
		if t.State == StateFailed {
			row.Fails++
		}
		// Spread the run over the buckets it covers.
		for a, b := t.Started-t0, t.Ended-t0; a < b; {
			if a < 0 {
				a = 0 // a worker clock ahead of the front end's
				continue
			}
			i := a / width
			if i >= int64(nb) {
				break
			}
			stop := min(b, (i+1)*width)
			row.Busy[i] += float64(stop - a)
			a = stop
		}
	})
	if err != nil {
		return nil, err
	}
	if ran > 0 {
		s.Summary.MeanRunMs = float64(runNs) / float64(ran) / 1e6
	}
	for _, a := range apps {
		if n := a.Done + a.Failed; n > 0 {
			a.MeanRunMs = float64(appRun[a.App]) / float64(n) / 1e6
		}
		s.Apps = append(s.Apps, *a)
	}
	sort.Slice(s.Apps, func(i, j int) bool { return s.Apps[i].App < s.Apps[j].App })
	s.Timeline = Timeline{Buckets: nb, BucketS: float64(width) / 1e9}
	for _, row := range ranks {
		for i := range row.Busy {
			row.Busy[i] = min(row.Busy[i]/float64(width), 1)
		}
		s.Timeline.Rows = append(s.Timeline.Rows, *row)
	}
	sort.Slice(s.Timeline.Rows, func(i, j int) bool {
		a, b := s.Timeline.Rows[i], s.Timeline.Rows[j]
		if a.Block != b.Block {
			return a.Block < b.Block
		}
		return a.Rank < b.Rank
	})
	if len(s.Timeline.Rows) > maxRankRows {
		s.Timeline.Rows = s.Timeline.Rows[:maxRankRows]
	}

	// Failed attempts that were retried.
	frows, err := tx.QueryContext(ctx, `SELECT ts, task, COALESCE(app, ''), COALESCE(attempt, 0), COALESCE(block, ''), COALESCE(rank, -1), COALESCE(err_kind, ''), COALESCE(message, '')
		FROM task_events WHERE run = ? AND event = 'attempt failed' ORDER BY ts DESC LIMIT ?`, run, maxFailures)
	if err != nil {
		return nil, err
	}
	for frows.Next() {
		var f Failure
		var ts int64
		var task int64
		if err := frows.Scan(&ts, &task, &f.App, &f.Attempts, &f.Block, &f.Rank, &f.Kind, &f.Error); err != nil {
			_ = frows.Close()
			return nil, err
		}
		f.Task, f.T, f.Attempts = uint64(task), sec(ts), f.Attempts+1
		s.Failures = append(s.Failures, f)
	}
	if err := frows.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(s.Failures, func(i, j int) bool { return s.Failures[i].T > s.Failures[j].T })
	if len(s.Failures) > maxFailures {
		s.Failures = s.Failures[:maxFailures]
	}
	return s, nil
}

// downsample keeps at most n points, evenly spread, always the last.
func downsample(p []Point, n int) []Point {
	if len(p) <= n {
		return p
	}
	out := make([]Point, 0, n)
	step := float64(len(p)-1) / float64(n-1)
	for i := range n {
		out = append(out, p[int(float64(i)*step+0.5)])
	}
	return out
}
