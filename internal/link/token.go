package link

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
)

// TokenSize is the length in bytes of a token made by NewToken.
const TokenSize = 32

// maxTokenFile bounds what ReadTokenFile reads, so a wrong path cannot make
// it swallow a large file.
const maxTokenFile = 4 << 10

// NewToken returns a fresh run token: TokenSize random bytes.
func NewToken() ([]byte, error) {
	t := make([]byte, TokenSize)
	if _, err := rand.Read(t); err != nil {
		return nil, fmt.Errorf("link: new token: %w", err)
	}
	return t, nil
}

// WriteTokenFile writes token to a new file in dir that only its owner can
// read or write (mode 0600) and returns the file's path. dir is created with
// mode 0700 when it does not exist; an empty dir means os.TempDir. The file
// holds the token's bytes as they are.
func WriteTokenFile(dir string, token []byte) (string, error) {
	if len(token) == 0 {
		return "", errors.New("link: write token file: empty token")
	}
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("link: write token file: %w", err)
	}
	// CreateTemp opens with O_EXCL and mode 0600, so the file never exists
	// with looser permissions, not even for a moment.
	f, err := os.CreateTemp(dir, "rankfarm-token-*")
	if err != nil {
		return "", fmt.Errorf("link: write token file: %w", err)
	}
	path := f.Name()
	fail := func(err error) (string, error) {
		_ = f.Close()
		_ = os.Remove(path)
		return "", fmt.Errorf("link: write token file %s: %w", path, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(token); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("link: write token file %s: %w", path, err)
	}
	return path, nil
}

// ReadTokenFile reads a token written by WriteTokenFile. It refuses a file
// that is not a regular file, that its group or others may read or write, that
// is empty, or that is larger than 4 KiB.
func ReadTokenFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("link: read token file: %w", err)
	}
	defer func() { _ = f.Close() }()
	// Stat the open file, not the path, so what is checked is what is read.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("link: read token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("link: read token file %s: not a regular file (%v)", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("link: read token file %s: mode %#o lets others read it; it must be 0600 or stricter", path, perm)
	}
	token, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return nil, fmt.Errorf("link: read token file %s: %w", path, err)
	}
	switch {
	case len(token) == 0:
		return nil, fmt.Errorf("link: read token file %s: the file is empty", path)
	case len(token) > maxTokenFile:
		return nil, fmt.Errorf("link: read token file %s: larger than %d bytes; is it a token file?", path, maxTokenFile)
	}
	return token, nil
}
