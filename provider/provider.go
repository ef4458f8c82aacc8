package provider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/rankfarm/rankfarm/launch"
)

// Provider gets blocks from a place where they can run.
//
// Submit asks for one block and returns at once with its Job (a batch job
// may wait in the queue for hours). Status reports on jobs, keyed by
// Job.ID; an error from Status means "could not ask" (the controller is
// down, a command timed out), never that a job is lost: the caller asks
// again at its next poll. Cancel ends jobs, queued or running; it is not an
// error to cancel a job that has already ended.
//
// A Provider is safe for concurrent use.
type Provider interface {
	// Name names the provider in logs and errors: "local", "slurm",
	// "pbspro".
	Name() string
	// Submit starts or queues one block.
	Submit(ctx context.Context, spec BlockSpec) (Job, error)
	// Status reports how each of jobs stands, keyed by Job.ID. Every job
	// asked about has an entry; a job the batch system no longer knows is
	// Unknown.
	Status(ctx context.Context, jobs []Job) (map[string]JobStatus, error)
	// Cancel ends jobs. Jobs that have already ended are not an error.
	Cancel(ctx context.Context, jobs []Job) error
}

// BlockSpec is what one block needs: the launch command and its
// environment (filled in by the front end for each block), and the
// resources to ask the batch system for (set by the user, the same for
// every block).
type BlockSpec struct {
	// Name is the block's id, which its rank 0 reports in the handshake
	// (RANKFARM_BLOCK). It names the job ("rankfarm-<Name>") and its files
	// in RunDir; letters, digits, '.', '_' and '-' only, at most 64.
	Name string
	// Command is the launch command line, from a launcher: see Command.
	Command []string
	// Env are the variables the ranks need, on top of the job's own
	// environment. A batch provider writes them into the job script, so no
	// secret may be among them: a name that holds TOKEN, SECRET or
	// PASSWORD is refused unless it ends in _FILE (RANKFARM_TOKEN_FILE
	// passes the token file's path, never the token).
	Env map[string]string

	// NodesPerBlock is the number of nodes of the block; 0 means 1.
	NodesPerBlock int
	// RanksPerNode is the number of MPI ranks (tasks) per node; 0 means 1.
	// Slurm reserves that many tasks per node, PBS Pro that many ncpus
	// and mpiprocs per chunk.
	RanksPerNode int
	// Walltime bounds the job's run; 0 leaves it to the site's default.
	Walltime time.Duration
	// Partition is the Slurm partition, or the PBS queue.
	Partition string
	// Account is the account (Slurm) or project (PBS) to charge.
	Account string
	// QoS is Slurm's quality of service. PBS Pro has none and refuses it.
	QoS string
	// Directives are extra scheduler directives, one per line of the job
	// script: "--mem=4G" becomes "#SBATCH --mem=4G", "-l mem=4gb"
	// becomes "#PBS -l mem=4gb". A line that already starts with '#' is
	// written as it is.
	Directives []string
	// WorkerInit is shell code run in the job before the launch command,
	// e.g. "module load openmpi/4.1". It goes into the script as it is.
	WorkerInit string
	// SchedulerOptions are passed through to the submit command (sbatch,
	// qsub) before the script's path, e.g. "--reservation=demo".
	SchedulerOptions []string
	// RunDir is the run directory, where the job script and the job's
	// output files go. Compute nodes must see it (as they must see the
	// token file). Batch providers need it; Local writes files there only
	// when it has no writers of its own.
	RunDir string
}

// nodes and ranksPerNode apply the defaults.
func (s BlockSpec) nodes() int        { return max(s.NodesPerBlock, 1) }
func (s BlockSpec) ranksPerNode() int { return max(s.RanksPerNode, 1) }

var (
	validName   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	validEnvKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	secretish   = regexp.MustCompile(`(?i)TOKEN|SECRET|PASSWORD|PASSWD`)
)

// ErrSecret is returned (wrapped) when BlockSpec.Env holds a variable that
// looks like a secret and would be written into a job script.
var ErrSecret = errors.New("provider: a secret would be written into the job script")

