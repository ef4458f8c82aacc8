package registry

// Files and data staging: a File names a local (or shared-filesystem) path,
// an http(s) URL or an rsync daemon URL. Before an app runs, the worker
// stages in each input File it takes (a download into a scratch directory
// of the task) and makes room for each output File; once the app has
// succeeded it stages the outputs out. The scratch directory is removed
// when the task ends, whatever the outcome.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/rankfarm/rankfarm/internal/cloexec"
)

// EnvScratch names the directory under which a worker makes each task's
// scratch directory; unset, it is os.TempDir().
const EnvScratch = "RANKFARM_SCRATCH"

// Bounds of an rsync transfer: the time to connect to the daemon, and how
// long the transfer may stall. A task's walltime bounds the whole.
const (
	rsyncConnectTimeout = 30
	rsyncIOTimeout      = 300
)

// stagingErrTail is how much of rsync's stderr a staging error carries.
const stagingErrTail = 1 << 10

// File names a file that an app reads (an input) or writes (an output). It
// travels as a msgpack array of its URL and its direction; where the worker
// put it (Path) does not travel.
//
// URL is one of:
//   - a path, absolute or relative to the worker's working directory: a
//     local or shared-filesystem file, used in place (file:///abs/path too);
//   - http://… or https://… (inputs only): downloaded into the task's
//     scratch directory before the app runs;
//   - rsync://host[:port]/module/path: a file of an rsync daemon, pulled
//     into the scratch directory before the app runs (an input) or pushed
//     there from it after the app succeeds (an output). The worker runs the
//     rsync binary, which takes a password from RSYNC_PASSWORD. The
//     ssh form host:path is not supported: it would read as a local path.
type File struct {
	//lint:ignore U1000 read by msgpack: it makes the value an array
	_msgpack struct{} `msgpack:",as_array"`
	// URL says where the file lives; see File.
	URL string
	// Out marks an output: the app writes it. A local output's directory
	// is made before the app runs, and an output the app did not write
	// fails the task.
	Out bool

	path string // where the worker staged it
}

// Path is where the app reads or writes the file on the worker: the local
// path of a local file, the staged copy of a remote one. Before staging (in
// the front end) it is "" for a remote file.
func (f File) Path() string {
	if f.path != "" {
		return f.path
	}
	loc, err := parseFileURL(f.URL)
	if err != nil || loc.kind != fileLocal {
		return ""
	}
	return loc.path
}

// Remote reports whether the file is staged (an http(s) or rsync URL)
// rather than used in place.
func (f File) Remote() bool {
	loc, err := parseFileURL(f.URL)
	return err == nil && loc.kind != fileLocal
}

// String returns the URL, without any password it holds.
func (f File) String() string { return redactURL(f.URL) }

// fileKind is how a File is staged.
type fileKind uint8

const (
	fileLocal fileKind = iota
	fileHTTP
	fileRsync
)

// fileLoc is a parsed File URL.
type fileLoc struct {
	kind fileKind
	path string // the local path (fileLocal)
	base string // the name of the staged copy (remote kinds)
	url  string // the URL to fetch (remote kinds)
}

// maxFileURL bounds a File's URL.
const maxFileURL = 16 << 10

