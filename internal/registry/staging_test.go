package registry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rankfarm/rankfarm/internal/stagingtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

func TestParseFileURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		kind fileKind
		path string // fileLocal
		base string // remote kinds
		err  string
	}{
		{url: "/data/in.txt", kind: fileLocal, path: "/data/in.txt"},
		{url: "rel/in.txt", kind: fileLocal, path: "rel/in.txt"},
		{url: "host:path", kind: fileLocal, path: "host:path"},
		{url: "./a://b", kind: fileLocal, path: "./a://b"},
		{url: "file:///abs/x%20y", kind: fileLocal, path: "/abs/x y"},
		{url: "file://localhost/abs", kind: fileLocal, path: "/abs"},
		{url: "http://example.org/a/b.tar.gz?x=1", kind: fileHTTP, base: "b.tar.gz"},
		{url: "HTTPS://example.org/", kind: fileHTTP, base: "download"},
		{url: "https://example.org", kind: fileHTTP, base: "download"},
		{url: "rsync://h/mod/dir/f.dat", kind: fileRsync, base: "f.dat"},
		{url: "rsync://h:8873/mod/f", kind: fileRsync, base: "f"},
		{url: "", err: "no name"},
		{url: "a\x00b", err: "NUL"},
		{url: "file://other/abs", err: "another host"},
		{url: "file:rel", kind: fileLocal, path: "file:rel"},
		{url: "http:///nohost", err: "without a host"},
		{url: "rsync:///mod/f", err: "without a host"},
		{url: "rsync://h/mod", err: "module"},
		{url: "rsync://h/mod/", err: "module"},
		{url: "rsync://h/mod/dir/", err: "module"},
		{url: "rsync://h/mod/f?x", err: "query"},
		{url: "rsync://h/-mod/f", err: "option"},
		{url: "ftp://h/f", err: "unsupported scheme"},
		{url: "s3://bucket/key", err: "unsupported scheme"},
		{url: "http://[::1", err: "not a URL"},
		{url: strings.Repeat("a", maxFileURL+1), err: "more than"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			loc, err := parseFileURL(tc.url)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.kind, loc.kind)
			assert.Equal(t, tc.path, loc.path)
			assert.Equal(t, tc.base, loc.base)
		})
	}
}

func FuzzParseFileURL(f *testing.F) {
	for _, s := range []string{"/a/b", "file:///x", "http://h/p", "https://u:p@h:1/p/q?r#s", "rsync://h/m/f", "rsync://h:1/m/d/", "x://", "://", "http://[::1]:80/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		loc, err := parseFileURL(s)
		if err != nil {
			return
		}
		switch loc.kind {
		case fileLocal:
			require.NotEmpty(t, loc.path)
			require.NotContains(t, loc.path, "\x00")
		case fileHTTP, fileRsync:
			require.NotEmpty(t, loc.base)
			require.NotContains(t, loc.base, "/")
			require.NotEqual(t, "..", loc.base)
			require.NotEqual(t, ".", loc.base)
			require.Equal(t, s, loc.url)
		default:
			t.Fatalf("kind %d", loc.kind)
		}
		f := File{URL: s}
		_ = f.Path()
		_ = f.String()
	})
}

// FuzzDecodeFile feeds arbitrary bytes to the decoding of a File argument,
// as a worker decodes one from a task.
func FuzzDecodeFile(f *testing.F) {
	good, err := msgpack.Marshal([]File{{URL: "rsync://h/m/f", Out: true}})
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte{0x91, 0x92, 0xa1, 'x', 0xc2})
	f.Add([]byte{0x91, 0x92, 0xa1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var fs []File
		if err := DecodeArgs(append([]byte{0x91}, b...), &fs); err != nil {
			return
		}
		for _, x := range fs {
			_, _ = parseFileURL(x.URL)
			require.Empty(t, x.path, "where a file was staged never travels")
		}
	})
}

func TestFileTravelsAsURLAndDirection(t *testing.T) {
	f := File{URL: "rsync://h/m/f", Out: true, path: "/scratch/1/f"}
	b, err := msgpack.Marshal(f)
	require.NoError(t, err)
	assert.Equal(t, []byte("\x92\xadrsync://h/m/f\xc3"), b)
	var g File
	require.NoError(t, msgpack.Unmarshal(b, &g))
	assert.Equal(t, File{URL: "rsync://h/m/f", Out: true}, g)
	assert.Equal(t, "", g.Path(), "a remote file has no path before staging")
	assert.Equal(t, "/x", File{URL: "file:///x"}.Path())
	assert.True(t, g.Remote())
	assert.False(t, File{URL: "/x"}.Remote())
	assert.Equal(t, "https://u:xxxxx@h/p", File{URL: "https://u:secret@h/p"}.String())
}

