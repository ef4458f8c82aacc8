package provider

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitFinal polls p until job has ended, or fails the test after a minute
// (a bound for a hung machine, not a timing assertion).
func waitFinal(t *testing.T, p Provider, job Job) JobStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		res, err := p.Status(ctx, []Job{job})
		require.NoError(t, err)
		st := res[job.ID]
		if st.State.Final() {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s did not end: %s (%s)", job.ID, st.State, st.Message)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestLocalOutcomes(t *testing.T) {
	cases := []struct {
		name    string
		script  string
		init    string
		state   State
		message string
		stdout  string
		tail    string
	}{
		{name: "done", script: `echo "out $RF_X"`, state: Done, message: "exit status 0", stdout: "out from-env\n"},
		{name: "worker init", script: `echo "$RF_INIT $RF_X"`, init: "RF_INIT=initialised; export RF_INIT", state: Done, stdout: "initialised from-env\n"},
		{name: "failed", script: `echo bad >&2; exit 3`, state: Failed, message: "exit status 3", tail: "bad"},
		{name: "signalled", script: `kill -KILL $$`, state: Failed, message: "killed by signal killed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := &Local{}
			job, err := p.Submit(context.Background(), BlockSpec{
				Name:       "b1",
				Command:    []string{"/bin/sh", "-c", tc.script},
				Env:        map[string]string{"RF_X": "from-env"},
				WorkerInit: tc.init,
				RunDir:     dir,
			})
			require.NoError(t, err)
			assert.True(t, strings.HasPrefix(job.ID, "local-"))
			assert.Equal(t, filepath.Join(dir, "b1.out"), job.Stdout)
			st := waitFinal(t, p, job)
			assert.Equal(t, tc.state, st.State, st.Message)
			assert.Contains(t, st.Message, tc.message)
			assert.Equal(t, tc.tail, st.Tail)
			if tc.stdout != "" {
				out, err := os.ReadFile(job.Stdout)
				require.NoError(t, err)
				assert.Equal(t, tc.stdout, string(out))
			}
		})
	}
}

func TestLocalCancel(t *testing.T) {
	p := &Local{Grace: time.Second}
	out := &testutil.SyncBuffer{}
	p.Stdout, p.Stderr = out, out
	job, err := p.Submit(context.Background(), BlockSpec{Name: "b2", Command: []string{"/bin/sh", "-c", "echo started; exec sleep 600"}})
	require.NoError(t, err)
	assert.Empty(t, job.Stdout, "no run directory, no files")
	res, err := p.Status(context.Background(), []Job{job, {ID: "local-1"}})
	require.NoError(t, err)
	assert.Contains(t, []State{Running, Done}, res[job.ID].State)
	assert.Equal(t, Unknown, res["local-1"].State)

	require.NoError(t, p.Cancel(context.Background(), []Job{job}))
	st := waitFinal(t, p, job)
	assert.Equal(t, Cancelled, st.State, st.Message)
	// Cancelling again, or a job that has ended, is no error.
	require.NoError(t, p.Cancel(context.Background(), []Job{job, {ID: "local-1"}}))
}

func TestLocalRefuses(t *testing.T) {
	p := &Local{}
	_, err := p.Submit(context.Background(), BlockSpec{Name: "b1"})
	assert.ErrorContains(t, err, "no launch command")
	_, err = p.Submit(context.Background(), BlockSpec{Name: "b1", Command: []string{"/nonexistent/program"}})
	assert.ErrorContains(t, err, "/nonexistent/program")
	// Local writes no script: a token-like variable is the caller's affair.
	job, err := p.Submit(context.Background(), BlockSpec{Name: "b1", Command: []string{"/bin/true"}, Env: map[string]string{"SOME_TOKEN": "x"}})
	require.NoError(t, err)
	assert.Equal(t, Done, waitFinal(t, p, job).State)
}
