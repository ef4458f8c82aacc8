package monitor

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeRun feeds rec the events of n tasks on one block of ranks workers
// (ranks 1..workers), every 7th task failing once and being retried, every
// 50th failing for good, starting at t0 with one task per ms per worker.
func fakeRun(t testing.TB, rec *Recorder, n, workers int, t0 time.Time) {
	t.Helper()
	base := t0.UnixNano()
	require.True(t, rec.Block(BlockEvent{Time: base, Block: "b0", Kind: BlockRequested}))
	require.True(t, rec.Block(BlockEvent{Time: base + 1e6, Block: "b0", Kind: BlockConnected, Host: "node1", Ranks: workers + 1, Workers: workers}))
	buf := rec.Buffer()
	put := func(ev Event) {
		buf = append(buf, ev)
		if len(buf) == cap(buf) {
			for !rec.Put(buf) {
				time.Sleep(time.Millisecond)
			}
			buf = rec.Buffer()
		}
	}
	for i := range n {
		id := uint64(i + 1)
		ts := base + int64(i/workers)*int64(time.Millisecond)
		rank := int32(1 + i%workers)
		put(Event{Time: ts, Task: id, Kind: Submitted, Text: "app.square"})
		put(Event{Time: ts + 1000, Task: id, Kind: Dispatched, Block: "b0"})
		attempt := uint32(0)
		if i%7 == 3 {
			put(Event{Time: ts + 2000, Task: id, Kind: Result, Block: "b0", Rank: rank, Start: ts + 1500, End: ts + 1900, ErrKind: 1, Text: "transient trouble"})
			attempt = 1
			put(Event{Time: ts + 2100, Task: id, Kind: Dispatched, Block: "b0", Attempt: attempt})
		}
		if i%50 == 49 {
			put(Event{Time: ts + 3000, Task: id, Kind: Result, Block: "b0", Rank: rank, Attempt: attempt, Start: ts + 2500, End: ts + 2900, ErrKind: 2, Text: fmt.Sprintf("panic: task %d exploded", id)})
			put(Event{Time: ts + 3000, Task: id, Kind: Settled, ErrKind: 2, Err: errors.New("task exploded: panic")})
			continue
		}
		put(Event{Time: ts + 900_000, Task: id, Kind: Result, Block: "b0", Rank: rank, Attempt: attempt, Start: ts + 2500, End: ts + 800_000})
	}
	for !rec.Put(buf) {
		time.Sleep(time.Millisecond)
	}
	end := base + int64(n/workers+1)*int64(time.Millisecond)
	for ts := base; ts <= end; ts += int64(10 * time.Millisecond) {
		frac := float64(ts-base) / float64(end-base)
		done := int64(frac * float64(n))
		require.True(t, eventually(func() bool {
			return rec.Sample(Sample{Time: ts, Submitted: int64(n), Done: done * 49 / 50, Failed: done / 50, InFlight: int64(workers), Queued: int64(n) - done, Blocks: 1, Workers: int64(workers)})
		}))
	}
}