// parseFileURL checks a File's URL and says how it is staged.
func parseFileURL(s string) (fileLoc, error) {
	switch {
	case s == "":
		return fileLoc{}, errors.New("the file has no name")
	case len(s) > maxFileURL:
		return fileLoc{}, fmt.Errorf("the file's name is %d bytes, more than %d", len(s), maxFileURL)
	case strings.ContainsRune(s, 0):
		return fileLoc{}, errors.New("the file's name holds a NUL byte")
	}
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || strings.ContainsAny(scheme, "/.") {
		return fileLoc{kind: fileLocal, path: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return fileLoc{}, fmt.Errorf("not a URL: %w", err)
	}
	switch strings.ToLower(u.Scheme) {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return fileLoc{}, fmt.Errorf("a file URL of another host (%s)", u.Host)
		}
		if !path.IsAbs(u.Path) {
			return fileLoc{}, errors.New("a file URL without an absolute path")
		}
		return fileLoc{kind: fileLocal, path: u.Path}, nil
	case "http", "https":
		if u.Host == "" {
			return fileLoc{}, errors.New("an http URL without a host")
		}
		return fileLoc{kind: fileHTTP, base: baseName(u.Path), url: s}, nil
	case "rsync":
		if u.Host == "" {
			return fileLoc{}, errors.New("an rsync URL without a host")
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return fileLoc{}, errors.New("an rsync URL with a query or a fragment")
		}
		mod, rest, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if mod == "" || rest == "" || strings.HasSuffix(rest, "/") {
			return fileLoc{}, errors.New("an rsync URL must name a file in a module: rsync://host/module/path")
		}
		if strings.HasPrefix(u.Path, "/-") || strings.HasPrefix(u.Host, "-") {
			return fileLoc{}, errors.New("an rsync URL may not start like an option")
		}
		return fileLoc{kind: fileRsync, base: baseName(rest), url: s}, nil
	}
	return fileLoc{}, fmt.Errorf("unsupported scheme %q (want a path, file, http, https or rsync)", u.Scheme)
}

// baseName is the name of a staged copy: the URL path's last element, or
// "download" when it has none.
func baseName(p string) string {
	b := path.Base(p)
	if b == "." || b == ".." || b == "/" || b == "" {
		return "download"
	}
	return b
}

// redactURL hides the password of a URL that holds one.
func redactURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

// StagingError is a File that could not be staged: its URL (without a
// password), whether it was on the way in or out, and why.
type StagingError struct {
	URL string
	Out bool
	Err error
}

// Error implements error; it names the URL.
func (e *StagingError) Error() string {
	dir := "in"
	if e.Out {
		dir = "out"
	}
	return fmt.Sprintf("stage %s %s: %v", dir, e.URL, e.Err)
}

// Unwrap returns the cause.
func (e *StagingError) Unwrap() error { return e.Err }

func stagingErr(f *File, err error) error {
	return &StagingError{URL: redactURL(f.URL), Out: f.Out, Err: err}
}

// ScratchBase is the directory under which tasks' scratch directories are
// made: $RANKFARM_SCRATCH, or os.TempDir().
func ScratchBase() string {
	if d := os.Getenv(EnvScratch); d != "" {
		return d
	}
	return os.TempDir()
}

// staging is one task's staged files: its scratch directory (made on first
// use) and the outputs to stage out.
type staging struct {
	base    string
	dir     string
	n       int
	outs    []*File
	locs    []fileLoc
	staged  map[string]string // input URL → its staged copy
	taskTag string
}

