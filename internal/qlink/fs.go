package qlink

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Names inside the queue directory (see the package documentation).
const (
	runFile     = "run.json"
	dirTmp      = "tmp"
	dirTasks    = "tasks"
	dirClaimed  = "claimed"
	dirResults  = "results"
	dirHB       = "hb"
	dirCtl      = "ctl"
	dirBad      = "bad"
	fileExt     = ".rfq"
	shutdownRFQ = "shutdown" + fileExt
)

// subdirs are the directories a front end makes in the queue directory.
var subdirs = []string{dirTmp, dirTasks, dirClaimed, dirResults, dirHB, dirCtl, dirBad}

// ErrNotOwner matches the error for a queue directory, or a file in it, that
// belongs to another user.
var ErrNotOwner = errors.New("qlink: owned by another user")

// ErrOpenMode matches the error for a queue directory that others may read,
// write or enter.
var ErrOpenMode = errors.New("qlink: the queue directory is open to other users")

// checkOwned checks that fi belongs to this process's user.
func checkOwned(path string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("%w: %s belongs to uid %d, this process runs as uid %d; a queue is only ever used by the user who owns it", ErrNotOwner, path, st.Uid, uid)
	}
	return nil
}

// checkDir refuses a queue directory (or one of its subdirectories) that is
// not a directory, that another user owns, or whose mode lets others in.
func checkDir(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("qlink: queue directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("qlink: queue directory %s is not a directory (%v)", path, fi.Mode())
	}
	if err := checkOwned(path, fi); err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %#o; it must be 0700 (chmod 700 %s)", ErrOpenMode, path, perm, path)
	}
	return nil
}

// listHook, when a test sets it, is called with every directory listDir
// lists: how the tests count what an idle queue costs the filesystem.
var listHook atomic.Pointer[func(dir string)]

// listDir returns the names in dir, unsorted.
// RemoveTree removes path and everything below it, trying again for up to
// within while it fails: a network filesystem that caches directory
// listings (sshfs, NFS with attribute caching) may list a directory without
// a file that a writer on another host renamed into it moments ago, and
// removing the directory then fails with ENOTEMPTY until the cache expires.
func RemoveTree(path string, within time.Duration) error {
	deadline := time.Now().Add(within)
	wait := 20 * time.Millisecond
	for {
		err := os.RemoveAll(path)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 500*time.Millisecond)
	}
}

func listDir(dir string) ([]string, error) {
	if h := listHook.Load(); h != nil {
		(*h)(dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	_ = f.Close()
	return names, err
}

// writeAtomic writes data to a new file tmp (in the queue's tmp directory)
// and renames it to dst, so that a reader never sees it half-written.
func writeAtomic(tmp, dst string, data []byte) error {
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// errFileRefused wraps the reasons readFile refuses a file for.
var errFileRefused = errors.New("qlink: file refused")

// readFile reads the whole regular file at path into buf (grown as needed).
// It refuses a file that is not regular, belongs to another user or is over
// MaxFileSize, with an error that matches errFileRefused. A missing file
// gives an error that matches os.ErrNotExist.
func readFile(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf[:0], err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return buf[:0], err
	}
	switch {
	case !fi.Mode().IsRegular():
		return buf[:0], fmt.Errorf("%w: not a regular file (%v)", errFileRefused, fi.Mode())
	case fi.Size() > MaxFileSize:
		return buf[:0], fmt.Errorf("%w: %d bytes, more than the %d a batch file may hold", errFileRefused, fi.Size(), MaxFileSize)
	}
	if err := checkOwned(path, fi); err != nil {
		return buf[:0], fmt.Errorf("%w: %w", errFileRefused, err)
	}
	// Read one byte past the size: a file that grew is caught as corrupt
	// by the decoder, not silently cut.
	n := int(fi.Size()) + 1
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	got, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return buf[:0], err
	}
	return buf[:got], nil
}

// moveAside moves a refused file from the queue into bad/, with a
// neighbouring .why file that says why, and returns the new path. The name
// in bad/ is <unix nanoseconds>-<original name>.
func moveAside(root, path, reason string) (string, error) {
	stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
	dst := filepath.Join(root, dirBad, stamp+"-"+filepath.Base(path))
	if err := os.Rename(path, dst); err != nil {
		// Renaming failed: remove it rather than read it again and again.
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return "", fmt.Errorf("qlink: move %s aside: %w (and remove: %w)", path, err, rerr)
		}
		return "", fmt.Errorf("qlink: move %s aside: %w (removed it instead)", path, err)
	}
	// Whole or not at all: a reader (Front.Bad, a test) may look at once.
	_ = writeAtomic(filepath.Join(root, dirTmp, stamp+"-"+filepath.Base(path)+".why"), dst+".why", []byte(reason+"\n"))
	return dst, nil
}