func eventually(f func() bool) bool {
	for range 5000 {
		if f() {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

func TestRecorderWritesTasksBlocksSamples(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", DBName)
	rec, err := Create(path, "test run", nil)
	require.NoError(t, err)
	fakeRun(t, rec, 1000, 3, time.Unix(1_700_000_000, 0))
	// A task submitted and never settled.
	require.True(t, rec.Put([]Event{{Time: 1, Task: 5000, Kind: Submitted, Text: "app.hang"}}))
	require.NoError(t, rec.Close(nil, 7))

	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	defer db.Close()
	count := func(q string, args ...any) int {
		var n int
		require.NoError(t, db.QueryRow(q, args...).Scan(&n))
		return n
	}
	assert.Equal(t, 1001, count(`SELECT COUNT(*) FROM tasks`))
	assert.Equal(t, 20, count(`SELECT COUNT(*) FROM tasks WHERE state = 'failed'`))
	assert.Equal(t, 1, count(`SELECT COUNT(*) FROM tasks WHERE state = 'unresolved'`))
	assert.Equal(t, 20, count(`SELECT COUNT(*) FROM tasks WHERE err_kind = 'panic' AND error LIKE '%exploded%'`))
	assert.Equal(t, 143, count(`SELECT COUNT(*) FROM task_events WHERE event = 'attempt failed' AND err_kind = 'app error'`))
	assert.Equal(t, 143, count(`SELECT COUNT(*) FROM tasks WHERE attempts = 2`))
	assert.Equal(t, 1000, count(`SELECT COUNT(*) FROM tasks WHERE host = 'node1' AND block = 'b0' AND rank BETWEEN 1 AND 3`))
	assert.Equal(t, 2, count(`SELECT COUNT(*) FROM blocks`))
	assert.Positive(t, count(`SELECT COUNT(*) FROM samples`))
	assert.Equal(t, 1, count(`SELECT COUNT(*) FROM runs WHERE ended IS NOT NULL AND dropped = 7 AND command = 'test run'`))

	// A second run appends to the same database.
	rec, err = Create(path, "again", nil)
	require.NoError(t, err)
	assert.Equal(t, int64(2), rec.Run())
	require.NoError(t, rec.Close([]Event{{Time: 1, Task: 1, Kind: Settled}}, 0))
	assert.Equal(t, 1, count(`SELECT COUNT(*) FROM tasks WHERE run = 2`))
}

func TestPath(t *testing.T) {
	dir := t.TempDir()
	assert.Equal(t, filepath.Join(dir, DBName), Path(dir))
	assert.Equal(t, "x/run.db", Path("x/run.db"))
	assert.Equal(t, filepath.Join("nowhere", DBName), Path("nowhere"))
}

// BenchmarkRecorder measures the writer: settled tasks per second into the
// database (submitted, dispatched and result events each).
func BenchmarkRecorder(b *testing.B) {
	rec, err := Create(filepath.Join(b.TempDir(), DBName), "bench", nil)
	require.NoError(b, err)
	rec.closeBudget = 0 // measure the writing, not the expansion
	b.ResetTimer()
	buf := rec.Buffer()
	for i := range b.N {
		id := uint64(i + 1)
		buf = append(buf,
			Event{Time: int64(i), Task: id, Kind: Submitted, Text: "echo"},
			Event{Time: int64(i), Task: id, Kind: Dispatched, Block: "b0"},
			Event{Time: int64(i), Task: id, Kind: Result, Block: "b0", Rank: 1, Start: int64(i), End: int64(i)})
		if len(buf)+3 > cap(buf) {
			for !rec.Put(buf) {
				time.Sleep(100 * time.Microsecond)
			}
			buf = rec.Buffer()
		}
	}
	require.NoError(b, rec.Close(buf, 0))
}

// TestRecorderWindowSlides keeps a task in progress while more than the
// window's span of later tasks settle: it moves to the map and still
// settles into one row.
func TestRecorderWindowSlides(t *testing.T) {
	path := filepath.Join(t.TempDir(), DBName)
	rec, err := Create(path, "slide", nil)
	require.NoError(t, err)
	rec.closeBudget = 0
	n := maxWindow + maxWindow/2
	buf := rec.Buffer()
	flush := func() {
		for !rec.Put(buf) {
			time.Sleep(time.Millisecond)
		}
		buf = rec.Buffer()
	}
	buf = append(buf, Event{Time: 1, Task: 1, Kind: Submitted, Text: "slow"})
	for id := uint64(2); id <= uint64(n); id++ {
		buf = append(buf, Event{Time: 2, Task: id, Kind: Submitted, Text: "fast"}, Event{Time: 3, Task: id, Kind: Settled})
		if len(buf)+2 > cap(buf) {
			flush()
		}
	}
	buf = append(buf, Event{Time: 4, Task: 1, Kind: Dispatched, Block: "b0"}, Event{Time: 5, Task: 1, Kind: Result, Block: "b0", Rank: 2, Start: 4, End: 5})
	require.NoError(t, rec.Close(buf, 0))

	r, err := OpenReader(path)
	require.NoError(t, err)
	defer r.Close()
	count, slow := 0, TaskRow{}
	require.NoError(t, r.Tasks(context.Background(), 1, func(row *TaskRow) {
		count++
		if row.ID == 1 {
			slow = *row
		}
	}))
	assert.Equal(t, n, count)
	assert.Equal(t, TaskRow{ID: 1, App: "slow", State: StateDone, Submitted: 1, Dispatched: 4, Started: 4, Ended: 5, Finished: 5, Block: "b0", Rank: 2, Attempts: 1}, slow)
}

// TestRankHosts records a block over two hosts and checks that each task's
// host is its rank's, in the tasks table and in the dashboard's ranks.
func TestRankHosts(t *testing.T) {
	path := filepath.Join(t.TempDir(), DBName)
	rec, err := Create(path, "hosts", nil)
	require.NoError(t, err)
	base := time.Unix(1_700_000_000, 0).UnixNano()
	require.True(t, rec.Block(BlockEvent{Time: base, Block: "b0", Kind: BlockConnected, Host: "n1", Ranks: 4, Workers: 2,
		Nodes: []Node{{Host: "n1", Ranks: []int{0, 1}}, {Host: "n2", Ranks: []int{2, 3}, SubMasters: []int{2}}}}))
	// A block from before layouts: its tasks take its own host.
	require.True(t, rec.Block(BlockEvent{Time: base, Block: "b1", Kind: BlockConnected, Host: "old", Ranks: 2, Workers: 1}))
	var evs []Event
	for i, rank := range []int32{1, 3, 3, 1} {
		id := uint64(i + 1)
		ts := base + int64(i)*1e6
		evs = append(evs,
			Event{Time: ts, Task: id, Kind: Submitted, Text: "app"},
			Event{Time: ts + 10, Task: id, Kind: Dispatched, Block: "b0"},
			Event{Time: ts + 100, Task: id, Kind: Result, Block: "b0", Rank: rank, Start: ts + 20, End: ts + 90})
	}
	evs = append(evs, Event{Time: base, Task: 9, Kind: Submitted, Text: "app"}, Event{Time: base + 10, Task: 9, Kind: Dispatched, Block: "b1"},
		Event{Time: base + 100, Task: 9, Kind: Result, Block: "b1", Rank: 1, Start: base + 20, End: base + 90})
	require.True(t, rec.Put(evs))
	require.NoError(t, rec.Close(nil, 0))

	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	defer db.Close()
	rows, err := db.Query(`SELECT id, host FROM tasks ORDER BY id`)
	require.NoError(t, err)
	got := map[int]string{}
	for rows.Next() {
		var id int
		var host string
		require.NoError(t, rows.Scan(&id, &host))
		got[id] = host
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, map[int]string{1: "n1", 2: "n2", 3: "n2", 4: "n1", 9: "old"}, got)

	r, err := OpenReader(path)
	require.NoError(t, err)
	defer r.Close()
	snap, err := r.Snapshot(context.Background(), 1)
	require.NoError(t, err)
	hosts := map[string]string{}
	for _, row := range snap.Timeline.Rows {
		hosts[fmt.Sprintf("%s/%d", row.Block, row.Rank)] = row.Host
	}
	assert.Equal(t, map[string]string{"b0/1": "n1", "b0/3": "n2", "b1/1": "old"}, hosts)
}