// holder reaches Files in every way walkFiles knows.
type holder struct {
	One    File
	Ptr    *File
	List   []File
	Arr    [2]File
	ByName map[string]File
	Nested []struct{ F *File }
	hidden File // an unexported field is not walked
	N      int
}

func TestHasFilesAndWalk(t *testing.T) {
	type rec struct {
		Next *rec
		F    File
	}
	type none struct {
		A []string
		B map[string]int
		C *none
	}
	for _, tc := range []struct {
		v    any
		want bool
	}{
		{File{}, true}, {&File{}, true}, {[]File{}, true}, {map[int]File{}, true}, {[3]*File{}, true},
		{holder{}, true}, {&rec{}, true}, {rec{}, true}, {[]*rec{}, true}, {none{}, false}, {0, false}, {"", false}, {[]any{}, false},
		{struct{ f File }{}, false},
	} {
		assert.Equal(t, tc.want, HasFiles(reflect.TypeOf(tc.v)), "%T", tc.v)
	}

	h := holder{
		One: File{URL: "1"}, Ptr: &File{URL: "2"}, List: []File{{URL: "3"}}, Arr: [2]File{{URL: "4"}, {URL: "5"}},
		ByName: map[string]File{"k": {URL: "6", Out: true}}, Nested: []struct{ F *File }{{&File{URL: "7"}}, {nil}},
		hidden: File{URL: "hidden"},
	}
	var seen []string
	require.NoError(t, walkFiles(reflect.ValueOf(&h), func(f *File) error {
		seen = append(seen, f.URL)
		f.path = "/p" + f.URL
		return nil
	}))
	assert.ElementsMatch(t, []string{"1", "2", "3", "4", "5", "6", "7"}, seen)
	assert.Equal(t, "/p6", h.ByName["k"].Path(), "a map value is set back")
	assert.Equal(t, "/p7", h.Nested[0].F.Path())
	AsInputs(&h)
	assert.False(t, h.ByName["k"].Out)
	assert.Equal(t, "6", h.ByName["k"].Path(), "AsInputs forgets the staged path")

	stop := errors.New("stop")
	assert.ErrorIs(t, walkFiles(reflect.ValueOf(&h), func(*File) error { return stop }), stop)
}

// scratch points the tasks' scratch directories at a fresh directory and
// returns it.
func scratch(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(EnvScratch, dir)
	return dir
}

// assertEmptyDir checks that the scratch base holds nothing: every task's
// scratch directory was removed.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "scratch directories left behind")
}

var payload = stagingtest.Payload

// readApp is an app body that reads its file, counting its runs.
func readApp(f *File, runs *int, got *[]byte) func(context.Context) error {
	return func(context.Context) error {
		*runs++
		b, err := os.ReadFile(f.Path())
		*got = b
		return err
	}
}

func TestStageInHTTP(t *testing.T) {
	srv := stagingtest.HTTPServer(t)
	refused := stagingtest.RefusedURL(t)
	for _, tc := range []struct {
		name, url string
		err       string // "" for success
	}{
		{name: "content-length", url: srv.URL + "/data/full.txt"},
		{name: "chunked", url: srv.URL + "/data/chunked.txt"},
		{name: "cut short", url: srv.URL + "/data/cut.txt", err: "cut short"},
		{name: "chunked cut short", url: srv.URL + "/data/cut-chunked.txt", err: "cut short"},
		{name: "not found", url: srv.URL + "/data/missing.txt", err: "HTTP 404 Not Found"},
		{name: "server error", url: srv.URL + "/data/broken.txt", err: "HTTP 500"},
		{name: "refused", url: refused, err: "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := scratch(t)
			f := File{URL: tc.url}
			runs := 0
			var got []byte
			var where string
			err := RunStaged(context.Background(), func(ctx context.Context) error {
				where = f.Path()
				return readApp(&f, &runs, &got)(ctx)
			}, &f)
			assertEmptyDir(t, base)
			if tc.err == "" {
				require.NoError(t, err)
				assert.Equal(t, 1, runs)
				assert.Equal(t, payload, got)
				assert.Equal(t, filepath.Base(tc.url), filepath.Base(where), "the copy keeps the URL's name")
				assert.True(t, strings.HasPrefix(where, base), "staged under the scratch base")
				return
			}
			require.Error(t, err)
			assert.Equal(t, 0, runs, "the app must not run after a failed stage-in")
			assert.Contains(t, err.Error(), "stage in "+tc.url+": ")
			assert.Contains(t, err.Error(), tc.err)
			var se *StagingError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tc.url, se.URL)
			assert.False(t, errors.Is(err, ErrArgs), "a transfer failure may be retried")
		})
	}
}

func TestStageInContextEnds(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		_, _ = w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	base := scratch(t)
	ctx, cancel := context.WithCancel(context.Background())
	f := File{URL: srv.URL + "/slow"}
	done := make(chan error, 1)
	go func() {
		done <- RunStaged(ctx, func(context.Context) error { return errors.New("ran") }, &f)
	}()
	cancel()
	err := <-done
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stage in "+srv.URL+"/slow")
	assert.ErrorIs(t, err, context.Canceled)
	assertEmptyDir(t, base)
}