// badOriginal returns the original name of a file in bad/, or "" for a .why
// file or a name moveAside did not make.
func badOriginal(name string) string {
	if strings.HasSuffix(name, ".why") {
		return ""
	}
	i := strings.IndexByte(name, '-')
	if i <= 0 {
		return ""
	}
	if _, err := strconv.ParseInt(name[:i], 10, 64); err != nil {
		return ""
	}
	return name[i+1:]
}

// Task files are named t-<seq>.rfq (written from the executor's batches) or
// p-<seq>.rfq (tasks put back from a lost block's claims, which sort first),
// seq being 16 hex digits.
func taskFileName(prefix byte, seq uint64) string {
	return fmt.Sprintf("%c-%016x%s", prefix, seq, fileExt)
}

// parseTaskFile returns the sequence number of a task file's name.
func parseTaskFile(name string) (uint64, bool) {
	if len(name) != 2+16+len(fileExt) || (name[0] != 't' && name[0] != 'p') || name[1] != '-' || !strings.HasSuffix(name, fileExt) {
		return 0, false
	}
	seq, err := strconv.ParseUint(name[2:18], 16, 64)
	return seq, err == nil
}

// resultFileName names a block's seq-th file: r-<block>-<seq>.rfq.
func resultFileName(block string, seq uint64) string {
	return fmt.Sprintf("r-%s-%016x%s", block, seq, fileExt)
}

// parseResultFile returns the block and sequence number of a result file's
// name.
func parseResultFile(name string) (block string, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(name, "r-")
	if !found {
		return "", 0, false
	}
	rest, found = strings.CutSuffix(rest, fileExt)
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '-')
	if i <= 0 || len(rest)-i-1 != 16 || !validBlockID(rest[:i]) {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(rest[i+1:], 16, 64)
	return rest[:i], seq, err == nil
}

// resultName is one parsed result file name.
type resultName struct {
	name  string
	block string
	seq   uint64
}

// sortResults orders result files by block, then by sequence number.
func sortResults(rs []resultName) {
	slices.SortFunc(rs, func(a, b resultName) int {
		if c := strings.Compare(a.block, b.block); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
}

// A block's heartbeat is an empty file hb/<block>.<n>: the block renames it
// to <n+1> every beat, and the front end reads every block's count from one
// listing of hb/. The front end's own heartbeat is ctl/front-<run>.<n>.
func beatName(id string, n uint64) string { return id + "." + strconv.FormatUint(n, 10) }

// parseBeat splits a heartbeat file's name.
func parseBeat(name string) (id string, n uint64, ok bool) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(name[i+1:], 10, 64)
	return name[:i], n, err == nil
}

// validBlockID reports whether id is a block ID as newBlockID makes them.
func validBlockID(id string) bool {
	if id == "" || len(id) > 96 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// sanitize keeps letters, digits and '_' of s (others become '_'), at most
// 32 of them.
func sanitize(s string) string {
	b := []byte(s)
	if len(b) > 32 {
		b = b[:32]
	}
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "block"
	}
	return string(b)
}

// runInfo is run.json: what a block needs to know about the run it joins.
// The front end writes it once, atomically, when it opens the queue.
type runInfo struct {
	Format    int    `json:"format"`
	Run       string `json:"run"`
	Host      string `json:"host"`
	PID       int    `json:"pid"`
	Created   string `json:"created"`
	Heartbeat int64  `json:"heartbeat_ns"`
	MinPoll   int64  `json:"min_poll_ns"`
	MaxPoll   int64  `json:"max_poll_ns"`
}

// readRunInfo reads and checks run.json.
func readRunInfo(root string) (runInfo, RunID, error) {
	var ri runInfo
	path := filepath.Join(root, runFile)
	data, err := readFile(path, nil)
	if err != nil {
		return ri, RunID{}, err
	}
	if err := json.Unmarshal(data, &ri); err != nil {
		return ri, RunID{}, fmt.Errorf("qlink: %s: %w: %w", path, ErrCorrupt, err)
	}
	if ri.Format != FileVersion {
		return ri, RunID{}, fmt.Errorf("qlink: %s: %w", path, &FileVersionError{Got: uint8(min(max(ri.Format, 0), 255)), Want: FileVersion})
	}
	run, err := ParseRunID(ri.Run)
	if err != nil {
		return ri, RunID{}, fmt.Errorf("qlink: %s: %w: %w", path, ErrCorrupt, err)
	}
	if ri.Heartbeat <= 0 || ri.MinPoll <= 0 || ri.MaxPoll < ri.MinPoll {
		return ri, RunID{}, fmt.Errorf("qlink: %s: %w: heartbeat and poll intervals must be positive", path, ErrCorrupt)
	}
	return ri, run, nil
}
