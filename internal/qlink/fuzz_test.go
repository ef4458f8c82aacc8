package qlink

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rankfarm/rankfarm/serialize"
)

// FuzzDecodeFile feeds DecodeFile arbitrary bytes: it must never panic,
// must refuse with one of its documented errors, and whatever it accepts
// must encode back to a file that decodes to the same messages.
func FuzzDecodeFile(f *testing.F) {
	f.Add(mustFile(f, KindDown, sampleMessages()...))
	f.Add(mustFile(f, KindUp))
	f.Add(mustFile(f, KindUp, &serialize.Credit{N: 1}))
	f.Add([]byte("RFQB"))
	f.Add([]byte("RFQB\x02"))
	f.Add([]byte{})
	if files, err := filepath.Glob(filepath.Join("testdata", "files", "*.rfq")); err == nil {
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	codec := serialize.NewCodec(serialize.Options{MaxFrame: 1 << 20})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, msgs, err := DecodeFile(codec, data)
		if err != nil {
			var ve *FileVersionError
			var sve *serialize.VersionError
			for _, known := range []error{ErrNotBatchFile, ErrTruncated, ErrChecksum, ErrCorrupt} {
				if errors.Is(err, known) {
					return
				}
			}
			if errors.As(err, &ve) || errors.As(err, &sve) {
				return
			}
			t.Fatalf("undocumented error: %v", err)
		}
		again, err := AppendFile(nil, codec, h.Kind, h.Run, msgs)
		require.NoError(t, err)
		h2, msgs2, err := DecodeFile(codec, again)
		require.NoError(t, err)
		require.Equal(t, h, h2)
		require.Equal(t, msgs, msgs2)
	})
}
