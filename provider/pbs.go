package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// PBSPro submits blocks to PBS Professional or OpenPBS: one job per block,
// written to RUNDIR/<block>.pbs and submitted with qsub; Status asks
// qstat -x -f -F json; Cancel runs qdel. A block of N nodes asks for N
// chunks of RanksPerNode ncpus and mpiprocs each, one per node
// (place=scatter), so that PBS's node file lists each node RanksPerNode
// times, as mpirun expects. The job changes to the directory qsub ran in
// ($PBS_O_WORKDIR) before anything else.
//
// Status needs the server's job history (job_history_enable, on at most
// sites) to see an ended job; without it an ended job is Unknown.
type PBSPro struct {
	// Env is added to the environment of PBS's commands, e.g.
	// "PBS_SERVER=…".
	Env []string
	// Logger receives debug lines about the commands run; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Name implements Provider.
func (*PBSPro) Name() string { return "pbspro" }

func (p *PBSPro) log() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

func pbsPaths(s BlockSpec) (script, stdout, stderr string) {
	base := filepath.Join(s.RunDir, s.Name)
	return base + ".pbs", base + ".out", base + ".err"
}

// Script returns the job script Submit would write for spec.
func (p *PBSPro) Script(spec BlockSpec) (string, error) {
	if err := spec.validate(true); err != nil {
		return "", err
	}
	if spec.QoS != "" {
		return "", fmt.Errorf("provider: pbspro: block %s: PBS Pro has no QoS (asked for %q); put the site's equivalent in Directives or Partition (the queue)", spec.Name, spec.QoS)
	}
	script, stdout, stderr := pbsPaths(spec)
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	fmt.Fprintf(&b, "# rankfarm block %s, written by rankfarm's PBS Pro provider and submitted\n# with: %s\n", spec.Name,
		shellJoin(append(append([]string{"qsub"}, spec.SchedulerOptions...), script)))
	fmt.Fprintf(&b, "#PBS -N rankfarm-%s\n", spec.Name)
	fmt.Fprintf(&b, "#PBS -o %s\n", stdout)
	fmt.Fprintf(&b, "#PBS -e %s\n", stderr)
	r := spec.ranksPerNode()
	fmt.Fprintf(&b, "#PBS -l select=%d:ncpus=%d:mpiprocs=%d\n", spec.nodes(), r, r)
	b.WriteString("#PBS -l place=scatter\n")
	if spec.Walltime > 0 {
		fmt.Fprintf(&b, "#PBS -l walltime=%s\n", hms(spec.Walltime))
	}
	if spec.Partition != "" {
		fmt.Fprintf(&b, "#PBS -q %s\n", spec.Partition)
	}
	if spec.Account != "" {
		fmt.Fprintf(&b, "#PBS -A %s\n", spec.Account)
	}
	for _, d := range spec.Directives {
		directive(&b, "#PBS", d)
	}
	b.WriteString("\n# PBS starts a job in $HOME; the block starts where qsub ran.\ncd \"${PBS_O_WORKDIR:-.}\" || exit 1\n")
	scriptBody(&b, spec)
	return b.String(), nil
}

// Submit implements Provider: it writes the job script and submits it with
// qsub. A qsub that refuses the job fails with qsub's own message.
func (p *PBSPro) Submit(ctx context.Context, spec BlockSpec) (Job, error) {
	text, err := p.Script(spec)
	if err != nil {
		return Job{}, err
	}
	script, stdout, stderr := pbsPaths(spec)
	if err := writeScript(script, text); err != nil {
		return Job{}, err
	}
	out, err := runner{p.Env}.run(ctx, "qsub", append(append([]string{}, spec.SchedulerOptions...), script)...)
	if err != nil {
		return Job{}, fmt.Errorf("provider: pbspro: submit block %s: %w", spec.Name, err)
	}
	id := strings.TrimSpace(out)
	if i := strings.LastIndexByte(id, '\n'); i >= 0 {
		id = strings.TrimSpace(id[i+1:])
	}
	if id == "" || strings.ContainsAny(id, " \t") {
		return Job{}, fmt.Errorf("provider: pbspro: submit block %s: qsub printed %q, not a job id", spec.Name, strings.TrimSpace(out))
	}
	p.log().Debug("pbs job submitted", "block", spec.Name, "job", id, "script", script)
	return Job{ID: id, Block: spec.Name, Script: script, Stdout: stdout, Stderr: stderr}, nil
}

// Status implements Provider with one qstat -x -f -F json call.
func (p *PBSPro) Status(ctx context.Context, jobs []Job) (map[string]JobStatus, error) {
	res := make(map[string]JobStatus, len(jobs))
	if len(jobs) == 0 {
		return res, nil
	}
	args := []string{"-x", "-f", "-F", "json"}
	for _, j := range jobs {
		args = append(args, j.ID)
	}
	out, err := runner{p.Env}.run(ctx, "qstat", args...)
	unknown := map[string]string{}
	if err != nil {
		// qstat fails (status 153) when any job is unknown, and still
		// prints the others.
		var ce *CommandError
		if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "Unknown Job Id") {
			return nil, fmt.Errorf("provider: pbspro: status: %w", err)
		}
		unknown = parseQstatUnknown(ce.Stderr)
	}
	known := map[string]JobStatus{}
	if strings.TrimSpace(out) != "" {
		if known, err = ParseQstatJSON([]byte(out)); err != nil {
			return nil, fmt.Errorf("provider: pbspro: status: %w", err)
		}
	}
	for _, j := range jobs {
		st, ok := lookupPBS(known, j.ID)
		if !ok {
			msg := unknown[j.ID]
			if msg == "" {
				msg = "qstat: Unknown Job Id " + j.ID
			}
			st = JobStatus{State: Unknown, Message: msg + " (an ended job stays known only while the server keeps job history)"}
		}
		if st.State == Failed {
			st.Tail = tailOf(j.Stderr, 2<<10)
		}
		res[j.ID] = st
	}
	return res, nil
}

