package frontend

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeCheckpoint opens path, records the values under keys k0, k1, … and
// closes it.
func writeCheckpoint(t *testing.T, path string, values ...string) []memoKey {
	t.Helper()
	c, err := openCheckpoint(path, SyncEachTask, 0, quietLogger())
	require.NoError(t, err)
	var keys []memoKey
	for i, v := range values {
		k := makeMemoKey("app", "v1", []byte{byte(i)})
		keys = append(keys, k)
		c.record(k, []byte(v))
	}
	require.NoError(t, c.close())
	return keys
}

func TestCheckpointFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ckpt")
	keys := writeCheckpoint(t, path, "one", "two", "three")
	whole, err := os.ReadFile(path)
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	tests := []struct {
		name    string
		data    []byte
		want    []string // values found, in key order
		skipped bool
		err     string
	}{
		{"whole", whole, []string{"one", "two", "three"}, false, ""},
		{"empty file", nil, nil, false, ""},
		{"header only", whole[:ckptHeaderLen], nil, false, ""},
		{"torn last record", whole[:len(whole)-2], []string{"one", "two"}, true, ""},
		{"torn length", whole[:len(whole)-len("three")-ckptKeyLen-5], []string{"one", "two"}, true, ""},
		{"corrupt middle record", flip(whole, len(whole)-len("three")-ckptKeyLen-8-3), []string{"one"}, true, ""},
		{"garbage appended", append(bytes.Clone(whole), 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1), []string{"one", "two", "three"}, true, ""},
		{"future version", append(append(bytes.Clone(ckptMagic), 9), whole[ckptHeaderLen:]...), nil, false, "format version"},
		{"not a checkpoint", []byte("hello, world, not ours"), nil, false, "bad header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c")
			require.NoError(t, os.WriteFile(p, tt.data, 0o600))
			c, err := openCheckpoint(p, SyncEachTask, 0, quietLogger())
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, k := range keys {
				if v, ok := c.lookup(k); ok {
					got = append(got, string(v))
				}
			}
			assert.Equal(t, tt.want, got)
			// Appending after a skipped tail leaves a file that reads whole.
			k := makeMemoKey("app", "v1", []byte("new"))
			c.record(k, []byte("new"))
			require.NoError(t, c.close())
			again, err := openCheckpoint(p, SyncEachTask, 0, quietLogger())
			require.NoError(t, err)
			v, ok := again.lookup(k)
			assert.True(t, ok, "the record appended after the cut is read back")
			assert.Equal(t, "new", string(v))
			require.NoError(t, again.close())
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			_, skipped, err := readCheckpoint(data, map[memoKey][]byte{})
			require.NoError(t, err)
			assert.Zero(t, skipped)
		})
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x40
	return b
}

func TestCheckpointSyncPolicies(t *testing.T) {
	for _, p := range []SyncPolicy{SyncEachTask, SyncPeriodic, SyncAtClose} {
		path := filepath.Join(t.TempDir(), "c")
		c, err := openCheckpoint(path, p, 10*time.Millisecond, quietLogger())
		require.NoError(t, err)
		for i := range 1000 {
			c.record(makeMemoKey("a", "", []byte{byte(i), byte(i >> 8)}), []byte{byte(i)})
		}
		require.NoError(t, c.close())
		table := map[memoKey][]byte{}
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		_, skipped, err := readCheckpoint(data, table)
		require.NoError(t, err)
		assert.Zero(t, skipped)
		assert.Len(t, table, 1000, "policy %d", p)
	}
}

func FuzzReadCheckpoint(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed")
	c, err := openCheckpoint(path, SyncAtClose, 0, quietLogger())
	require.NoError(f, err)
	c.record(makeMemoKey("a", "v", []byte{1}), []byte("value"))
	c.record(makeMemoKey("a", "v", []byte{2}), nil)
	require.NoError(f, c.close())
	seed, err := os.ReadFile(path)
	require.NoError(f, err)
	f.Add(seed)
	f.Add(seed[:len(seed)-1])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		table := map[memoKey][]byte{}
		good, skipped, err := readCheckpoint(data, table)
		if err != nil {
			return
		}
		if good+skipped != len(data) || good > len(data) {
			t.Fatalf("good %d + skipped %d != %d", good, skipped, len(data))
		}
		// The good part alone reads whole and gives the same table.
		again := map[memoKey][]byte{}
		g2, s2, err := readCheckpoint(data[:good], again)
		if err != nil || g2 != good || s2 != 0 || len(again) != len(table) {
			t.Fatalf("the good prefix does not read whole: %v %d %d", err, g2, s2)
		}
	})
}

func TestMemoize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt")
	run := func(version string, n int) Stats {
		ex, err := Start(context.Background(), Options{Conn: testConn(t), Checkpoint: path, Logger: quietLogger()})
		require.NoError(t, err)
		app := countedApp.Memoize(version)
		ctx := ctxFor(t, time.Minute)
		var fs []*Future[int64]
		for i := range n {
			fs = append(fs, app.Call(ex, V(int64(i))))
		}
		// The same call twice in one run: the second waits for nothing.
		for i, f := range fs {
			v, err := f.Get(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(i), v)
		}
		require.NoError(t, ex.Close())
		return ex.Stats()
	}
	counted.Store(0)
	st := run("v1", 100)
	assert.Equal(t, int64(100), counted.Load())
	assert.Zero(t, st.Memoized)

	counted.Store(0)
	st = run("v1", 150)
	assert.Equal(t, int64(50), counted.Load(), "only the new calls run")
	assert.Equal(t, int64(100), st.Memoized)

	counted.Store(0)
	st = run("v2", 10)
	assert.Equal(t, int64(10), counted.Load(), "a new version runs again")
	assert.Zero(t, st.Memoized)

	// Without a file, the table lives as long as the executor.
	ex, _ := newTestExecutor(t, 1, 8, Options{}, nil)
	counted.Store(0)
	ctx := ctxFor(t, time.Minute)
	m := countedApp.Memoize("x")
	_, err := m.Call(ex, V(int64(7))).Get(ctx)
	require.NoError(t, err)
	_, err = m.Call(ex, V(int64(7))).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), counted.Load())
	assert.Equal(t, int64(1), ex.Stats().Memoized)
}

// testConn starts a test block and returns the front end's end of its link.
func testConn(t *testing.T) link.Conn {
	_, conn := startTestBlock(t, 1, 8, nil)
	return conn
}
