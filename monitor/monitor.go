// Package monitor records a rankfarm run in a SQLite database and shows it:
// every task's life (submitted, ready, dispatched, started and ended on a
// worker, finished or failed, retried, requeued) with its block, rank and
// host, every block's (requested, connected, lost, drained), and the
// executor's counters once a second.
//
// A Recorder writes the database on a goroutine of its own: the front end
// hands it batches of Events through a bounded channel and never waits for
// the disk. A task in progress is kept in memory and becomes one row of the
// tasks table when it settles, so a task costs one insert; retries,
// requeues and failed attempts add rows to task_events.
//
// The database is plain SQLite (through the pure-Go modernc.org/sqlite
// driver): open it with any SQLite tool, or serve it with Serve, the web
// dashboard behind "rankfarm monitor". Collector exports the front end's
// counters to Prometheus.
package monitor

import (
	"os"
	"path/filepath"
	"strings"
)

// DBName is the database's file name inside a run directory.
const DBName = "monitor.db"

// EventKind says what happened to a task.
type EventKind uint8

// The kinds of task events.
const (
	// Submitted: Text is the app's name.
	Submitted EventKind = iota + 1
	// Ready: the task's last dependency resolved (a task without
	// dependencies is ready when it is submitted and has no such event).
	Ready
	// Dispatched: sent to Block.
	Dispatched
	// Result: Block's worker Rank answered, from Start to End (worker
	// clock); ErrKind is 0 on success, else Text is the error's message. A
	// success settles the task.
	Result
	// Requeued: its block (Block) was lost and the task queued again.
	Requeued
	// Settled: the task resolved without (or after) a result; ErrKind 0
	// means done (a memoized call), else Text is the error.
	Settled
)

// String names the kind as the database stores it.
func (k EventKind) String() string {
	switch k {
	case Submitted:
		return "submitted"
	case Ready:
		return "ready"
	case Dispatched:
		return "dispatched"
	case Result:
		return "result"
	case Requeued:
		return "requeued"
	case Settled:
		return "settled"
	}
	return "unknown"
}

// Event is one step of one task. The front end fills it under its lock and
// the Recorder reads it on its own goroutine; strings are shared, not
// copied.
type Event struct {
	Time    int64 // Unix nanoseconds, front end's clock
	Task    uint64
	Start   int64 // Result: the app's start on the worker (Unix ns)
	End     int64 // Result: the app's end on the worker (Unix ns)
	Block   string
	Text    string // the app's name (Submitted) or an error message
	Err     error  // Settled: the error, its message taken by the writer
	Attempt uint32
	Rank    int32 // Result: the worker's world rank
	Kind    EventKind
	ErrKind uint8 // serialize.ErrKind; 0 is none
}

// BlockEventKind says what happened to a block.
type BlockEventKind uint8

// The kinds of block events.
const (
	// BlockRequested: the executor launched it or submitted its job.
	BlockRequested BlockEventKind = iota + 1
	// BlockConnected: its rank 0 connected (Ranks, Workers and Host known).
	BlockConnected
	// BlockLost: it died or hung; Detail is why.
	BlockLost
	// BlockDrained: the scaling strategy gave it back.
	BlockDrained
)

// String names the kind as the database stores it.
func (k BlockEventKind) String() string {
	switch k {
	case BlockRequested:
		return "requested"
	case BlockConnected:
		return "connected"
	case BlockLost:
		return "lost"
	case BlockDrained:
		return "drained"
	}
	return "unknown"
}

// BlockEvent is one step of one block.
type BlockEvent struct {
	Time           int64 // Unix nanoseconds
	Block          string
	Kind           BlockEventKind
	Host           string // rank 0's host
	Ranks, Workers int
	Detail         string
	// Nodes are the block's hosts with their ranks and sub-masters, on
	// BlockConnected when the block reported them (the block_nodes table).
	Nodes []Node
}

// Sample is a snapshot of the executor's counters.
type Sample struct {
	Time                      int64 // Unix nanoseconds
	Submitted, Done, Failed   int64
	Retried, Requeued         int64
	InFlight, Queued, Waiting int64
	Blocks, Workers           int64
	Dropped                   int64 // events the front end had to drop (the writer lagged)
	Memoized, BlockRestarts   int64
}

// Path returns the database file that target names: target itself when it
// is a file or ends in ".db" or ".sqlite", else DBName inside the directory
// target.
func Path(target string) string {
	if strings.HasSuffix(target, ".db") || strings.HasSuffix(target, ".sqlite") {
		return target
	}
	if fi, err := os.Stat(target); err == nil && !fi.IsDir() {
		return target
	}
	return filepath.Join(target, DBName)
}
