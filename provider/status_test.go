package provider

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSbatch(t *testing.T) {
	cases := []struct {
		out, want string
		fail      bool
	}{
		{out: "4242\n", want: "4242"},
		{out: "4242;cluster2\n", want: "4242"},
		{out: "sbatch: warning: something\n4242\n", want: "4242"},
		{out: "", fail: true},
		{out: "Submitted batch job 12\n", fail: true},
	}
	for _, tc := range cases {
		got, err := parseSbatch(tc.out)
		if tc.fail {
			assert.Error(t, err, "%q", tc.out)
			continue
		}
		require.NoError(t, err, "%q", tc.out)
		assert.Equal(t, tc.want, got)
	}
}

// TestParseSqueue reads squeue output captured on slurm-wlm 22.05.8 (see
// testdata/squeue/README.md).
func TestParseSqueue(t *testing.T) {
	out, err := os.ReadFile(filepath.Join("testdata", "squeue", "slurm-22.05.8.txt"))
	require.NoError(t, err)
	got := parseSqueue(string(out))
	cases := []struct {
		id      string
		state   State
		message string
		stuck   bool
	}{
		{"11", Done, "COMPLETED, ExitCode=0:0", false},
		{"12", Failed, "FAILED, Reason=NonZeroExitCode, ExitCode=3:0", false},
		{"13", Failed, "FAILED, Reason=JobLaunchFailure, ExitCode=0:9", false},
		{"14", Failed, "TIMEOUT, Reason=TimeLimit, ExitCode=0:15", false},
		{"15", Running, "RUNNING", false},
		{"16", Cancelled, "CANCELLED, ExitCode=143:0", false},
		{"17", Pending, "PENDING, Reason=PartitionNodeLimit", true},
		{"18", Pending, "PENDING, Reason=JobHeldUser", false},
	}
	assert.Len(t, got, len(cases))
	for _, tc := range cases {
		st, ok := got[tc.id]
		if !assert.True(t, ok, "job %s", tc.id) {
			continue
		}
		assert.Equal(t, tc.state, st.State, "job %s", tc.id)
		assert.Equal(t, tc.message, st.Message, "job %s", tc.id)
		assert.Equal(t, tc.stuck, st.Stuck, "job %s", tc.id)
	}
}

func TestSlurmState(t *testing.T) {
	cases := []struct {
		in   string
		want State
	}{
		{"PENDING", Pending}, {"CONFIGURING", Pending}, {"REQUEUED", Pending},
		{"RUNNING", Running}, {"COMPLETING", Running}, {"SUSPENDED", Running},
		{"COMPLETED", Done},
		{"CANCELLED", Cancelled}, {"CANCELLED+", Cancelled},
		{"FAILED", Failed}, {"TIMEOUT", Failed}, {"NODE_FAIL", Failed}, {"OUT_OF_MEMORY", Failed}, {"PREEMPTED", Failed}, {"BOOT_FAIL", Failed},
		{"SOMETHING_NEW", Unknown},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, slurmState(tc.in), tc.in)
	}
	for _, r := range []string{"QOSMaxWallDurationPerJobLimit", "AssocMaxNodesPerJob", "InvalidAccount", "PartitionTimeLimit"} {
		assert.True(t, slurmHopeless(r), r)
	}
	for _, r := range []string{"Resources", "Priority", "JobHeldUser", "ReqNodeNotAvail", "QOSMaxJobsPerUserLimit", "None"} {
		assert.False(t, slurmHopeless(r), r)
	}
}

