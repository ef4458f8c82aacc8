package qlink

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

// errWantVersion marks a case that must fail with a *FileVersionError.
var errWantVersion = errors.New("want a *FileVersionError")

var testRun = RunID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

func sampleMessages() []serialize.Message {
	return []serialize.Message{
		&serialize.TaskBatch{Tasks: []serialize.Task{
			{ID: 1, App: "echo", Args: []byte{0x91, 0x01}},
			{ID: 2, App: "sleep", Args: []byte{0x91, 0x00}, Attempt: 1, Walltime: 5e9},
		}},
		&serialize.ResultBatch{Credit: 2, Results: []serialize.Result{{ID: 1, Value: []byte{0x01}, Rank: 1, Start: 10, End: 20}}},
		&serialize.Credit{N: 7},
		&serialize.Shutdown{Reason: "bye"},
		&serialize.Hello{Version: 1, Block: "b0", Ranks: 4, Workers: 3, Host: "node", PID: 42},
	}
}

func mustFile(t testing.TB, kind FileKind, msgs ...serialize.Message) []byte {
	t.Helper()
	b, err := AppendFile(nil, serialize.NewCodec(serialize.Options{}), kind, testRun, msgs)
	require.NoError(t, err)
	return b
}

func TestFileRoundTrip(t *testing.T) {
	codec := serialize.NewCodec(serialize.Options{})
	for _, tc := range []struct {
		name string
		kind FileKind
		msgs []serialize.Message
	}{
		{"empty", KindDown, nil},
		{"one", KindDown, sampleMessages()[:1]},
		{"all", KindUp, sampleMessages()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("keep")
			b, err := AppendFile(prefix, codec, tc.kind, testRun, tc.msgs)
			require.NoError(t, err)
			require.Equal(t, "keep", string(b[:4]), "AppendFile appends")
			h, msgs, err := DecodeFile(codec, b[4:])
			require.NoError(t, err)
			assert.Equal(t, tc.kind, h.Kind)
			assert.Equal(t, testRun, h.Run)
			assert.Equal(t, len(tc.msgs), h.Frames)
			if tc.msgs == nil {
				assert.Empty(t, msgs)
			} else {
				assert.Equal(t, tc.msgs, msgs)
			}
		})
	}
}

// TestFileRefusals covers every way DecodeFile refuses a file, each with
// the error a caller can test.
func TestFileRefusals(t *testing.T) {
	codec := serialize.NewCodec(serialize.Options{})
	good := mustFile(t, KindDown, sampleMessages()...)
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	reCRC := func(b []byte) []byte {
		crc := crcUpdate(b[:32], b[headerSize:])
		binary.BigEndian.PutUint32(b[32:], crc)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"magic only", []byte("RFQB"), ErrTruncated},
		{"half a header", good[:20], ErrTruncated},
		{"header only", good[:headerSize], ErrTruncated},
		{"truncated body", good[:len(good)-3], ErrTruncated},
		{"trailing bytes", append(append([]byte(nil), good...), 0), ErrCorrupt},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), ErrNotBatchFile},
		{"a JSON file", []byte(`{"format":1}`), ErrNotBatchFile},
		{"future version", edit(func(b []byte) []byte { b[4] = FileVersion + 1; return b }), errWantVersion},
		{"future version, other header", append([]byte("RFQB\x07"), make([]byte, 100)...), errWantVersion},
		{"flipped body bit", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrChecksum},
		{"flipped run bit", edit(func(b []byte) []byte { b[10] ^= 1; return b }), ErrChecksum},
		{"unknown kind", edit(func(b []byte) []byte { b[5] = 9; return reCRC(b) }), ErrCorrupt},
		{"reserved bytes", edit(func(b []byte) []byte { b[6] = 1; return reCRC(b) }), ErrCorrupt},
		{"frame count too high", edit(func(b []byte) []byte { b[27]++; return reCRC(b) }), ErrCorrupt},
		{"frame count too low", edit(func(b []byte) []byte { b[27]--; return reCRC(b) }), ErrCorrupt},
		{"huge frame count", edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[24:], 1<<31); return reCRC(b) }), ErrCorrupt},
		{"frame of a future protocol", edit(func(b []byte) []byte { b[headerSize+4] = 99; return reCRC(b) }), ErrCorrupt},
		{"frame of an unknown kind", edit(func(b []byte) []byte { b[headerSize+6] = 99; return reCRC(b) }), serialize.ErrUnknownKind},
		{"bad frame payload", edit(func(b []byte) []byte { b[headerSize+7] = 0xc1; return reCRC(b) }), serialize.ErrCorrupt},
		{"frame length past the end", edit(func(b []byte) []byte { b[headerSize] = 0x7f; return reCRC(b) }), ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, msgs, err := DecodeFile(codec, tc.data)
			require.Error(t, err)
			assert.Nil(t, msgs)
			if tc.want == errWantVersion {
				var ve *FileVersionError
				require.ErrorAs(t, err, &ve)
				assert.Contains(t, err.Error(), "newer than this build")
			} else {
				assert.ErrorIs(t, err, tc.want)
			}
		})
	}
}

