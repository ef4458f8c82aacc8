package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
)

// Slurm submits blocks to Slurm: one batch job per block, written to
// RUNDIR/<block>.sbatch and submitted with sbatch --parsable; Status asks
// squeue; Cancel runs scancel. The job starts in the directory the front
// end runs in, with the front end's environment (sbatch's default,
// --export=ALL) and BlockSpec.Env on top.
//
// Status needs no accounting database: it reads squeue, which shows an
// ended job for MinJobAge (300 s by default) after its end; after that the
// job is Unknown.
type Slurm struct {
	// Env is added to the environment of Slurm's commands, e.g.
	// "SLURM_CONF=/path/slurm.conf".
	Env []string
	// Logger receives debug lines about the commands run; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Name implements Provider.
func (*Slurm) Name() string { return "slurm" }

func (p *Slurm) log() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// Paths of a block's files in the run directory.
func slurmPaths(s BlockSpec) (script, stdout, stderr string) {
	base := filepath.Join(s.RunDir, s.Name)
	return base + ".sbatch", base + ".out", base + ".err"
}

// Script returns the job script Submit would write for spec.
func (p *Slurm) Script(spec BlockSpec) (string, error) {
	if err := spec.validate(true); err != nil {
		return "", err
	}
	script, stdout, stderr := slurmPaths(spec)
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	fmt.Fprintf(&b, "# rankfarm block %s, written by rankfarm's Slurm provider and submitted\n# with: %s\n", spec.Name,
		shellJoin(append(append([]string{"sbatch", "--parsable"}, spec.SchedulerOptions...), script)))
	fmt.Fprintf(&b, "#SBATCH --job-name=rankfarm-%s\n", spec.Name)
	fmt.Fprintf(&b, "#SBATCH --output=%s\n", stdout)
	fmt.Fprintf(&b, "#SBATCH --error=%s\n", stderr)
	fmt.Fprintf(&b, "#SBATCH --nodes=%d\n", spec.nodes())
	fmt.Fprintf(&b, "#SBATCH --ntasks-per-node=%d\n", spec.ranksPerNode())
	if spec.Walltime > 0 {
		fmt.Fprintf(&b, "#SBATCH --time=%s\n", hms(spec.Walltime))
	}
	if spec.Partition != "" {
		fmt.Fprintf(&b, "#SBATCH --partition=%s\n", spec.Partition)
	}
	if spec.Account != "" {
		fmt.Fprintf(&b, "#SBATCH --account=%s\n", spec.Account)
	}
	if spec.QoS != "" {
		fmt.Fprintf(&b, "#SBATCH --qos=%s\n", spec.QoS)
	}
	for _, d := range spec.Directives {
		directive(&b, "#SBATCH", d)
	}
	scriptBody(&b, spec)
	return b.String(), nil
}

// Submit implements Provider: it writes the job script and submits it. An
// sbatch that refuses the job fails with sbatch's own message.
func (p *Slurm) Submit(ctx context.Context, spec BlockSpec) (Job, error) {
	text, err := p.Script(spec)
	if err != nil {
		return Job{}, err
	}
	script, stdout, stderr := slurmPaths(spec)
	if err := writeScript(script, text); err != nil {
		return Job{}, err
	}
	args := append(append([]string{"--parsable"}, spec.SchedulerOptions...), script)
	out, err := runner{p.Env}.run(ctx, "sbatch", args...)
	if err != nil {
		return Job{}, fmt.Errorf("provider: slurm: submit block %s: %w", spec.Name, err)
	}
	id, err := parseSbatch(out)
	if err != nil {
		return Job{}, fmt.Errorf("provider: slurm: submit block %s: %w", spec.Name, err)
	}
	p.log().Debug("slurm job submitted", "block", spec.Name, "job", id, "script", script)
	return Job{ID: id, Block: spec.Name, Script: script, Stdout: stdout, Stderr: stderr}, nil
}

// parseSbatch reads the job id from sbatch --parsable's output: "id" or
// "id;cluster".
func parseSbatch(out string) (string, error) {
	line := strings.TrimSpace(out)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = strings.TrimSpace(line[i+1:])
	}
	id, _, _ := strings.Cut(line, ";")
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", fmt.Errorf("sbatch printed %q, not a job id", strings.TrimSpace(out))
	}
	return id, nil
}