// RunStaged stages in the Files that the values behind ptrs hold (pointers
// to the app's decoded arguments), runs run, and when run succeeds stages
// the outputs out. The task's scratch directory is removed before it
// returns. A File that cannot be staged in is an error naming its URL (an
// *ArgsError when its URL is malformed or cannot be staged that way), and
// run does not run.
func RunStaged(ctx context.Context, run func(context.Context) error, ptrs ...any) (err error) {
	s := &staging{base: ScratchBase()}
	if info, ok := Info(ctx); ok {
		s.taskTag = fmt.Sprintf("%d-%d-", info.ID, info.Attempt)
	}
	defer func() {
		if cerr := s.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	for _, p := range ptrs {
		if err := walkFiles(reflect.ValueOf(p), func(f *File) error { return s.stageIn(ctx, f) }); err != nil {
			return err
		}
	}
	if err := run(ctx); err != nil {
		return err
	}
	return s.stageOut(ctx)
}

// close removes the scratch directory.
func (s *staging) close() error {
	if s.dir == "" {
		return nil
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("remove the task's scratch directory: %w", err)
	}
	s.dir = ""
	return nil
}

// slot makes a fresh directory in the scratch directory for one staged
// file, and returns the staged copy's path in it.
func (s *staging) slot(base string) (string, error) {
	if s.dir == "" {
		if err := os.MkdirAll(s.base, 0o777); err != nil {
			return "", fmt.Errorf("scratch: %w", err)
		}
		d, err := os.MkdirTemp(s.base, "rankfarm-task-"+s.taskTag)
		if err != nil {
			return "", fmt.Errorf("scratch: %w", err)
		}
		s.dir = d
	}
	s.n++
	d := filepath.Join(s.dir, strconv.Itoa(s.n))
	if err := os.Mkdir(d, 0o700); err != nil {
		return "", fmt.Errorf("scratch: %w", err)
	}
	return filepath.Join(d, base), nil
}

func (s *staging) stageIn(ctx context.Context, f *File) error {
	f.path = ""
	loc, err := parseFileURL(f.URL)
	if err != nil {
		return &ArgsError{Err: stagingErr(f, err)}
	}
	if f.Out {
		switch loc.kind {
		case fileLocal:
			if dir := filepath.Dir(loc.path); dir != "." {
				if err := os.MkdirAll(dir, 0o777); err != nil {
					return stagingErr(f, err)
				}
			}
			f.path = loc.path
		case fileHTTP:
			return &ArgsError{Err: stagingErr(f, errors.New("an http(s) URL cannot be an output: name a path or an rsync URL"))}
		case fileRsync:
			if f.path, err = s.slot(loc.base); err != nil {
				return stagingErr(f, err)
			}
		}
		s.outs = append(s.outs, f)
		s.locs = append(s.locs, loc)
		return nil
	}
	if loc.kind == fileLocal {
		f.path = loc.path
		return nil
	}
	if p, ok := s.staged[f.URL]; ok {
		f.path = p
		return nil
	}
	dst, err := s.slot(loc.base)
	if err != nil {
		return stagingErr(f, err)
	}
	switch loc.kind {
	case fileHTTP:
		err = download(ctx, loc.url, dst)
	case fileRsync:
		err = rsyncPull(ctx, loc.url, dst)
	}
	if err != nil {
		return stagingErr(f, err)
	}
	if s.staged == nil {
		s.staged = make(map[string]string)
	}
	s.staged[f.URL] = dst
	f.path = dst
	return nil
}

func (s *staging) stageOut(ctx context.Context) error {
	for i, f := range s.outs {
		fi, err := os.Stat(f.path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return stagingErr(f, errors.New("the app did not write it"))
		case err != nil:
			return stagingErr(f, err)
		case !fi.Mode().IsRegular():
			return stagingErr(f, errors.New("the app left something else than a regular file there"))
		}
		if s.locs[i].kind == fileRsync {
			if err := runRsync(ctx, f.path, s.locs[i].url); err != nil {
				return stagingErr(f, err)
			}
		}
	}
	return nil
}

// httpClient downloads inputs; it honours the proxy variables.
var httpClient = &http.Client{Transport: http.DefaultTransport}

// download fetches url into dst: into a temporary name beside it, renamed
// to dst only once the whole body has arrived and its length is the one
// the server announced. A partial download leaves nothing at dst.
func download(ctx context.Context, rawURL, dst string) (err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "rankfarm")
	resp, err := httpClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err // the URL is named once, by StagingError
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".partial-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	n, err := io.Copy(tmp, resp.Body)
	if err != nil {
		return fmt.Errorf("download cut short after %d bytes: %w", n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("download cut short: %d bytes of %d", n, resp.ContentLength)
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// rsyncPull copies the rsync URL src to dst. rsync writes to a temporary
// name and renames it when the transfer is complete and checked.
func rsyncPull(ctx context.Context, src, dst string) error {
	if err := runRsync(ctx, src, dst); err != nil {
		return err
	}
	if fi, err := os.Stat(dst); err != nil || !fi.Mode().IsRegular() {
		return errors.New("rsync copied no file (is it a directory?)")
	}
	return nil
}

// rsyncPath finds the rsync binary once.
var rsyncPath = sync.OnceValues(func() (string, error) { return exec.LookPath("rsync") })

// runRsync runs rsync src dst in a process group of its own, killed when
// ctx ends. Like a shell task, rsync gets neither the rank's MPI launcher
// variables nor its descriptors (CleanEnv keeps RSYNC_PASSWORD).
func runRsync(ctx context.Context, src, dst string) error {
	bin, err := rsyncPath()
	if err != nil {
		return fmt.Errorf("rsync is not installed on this worker: %w", err)
	}
	cmd := exec.CommandContext(ctx, bin, "--quiet",
		"--contimeout="+strconv.Itoa(rsyncConnectTimeout), "--timeout="+strconv.Itoa(rsyncIOTimeout),
		"--", src, dst)
	stderr := &tailBuffer{max: stagingErrTail}
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(cmd.SysProcAttr)
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = shellWaitDelay
	cmd.Env = CleanEnv(os.Environ())
	_ = cloexec.MarkAll() // as in RunShellSpec
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("rsync: %w", err)
	}
	err = waitAndKillGroup(cmd)
	if ctx.Err() != nil {
		return fmt.Errorf("rsync killed: %w", context.Cause(ctx))
	}
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		if tail := strings.TrimSpace(stderr.String()); tail != "" {
			return fmt.Errorf("rsync: %w: %s", err, tail)
		}
		return fmt.Errorf("rsync: %w", err)
	}
	return nil
}

var fileType = reflect.TypeFor[File]()

// hasFiles caches HasFiles by type.
var hasFiles sync.Map // reflect.Type → bool

// HasFiles reports whether a value of type t can hold a File: t is File,
// or a pointer, slice, array or map of such a type, or a struct with an
// exported field of one. Apps whose types hold none skip staging.
func HasFiles(t reflect.Type) bool {
	if v, ok := hasFiles.Load(t); ok {
		return v.(bool)
	}
	has := typeHasFiles(t, map[reflect.Type]bool{})
	hasFiles.Store(t, has)
	return has
}

func typeHasFiles(t reflect.Type, seen map[reflect.Type]bool) bool {
	if t == nil {
		return false
	}
	if v, ok := hasFiles.Load(t); ok {
		return v.(bool)
	}
	if seen[t] {
		// Met before in this search (a recursive type, or a type used
		// twice): its first visit answers for it. Only the answer for the
		// search's root is cached, since those below it may be cut short.
		return false
	}
	seen[t] = true
	var has bool
	switch t.Kind() {
	case reflect.Struct:
		if t == fileType {
			has = true
			break
		}
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && typeHasFiles(f.Type, seen) {
				has = true
				break
			}
		}
	case reflect.Pointer, reflect.Slice, reflect.Array:
		has = typeHasFiles(t.Elem(), seen)
	case reflect.Map:
		has = typeHasFiles(t.Elem(), seen)
	}
	return has
}

// walkFiles calls fn on every File that v (a pointer, or a settable value)
// reaches through pointers, slices, arrays, map values and exported struct
// fields.
func walkFiles(v reflect.Value, fn func(*File) error) error {
	if !v.IsValid() || !HasFiles(v.Type()) {
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return walkFiles(v.Elem(), fn)
	case reflect.Struct:
		if v.Type() == fileType {
			return fn(v.Addr().Interface().(*File))
		}
		for i := range v.NumField() {
			if f := v.Field(i); f.CanSet() {
				if err := walkFiles(f, fn); err != nil {
					return err
				}
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := walkFiles(v.Index(i), fn); err != nil {
				return err
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(it.Value())
			if err := walkFiles(e, fn); err != nil {
				return err
			}
			v.SetMapIndex(it.Key(), e)
		}
	}
	return nil
}

// AsInputs turns every File that ptr reaches into an input and forgets
// where it was staged: what an app returns names its files for the tasks
// that read them.
func AsInputs(ptr any) {
	_ = walkFiles(reflect.ValueOf(ptr), func(f *File) error {
		f.Out, f.path = false, ""
		return nil
	})
}
