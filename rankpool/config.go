package rankpool

import (
	"math"
	"time"

	"github.com/rankfarm/rankfarm/serialize"
)

// Defaults for Config's zero fields.
const (
	DefaultSlots       = 1
	DefaultPrefetch    = 2
	DefaultMaxPrefetch = 256
	DefaultWindow      = 2 * time.Millisecond
	DefaultMaxBatch    = 4096
	// DefaultMaxBatchBytes bounds the bytes of arguments or results in one
	// message, well below the wire's frame limit.
	DefaultMaxBatchBytes = 4 << 20
)

// Config tunes the role state machines. Its zero value means the defaults.
type Config struct {
	// Slots is how many tasks a worker runs at once; default 1.
	Slots int
	// Prefetch is the credit per slot a worker announces at first and keeps
	// at least: the tasks it may hold queued or running; default 2.
	Prefetch int
	// MaxPrefetch bounds the credit per slot a worker grows to when its
	// tasks are short (adaptive prefetch, see Worker); default 256, and
	// never below Prefetch. MaxPrefetch equal to Prefetch turns the
	// adaptation off.
	MaxPrefetch int
	// Window is how much work, in task run time, a worker tries to keep
	// queued per slot, so a slot never waits for a refill; default 2 ms.
	Window time.Duration
	// MaxBatch is the most tasks or results in one message; default 4096.
	MaxBatch int
	// MaxBatchBytes bounds the size of the tasks or results in one message
	// (a single one bigger than it travels alone); default 4 MiB.
	MaxBatchBytes int
}

// withDefaults returns c with every non-positive field set to its default.
func (c Config) withDefaults() Config {
	if c.Slots <= 0 {
		c.Slots = DefaultSlots
	}
	if c.Prefetch <= 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.MaxPrefetch <= 0 {
		c.MaxPrefetch = DefaultMaxPrefetch
	}
	c.MaxPrefetch = max(c.MaxPrefetch, c.Prefetch)
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	return c
}

// Envelope is one message with its sender and receiver ranks (Upstream for
// the front end).
type Envelope struct {
	From, To int
	Msg      serialize.Message
}

// ledger is the credit account a rank keeps with its parent. avail is the
// room below this rank (credit its children or slots granted) minus the tasks
// received from the parent and not yet passed on; it goes negative only when
// the parent sends more than it was granted. up is the credit to announce at
// the next Ready. Credit that comes back while avail is negative pays for the
// excess tasks instead of being announced, so a parent that overspends cannot
// make the excess grow.
type ledger struct {
	avail int
	up    uint64
}

// grant records n more room below and schedules its announcement.
func (l *ledger) grant(n int) {
	old := l.avail
	l.avail += n
	if l.avail > 0 {
		l.up += uint64(l.avail - max(old, 0))
	}
}

// take records n tasks received from the parent.
func (l *ledger) take(n int) { l.avail -= n }

// appendUp appends the messages that carry results and credit from rank
// from to rank to: the results in messages of at most maxBatch, with the
// credit spread so that each carries one per result (the last takes the
// rest), then plain Credit messages for credit left over. reuse, when not nil,
// is an owned ResultBatch to fill instead of allocating the first message.
func appendUp(out []Envelope, from, to int, res []serialize.Result, credit uint64, maxBatch, maxBytes int, reuse *serialize.ResultBatch) []Envelope {
	for len(res) > 0 {
		k := min(len(res), maxBatch)
		size := 0
		for i := range k {
			size += resultSize(&res[i])
			if size > maxBytes && i > 0 {
				k = i
				break
			}
		}
		chunk := res[:k:k]
		res = res[k:]
		c := min(credit, uint64(k))
		if len(res) == 0 {
			c = min(credit, math.MaxUint32)
		}
		credit -= c
		rb := reuse
		if rb == nil {
			rb = &serialize.ResultBatch{}
		}
		reuse = nil
		rb.Credit = uint32(c)
		rb.Results = chunk
		out = append(out, Envelope{From: from, To: to, Msg: rb})
	}
	for credit > 0 {
		c := min(credit, math.MaxUint32)
		credit -= c
		out = append(out, Envelope{From: from, To: to, Msg: &serialize.Credit{N: uint32(c)}})
	}
	return out
}

// appendTasks appends the messages that carry tasks from rank from to rank
// to, at most maxBatch per message.
func appendTasks(out []Envelope, from, to int, tasks []serialize.Task, maxBatch, maxBytes int) []Envelope {
	for len(tasks) > 0 {
		k := min(len(tasks), maxBatch)
		size := 0
		for i := range k {
			size += TaskSize(&tasks[i])
			if size > maxBytes && i > 0 {
				k = i
				break
			}
		}
		out = append(out, Envelope{From: from, To: to, Msg: &serialize.TaskBatch{Tasks: tasks[:k:k]}})
		tasks = tasks[k:]
	}
	return out
}

// TaskSize estimates a task's encoded size in bytes, for bounding batches.
func TaskSize(t *serialize.Task) int { return len(t.Args) + len(t.App) + 32 }

// resultSize estimates a result's encoded size in bytes.
func resultSize(r *serialize.Result) int { return len(r.Value) + len(r.Msg) + len(r.Stack) + 48 }
