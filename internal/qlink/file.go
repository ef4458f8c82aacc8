package qlink

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/rankfarm/rankfarm/serialize"
)

// FileVersion is the version of the batch file format this build writes and
// reads. A file of another version is refused with a *FileVersionError.
const FileVersion = 1

// fileMagic opens every batch file.
const fileMagic = "RFQB"

// headerSize is the size of a batch file's header:
//
//	offset size field
//	0      4    magic "RFQB"
//	4      1    format version (FileVersion)
//	5      1    file kind (KindDown or KindUp)
//	6      2    reserved, zero
//	8      16   run ID: the front end's random name for the run
//	24     4    number of frames in the body, big-endian
//	28     4    length of the body in bytes, big-endian
//	32     4    CRC-32C (Castagnoli) of bytes 0–31 and the body
//	36     …    body: frames as on the TCP stream (4-byte length, then a
//	            serialize body), one after another
const headerSize = 36

// MaxFileSize bounds a batch file: bigger ones are refused unread.
const MaxFileSize = 256 << 20

// maxFramesPerFile bounds the frames one file may claim, so a header alone
// cannot make a reader allocate much.
const maxFramesPerFile = 1 << 20

// FileKind says which way a batch file travels.
type FileKind uint8

// File kinds.
const (
	// KindDown is a file the front end writes for the blocks: tasks, or
	// the shutdown order.
	KindDown FileKind = 1
	// KindUp is a file a block writes for the front end: its Hello,
	// results, credit and its shutdown acknowledgement.
	KindUp FileKind = 2
)

func (k FileKind) String() string {
	switch k {
	case KindDown:
		return "down"
	case KindUp:
		return "up"
	}
	return fmt.Sprintf("FileKind(%d)", uint8(k))
}

// RunID is the front end's random name for one run on a queue. Every file
// carries it, so that a file left by another run is never taken for one of
// this run.
type RunID [16]byte

// String returns the ID in hex.
func (r RunID) String() string { return hex.EncodeToString(r[:]) }

// ParseRunID reads an ID written by String.
func ParseRunID(s string) (RunID, error) {
	var r RunID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(r) {
		return r, fmt.Errorf("qlink: %q is not a run ID (32 hex digits)", s)
	}
	copy(r[:], b)
	return r, nil
}

// Errors of DecodeFile; callers test them with errors.Is. Errors from the
// frames inside wrap the serialize package's errors as well.
var (
	// ErrNotBatchFile: the file does not start with the batch file magic.
	ErrNotBatchFile = errors.New("qlink: not a rankfarm batch file")
	// ErrTruncated: the file is shorter than its header says.
	ErrTruncated = errors.New("qlink: truncated batch file")
	// ErrChecksum: the file's bytes do not match its checksum.
	ErrChecksum = errors.New("qlink: batch file checksum mismatch")
	// ErrCorrupt: the header or the frames do not add up.
	ErrCorrupt = errors.New("qlink: corrupt batch file")
	// ErrOtherRun: the file belongs to another run.
	ErrOtherRun = errors.New("qlink: batch file of another run")
)

// FileVersionError reports a batch file of a format version this build does
// not read: most likely written by a newer rankfarm.
type FileVersionError struct {
	Got, Want uint8
}

// Error implements error.
func (e *FileVersionError) Error() string {
	if e.Got > e.Want {
		return fmt.Sprintf("qlink: batch file format version %d is newer than this build reads (version %d): run the same rankfarm version on the front end and the blocks", e.Got, e.Want)
	}
	return fmt.Sprintf("qlink: batch file format version %d is not supported (this build reads version %d)", e.Got, e.Want)
}

// crcTable is CRC-32C, which amd64 and arm64 compute in hardware.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// AppendFile appends a batch file holding msgs to dst, encoding each with
// codec. On error dst is returned as it was.
func AppendFile(dst []byte, codec *serialize.Codec, kind FileKind, run RunID, msgs []serialize.Message) ([]byte, error) {
	start := len(dst)
	dst = append(dst, fileMagic...)
	dst = append(dst, FileVersion, byte(kind), 0, 0)
	dst = append(dst, run[:]...)
	dst = append(dst, make([]byte, headerSize-len(fileMagic)-4-len(run))...)
	var err error
	for _, m := range msgs {
		if dst, err = codec.AppendFrame(dst, m); err != nil {
			return dst[:start], fmt.Errorf("qlink: encode %v: %w", m.Kind(), err)
		}
	}
	body := len(dst) - start - headerSize
	if len(dst)-start > MaxFileSize {
		return dst[:start], fmt.Errorf("qlink: a batch file of %d bytes is over the %d byte limit", len(dst)-start, MaxFileSize)
	}
	h := dst[start : start+headerSize]
	binary.BigEndian.PutUint32(h[24:], uint32(len(msgs)))
	binary.BigEndian.PutUint32(h[28:], uint32(body))
	crc := crc32.Update(0, crcTable, h[:32])
	crc = crc32.Update(crc, crcTable, dst[start+headerSize:])
	binary.BigEndian.PutUint32(h[32:], crc)
	return dst, nil
}