// validate checks what every provider needs; batch says the spec is for a
// job script.
func (s BlockSpec) validate(batch bool) error {
	if !validName.MatchString(s.Name) {
		return fmt.Errorf("provider: block name %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name)
	}
	if len(s.Command) == 0 || s.Command[0] == "" {
		return fmt.Errorf("provider: block %s: no launch command", s.Name)
	}
	if s.NodesPerBlock < 0 || s.RanksPerNode < 0 || s.Walltime < 0 {
		return fmt.Errorf("provider: block %s: nodes per block, ranks per node and walltime must not be negative", s.Name)
	}
	for k, v := range s.Env {
		if !validEnvKey.MatchString(k) {
			return fmt.Errorf("provider: block %s: %q is not a valid environment variable name", s.Name, k)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("provider: block %s: environment variable %s holds a NUL byte", s.Name, k)
		}
		if batch && secretish.MatchString(k) && !strings.HasSuffix(strings.ToUpper(k), "_FILE") {
			return fmt.Errorf("provider: block %s: environment variable %s: %w; pass the path of a file that holds it (as RANKFARM_TOKEN_FILE does)", s.Name, k, ErrSecret)
		}
	}
	for _, d := range s.Directives {
		if strings.ContainsAny(d, "\n\r") {
			return fmt.Errorf("provider: block %s: directive %q spans lines", s.Name, d)
		}
	}
	if batch {
		if s.RunDir == "" {
			return fmt.Errorf("provider: block %s: a batch job needs a run directory (BlockSpec.RunDir) for its script and output", s.Name)
		}
		// sbatch and qsub split directive lines at blanks, and sbatch reads
		// '%' in file names as a pattern.
		if strings.ContainsAny(s.RunDir, " \t\n\r'\"\\#%") {
			return fmt.Errorf("provider: block %s: the run directory %q holds a blank, a quote, '\\', '#' or '%%', which a job script's directives cannot carry", s.Name, s.RunDir)
		}
		for _, f := range []struct{ what, v string }{{"partition", s.Partition}, {"account", s.Account}, {"QoS", s.QoS}} {
			if strings.ContainsAny(f.v, " \t\n\r'\"\\#") {
				return fmt.Errorf("provider: block %s: %s %q holds a space, a quote, '\\' or '#'", s.Name, f.what, f.v)
			}
		}
	}
	return nil
}

// Command turns a launcher's command (launch.MPIRun, Srun, Single) into a
// BlockSpec.Command: the program as the launcher named it and its
// arguments. A program named bare ("srun") stays bare, to be found on the
// job's $PATH after WorkerInit (module load …); one the launcher resolved
// to a path keeps it. The command's environment is not taken: a batch job
// starts with the batch system's, and the variables the ranks need go in
// BlockSpec.Env.
func Command(cmd *exec.Cmd) []string {
	if len(cmd.Args) == 0 {
		return []string{cmd.Path}
	}
	argv := make([]string, len(cmd.Args))
	copy(argv, cmd.Args)
	if argv[0] == "" {
		argv[0] = cmd.Path
	}
	return argv
}

// State is where a job stands.
type State int

// The states of a job. Done, Failed and Cancelled are final.
const (
	Unknown   State = iota // the batch system does not know the job (any more)
	Pending                // queued, held, or starting
	Running                // running, or ending
	Done                   // ended with exit status 0
	Failed                 // ended otherwise: a non-zero exit, a signal, a timeout, a node failure
	Cancelled              // cancelled (scancel, qdel, Cancel)
)

var stateNames = [...]string{"unknown", "pending", "running", "done", "failed", "cancelled"}

// String returns the state's name: "pending", "running" ….
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Final reports whether a job in state s has ended for good.
func (s State) Final() bool { return s == Done || s == Failed || s == Cancelled }

// JobStatus is how a job stands.
type JobStatus struct {
	State State
	// Message is what the batch system says of the job, in its own words:
	// Slurm's state, reason and exit code ("FAILED, Reason=NonZeroExitCode,
	// ExitCode=3:0"), PBS's state, comment and Exit_status.
	Message string
	// Stuck is set for a pending job that the batch system says can never
	// start as it was asked (a partition's node or time limit, a bad
	// account, "Can Never Run"): the caller should cancel it and report
	// Message rather than wait.
	Stuck bool
	// Tail is the end of the job's error output (its last 2 KiB at most)
	// once a job has failed, when the file could be read.
	Tail string
}

// Job is a submitted block.
type Job struct {
	// ID is the batch system's job id ("4242", "4242.pbs01"), or "local-"
	// and the process id for Local.
	ID string
	// Block is the block's name (BlockSpec.Name).
	Block string
	// Script is the path of the job script; "" for Local.
	Script string
	// Stdout and Stderr are the paths of the job's output files; "" when
	// the output goes elsewhere.
	Stdout, Stderr string
}

// CommandError is a batch command (sbatch, squeue, qsub …) that failed. Its
// message is the command's own error output.
type CommandError struct {
	Command  string // the command line, as run
	ExitCode int    // -1 when it did not exit normally
	Stderr   string // its error output, trimmed
	Err      error  // as exec reported it
}

// Error returns the command line and its own error output.
func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: %s", e.Command, msg)
}

