package monitor

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeDB records a fake run of n tasks and returns the database's path.
func fakeDB(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), DBName)
	rec, err := Create(path, "rankfarm run --np 4 tasks.txt", nil)
	require.NoError(t, err)
	rec.closeBudget = 0 // leave chunks: the reader must read both
	fakeRun(t, rec, n, 4, time.Now())
	require.NoError(t, rec.Close(nil, 0))
	return path
}

func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestSnapshotAPI(t *testing.T) {
	path := fakeDB(t, 2000)
	r, err := OpenReader(path)
	require.NoError(t, err)
	defer r.Close()
	srv := httptest.NewServer(NewServer(r, nil).Handler())
	defer srv.Close()

	code, page := getBody(t, srv.URL+"/")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, page, `id="chart-states"`)

	code, body := getBody(t, srv.URL+"/api/snapshot")
	require.Equal(t, http.StatusOK, code, body)
	var snap Snapshot
	require.NoError(t, json.Unmarshal([]byte(body), &snap))
	assert.Equal(t, int64(1960), snap.Summary.Done)
	assert.Equal(t, int64(40), snap.Summary.Failed)
	assert.Len(t, snap.Timeline.Rows, 4)
	assert.Len(t, snap.Failures, maxFailures)
	assert.NotEmpty(t, snap.Series)
	assert.Len(t, snap.Blocks, 2)
	assert.Equal(t, []AppStat{{App: "app.square", Done: 1960, Failed: 40, MeanRunMs: snap.Apps[0].MeanRunMs}}, snap.Apps)

	code, _ = getBody(t, srv.URL+"/api/snapshot?run=x")
	assert.Equal(t, http.StatusBadRequest, code)
	code, _ = getBody(t, srv.URL+"/api/snapshot?run=9")
	assert.Equal(t, http.StatusInternalServerError, code)

	// Expanding the chunks changes nothing the reader sees.
	n, err := r.Materialize(context.Background(), 0)
	require.NoError(t, err)
	assert.Equal(t, 2000, n)
	again, err := r.Snapshot(context.Background(), 0)
	require.NoError(t, err)
	assert.Equal(t, snap.Summary.Done, again.Summary.Done)
	assert.Equal(t, snap.Timeline.Rows, again.Timeline.Rows)
}

func TestOpenReaderErrors(t *testing.T) {
	_, err := OpenReader(filepath.Join(t.TempDir(), "none"))
	require.Error(t, err)
	bad := filepath.Join(t.TempDir(), "x.db")
	require.NoError(t, os.WriteFile(bad, []byte("not a database, not at all, no"), 0o600))
	_, err = OpenReader(bad)
	require.Error(t, err)
}

// chromium returns Debian's chromium, or skips the test when it is absent
// (and fails it under CI, where it must be installed).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (apt-get install -y chromium); CI must run the dashboard test")
	}
	t.Skip("chromium is not installed (apt-get install -y chromium): the dashboard is not checked in a browser")
	return ""
}

// TestDashboardInChromium loads the dashboard in a real headless Chromium,
// checks that every chart rendered with data, and saves a screenshot into
// results/dashboard/ (git-ignored).
func TestDashboardInChromium(t *testing.T) {
	bin := chromium(t)
	path := fakeDB(t, 3000)
	r, err := OpenReader(path)
	require.NoError(t, err)
	defer r.Close()
	srv := httptest.NewServer(NewServer(r, nil).Handler())
	defer srv.Close()

	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
			"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000"}
		cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "chromium: %s", stderr.String())
		return string(out)
	}
	dom := run("--dump-dom", srv.URL+"/")
	for _, want := range []string{
		`data-series="in_flight"`, `data-series="done"`, `data-series="failed"`, `data-series="rate"`,
		`class="busy"`, `data-rank="4"`, "exploded", "transient trouble", "app.square", `data-rendered=`,
	} {
		assert.True(t, strings.Contains(dom, want), "the page lacks %s", want)
	}
	m := regexp.MustCompile(`data-series="done" data-points="(\d+)" data-last="(\d+)"`).FindStringSubmatch(dom)
	require.NotNil(t, m, "the done line is drawn")
	assert.Greater(t, atoi(t, m[1]), 10, "the done line has points")
	assert.Greater(t, atoi(t, m[2]), 2500, "the done line ends near the run's total")
	assert.GreaterOrEqual(t, strings.Count(dom, `class="busy"`), 4*50, "the timeline has busy cells on every rank")

	dir := filepath.Join("..", "results", "dashboard")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	shot, err := filepath.Abs(filepath.Join(dir, "dashboard.png"))
	require.NoError(t, err)
	_ = os.Remove(shot)
	run("--screenshot="+shot, "--window-size=1400,1500", "--hide-scrollbars", srv.URL+"/")
	fi, err := os.Stat(shot)
	require.NoError(t, err)
	assert.Greater(t, fi.Size(), int64(20000), "a screenshot with content")
	t.Logf("screenshot: %s", shot)
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// TestSnapshotWhileRunning reads a run that is still being written: the
// page's data grows as the run goes on and says it is live.
func TestSnapshotWhileRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), DBName)
	rec, err := Create(path, "live", nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, rec.Close(nil, 0)) }()
	r, err := OpenReader(path)
	require.NoError(t, err)
	defer r.Close()
	now := time.Now().UnixNano()
	settled := func(from, to uint64) []Event {
		var evs []Event
		for id := from; id < to; id++ {
			evs = append(evs, Event{Time: now, Task: id, Kind: Submitted, Text: "a"},
				Event{Time: now + 1, Task: id, Kind: Result, Block: "b0", Rank: 1, Start: now, End: now + 1})
		}
		return evs
	}
	done := func() int64 {
		s, err := r.Snapshot(context.Background(), 0)
		require.NoError(t, err)
		assert.True(t, s.Summary.Live)
		return s.Summary.Done
	}
	require.True(t, rec.Put(settled(1, 101)))
	require.Eventually(t, func() bool { return done() == 100 }, 10*time.Second, 10*time.Millisecond)
	require.True(t, rec.Put(settled(101, 151)))
	require.Eventually(t, func() bool { return done() == 150 }, 10*time.Second, 10*time.Millisecond)
}