// FileHeader is what a batch file's header says.
type FileHeader struct {
	Kind   FileKind
	Run    RunID
	Frames int
}

// DecodeFile checks a whole batch file and decodes its messages with codec.
// It refuses, with an error that matches the errors above (or is a
// *FileVersionError), anything that is not exactly one well-formed file:
// garbage, a truncated file, one with trailing bytes, a checksum mismatch, a
// future version, or a frame that does not decode. The messages do not
// alias data.
func DecodeFile(codec *serialize.Codec, data []byte) (FileHeader, []serialize.Message, error) {
	var h FileHeader
	n := min(len(data), len(fileMagic))
	if string(data[:n]) != fileMagic[:n] {
		return h, nil, fmt.Errorf("%w: it starts with %q", ErrNotBatchFile, data[:n])
	}
	if len(data) <= len(fileMagic) {
		return h, nil, fmt.Errorf("%w: %d bytes, the header alone takes %d", ErrTruncated, len(data), headerSize)
	}
	// The version comes before any other check, so that a file of a newer
	// format, whose header may differ, is named for what it is.
	if v := data[4]; v != FileVersion {
		return h, nil, &FileVersionError{Got: v, Want: FileVersion}
	}
	if len(data) < headerSize {
		return h, nil, fmt.Errorf("%w: %d bytes, the header alone takes %d", ErrTruncated, len(data), headerSize)
	}
	h.Kind = FileKind(data[5])
	copy(h.Run[:], data[8:24])
	frames := binary.BigEndian.Uint32(data[24:])
	size := uint64(binary.BigEndian.Uint32(data[28:]))
	switch {
	case h.Kind != KindDown && h.Kind != KindUp:
		return h, nil, fmt.Errorf("%w: unknown file kind %d", ErrCorrupt, data[5])
	case data[6] != 0 || data[7] != 0:
		return h, nil, fmt.Errorf("%w: reserved header bytes are not zero", ErrCorrupt)
	case uint64(len(data)-headerSize) < size:
		return h, nil, fmt.Errorf("%w: the header announces %d bytes of frames, %d are there", ErrTruncated, size, len(data)-headerSize)
	case uint64(len(data)-headerSize) > size:
		return h, nil, fmt.Errorf("%w: %d bytes after the announced end", ErrCorrupt, uint64(len(data)-headerSize)-size)
	case frames > maxFramesPerFile || uint64(frames)*(4+serialize.HeaderSize) > size:
		return h, nil, fmt.Errorf("%w: %d frames cannot fit in %d bytes", ErrCorrupt, frames, size)
	}
	crc := crc32.Update(0, crcTable, data[:32])
	crc = crc32.Update(crc, crcTable, data[headerSize:])
	if want := binary.BigEndian.Uint32(data[32:]); crc != want {
		return h, nil, fmt.Errorf("%w: computed %08x, the header says %08x", ErrChecksum, crc, want)
	}
	h.Frames = int(frames)
	body := data[headerSize:]
	msgs := make([]serialize.Message, 0, frames)
	for i := range int(frames) {
		if len(body) < 4 {
			return h, nil, fmt.Errorf("%w: frame %d of %d: %d bytes left, a length takes 4", ErrCorrupt, i+1, frames, len(body))
		}
		fl := uint64(binary.BigEndian.Uint32(body))
		if fl > uint64(len(body)-4) {
			return h, nil, fmt.Errorf("%w: frame %d of %d claims %d bytes, %d are left", ErrCorrupt, i+1, frames, fl, len(body)-4)
		}
		m, err := codec.DecodeBody(body[4 : 4+fl])
		if err != nil {
			return h, nil, fmt.Errorf("%w: frame %d of %d: %w", ErrCorrupt, i+1, frames, err)
		}
		msgs = append(msgs, m)
		body = body[4+fl:]
	}
	if len(body) != 0 {
		return h, nil, fmt.Errorf("%w: %d bytes after the last frame", ErrCorrupt, len(body))
	}
	return h, msgs, nil
}
