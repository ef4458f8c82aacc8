package frontend

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// SyncPolicy says when checkpoint records reach the disk for good (fsync).
type SyncPolicy uint8

// Sync policies of a checkpoint.
const (
	// SyncEachTask makes every result durable before long: the writer
	// fsyncs after every batch it writes (a group commit), so a crash loses
	// at most the results of the last few milliseconds.
	SyncEachTask SyncPolicy = iota
	// SyncPeriodic fsyncs every Options.CheckpointInterval.
	SyncPeriodic
	// SyncAtClose fsyncs only when the executor closes: the fastest, and a
	// crash may lose whatever the OS had not written.
	SyncAtClose
)

// Checkpoint file layout: a header, then records.
//
//	header: "RFCKPT" 0x00 version(1 byte) — 8 bytes
//	record: length uint32 BE | crc32c(payload) uint32 BE | payload
//	payload: key (32 bytes, SHA-256 of app, version and arguments) | value
//
// Records are only appended. A torn or corrupt record ends the readable
// part: it and what follows are skipped (and cut off before new records are
// appended), never fatal.
var ckptMagic = []byte("RFCKPT\x00")

const (
	ckptVersion   = 1
	ckptHeaderLen = 8
	ckptKeyLen    = sha256.Size
	// ckptMaxRecord bounds a record's payload: a key and the largest value
	// a task may return.
	ckptMaxRecord = ckptKeyLen + 64<<20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// memoKey is the key of one memoized call.
type memoKey [ckptKeyLen]byte

// makeMemoKey hashes an app's name, its version and its encoded arguments.
func makeMemoKey(app, version string, args []byte) memoKey {
	h := sha256.New()
	var n [4]byte
	for _, s := range []string{app, version} {
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	h.Write(args)
	var k memoKey
	h.Sum(k[:0])
	return k
}

// ErrCheckpointVersion is the error of a checkpoint file written by a newer
// rankfarm.
var ErrCheckpointVersion = errors.New("frontend: the checkpoint file has a format version this rankfarm does not read")

// readCheckpoint decodes a checkpoint file's bytes into table and returns
// the length of the part that holds whole, intact records (where appending
// resumes) and how many bytes after it were skipped.
func readCheckpoint(data []byte, table map[memoKey][]byte) (good int, skipped int, err error) {
	if len(data) == 0 {
		return 0, 0, nil
	}
	if len(data) < ckptHeaderLen || !bytes.Equal(data[:len(ckptMagic)], ckptMagic) {
		return 0, 0, fmt.Errorf("frontend: not a rankfarm checkpoint file (bad header)")
	}
	if v := data[len(ckptMagic)]; v != ckptVersion {
		return 0, 0, fmt.Errorf("%w: version %d, this one reads %d", ErrCheckpointVersion, v, ckptVersion)
	}
	off := ckptHeaderLen
	for off < len(data) {
		rest := data[off:]
		if len(rest) < 8 {
			break
		}
		n := binary.BigEndian.Uint32(rest)
		sum := binary.BigEndian.Uint32(rest[4:])
		if n < ckptKeyLen || n > ckptMaxRecord || int(n) > len(rest)-8 {
			break
		}
		payload := rest[8 : 8+n]
		if crc32.Checksum(payload, crcTable) != sum {
			break
		}
		var k memoKey
		copy(k[:], payload)
		table[k] = bytes.Clone(payload[ckptKeyLen:])
		off += 8 + int(n)
	}
	return off, len(data) - off, nil
}

// checkpoint is the memo table of an executor and, with a file, its
// durable log.
type checkpoint struct {
	log *slog.Logger

	mu      sync.Mutex
	table   map[memoKey][]byte
	pending []byte // records not yet written
	closed  bool

	// The file and its writer; nil without a file.
	f        *os.File
	policy   SyncPolicy
	interval time.Duration
	wake     chan struct{}
	done     chan struct{}
	werr     error // the writer's first error
}

// openCheckpoint loads path (creating it) and starts its writer. With an
// empty path the table lives in memory only.
func openCheckpoint(path string, policy SyncPolicy, interval time.Duration, log *slog.Logger) (*checkpoint, error) {
	c := &checkpoint{log: log, table: make(map[memoKey][]byte), policy: policy, interval: interval}
	if path == "" {
		return c, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("frontend: open the checkpoint: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("frontend: read the checkpoint %s: %w", path, err)
	}
	good, skipped, err := readCheckpoint(data, c.table)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	if skipped > 0 {
		log.Warn("checkpoint: skipping a torn or corrupt tail", "file", path, "bytes", skipped, "at", good)
	}
	if good == 0 {
		hdr := append(append([]byte(nil), ckptMagic...), ckptVersion)
		if _, err := f.WriteAt(hdr, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("frontend: write the checkpoint header: %w", err)
		}
		good = ckptHeaderLen
	}
	if err := f.Truncate(int64(good)); err != nil {
		f.Close()
		return nil, fmt.Errorf("frontend: cut the checkpoint's torn tail: %w", err)
	}
	if _, err := f.Seek(int64(good), io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("frontend: %w", err)
	}
	if c.policy == SyncPeriodic && c.interval <= 0 {
		c.interval = time.Second
	}
	c.f = f
	c.wake = make(chan struct{}, 1)
	c.done = make(chan struct{})
	go c.writer()
	log.Debug("checkpoint loaded", "file", path, "results", len(c.table))
	return c, nil
}

// lookup returns the memoized value of key.
func (c *checkpoint) lookup(k memoKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.table[k]
	return v, ok
}

// record memoizes value under key and queues it for the file.
func (c *checkpoint) record(k memoKey, value []byte) {
	c.mu.Lock()
	if _, ok := c.table[k]; ok || c.closed {
		c.mu.Unlock()
		return
	}
	c.table[k] = value
	if c.f != nil {
		var hdr [8]byte
		binary.BigEndian.PutUint32(hdr[:], uint32(ckptKeyLen+len(value)))
		crc := crc32.Update(crc32.Checksum(k[:], crcTable), crcTable, value)
		binary.BigEndian.PutUint32(hdr[4:], crc)
		c.pending = append(c.pending, hdr[:]...)
		c.pending = append(c.pending, k[:]...)
		c.pending = append(c.pending, value...)
	}
	c.mu.Unlock()
	if c.f != nil {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// writer appends the pending records to the file, syncing by the policy.
func (c *checkpoint) writer() {
	defer close(c.done)
	w := bufio.NewWriterSize(c.f, 256<<10)
	var tick <-chan time.Time
	if c.policy == SyncPeriodic {
		t := time.NewTicker(c.interval)
		defer t.Stop()
		tick = t.C
	}
	dirty := false
	var buf []byte
	for {
		closing := false
		select {
		case <-c.wake:
		case <-tick:
			if dirty {
				c.fail(c.f.Sync())
				dirty = false
			}
			continue
		}
		c.mu.Lock()
		buf, c.pending = c.pending, buf[:0]
		closing = c.closed
		c.mu.Unlock()
		if len(buf) > 0 {
			_, err := w.Write(buf)
			c.fail(err)
			c.fail(w.Flush())
			dirty = true
		}
		if dirty && (c.policy == SyncEachTask || closing) {
			c.fail(c.f.Sync())
			dirty = false
		}
		if closing {
			return
		}
	}
}

func (c *checkpoint) fail(err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr == nil {
		c.werr = err
		c.log.Error("checkpoint: write failed; results are no longer recorded", "err", err)
	}
}

// close writes what is pending, syncs and closes the file.
func (c *checkpoint) close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.done
	err := c.f.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr != nil {
		return fmt.Errorf("frontend: checkpoint: %w", c.werr)
	}
	if err != nil {
		return fmt.Errorf("frontend: checkpoint: %w", err)
	}
	return nil
}
