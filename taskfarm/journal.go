package taskfarm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// JournalSuffix is what `rankfarm run` appends to the input's name to name
// its journal.
const JournalSuffix = ".rfjournal"

// journalHeader starts every journal.
const journalHeader = "# rankfarm journal v1: one record per finished task (ok|fail HASH OCC SEQ EXIT); delete it to run every task again\n"

// DefaultSyncInterval is how often a journal's records are synced to disk.
const DefaultSyncInterval = time.Second

// ErrJournalBusy is returned by OpenJournal when another process holds the
// journal.
var ErrJournalBusy = errors.New("the journal is in use by another rankfarm run")

// Key names a task in a journal: the hash of its command and how many tasks
// before it have the same command.
type Key struct {
	Hash uint64
	Occ  int
}

// Record is one finished task.
type Record struct {
	Key
	OK   bool
	Seq  int // the task's number when it ran, for people reading the file
	Exit int // the exit status (-1 when it did not exit, e.g. walltime)
}

// Journal is an append-only file of Records. Records reach the file (and
// so survive the process being killed) as soon as a background writer
// gets to them, in one write per batch; they are synced to disk every
// DefaultSyncInterval and on Close. The file is locked while open, so two
// runs cannot share it.
type Journal struct {
	f   *os.File
	log *slog.Logger

	mu      sync.Mutex
	buf     []byte // records waiting for the writer
	spare   []byte
	err     error // the first write or sync error
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	closing sync.Once
}

// JournalState is what a journal says of the tasks: for each key, whether
// its last record was a success.
type JournalState struct {
	// OK holds the keys whose last record is a success.
	OK map[Key]bool
	// Records counts the records read; Torn is true when the last one was
	// cut short (a crash mid-write) and dropped; Bad counts lines that did
	// not parse and were skipped.
	Records int
	Torn    bool
	Bad     int
}

// OpenJournal opens (creating it if needed) the journal at path, reads what
// it holds, cuts a torn last record off and returns the journal, ready to
// append, with its state. With fresh set, the journal is emptied first.
func OpenJournal(path string, fresh bool, log *slog.Logger) (*Journal, JournalState, error) {
	if log == nil {
		log = slog.Default()
	}
	st := JournalState{OK: make(map[Key]bool)}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, st, fmt.Errorf("journal: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, st, fmt.Errorf("journal %s: %w", path, ErrJournalBusy)
		}
		return nil, st, fmt.Errorf("journal %s: lock: %w", path, err)
	}
	fail := func(err error) (*Journal, JournalState, error) {
		f.Close()
		return nil, st, fmt.Errorf("journal %s: %w", path, err)
	}
	if fresh {
		if err := f.Truncate(0); err != nil {
			return fail(err)
		}
	}
	good, err := readJournal(f, &st)
	if err != nil {
		return fail(err)
	}
	if st.Torn {
		if err := f.Truncate(good); err != nil {
			return fail(err)
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		return fail(err)
	}
	if good == 0 {
		if _, err := f.WriteString(journalHeader); err != nil {
			return fail(err)
		}
	}
	j := &Journal{f: f, log: log, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go j.writer(DefaultSyncInterval)
	return j, st, nil
}

// readJournal reads the records of r into st and returns the length of its
// whole lines (where appending resumes).
func readJournal(r io.Reader, st *JournalState) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var good, total int64
	for {
		line, err := br.ReadSlice('\n')
		total += int64(len(line))
		long := false
		for errors.Is(err, bufio.ErrBufferFull) {
			// A line this long is no record: skip it whole.
			long = true
			line, err = br.ReadSlice('\n')
			total += int64(len(line))
		}
		if err == io.EOF {
			st.Torn = total > good
			return good, nil
		}
		if err != nil {
			return good, err
		}
		good = total
		if long {
			st.Bad++
		} else if rec, ok := parseRecord(line[:len(line)-1]); ok {
			st.Records++
			st.OK[rec.Key] = rec.OK
		} else if len(bytes.TrimSpace(line)) > 0 && line[0] != '#' {
			st.Bad++
		}
	}
}

// parseRecord parses "ok|fail HASH OCC SEQ EXIT".
func parseRecord(b []byte) (Record, bool) {
	f := bytes.Fields(b)
	if len(f) != 5 {
		return Record{}, false
	}
	var r Record
	switch string(f[0]) {
	case "ok":
		r.OK = true
	case "fail":
	default:
		return r, false
	}
	var err error
	if r.Hash, err = strconv.ParseUint(string(f[1]), 16, 64); err != nil {
		return r, false
	}
	vals := [3]*int{&r.Occ, &r.Seq, &r.Exit}
	for i, p := range vals {
		if *p, err = strconv.Atoi(string(f[2+i])); err != nil {
			return r, false
		}
	}
	return r, r.Occ >= 0
}

// appendRecord appends rec's line to b.
func appendRecord(b []byte, rec Record) []byte {
	if rec.OK {
		b = append(b, "ok "...)
	} else {
		b = append(b, "fail "...)
	}
	b = strconv.AppendUint(b, rec.Hash, 16)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(rec.Occ), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(rec.Seq), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(rec.Exit), 10)
	return append(b, '\n')
}

// Add queues rec for the file. It never blocks on I/O.
func (j *Journal) Add(rec Record) {
	j.mu.Lock()
	j.buf = appendRecord(j.buf, rec)
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// writer writes queued records in batches and syncs the file every
// interval while records come in.
func (j *Journal) writer(interval time.Duration) {
	defer close(j.done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	dirty := false
	for {
		select {
		case <-j.kick:
			j.flush()
			dirty = true
		case <-tick.C:
			if dirty {
				j.sync()
				dirty = false
			}
		case <-j.stop:
			j.flush()
			j.sync()
			return
		}
	}
}

// flush writes what is queued, in one write.
func (j *Journal) flush() {
	j.mu.Lock()
	b := j.buf
	j.buf = j.spare[:0]
	j.mu.Unlock()
	if len(b) == 0 {
		j.spare = b
		return
	}
	if _, err := j.f.Write(b); err != nil {
		j.fail(err)
	}
	j.spare = b[:0] // only the writer touches spare
}

func (j *Journal) sync() {
	if err := j.f.Sync(); err != nil {
		j.fail(err)
	}
}

func (j *Journal) fail(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err == nil {
		j.err = err
		j.log.Error("journal: write failed; finished tasks may run again next time", "file", j.f.Name(), "err", err)
	}
}

// Close writes and syncs every record added, unlocks and closes the file,
// and returns the first write error, if any.
func (j *Journal) Close() error {
	var err error
	j.closing.Do(func() {
		close(j.stop)
		<-j.done
		j.mu.Lock()
		err = j.err
		j.mu.Unlock()
		if cerr := j.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("journal: %w", cerr)
		}
	})
	return err
}

// Name returns the journal's file name.
func (j *Journal) Name() string { return j.f.Name() }
