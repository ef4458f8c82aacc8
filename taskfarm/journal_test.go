package taskfarm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJournalRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, st, err := OpenJournal(path, false, quiet())
	require.NoError(t, err)
	assert.Empty(t, st.OK)
	assert.Equal(t, path, j.Name())
	k1, k2, k3 := Key{Hash: 0xdeadbeef, Occ: 0}, Key{Hash: 0xdeadbeef, Occ: 1}, Key{Hash: 1<<64 - 1, Occ: 7}
	j.Add(Record{Key: k1, OK: true, Seq: 1})
	j.Add(Record{Key: k2, OK: false, Seq: 2, Exit: 3})
	j.Add(Record{Key: k3, OK: false, Seq: 3, Exit: -1})
	j.Add(Record{Key: k3, OK: true, Seq: 3}) // a later success wins
	require.NoError(t, j.Close())
	require.NoError(t, j.Close(), "Close twice")

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, journalHeader+"ok deadbeef 0 1 0\nfail deadbeef 1 2 3\nfail ffffffffffffffff 7 3 -1\nok ffffffffffffffff 7 3 0\n", string(b))

	j, st, err = OpenJournal(path, false, quiet())
	require.NoError(t, err)
	assert.Equal(t, map[Key]bool{k1: true, k2: false, k3: true}, st.OK)
	assert.Equal(t, 4, st.Records)
	assert.False(t, st.Torn)
	assert.Zero(t, st.Bad)
	j.Add(Record{Key: k2, OK: true, Seq: 2})
	require.NoError(t, j.Close())
	_, st, err = openAndClose(t, path, false)
	require.NoError(t, err)
	assert.True(t, st.OK[k2])
	assert.Equal(t, 5, st.Records)
}

func openAndClose(t *testing.T, path string, fresh bool) (*Journal, JournalState, error) {
	t.Helper()
	j, st, err := OpenJournal(path, fresh, quiet())
	if err == nil {
		require.NoError(t, j.Close())
	}
	return j, st, err
}

// TestJournalTornRecord checks that a record cut short by a crash is
// ignored, cut off, and that appending goes on from a clean line.
func TestJournalTornRecord(t *testing.T) {
	tests := []struct {
		name string
		torn string
	}{
		{"half a record", "ok deadbe"},
		{"a whole record without its newline", "ok 1 0 9 0"},
		{"a very long torn line", strings.Repeat("x", 200<<10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j")
			good := journalHeader + "ok 2a 0 1 0\n"
			require.NoError(t, os.WriteFile(path, []byte(good+tt.torn), 0o644))
			j, st, err := OpenJournal(path, false, quiet())
			require.NoError(t, err)
			assert.True(t, st.Torn)
			assert.Equal(t, map[Key]bool{{Hash: 0x2a}: true}, st.OK, "the torn record does not count")
			j.Add(Record{Key: Key{Hash: 0x2b}, OK: true, Seq: 2})
			require.NoError(t, j.Close())
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, good+"ok 2b 0 2 0\n", string(b))
			_, st, err = openAndClose(t, path, false)
			require.NoError(t, err)
			assert.False(t, st.Torn)
			assert.Len(t, st.OK, 2)
		})
	}
}

func TestJournalBadLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	content := journalHeader +
		"ok 2a 0 1 0\n" +
		"done 2b 0 2 0\n" + // unknown status
		"ok zz 0 3 0\n" + // bad hash
		"ok 2c -1 4 0\n" + // negative occurrence
		"ok 2d 0 5\n" + // a field short
		"\n" +
		"# a comment someone added\n" +
		strings.Repeat("y", 100<<10) + "\n" + // a long line
		"fail 2e 0 6 1\n"
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	_, st, err := openAndClose(t, path, false)
	require.NoError(t, err)
	assert.Equal(t, map[Key]bool{{Hash: 0x2a}: true, {Hash: 0x2e}: false}, st.OK)
	assert.Equal(t, 5, st.Bad)
	assert.False(t, st.Torn)
}

func TestJournalFreshAndLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, _, err := OpenJournal(path, false, quiet())
	require.NoError(t, err)
	j.Add(Record{Key: Key{Hash: 1}, OK: true})

	// A second run on the same journal is refused while the first holds it.
	_, _, err = OpenJournal(path, false, quiet())
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrJournalBusy), err)
	require.NoError(t, j.Close())

	_, st, err := openAndClose(t, path, false)
	require.NoError(t, err)
	assert.Len(t, st.OK, 1)
	_, st, err = openAndClose(t, path, true)
	require.NoError(t, err)
	assert.Empty(t, st.OK)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, journalHeader, string(b))

	_, _, err = OpenJournal(filepath.Join(t.TempDir(), "no", "such", "dir", "j"), false, quiet())
	require.Error(t, err)
}