// TestParseQstatJSON reads the reconstructed qstat samples (see
// testdata/qstat/README.md).
func TestParseQstatJSON(t *testing.T) {
	type want struct {
		state   State
		stuck   bool
		message []string // substrings
	}
	cases := []struct {
		file string
		jobs map[string]want
	}{
		{
			file: "openpbs-22.05.11_history.json",
			jobs: map[string]want{
				"101.pbs01": {Pending, false, []string{"job_state=Q", "Not Running: Insufficient amount of resource: ncpus"}},
				"102.pbs01": {Pending, true, []string{"Can Never Run"}},
				"103.pbs01": {Running, false, []string{"job_state=R", "substate=42"}},
				"104.pbs01": {Done, false, []string{"Exit_status=0", "and finished"}},
				"105.pbs01": {Failed, false, []string{"Exit_status=3"}},
				"106.pbs01": {Cancelled, false, []string{"substate=91", "Exit_status=271 (killed by signal 15)", "and terminated"}},
				"107.pbs01": {Pending, false, []string{"job_state=H", "too many failed attempts"}},
				"108.pbs01": {Failed, false, []string{"Exit_status=271 (killed by signal 15)"}},
			},
		},
		{
			file: "openpbs-23.06.06_running.json",
			jobs: map[string]want{
				"5521.hpc-pbs": {Running, false, []string{"job_state=R"}},
				"5522.hpc-pbs": {Running, false, []string{"job_state=E", "Exit_status=0"}},
			},
		},
		{
			file: "pbspro-2022.1.1_invalid-escapes.json",
			jobs: map[string]want{
				"8001.site-pbs-01": {Running, false, []string{`on (x1001c0s0b0n0:ncpus=64) "interactive" test`}},
			},
		},
		{
			file: "openpbs-19.1.1_leading-zeros.json",
			jobs: map[string]want{
				"53.testpbs": {Pending, false, []string{"job_state=H"}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			out, err := os.ReadFile(filepath.Join("testdata", "qstat", tc.file))
			require.NoError(t, err)
			got, err := ParseQstatJSON(out)
			require.NoError(t, err)
			assert.Len(t, got, len(tc.jobs))
			for id, w := range tc.jobs {
				st, ok := got[id]
				if !assert.True(t, ok, "job %s", id) {
					continue
				}
				assert.Equal(t, w.state, st.State, "job %s: %s", id, st.Message)
				assert.Equal(t, w.stuck, st.Stuck, "job %s", id)
				for _, m := range w.message {
					assert.Contains(t, st.Message, m, "job %s", id)
				}
			}
		})
	}
}

func TestParseQstatJSONErrors(t *testing.T) {
	for _, in := range []string{"", "not json", `{"Jobs":[1,2]}`, `{"Jobs":{"1.s":{"job_state":3}}}`} {
		_, err := ParseQstatJSON([]byte(in))
		assert.Error(t, err, "%q", in)
	}
	got, err := ParseQstatJSON([]byte(`{"timestamp":1750053827,"pbs_version":"22.05.11","pbs_server":"s"}`))
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestRepairJSON(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"a":"b"}`, `{"a":"b"}`},
		{`{"a":"C:\Users"}`, `{"a":"C:\\Users"}`},
		{`{"a":"it\'s"}`, `{"a":"it\\'s"}`},
		{`{"a":"ok \" \n \u00e9"}`, `{"a":"ok \" \n \u00e9"}`},
		{`{"a":"\uzz"}`, `{"a":"\\uzz"}`},
		{"{\"a\":\"x\ny\"}", `{"a":"x\u000ay"}`},
		{`{"a":005,"b":-0012,"c":0,"d":10,"e":0.5,"f":"007"}`, `{"a":"005","b":"-0012","c":0,"d":10,"e":0.5,"f":"007"}`},
		{`{"c":"say "hi" now","d":1}`, `{"c":"say \"hi\" now","d":1}`},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, string(repairJSON([]byte(tc.in))), "repairJSON(%q)", tc.in)
	}
}

func TestQstatStderr(t *testing.T) {
	m := parseQstatUnknown("qstat: Unknown Job Id 2001.g3\nqstat: Unknown Job Id 2002.g3\n")
	assert.Equal(t, map[string]string{"2001.g3": "qstat: Unknown Job Id 2001.g3", "2002.g3": "qstat: Unknown Job Id 2002.g3"}, m)

	assert.True(t, qdelOnlyEnded("qdel: Job has finished 12.s\nqdel: Unknown Job Id 13.s\n"))
	assert.False(t, qdelOnlyEnded("qdel: Unauthorized Request  12.s\n"))
	assert.False(t, qdelOnlyEnded(""))

	known := map[string]JobStatus{"12.server.example.org": {State: Running}}
	st, ok := lookupPBS(known, "12.server")
	assert.True(t, ok)
	assert.Equal(t, Running, st.State)
	_, ok = lookupPBS(known, "13")
	assert.False(t, ok)
}

func FuzzParseQstatJSON(f *testing.F) {
	for _, name := range []string{"openpbs-22.05.11_history.json", "pbspro-2022.1.1_invalid-escapes.json", "openpbs-19.1.1_leading-zeros.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", "qstat", name))
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseQstatJSON(b)
		if err == nil {
			for _, st := range got {
				_ = st.State.String()
			}
		}
	})
}

func FuzzParseSqueue(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "squeue", "slurm-22.05.8.txt"))
	require.NoError(f, err)
	f.Add(string(b))
	f.Fuzz(func(t *testing.T, s string) {
		_ = parseSqueue(s)
	})
}
