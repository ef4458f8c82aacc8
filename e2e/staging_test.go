package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/internal/stagingtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Apps of the staging tests: they see only local paths.
var (
	// fileUpper writes its input in capitals to its output.
	fileUpper = frontend.NewApp2("e2e.file.upper", func(_ context.Context, in, out frontend.File) (frontend.File, error) {
		b, err := os.ReadFile(in.Path())
		if err != nil {
			return out, err
		}
		return out, os.WriteFile(out.Path(), []byte(strings.ToUpper(string(b))), 0o644)
	})
	// fileRead returns its input's content and the path the worker read.
	fileRead = frontend.NewApp1("e2e.file.read", func(_ context.Context, in frontend.File) ([]string, error) {
		b, err := os.ReadFile(in.Path())
		return []string{string(b), in.Path()}, err
	})
	// fileCount counts the lines of its inputs, in a shell.
	fileCount = frontend.NewShellApp1("e2e.file.count", func(_ context.Context, ins []frontend.File) (frontend.ShellSpec, error) {
		cmd := "cat"
		for _, f := range ins {
			cmd += " " + frontend.ShellQuote(f.Path())
		}
		return frontend.ShellSpec{Cmd: cmd + " | wc -l"}, nil
	})
)

// TestFileStaging runs a chain of apps on the block's workers that passes
// files along: downloaded over HTTP, written to and read back from an rsync
// daemon, written to and read from the shared filesystem.
func TestFileStaging(t *testing.T) {
	srv := stagingtest.HTTPServer(t)
	mod, modDir := stagingtest.RsyncDaemon(t)
	ctx := testCtx(t, 2*time.Minute)
	dir := t.TempDir()

	// HTTP in → rsync out → rsync in → a shared-filesystem path out → read.
	up := fileUpper.Call(shared, frontend.V(frontend.NewFile(srv.URL+"/data/full.txt")), frontend.V(frontend.OutputFile(mod+"/up.txt")))
	local := frontend.OutputFile(filepath.Join(dir, "copy", "up.txt"))
	again := fileUpper.Call(shared, up, frontend.V(local))
	got, err := fileRead.Call(shared, frontend.DataFuture(shared, local, again)).Get(ctx)
	require.NoError(t, err)
	want := strings.ToUpper(string(stagingtest.Payload))
	assert.Equal(t, want, got[0])
	b, err := os.ReadFile(filepath.Join(modDir, "up.txt"))
	require.NoError(t, err)
	assert.Equal(t, want, string(b), "pushed to the rsync daemon")

	// Read back from the daemon: staged in a scratch directory that is
	// gone once the task is done.
	got, err = fileRead.Call(shared, up).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, want, got[0])
	assert.Equal(t, "up.txt", filepath.Base(got[1]))
	assert.NoDirExists(t, filepath.Dir(filepath.Dir(got[1])), "the task's scratch directory is removed")

	// A fan-in of files on many workers.
	var parts []*frontend.Future[frontend.File]
	for i := range 8 {
		out := frontend.OutputFile(mod + "/part" + string(rune('0'+i)) + ".txt")
		parts = append(parts, fileUpper.Call(shared, frontend.V(frontend.NewFile(srv.URL+"/data/chunked.txt")), frontend.V(out)))
	}
	res, err := fileCount.Call(shared, frontend.All(parts)).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, "32000", strings.TrimSpace(res.Stdout))
}

// TestFileStagingFailures checks that a download cut short or refused fails
// its task with an error naming the URL, and that the app does not run.
func TestFileStagingFailures(t *testing.T) {
	srv := stagingtest.HTTPServer(t)
	ctx := testCtx(t, 2*time.Minute)
	dir := t.TempDir()
	for _, tc := range []struct{ path, want string }{
		{"/data/cut.txt", "cut short"},
		{"/data/cut-chunked.txt", "cut short"},
		{"/data/gone.txt", "HTTP 404 Not Found"},
	} {
		url := srv.URL + tc.path
		out := filepath.Join(dir, filepath.Base(tc.path))
		_, err := fileUpper.Call(shared, frontend.V(frontend.NewFile(url)), frontend.V(frontend.OutputFile(out))).Get(ctx)
		require.ErrorIs(t, err, frontend.ErrApp, url)
		assert.Contains(t, err.Error(), "stage in "+url+": ")
		assert.Contains(t, err.Error(), tc.want)
		assert.NoFileExists(t, out, "the app did not run")
	}
}
