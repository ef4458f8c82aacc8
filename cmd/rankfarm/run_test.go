package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/taskfarm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runCLI runs the rankfarm command line in process and returns its exit
// status, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestRunDryRun(t *testing.T) {
	dir := t.TempDir()
	cmds := filepath.Join(dir, "cmds")
	require.NoError(t, os.WriteFile(cmds, []byte("# setup\necho a\n\necho b {}\n"), 0o644))
	argFile := filepath.Join(dir, "files")
	require.NoError(t, os.WriteFile(argFile, []byte("x.txt 1\nmy file.txt 2\n"), 0o644))

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"a command file", []string{"--dry-run", cmds}, "echo a\necho b {}\n"},
		{"a template over a list", []string{"--dry-run", "-c", "gzip {} # {#}", ":::", "a", "b c"}, "gzip a # 1\ngzip 'b c' # 2\n"},
		{"a template over a file", []string{"--dry-run", "-c", "cp {1} {.}.bak; echo {2}", argFile}, "cp x.txt x.bak; echo 1\ncp my 'my file'.bak; echo file.txt\n"},
		{"the file's lines as templates", []string{"--dry-run", cmds, "--args", argFile, "--raw"}, "echo a x.txt 1\necho a my file.txt 2\necho b x.txt 1\necho b my file.txt 2\n"},
		{"flags after :::  are arguments", []string{"--dry-run", "-c", "echo", ":::", "--np", "-k"}, "echo --np\necho -k\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, append([]string{"run"}, tt.args...)...)
			require.Equal(t, 0, code, errOut)
			assert.Equal(t, tt.want, out)
		})
	}
	assert.NoFileExists(t, cmds+".rfjournal", "a dry run makes no journal")
}

func TestRunUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cmds := filepath.Join(dir, "cmds")
	require.NoError(t, os.WriteFile(cmds, []byte("true\n"), 0o644))
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"two files", []string{cmds, cmds}, "one input file at most"},
		{"bad np", []string{"--np", "0", cmds}, "--np"},
		{"bad progress", []string{"--progress", "fancy", cmds}, "--progress"},
		{"both lists", []string{"--args", cmds, cmds, ":::", "a"}, "::: and --args"},
		{"command with two lists", []string{"-c", "echo", cmds, ":::", "a"}, "give the arguments once"},
		{"unknown flag", []string{"--frobnicate", cmds}, "unknown flag"},
		{"bad log level", []string{"--log-level", "loud", cmds}, "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, append([]string{"run"}, tt.args...)...)
			assert.Equal(t, 2, code)
			assert.Contains(t, errOut, tt.msg)
		})
	}
	code, _, errOut := runCLI(t, "run", filepath.Join(dir, "missing"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no such file")
}

// TestRunNothingLeftToDo checks that a run whose journal says every task
// succeeded starts no block at all (it needs no mpirun) and exits 0.
func TestRunNothingLeftToDo(t *testing.T) {
	dir := t.TempDir()
	cmds := filepath.Join(dir, "cmds")
	require.NoError(t, os.WriteFile(cmds, []byte("true\ntrue\necho x\n"), 0o644))
	journal := "# rankfarm journal v1\n" +
		"ok " + strconv.FormatUint(taskfarm.Hash("true"), 16) + " 0 1 0\n" +
		"ok " + strconv.FormatUint(taskfarm.Hash("true"), 16) + " 1 2 0\n" +
		"ok " + strconv.FormatUint(taskfarm.Hash("echo x"), 16) + " 0 3 0\n"
	require.NoError(t, os.WriteFile(cmds+".rfjournal", []byte(journal), 0o644))
	code, out, errOut := runCLI(t, "run", "--mpirun", "/nonexistent/mpirun", cmds)
	require.Equal(t, 0, code, errOut)
	assert.Empty(t, out)
	assert.Contains(t, errOut, "3 tasks: 3 succeeded (3 in an earlier run), 0 failed, 0 not run")
}

// buildRankfarm builds this command into a temporary directory.
func buildRankfarm(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rankfarm")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// needMPIRun skips a test that needs mpirun where there is none (make test
// installs it), and lets OpenMPI run as root.
func needMPIRun(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("mpirun"); err != nil {
		t.Skip("mpirun not found; make test installs OpenMPI")
	}
	if os.Geteuid() == 0 {
		t.Setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
		t.Setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
	}
}

// countRuns reads the runs file: how many times each line ran.
func countRuns(t *testing.T, path string) map[int]int {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	counts := map[int]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		i, err := strconv.Atoi(sc.Text())
		require.NoError(t, err, "line %q", sc.Text())
		counts[i]++
	}
	require.NoError(t, sc.Err())
	return counts
}

// processesWith lists the live processes whose command line holds s.
func processesWith(s string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(s)) {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue
		}
		out = append(out, fmt.Sprintf("%d %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	return out
}

// TestRunKilledAndResumed runs 10,000 lines with the real binary under
// mpirun, kills the front end with SIGKILL half-way, checks that the block
// and its commands die with it, and runs the same command again: only the
// lines that had not finished run, and every line has run.
func TestRunKilledAndResumed(t *testing.T) {
	needMPIRun(t)
	if testing.Short() {
		t.Skip("10,000 processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := buildRankfarm(t)
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	const n = 10000
	var b strings.Builder
	b.WriteString("# each line appends its number to runs\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "echo %d >> %s\n", i, runs)
	}
	cmds := filepath.Join(dir, "cmds.txt")
	require.NoError(t, os.WriteFile(cmds, []byte(b.String()), 0o644))

	stderr1, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	require.NoError(t, err)
	defer stderr1.Close()
	first := exec.CommandContext(ctx, bin, "run", "--np", "2", "--progress", "none", cmds)
	first.Stderr = stderr1
	start := time.Now()
	require.NoError(t, first.Start())
	lines := func() int {
		data, _ := os.ReadFile(runs)
		return bytes.Count(data, []byte("\n"))
	}
	for lines() < n/2 {
		if ctx.Err() != nil {
			errOut, _ := os.ReadFile(stderr1.Name())
			t.Fatalf("stuck at %d lines; stderr: %s", lines(), errOut)
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, first.Process.Kill())
	_ = first.Wait()
	killedAfter := time.Since(start)
	// mpirun gets SIGTERM when its parent dies: the ranks and the commands
	// go with it.
	require.Eventually(t, func() bool { return len(processesWith(dir)) == 0 }, time.Minute, 50*time.Millisecond,
		"processes left after the front end was killed: %v", processesWith(dir))
	ranBefore := countRuns(t, runs)
	journal, err := os.ReadFile(cmds + ".rfjournal")
	require.NoError(t, err)
	recorded := bytes.Count(journal, []byte("\nok "))

	var stdout2, stderr2 bytes.Buffer
	second := exec.CommandContext(ctx, bin, "run", "--np", "2", "--progress", "none", cmds)
	second.Stdout, second.Stderr = &stdout2, &stderr2
	start = time.Now()
	require.NoError(t, second.Run(), "stderr: %s", stderr2.String())
	rerun := time.Since(start)
	assert.Contains(t, stderr2.String(), fmt.Sprintf("%d tasks: %d succeeded (%d in an earlier run), 0 failed, 0 not run", n, n, recorded))

	counts := countRuns(t, runs)
	twice, total := 0, 0
	for i := 1; i <= n; i++ {
		require.GreaterOrEqual(t, counts[i], 1, "line %d never ran", i)
		require.LessOrEqual(t, counts[i], 2, "line %d ran %d times", i, counts[i])
		if counts[i] == 2 {
			twice++
			assert.Equal(t, 1, ranBefore[i], "line %d ran twice but not before the kill", i)
		}
		total += counts[i]
	}
	assert.Equal(t, n+twice, total)
	assert.Equal(t, n-recorded, total-len(ranBefore), "the second run ran exactly the lines the journal did not hold")
	assert.Equal(t, len(ranBefore)-recorded, twice, "the lines run twice are those that ran but were not journaled")
	t.Logf("killed after %v with %d of %d lines run, %d in the journal; the rerun ran %d lines in %v; %d lines ran twice (finished, not yet journaled at the kill)",
		killedAfter.Round(time.Millisecond), len(ranBefore), n, recorded, n-recorded, rerun.Round(time.Millisecond), twice)
	assert.LessOrEqual(t, twice, 64, "the journal must keep the lines run twice few")
}