// squeueFormat asks squeue for id|state|reason|exit status, unpadded.
const squeueFormat = "JobID:|,State:|,Reason:|,exit_code:"

// Status implements Provider with one squeue call for all jobs.
func (p *Slurm) Status(ctx context.Context, jobs []Job) (map[string]JobStatus, error) {
	res := make(map[string]JobStatus, len(jobs))
	if len(jobs) == 0 {
		return res, nil
	}
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	out, err := runner{p.Env}.run(ctx, "squeue", "--noheader", "--states=all", "--jobs="+strings.Join(ids, ","), "--Format="+squeueFormat)
	if err != nil {
		var ce *CommandError
		// squeue fails when no job of the list is known any more.
		if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "Invalid job id") {
			return nil, fmt.Errorf("provider: slurm: status: %w", err)
		}
		out = ""
	}
	known := parseSqueue(out)
	for _, j := range jobs {
		st, ok := known[j.ID]
		if !ok {
			st = JobStatus{State: Unknown, Message: fmt.Sprintf("Slurm does not know job %s (any more: squeue shows an ended job for MinJobAge, 300 s by default)", j.ID)}
		}
		if st.State == Failed {
			st.Tail = tailOf(j.Stderr, 2<<10)
		}
		res[j.ID] = st
	}
	return res, nil
}

// parseSqueue reads squeue lines of squeueFormat into statuses by job id.
func parseSqueue(out string) map[string]JobStatus {
	res := make(map[string]JobStatus)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) < 3 || f[0] == "" {
			continue
		}
		id, state, reason := strings.TrimSpace(f[0]), strings.TrimSpace(f[1]), strings.TrimSpace(f[2])
		exit := ""
		if len(f) > 3 {
			exit = strings.TrimSpace(f[3])
		}
		res[id] = slurmStatus(state, reason, exit)
	}
	return res
}

// slurmStatus maps Slurm's job state, reason and raw exit status (a wait
// status, as squeue's exit_code prints it) to a JobStatus.
func slurmStatus(state, reason, exit string) JobStatus {
	st := JobStatus{State: slurmState(state)}
	msg := []string{state}
	if reason != "" && reason != "None" {
		msg = append(msg, "Reason="+reason)
	}
	if st.State.Final() {
		if code, err := strconv.Atoi(exit); err == nil {
			// Slurm's own notation: exit code, then the signal that ended it.
			msg = append(msg, fmt.Sprintf("ExitCode=%d:%d", code>>8&0xff, code&0x7f))
		}
	}
	st.Message = strings.Join(msg, ", ")
	if st.State == Pending && slurmHopeless(reason) {
		st.Stuck = true
	}
	return st
}

func slurmState(s string) State {
	switch strings.TrimSuffix(s, "+") {
	case "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD":
		return Pending
	case "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT":
		return Running
	case "COMPLETED":
		return Done
	case "CANCELLED":
		return Cancelled
	case "FAILED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT":
		return Failed
	}
	return Unknown
}

// slurmHopeless reports whether a pending job's reason says it can never
// start as asked.
func slurmHopeless(reason string) bool {
	switch reason {
	case "PartitionNodeLimit", "PartitionTimeLimit", "PartitionConfig", "BadConstraints",
		"InvalidAccount", "InvalidQOS", "DependencyNeverSatisfied", "AccountNotAllowed", "QOSNotAllowed":
		return true
	}
	// QOSMaxWallDurationPerJobLimit, AssocMaxNodesPerJob …: the job asks for
	// more than any single job may have.
	return strings.HasSuffix(reason, "PerJobLimit") || strings.HasSuffix(reason, "PerJob")
}

// Cancel implements Provider with scancel.
func (p *Slurm) Cancel(ctx context.Context, jobs []Job) error {
	if len(jobs) == 0 {
		return nil
	}
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	if _, err := (runner{p.Env}).run(ctx, "scancel", ids...); err != nil {
		return fmt.Errorf("provider: slurm: cancel: %w", err)
	}
	p.log().Debug("slurm jobs cancelled", "jobs", ids)
	return nil
}