func TestStageBadFiles(t *testing.T) {
	for _, tc := range []struct {
		f    File
		want string
	}{
		{File{URL: "ftp://h/x"}, "unsupported scheme"},
		{File{URL: "https://h/x", Out: true}, "cannot be an output"},
		{File{URL: ""}, "no name"},
	} {
		base := scratch(t)
		f := tc.f
		err := RunStaged(context.Background(), func(context.Context) error { t.Error("ran"); return nil }, &f)
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrArgs, "a file that can never be staged is not retried")
		assert.Contains(t, err.Error(), tc.want)
		assertEmptyDir(t, base)
	}
}

func TestStageLocalFiles(t *testing.T) {
	base := scratch(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	require.NoError(t, os.WriteFile(in, []byte("hello"), 0o644))
	args := struct {
		In  File
		Out File
	}{File{URL: "file://" + in}, File{URL: filepath.Join(dir, "made", "by", "app.txt"), Out: true}}
	err := RunStaged(context.Background(), func(context.Context) error {
		b, err := os.ReadFile(args.In.Path())
		if err != nil {
			return err
		}
		return os.WriteFile(args.Out.Path(), append(b, '!'), 0o644)
	}, &args)
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(dir, "made", "by", "app.txt"))
	require.NoError(t, err)
	assert.Equal(t, "hello!", string(b))
	assertEmptyDir(t, base)

	// An output the app did not write fails the task; so does an app error,
	// which is returned as it is.
	out := File{URL: filepath.Join(dir, "never.txt"), Out: true}
	err = RunStaged(context.Background(), func(context.Context) error { return nil }, &out)
	require.ErrorContains(t, err, "stage out "+out.URL+": the app did not write it")
	appErr := errors.New("app failed")
	err = RunStaged(context.Background(), func(context.Context) error { return appErr }, &out)
	assert.Equal(t, appErr, err)
}

func TestStageRsync(t *testing.T) {
	mod, dir := stagingtest.RsyncDaemon(t)
	base := scratch(t)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "in"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "out"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "in", "a.txt"), payload, 0o644))

	in := File{URL: mod + "/in/a.txt"}
	out := File{URL: mod + "/out/b.txt", Out: true}
	var inPath, outPath string
	err := RunStaged(context.Background(), func(context.Context) error {
		inPath, outPath = in.Path(), out.Path()
		b, err := os.ReadFile(in.Path())
		if err != nil {
			return err
		}
		return os.WriteFile(out.Path(), []byte(strings.ToUpper(string(b))), 0o644)
	}, &in, &out)
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(dir, "out", "b.txt"))
	require.NoError(t, err)
	assert.Equal(t, strings.ToUpper(string(payload)), string(b), "staged out through the daemon")
	assert.Equal(t, "a.txt", filepath.Base(inPath))
	assert.Equal(t, "b.txt", filepath.Base(outPath))
	assert.True(t, strings.HasPrefix(inPath, base) && strings.HasPrefix(outPath, base))
	assertEmptyDir(t, base)

	// A missing remote file: an error naming the URL, the app not run.
	missing := File{URL: mod + "/in/nope.txt"}
	err = RunStaged(context.Background(), func(context.Context) error { t.Error("ran"); return nil }, &missing)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stage in "+missing.URL+": rsync: exit status")
	assertEmptyDir(t, base)

	// A directory is not a file.
	d := File{URL: mod + "/in"}
	err = RunStaged(context.Background(), func(context.Context) error { t.Error("ran"); return nil }, &d)
	require.ErrorContains(t, err, "stage in "+d.URL+": rsync copied no file")

	// An output the app did not write is not pushed, and fails the task.
	out = File{URL: mod + "/out/c.txt", Out: true}
	err = RunStaged(context.Background(), func(context.Context) error { return nil }, &out)
	require.ErrorContains(t, err, "stage out "+out.URL+": the app did not write it")
	assert.NoFileExists(t, filepath.Join(dir, "out", "c.txt"))

	// A target whose directory does not exist: the push fails, naming it.
	out = File{URL: mod + "/no/such/dir/c.txt", Out: true}
	err = RunStaged(context.Background(), func(context.Context) error { return os.WriteFile(out.Path(), []byte("x"), 0o644) }, &out)
	require.ErrorContains(t, err, "stage out "+out.URL+": rsync: exit status")
	assertEmptyDir(t, base)

	// The same input twice is staged once.
	twice := []File{{URL: mod + "/in/a.txt"}, {URL: mod + "/in/a.txt"}}
	require.NoError(t, RunStaged(context.Background(), func(context.Context) error {
		assert.Equal(t, twice[0].Path(), twice[1].Path())
		return nil
	}, &twice))
}
