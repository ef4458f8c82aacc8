package provider

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden job scripts in testdata/")

// scriptCases are the block specs of the golden script tests, shared by
// Slurm and PBS.
var scriptCases = []struct {
	name string
	spec BlockSpec
}{
	{
		name: "minimal",
		spec: BlockSpec{
			Name: "b1",
			Command: []string{"/usr/bin/mpirun.openmpi", "--oversubscribe", "-np", "4",
				"-x", "RANKFARM_ADDR", "-x", "RANKFARM_BLOCK", "-x", "RANKFARM_EXEC", "-x", "RANKFARM_TOKEN_FILE",
				"/home/alice/bin/workflow"},
			Env: map[string]string{
				"RANKFARM_EXEC":       "1",
				"RANKFARM_ADDR":       "10.1.2.3:40123",
				"RANKFARM_TOKEN_FILE": "/home/alice/run/rankfarm-token-123456",
				"RANKFARM_BLOCK":      "b1",
			},
			RunDir: "/home/alice/run",
		},
	},
	{
		name: "full",
		spec: BlockSpec{
			Name:    "b12",
			Command: []string{"srun", "--mpi=pmix", "--export=ALL", "-n", "128", "--kill-on-bad-exit=1", "/home/alice/bin/rankfarm", "exec", "--log-level", "info"},
			Env: map[string]string{
				"RANKFARM_EXEC":            "1",
				"RANKFARM_ADDR":            "login1.hpc.example.org:40123",
				"RANKFARM_TOKEN_FILE":      "/home/alice/run.d/rankfarm-token-123456",
				"RANKFARM_BLOCK":           "b12",
				"RANKFARM_RECONNECT_GRACE": "10s",
				"APP_NOTE":                 `it's "quoted" $HOME`,
			},
			NodesPerBlock:    4,
			RanksPerNode:     32,
			Walltime:         90*time.Minute + 500*time.Millisecond,
			Partition:        "compute",
			Account:          "proj42",
			Directives:       []string{"--exclusive", "#SBATCH --constraint=cpu", " "},
			WorkerInit:       "module purge\nmodule load openmpi/4.1.4\n",
			SchedulerOptions: []string{"--reservation=demo"},
			RunDir:           "/home/alice/run.d",
		},
	},
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./provider -run Script -update to write it")
	assert.Equal(t, string(want), got, "differs from %s (go test -update rewrites it)", path)
}

func TestSlurmScript(t *testing.T) {
	for _, tc := range scriptCases {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			if tc.name == "full" {
				spec.QoS = "debug"
				spec.Directives = append(spec.Directives, "--mem=0")
			}
			got, err := (&Slurm{}).Script(spec)
			require.NoError(t, err)
			golden(t, filepath.Join("testdata", "scripts", tc.name+".sbatch"), got)
			checkScript(t, got, spec)
		})
	}
}

func TestPBSScript(t *testing.T) {
	for _, tc := range scriptCases {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			if tc.name == "full" {
				spec.Directives = []string{"-l mem=200gb", "#PBS -l filesystems=home:eagle", "-j n"}
			}
			got, err := (&PBSPro{}).Script(spec)
			require.NoError(t, err)
			golden(t, filepath.Join("testdata", "scripts", tc.name+".pbs"), got)
			checkScript(t, got, spec)
		})
	}
}

// checkScript checks what every job script must do, whatever its
// directives: export each variable, run the command last.
func checkScript(t *testing.T, script string, spec BlockSpec) {
	t.Helper()
	assert.True(t, strings.HasPrefix(script, "#!/bin/bash\n"))
	for k, v := range spec.Env {
		assert.Contains(t, script, "export "+k+"="+shellQuote(v)+"\n")
	}
	assert.True(t, strings.HasSuffix(script, shellJoin(spec.Command)+"\n"), "the launch command comes last")
	if spec.WorkerInit != "" {
		assert.Less(t, strings.Index(script, strings.TrimSpace(spec.WorkerInit)), strings.Index(script, "export "), "worker init comes before the exports")
	}
}

func TestScriptRefusals(t *testing.T) {
	base := scriptCases[0].spec
	with := func(f func(*BlockSpec)) BlockSpec {
		s := base
		s.Env = map[string]string{}
		for k, v := range base.Env {
			s.Env[k] = v
		}
		f(&s)
		return s
	}
	cases := []struct {
		name   string
		spec   BlockSpec
		pbs    bool // the case is for PBS only
		want   string
		secret bool
	}{
		{name: "token inlined", spec: with(func(s *BlockSpec) { s.Env["RANKFARM_TOKEN"] = "c2VjcmV0" }), want: "RANKFARM_TOKEN", secret: true},
		{name: "other secret", spec: with(func(s *BlockSpec) { s.Env["DB_PASSWORD"] = "x" }), want: "DB_PASSWORD", secret: true},
		{name: "bad env name", spec: with(func(s *BlockSpec) { s.Env["A-B"] = "x" }), want: "not a valid environment variable name"},
		{name: "no name", spec: with(func(s *BlockSpec) { s.Name = "" }), want: "block name"},
		{name: "name with slash", spec: with(func(s *BlockSpec) { s.Name = "../b1" }), want: "block name"},
		{name: "no command", spec: with(func(s *BlockSpec) { s.Command = nil }), want: "no launch command"},
		{name: "no run dir", spec: with(func(s *BlockSpec) { s.RunDir = "" }), want: "run directory"},
		{name: "negative nodes", spec: with(func(s *BlockSpec) { s.NodesPerBlock = -1 }), want: "negative"},
		{name: "multi-line directive", spec: with(func(s *BlockSpec) { s.Directives = []string{"--mem=1G\nrm -rf /"} }), want: "spans lines"},
		{name: "run dir with space", spec: with(func(s *BlockSpec) { s.RunDir = "/home/a/run dir" }), want: "run directory"},
		{name: "run dir with percent", spec: with(func(s *BlockSpec) { s.RunDir = "/home/a/100%" }), want: "run directory"},
		{name: "partition with space", spec: with(func(s *BlockSpec) { s.Partition = "a b" }), want: "partition"},
		{name: "qos on pbs", spec: with(func(s *BlockSpec) { s.QoS = "high" }), pbs: true, want: "no QoS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			providers := []interface {
				Script(BlockSpec) (string, error)
			}{&PBSPro{}}
			if !tc.pbs {
				providers = append(providers, &Slurm{})
			}
			for _, p := range providers {
				_, err := p.Script(tc.spec)
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.want)
				assert.Equal(t, tc.secret, errors.Is(err, ErrSecret))
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "''"},
		{"plain", "plain"},
		{"/a/b-c_d.e:f,g=h@i%j+k", "/a/b-c_d.e:f,g=h@i%j+k"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"$HOME", "'$HOME'"},
		{"a\nb", "'a\nb'"},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, shellQuote(tc.in), "shellQuote(%q)", tc.in)
	}
}

func TestHMS(t *testing.T) {
	cases := []struct {
		in   time.Duration
		want string
	}{
		{time.Second, "00:00:01"},
		{time.Millisecond, "00:00:01"},
		{90 * time.Minute, "01:30:00"},
		{49*time.Hour + 61*time.Second, "49:01:01"},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, hms(tc.in), "hms(%v)", tc.in)
	}
}