func crcUpdate(head, body []byte) uint32 {
	return crc32.Update(crc32.Checksum(head, crcTable), crcTable, body)
}

// TestFileCorpus decodes the files in testdata/files: each named for the
// error it must give.
func TestFileCorpus(t *testing.T) {
	codec := serialize.NewCodec(serialize.Options{})
	want := map[string]error{
		"good.rfq":           nil,
		"truncated.rfq":      ErrTruncated,
		"garbage.rfq":        ErrNotBatchFile,
		"future-version.rfq": errWantVersion,
		"bit-flip.rfq":       ErrChecksum,
	}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "files", name))
			require.NoError(t, err)
			_, msgs, err := DecodeFile(codec, data)
			switch {
			case w == nil:
				require.NoError(t, err)
				assert.Equal(t, sampleMessages(), msgs)
			case w == errWantVersion:
				var ve *FileVersionError
				require.ErrorAs(t, err, &ve)
			default:
				require.ErrorIs(t, err, w)
			}
		})
	}
}

// TestWriteCorpus rewrites testdata/files when QLINK_WRITE_CORPUS=1.
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("QLINK_WRITE_CORPUS") != "1" {
		t.Skip("set QLINK_WRITE_CORPUS=1 to rewrite testdata/files")
	}
	good := mustFile(t, KindUp, sampleMessages()...)
	future := append([]byte(nil), good...)
	future[4] = FileVersion + 1
	flip := append([]byte(nil), good...)
	flip[len(flip)/2] ^= 0x10
	dir := filepath.Join("testdata", "files")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, data := range map[string][]byte{
		"good.rfq":           good,
		"truncated.rfq":      good[:len(good)*2/3],
		"garbage.rfq":        []byte("#!/bin/sh\necho this is not a batch file\n"),
		"future-version.rfq": future,
		"bit-flip.rfq":       flip,
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	}
}

func TestFileTooBig(t *testing.T) {
	codec := serialize.NewCodec(serialize.Options{MaxFrame: 1 << 10})
	_, err := AppendFile(nil, codec, KindUp, testRun, []serialize.Message{&serialize.Shutdown{Reason: string(make([]byte, 2<<10))}})
	require.ErrorIs(t, err, serialize.ErrFrameTooLarge)
}

func TestNames(t *testing.T) {
	seq, ok := parseTaskFile(taskFileName('t', 0xabc))
	assert.True(t, ok)
	assert.Equal(t, uint64(0xabc), seq)
	_, ok = parseTaskFile("t-xyz.rfq")
	assert.False(t, ok)
	_, ok = parseTaskFile(shutdownRFQ)
	assert.False(t, ok)

	b, seq, ok := parseResultFile(resultFileName("b0-12-abcdef", 7))
	assert.True(t, ok)
	assert.Equal(t, "b0-12-abcdef", b)
	assert.Equal(t, uint64(7), seq)
	for _, bad := range []string{"r-.rfq", "r-x-1.rfq", "r-a.b-0000000000000001.rfq", "x-b-0000000000000001.rfq", "r-b-0000000000000001"} {
		_, _, ok := parseResultFile(bad)
		assert.False(t, ok, bad)
	}
	id, n, ok := parseBeat(beatName("b-1-aa", 42))
	assert.True(t, ok)
	assert.Equal(t, "b-1-aa", id)
	assert.Equal(t, uint64(42), n)
	assert.Equal(t, "t-0000000000000001.rfq", badOriginal("1700000000-t-0000000000000001.rfq"))
	assert.Empty(t, badOriginal("1700000000-t-0000000000000001.rfq.why"))
	assert.Equal(t, "a_b_c", sanitize("a.b/c"))
	assert.True(t, validBlockID(sanitize("weird name/..")+"-1-ab"))
}