// Unwrap returns exec's error.
func (e *CommandError) Unwrap() error { return e.Err }

// runner runs batch commands with extra environment variables.
type runner struct {
	env []string
}

// run runs name with args and returns its standard output. A failure is a
// *CommandError, or ctx's error.
func (r runner) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if len(r.env) > 0 {
		cmd.Env = append(os.Environ(), r.env...)
	}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = &limitWriter{w: &stderr, n: 64 << 10}
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			return stdout.String(), fmt.Errorf("%s: %w", name, ctx.Err())
		}
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return stdout.String(), &CommandError{Command: shellJoin(append([]string{name}, args...)), ExitCode: code, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.String(), nil
}

// limitWriter keeps the first n bytes written to it.
type limitWriter struct {
	w interface{ Write([]byte) (int, error) }
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		q := p
		if len(q) > l.n {
			q = q[:l.n]
		}
		l.n -= len(q)
		_, _ = l.w.Write(q)
	}
	return len(p), nil
}

// shellQuote quotes s for a POSIX shell, leaving it bare when it is safe.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("@%+=:,./_-", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellJoin quotes each word of argv and joins them with spaces.
func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// scriptBody writes the part of a job script after the directives: the
// worker init, the exports and the launch command.
func scriptBody(b *strings.Builder, s BlockSpec) {
	if init := strings.TrimSpace(s.WorkerInit); init != "" {
		b.WriteString("\n# Worker init.\n")
		b.WriteString(init)
		b.WriteString("\n")
	}
	if len(s.Env) > 0 {
		b.WriteString("\n# What the ranks need to reach the front end. The run's token is not\n# here: it stays in the file that RANKFARM_TOKEN_FILE names.\n")
		keys := make([]string, 0, len(s.Env))
		for k := range s.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(b, "export %s=%s\n", k, shellQuote(s.Env[k]))
		}
	}
	b.WriteString("\n# The block: its rank 0 connects back to the front end.\n")
	b.WriteString(shellJoin(s.Command))
	b.WriteString("\n")
}

// directive writes one extra directive under prefix ("#SBATCH", "#PBS").
func directive(b *strings.Builder, prefix, d string) {
	d = strings.TrimSpace(d)
	if d == "" {
		return
	}
	if strings.HasPrefix(d, "#") {
		b.WriteString(d)
	} else {
		b.WriteString(prefix + " " + d)
	}
	b.WriteString("\n")
}

// writeScript writes a job script, readable and executable by its owner
// only, replacing an older one of the same name.
func writeScript(path, text string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o700); err != nil {
		return fmt.Errorf("provider: write the job script: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("provider: write the job script: %w", err)
	}
	return nil
}

// tailOf returns the last n bytes of the file at path, from a line start
// when it can; "" when it cannot be read.
func tailOf(path string, n int64) string {
	if path == "" {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return ""
	}
	s := string(buf)
	if off > 0 {
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
	}
	return strings.TrimRight(s, "\n")
}

// hms formats d as hours:minutes:seconds, rounding up to a whole second.
func hms(d time.Duration) string {
	sec := int64((d + time.Second - 1) / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60)
}

// The providers and launchers of this package.
var (
	_ Provider        = (*Local)(nil)
	_ Provider        = (*Slurm)(nil)
	_ Provider        = (*PBSPro)(nil)
	_ launch.Launcher = Srun{}
	_ launch.Launcher = Single{}
)
