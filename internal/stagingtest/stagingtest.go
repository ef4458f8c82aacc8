// Package stagingtest runs the servers that file-staging tests stage
// against: a real rsync daemon and an HTTP server on loopback, each with a
// way to fail.
package stagingtest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Payload is the body the HTTP server serves.
var Payload = []byte(strings.Repeat("rankfarm stages files.\n", 4000))

// HTTPServer serves Payload on loopback until the test ends:
//
//	/data/full.txt         with a Content-Length
//	/data/chunked.txt      chunked
//	/data/cut.txt          half of it, then the connection closes (with a Content-Length)
//	/data/cut-chunked.txt  the same, chunked
//	/data/broken.txt       500 Internal Server Error
//
// and 404 for anything else.
func HTTPServer(t testing.TB) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/data/full.txt", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(Payload)))
		_, _ = w.Write(Payload)
	})
	mux.HandleFunc("/data/chunked.txt", func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i < len(Payload); i += 1000 {
			_, _ = w.Write(Payload[i:min(i+1000, len(Payload))])
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/data/cut.txt", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(Payload)))
		_, _ = w.Write(Payload[:len(Payload)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection closes mid-body
	})
	mux.HandleFunc("/data/cut-chunked.txt", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(Payload[:len(Payload)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/data/broken.txt", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "oops", http.StatusInternalServerError)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// RsyncDaemon runs a real rsync daemon on loopback until the test ends,
// serving one writable module, and returns the module's URL
// (rsync://127.0.0.1:PORT/data) and its directory. It skips the test when
// rsync is not installed.
func RsyncDaemon(t testing.TB) (modURL, dir string) {
	t.Helper()
	bin, err := exec.LookPath("rsync")
	if err != nil {
		t.Skip("rsync is not installed (apt-get install -y rsync)")
	}
	work := t.TempDir()
	dir = filepath.Join(work, "module")
	require.NoError(t, os.Mkdir(dir, 0o755))
	// As root the daemon would switch to nobody: keep it this user. As
	// another user it must not name one at all (setgroups would fail).
	ids := ""
	if os.Getuid() == 0 {
		ids = fmt.Sprintf("uid = %d\ngid = %d\n", os.Getuid(), os.Getgid())
	}
	conf := fmt.Sprintf("use chroot = no\npid file = %s\n%s[data]\n\tpath = %s\n\tread only = no\n",
		filepath.Join(work, "pid"), ids, dir)
	require.NoError(t, os.WriteFile(filepath.Join(work, "rsyncd.conf"), []byte(conf), 0o600))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	cmd := exec.Command(bin, "--daemon", "--no-detach", "--address=127.0.0.1", fmt.Sprintf("--port=%d", port),
		"--config="+filepath.Join(work, "rsyncd.conf"), "--log-file="+filepath.Join(work, "log"))
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for { // until it accepts connections
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		require.True(t, time.Now().Before(deadline), "the rsync daemon did not start: %v", err)
		time.Sleep(20 * time.Millisecond)
	}
	return "rsync://" + addr + "/data", dir
}

// RefusedURL returns an http URL on loopback where nothing listens.
func RefusedURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr + "/x"
}
