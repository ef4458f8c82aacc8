package frontend

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/internal/stagingtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Apps of the staging tests.
var (
	// ftWrite writes text to its output file and returns the file.
	ftWrite = NewApp2("ft.file.write", func(_ context.Context, out File, text string) (File, error) {
		return out, os.WriteFile(out.Path(), []byte(text), 0o644)
	})
	// ftUpper reads its input and writes it in capitals to its output.
	ftUpper = NewApp2("ft.file.upper", func(_ context.Context, in, out File) (File, error) {
		b, err := os.ReadFile(in.Path())
		if err != nil {
			return out, err
		}
		return out, os.WriteFile(out.Path(), []byte(strings.ToUpper(string(b))), 0o644)
	})
	// ftRead returns the content of its input and where the worker had it.
	ftReadRuns atomic.Int64
	ftRead     = NewApp1("ft.file.read", func(_ context.Context, in File) ([]string, error) {
		ftReadRuns.Add(1)
		b, err := os.ReadFile(in.Path())
		return []string{string(b), in.Path()}, err
	})
	// ftForget does not write its output.
	ftForget = NewApp1("ft.file.forget", func(_ context.Context, out File) (int, error) { return 0, nil })
	// ftCat concatenates the files of a list, as a shell app.
	ftCat = NewShellApp2("ft.file.cat", func(_ context.Context, ins []File, out File) (ShellSpec, error) {
		cmd := "cat"
		for _, f := range ins {
			cmd += " " + ShellQuote(f.Path())
		}
		return ShellSpec{Cmd: cmd, Stdout: out.Path()}, nil
	})
)

// scratchDir points the workers' scratch directories (the in-process block
// shares this process's environment) at a fresh directory.
func scratchDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(EnvScratch, dir)
	return dir
}

func assertNoScratchLeft(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "scratch directories left behind")
}

func TestFileChainOnSharedFilesystem(t *testing.T) {
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	ctx := ctxFor(t, 30*time.Second)
	dir := t.TempDir()

	// The output as a DataFuture: the reader waits for the writer.
	out := OutputFile(filepath.Join(dir, "sub", "a.txt")) // its directory is made
	w := ftWrite.Call(ex, V(out), V("written by one app"))
	got, err := ftRead.Call(ex, DataFuture(ex, out, w)).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"written by one app", out.URL}, got)

	// The writer's own future of the File works as well: the file comes
	// back an input.
	f, err := w.Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, NewFile(out.URL), f)
	up := ftUpper.Call(ex, w, V(OutputFile(filepath.Join(dir, "b.txt"))))
	got, err = ftRead.Call(ex, up).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, "WRITTEN BY ONE APP", got[0])

	// A shell app over a list of files.
	cat := ftCat.Call(ex, All([]*Future[File]{w, up}), V(OutputFile(filepath.Join(dir, "c.txt"))))
	df := DataFuture(ex, OutputFile(filepath.Join(dir, "c.txt")), cat)
	got, err = ftRead.Call(ex, df).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, "written by one appWRITTEN BY ONE APP", got[0])
	v, err := df.Get(ctx)
	require.NoError(t, err)
	assert.False(t, v.Out, "a DataFuture is an input")

	// A DataFuture without a writer resolves at once.
	v, err = DataFuture(ex, NewFile("/etc/hostname"), nil).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, NewFile("/etc/hostname"), v)
}

func TestFileChainThroughRsync(t *testing.T) {
	mod, dir := stagingtest.RsyncDaemon(t)
	scratch := scratchDir(t)
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	ctx := ctxFor(t, 60*time.Second)

	// Each app's output goes to the daemon from the app's scratch
	// directory, and the next app's input comes back from there.
	a := ftWrite.Call(ex, V(OutputFile(mod+"/a.txt")), V("through rsync"))
	b := ftUpper.Call(ex, a, V(OutputFile(mod+"/b.txt")))
	got, err := ftRead.Call(ex, b).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, "THROUGH RSYNC", got[0])
	assert.True(t, strings.HasPrefix(got[1], scratch), "read from the task's scratch directory")
	assert.NoDirExists(t, filepath.Dir(got[1]), "the scratch directory is removed after the task")
	for name, want := range map[string]string{"a.txt": "through rsync", "b.txt": "THROUGH RSYNC"} {
		content, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, want, string(content))
	}
	assertNoScratchLeft(t, scratch)
}

func TestFileStagingFailures(t *testing.T) {
	srv := stagingtest.HTTPServer(t)
	scratch := scratchDir(t)
	ex, _ := newTestExecutor(t, 2, 8, Options{}, nil)
	ctx := ctxFor(t, 30*time.Second)

	// A download that works.
	ftReadRuns.Store(0)
	got, err := ftRead.Call(ex, V(NewFile(srv.URL+"/data/chunked.txt"))).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, string(stagingtest.Payload), got[0])
	assert.Equal(t, "chunked.txt", filepath.Base(got[1]))
	assert.EqualValues(t, 1, ftReadRuns.Load())

	for _, tc := range []struct {
		path, want string
		kind       error
	}{
		{"/data/cut.txt", "cut short", ErrApp},
		{"/data/cut-chunked.txt", "cut short", ErrApp},
		{"/data/nope.txt", "HTTP 404 Not Found", ErrApp},
	} {
		url := srv.URL + tc.path
		f := ftRead.Call(ex, V(NewFile(url)), Retries(1)) // retried once: a transfer may fail for a while
		_, err := f.Get(ctx)
		require.ErrorIs(t, err, tc.kind, url)
		assert.Contains(t, err.Error(), "stage in "+url+": ")
		assert.Contains(t, err.Error(), tc.want)
		var te *TaskError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, 2, te.Attempts)
		// Its dependants are not run.
		_, err = ftRead.Call(ex, DataFuture(ex, NewFile("/dev/null"), f)).Get(ctx)
		var de *DependencyError
		require.ErrorAs(t, err, &de)
		var first *TaskError
		require.ErrorAs(t, err, &first)
		assert.Equal(t, f.ID(), first.ID, "the first failure is the stage-in")
	}
	assert.EqualValues(t, 1, ftReadRuns.Load(), "no app ran on a failed stage-in")

	// A file that can never be staged is not retried.
	_, err = ftRead.Call(ex, V(NewFile("ftp://example.org/x")), Retries(3)).Get(ctx)
	require.ErrorIs(t, err, ErrArgs)
	assert.Contains(t, err.Error(), "ftp://example.org/x")
	_, err = ftWrite.Call(ex, V(OutputFile(srv.URL+"/up")), V("x")).Get(ctx)
	require.ErrorIs(t, err, ErrArgs)
	assert.Contains(t, err.Error(), "cannot be an output")

	// An output the app did not write.
	never := OutputFile(filepath.Join(t.TempDir(), "never.txt"))
	_, err = ftForget.Call(ex, V(never)).Get(ctx)
	require.ErrorIs(t, err, ErrApp)
	assert.Contains(t, err.Error(), "stage out "+never.URL+": the app did not write it")

	assertNoScratchLeft(t, scratch)
}
