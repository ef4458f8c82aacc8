package frontend

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Shell apps of the tests: the command is built from the arguments on the
// worker.
var (
	// shCount writes the numbers 1..n, one a line, to a file in dir.
	shCount = NewShellApp2("ft.sh.count", func(_ context.Context, dir string, n int) (ShellSpec, error) {
		if n < 0 {
			return ShellSpec{}, errors.New("a negative count")
		}
		return ShellSpec{Cmd: "seq 1 " + ShellQuote(strconv.Itoa(n)), Stdout: "count.txt", Dir: dir}, nil
	})
	// shLines counts the lines of a file, printing the number.
	shLines = NewShellApp1("ft.sh.lines", func(_ context.Context, path string) (ShellSpec, error) {
		return ShellSpec{Cmd: "wc -l < " + ShellQuote(path)}, nil
	})
	// shEnv prints a variable set per task.
	shEnv = NewShellApp3("ft.sh.env", func(_ context.Context, name, value string, code int) (ShellSpec, error) {
		return ShellSpec{Cmd: `echo "$` + name + `"; echo failing >&2; exit ` + strconv.Itoa(code), Env: map[string]string{name: value}}, nil
	})
)

func TestShellApps(t *testing.T) {
	_, conn := startTestBlock(t, 2, 4, nil)
	ex, err := Start(context.Background(), Options{Conn: conn, Logger: quietLogger()})
	require.NoError(t, err)
	defer ex.Close()
	ctx := ctxFor(t, 30*time.Second)
	dir := t.TempDir()

	// A chain: the second command's argument is the first's output file,
	// known once the first has run.
	counted := shCount.Call(ex, V(dir), V(1000))
	path := EchoApp[string]().Call(ex, V(filepath.Join(dir, "count.txt")), After(counted))
	res, err := shLines.Call(ex, path).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, ShellResult{Stdout: "1000\n"}, res)
	b, err := os.ReadFile(filepath.Join(dir, "count.txt"))
	require.NoError(t, err)
	assert.Len(t, b, 3893)

	res, err = shEnv.Call(ex, V("FT_VAR"), V("it's set"), V(0)).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, "it's set\n", res.Stdout)
	assert.Equal(t, "failing\n", res.Stderr)

	// A non-zero exit is an app error with the status and stderr's tail.
	_, err = shEnv.Call(ex, V("X"), V("y"), V(3)).Get(ctx)
	require.ErrorIs(t, err, ErrApp)
	assert.Contains(t, err.Error(), "exit status 3: failing")

	// An error building the command fails the task; it is not run.
	_, err = shCount.Call(ex, V(dir), V(-1)).Get(ctx)
	require.ErrorIs(t, err, ErrApp)
	assert.Contains(t, err.Error(), "a negative count")

	// The built-in client with a spec.
	res, err = ShellCmd.Call(ex, V(ShellSpec{Cmd: "pwd; echo $A", Dir: dir, Env: map[string]string{"A": "b"}})).Get(ctx)
	require.NoError(t, err)
	assert.Equal(t, dir+"\nb\n", res.Stdout)

	// Walltime kills it.
	_, err = ShellCmd.Call(ex, V(ShellSpec{Cmd: "sleep 30"}), Walltime(200*time.Millisecond)).Get(ctx)
	require.ErrorIs(t, err, ErrWalltime)
}
