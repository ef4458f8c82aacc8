package link

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTokenFile(t *testing.T) {
	token, err := NewToken()
	require.NoError(t, err)
	require.Len(t, token, TokenSize)
	other, err := NewToken()
	require.NoError(t, err)
	assert.NotEqual(t, token, other)

	dir := filepath.Join(t.TempDir(), "run", "secrets")
	path, err := WriteTokenFile(dir, token)
	require.NoError(t, err)
	assert.Equal(t, dir, filepath.Dir(path))

	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), di.Mode().Perm())

	got, err := ReadTokenFile(path)
	require.NoError(t, err)
	assert.Equal(t, token, got)

	second, err := WriteTokenFile(dir, other)
	require.NoError(t, err)
	assert.NotEqual(t, path, second, "each run gets its own file")

	_, err = WriteTokenFile(dir, nil)
	assert.ErrorContains(t, err, "empty token")
}

func TestReadTokenFileRefuses(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string
		wantErr string
	}{
		{
			name:    "group readable",
			setup:   func(t *testing.T, dir string) string { return writeFile(t, dir, []byte("secret"), 0o640) },
			wantErr: "mode 0640",
		},
		{
			name:    "world readable",
			setup:   func(t *testing.T, dir string) string { return writeFile(t, dir, []byte("secret"), 0o604) },
			wantErr: "lets others read it",
		},
		{
			name:    "group writable",
			setup:   func(t *testing.T, dir string) string { return writeFile(t, dir, []byte("secret"), 0o620) },
			wantErr: "must be 0600",
		},
		{
			name:    "empty",
			setup:   func(t *testing.T, dir string) string { return writeFile(t, dir, nil, 0o600) },
			wantErr: "empty",
		},
		{
			name:    "too large",
			setup:   func(t *testing.T, dir string) string { return writeFile(t, dir, make([]byte, 5000), 0o600) },
			wantErr: "larger than",
		},
		{
			name:    "missing",
			setup:   func(t *testing.T, dir string) string { return filepath.Join(dir, "nope") },
			wantErr: "no such file",
		},
		{
			name: "a directory",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "d")
				require.NoError(t, os.Mkdir(p, 0o700))
				return p
			},
			wantErr: "not a regular file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ReadTokenFile(tt.setup(t, t.TempDir()))
			assert.Nil(t, tok)
			assert.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func writeFile(t *testing.T, dir string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(p, data, mode))
	require.NoError(t, os.Chmod(p, mode)) // past the umask
	return p
}