// lookupPBS finds id in known, allowing for a short id ("123") against a
// full one ("123.server") and the other way round.
func lookupPBS(known map[string]JobStatus, id string) (JobStatus, bool) {
	if st, ok := known[id]; ok {
		return st, true
	}
	short, _, _ := strings.Cut(id, ".")
	for k, st := range known {
		if ks, _, _ := strings.Cut(k, "."); ks == short {
			return st, true
		}
	}
	return JobStatus{}, false
}

var qstatUnknown = regexp.MustCompile(`Unknown Job Id (\S+)`)

// parseQstatUnknown maps the ids that qstat's error output calls unknown to
// its line.
func parseQstatUnknown(stderr string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(stderr, "\n") {
		if g := qstatUnknown.FindStringSubmatch(line); g != nil {
			m[g[1]] = strings.TrimSpace(line)
		}
	}
	return m
}

// pbsJob holds the attributes of qstat -f -F json that Status reads.
type pbsJob struct {
	State      string          `json:"job_state"`
	Substate   json.RawMessage `json:"substate"`
	ExitStatus json.RawMessage `json:"Exit_status"`
	Comment    string          `json:"comment"`
}

// ParseQstatJSON reads the output of PBS Pro's `qstat -f -F json` (with -x
// or not) into statuses keyed by job id. Some PBS versions print JSON that
// is not quite valid (an unknown backslash escape, a raw control
// character, a number with leading zeros in Variable_List); such output is
// repaired before it is read again.
func ParseQstatJSON(out []byte) (map[string]JobStatus, error) {
	var doc struct {
		Version string             `json:"pbs_version"`
		Jobs    map[string]*pbsJob `json:"Jobs"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		if err2 := json.Unmarshal(repairJSON(out), &doc); err2 != nil {
			return nil, fmt.Errorf("qstat's JSON: %w", err)
		}
	}
	res := make(map[string]JobStatus, len(doc.Jobs))
	for id, j := range doc.Jobs {
		if j == nil {
			continue
		}
		res[id] = pbsStatus(j)
	}
	return res, nil
}

// jsonInt reads a JSON number or a string that holds one.
func jsonInt(raw json.RawMessage) (int, bool) {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	if s == "" || s == "null" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// PBS job substates of ended (history) jobs.
const (
	pbsSubTerminated = 91 // deleted (qdel), or killed by the server
	pbsSubFinished   = 92 // ended
	pbsSubFailed     = 93 // could not run
)

// pbsExecCodes names PBS's own negative exit statuses (JOB_EXEC_*).
var pbsExecCodes = map[int]string{
	-1: "JOB_EXEC_FAIL1: the job could not start (before its files)", -2: "JOB_EXEC_FAIL2: the job could not start (after its files)",
	-3: "JOB_EXEC_RETRY: the job could not start and will be retried", -4: "JOB_EXEC_INITABT: the job was aborted when MoM started",
	-10: "JOB_EXEC_FAILUID: invalid user or group id for the job", -11: "JOB_EXEC_RERUN: the job was rerun",
	-13: "JOB_EXEC_FAIL_PASSWORD", -15: "JOB_EXEC_QUERST: requeued for a restart",
	-16: "JOB_EXEC_FAILHOOK_RERUN: a hook refused the job; requeued", -17: "JOB_EXEC_FAILHOOK_DELETE: a hook refused the job; deleted",
	-18: "JOB_EXEC_HOOK_RERUN: a hook requeued the job", -19: "JOB_EXEC_HOOK_DELETE: a hook deleted the job",
	-20: "JOB_EXEC_RERUN_MS_FAIL: the connection to the mother superior failed", -21: "JOB_EXEC_FAIL_SECURITY",
	-22: "JOB_EXEC_HOOKERROR: a hook failed or timed out", -23: "JOB_EXEC_FAIL_KRB5: no Kerberos credentials",
}

// pbsStatus maps one job's attributes to a JobStatus.
func pbsStatus(j *pbsJob) JobStatus {
	sub, hasSub := jsonInt(j.Substate)
	exit, hasExit := jsonInt(j.ExitStatus)
	st := JobStatus{}
	switch j.State {
	case "Q", "H", "W", "T":
		st.State = Pending
	case "R", "E", "B", "S", "U":
		st.State = Running
	case "F", "X":
		switch {
		case hasSub && sub == pbsSubTerminated:
			st.State = Cancelled
		case hasExit && exit == 0 && (!hasSub || sub == pbsSubFinished):
			st.State = Done
		default:
			st.State = Failed
		}
	case "M":
		st.State = Unknown // moved to another server
	}
	msg := []string{"job_state=" + j.State}
	if hasSub {
		msg = append(msg, "substate="+strconv.Itoa(sub))
	}
	if hasExit {
		e := "Exit_status=" + strconv.Itoa(exit)
		switch {
		case exit < 0 && pbsExecCodes[exit] != "":
			e += " (" + pbsExecCodes[exit] + ")"
		case exit > 256:
			e += fmt.Sprintf(" (killed by signal %d)", exit-256)
		case exit > 128 && exit < 256:
			e += fmt.Sprintf(" (128+%d: a shell's report of signal %d)", exit-128, exit-128)
		}
		msg = append(msg, e)
	}
	if c := strings.TrimSpace(j.Comment); c != "" {
		msg = append(msg, "comment: "+c)
		if st.State == Pending && strings.Contains(c, "Can Never Run") {
			st.Stuck = true
		}
	}
	st.Message = strings.Join(msg, ", ")
	return st
}

// repairJSON fixes what some versions of qstat get wrong in their JSON:
// inside strings, a backslash before a character that JSON cannot escape is
// doubled, an unescaped quote is escaped and raw control characters are
// escaped; outside them, a number with leading zeros (an environment value
// like 005) becomes a string.
func repairJSON(in []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(in) + 64)
	inString := false
	for i := 0; i < len(in); i++ {
		c := in[i]
		if !inString {
			switch {
			case c == '"':
				inString = true
				b.WriteByte(c)
			case c == '-' || c >= '0' && c <= '9':
				j := i
				for j < len(in) && strings.IndexByte("+-.0123456789eE", in[j]) >= 0 {
					j++
				}
				num := in[i:j]
				digits := bytes.TrimPrefix(num, []byte("-"))
				if len(digits) > 1 && digits[0] == '0' && digits[1] >= '0' && digits[1] <= '9' {
					b.WriteByte('"')
					b.Write(num)
					b.WriteByte('"')
				} else {
					b.Write(num)
				}
				i = j - 1
			default:
				b.WriteByte(c)
			}
			continue
		}
		switch {
		case c == '\\':
			if i+1 < len(in) && strings.IndexByte(`"\/bfnrtu`, in[i+1]) >= 0 {
				if in[i+1] == 'u' && !isHex4(in[i+2:]) {
					b.WriteString(`\\`)
					continue
				}
				b.WriteByte(c)
				b.WriteByte(in[i+1])
				i++
				continue
			}
			b.WriteString(`\\`)
		case c == '"':
			// The end of the string, unless what follows cannot follow a
			// string: then it is a quote that qstat did not escape.
			if next := nextNonSpace(in[i+1:]); next == 0 || strings.IndexByte(",:}]", next) >= 0 {
				inString = false
				b.WriteByte(c)
			} else {
				b.WriteString(`\"`)
			}
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.Bytes()
}

func isHex4(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	for _, c := range b[:4] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func nextNonSpace(b []byte) byte {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c
		}
	}
	return 0
}

// Cancel implements Provider with qdel. Jobs that have already ended (qdel
// says "Job has finished" or "Unknown Job Id") are not an error.
func (p *PBSPro) Cancel(ctx context.Context, jobs []Job) error {
	if len(jobs) == 0 {
		return nil
	}
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	_, err := runner{p.Env}.run(ctx, "qdel", ids...)
	if err != nil {
		var ce *CommandError
		if errors.As(err, &ce) && qdelOnlyEnded(ce.Stderr) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("provider: pbspro: cancel: %w", err)
	}
	p.log().Debug("pbs jobs cancelled", "jobs", ids)
	return nil
}

// qdelOnlyEnded reports whether every line of qdel's error output is about
// a job that has already ended.
func qdelOnlyEnded(stderr string) bool {
	seen := false
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if !strings.Contains(line, "Job has finished") && !strings.Contains(line, "Unknown Job Id") {
			return false
		}
		seen = true
	}
	return seen
}
