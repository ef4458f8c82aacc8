package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/taskfarm"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// errTasksFailed makes run exit 1 after the summary said why.
var errTasksFailed = errors.New("not every task succeeded")

const runUsage = `Usage:
  rankfarm run [flags] FILE                  run each line of FILE as a shell command
  rankfarm run [flags] [-]                   ... of standard input
  rankfarm run [flags] -c TEMPLATE ARGFILE   run TEMPLATE once per line of ARGFILE ("-": stdin)
  rankfarm run [flags] -c TEMPLATE ::: ARG…  ... once per ARG
  rankfarm run [flags] FILE --args ARGFILE   each line of FILE is a template, filled from ARGFILE

A task farm: every command runs with /bin/sh -c on a worker of a block of
MPI ranks (mpirun -np NP of this binary; rank 0 schedules, so NP-1 workers
run commands). Blank lines and # comments in FILE are skipped. Each command
sees RANKFARM_TASK (its number, 1, 2, …), RANKFARM_RANK and RANKFARM_ATTEMPT.

Placeholders in a template, filled from each argument line (quoted for the
shell unless --raw; a template without any gets " {}" appended):
  {}  the line   {1} {2} …  its columns (--colsep)   {.}  without extension
  {/} base name  {//} directory  {/.} base name without extension  {#} task number

A journal beside the input (FILE.rfjournal, or ARGFILE's) records each task
that finishes. Run the same command again after a crash, a walltime kill or
a failure, and only the tasks that have not succeeded run. --fresh forgets it.

Output: each task's stdout and stderr are captured (up to 1 MiB each) and
printed as the task finishes, or written to DIR/N.out and DIR/N.err with
--output-dir. On a terminal a progress bar shows done, failed, running, rate
and ETA; otherwise a line every --progress-interval. A summary ends the run.
The exit status is 0 when every task has succeeded, 1 otherwise, 2 for a bad
command line.

Flags:
`

// runFlags are the flags of rankfarm run.
type runFlags struct {
	np, slots, retries int
	walltime           time.Duration
	keepGoing          bool
	command, argsFile  string
	colsep             string
	raw                bool
	outputDir          string
	journal            string
	noJournal, fresh   bool
	dryRun             bool
	progress           string
	interval           time.Duration
	mpirun, mpirunArgs string
	logLevel           string
	blocks             blockFlags
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// Everything after ::: is an argument list, never a flag.
	var listed []string
	haveList := false
	if i := slices.Index(args, ":::"); i >= 0 {
		listed, haveList = args[i+1:], true
		args = args[:i]
	}
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(stderr, runUsage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, "\n"+blockUsage)
	}
	var f runFlags
	fs.IntVar(&f.np, "np", runtime.NumCPU()+1, "ranks in the block: rank 0 schedules, NP-1 workers run commands")
	fs.IntVar(&f.slots, "slots", 1, "commands each worker runs at once")
	fs.IntVar(&f.retries, "retries", 0, "run a failed command up to this many more times")
	fs.DurationVar(&f.walltime, "walltime", 0, "kill a command (its whole process group) that runs longer than this, e.g. 10m (0 = no limit)")
	fs.BoolVarP(&f.keepGoing, "keep-going", "k", false, "run every task whatever fails (default: after the first failure start no new task)")
	fs.StringVarP(&f.command, "command", "c", "", "a template run once per argument line")
	fs.StringVar(&f.argsFile, "args", "", "file of argument lines for the template(s) (\"-\": stdin)")
	fs.StringVar(&f.colsep, "colsep", "", "column separator for {1}, {2}, … (default: runs of blanks)")
	fs.BoolVar(&f.raw, "raw", false, "fill placeholders as they are, without shell quoting")
	fs.StringVar(&f.outputDir, "output-dir", "", "write each task's stdout and stderr to DIR/N.out and DIR/N.err instead of printing them")
	fs.StringVar(&f.journal, "journal", "", "journal file (default: the input file's name + "+taskfarm.JournalSuffix+"; none for stdin)")
	fs.BoolVar(&f.noJournal, "no-journal", false, "keep no journal: every run runs every task")
	fs.BoolVar(&f.fresh, "fresh", false, "empty the journal first: run every task again")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the commands that would run, one a line, and run nothing")
	fs.StringVar(&f.progress, "progress", "auto", "progress report: bar, lines, none, or auto (a bar on a terminal, lines otherwise)")
	fs.DurationVar(&f.interval, "progress-interval", 30*time.Second, "time between progress lines")
	fs.StringVar(&f.mpirun, "mpirun", "", "the mpirun to launch the block with (default: mpirun from $PATH)")
	fs.StringVar(&f.mpirunArgs, "mpirun-args", "", "extra mpirun arguments, split at blanks (e.g. \"--hostfile hosts\")")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	f.blocks.add(fs)
	fs.SetInterspersed(true)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		fmt.Fprintf(stderr, "rankfarm run: %v\n", err)
		fs.Usage()
		return errUsage
	}
	usageErr := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "rankfarm run: "+format+"\n", a...)
		fmt.Fprintln(stderr, `Run "rankfarm run --help" for usage.`)
		return errUsage
	}
	switch {
	case f.np < 1 || f.slots < 1 || f.retries < 0 || f.walltime < 0 || f.interval < 0:
		return usageErr("--np and --slots must be at least 1; --retries, --walltime and --progress-interval must not be negative")
	case !slices.Contains([]string{"auto", "bar", "lines", "none"}, f.progress):
		return usageErr("--progress must be auto, bar, lines or none, not %q", f.progress)
	case fs.NArg() > 1:
		return usageErr("one input file at most, got %q", fs.Args())
	case haveList && f.argsFile != "":
		return usageErr("::: and --args both give arguments: use one")
	}
	in, err := readInput(f, fs.Args(), listed, haveList, os.Stdin)
	var ue *usageError
	if errors.As(err, &ue) {
		return usageErr("%s", ue.msg)
	}
	if err != nil {
		return err
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageErr("--log-level: %v", err)
	}
	tasks, err := taskfarm.Expand(in.commands, in.args, f.colsep, f.raw)
	if err != nil {
		return fmt.Errorf("%s: %w", in.commandsName, err)
	}

	// The progress report, and where the tasks' output and the logs go.
	taskOut, taskErr := stdout, stderr
	var prog taskfarm.Progress
	mode := f.progress
	if mode == "auto" {
		mode = "lines"
		if isTerminal(stderr) {
			mode = "bar"
		}
	}
	switch mode {
	case "bar":
		bar := taskfarm.NewBar(stderr)
		prog = bar
		taskErr = bar.Writer()
		if isTerminal(stdout) {
			taskOut = bar.Writer()
		}
	case "lines":
		prog = taskfarm.NewLines(stderr, f.interval)
	}
	log := slog.New(slog.NewTextHandler(taskErr, &slog.HandlerOptions{Level: level}))

	var state taskfarm.JournalState
	var j *taskfarm.Journal
	path := journalPath(f, in.journalFor)
	if f.dryRun && (f.fresh || !exists(path)) {
		path = "" // a dry run creates and empties no journal
	}
	if path != "" && !f.noJournal {
		j, state, err = taskfarm.OpenJournal(path, f.fresh, log)
		if err != nil {
			return err
		}
		defer j.Close()
		if state.Torn || state.Bad > 0 {
			log.Warn("journal: skipped damaged records (a crash mid-write?)", "file", path, "torn", state.Torn, "bad", state.Bad)
		}
	}
	if f.dryRun {
		for _, t := range tasks {
			if !state.OK[taskfarm.Key{Hash: t.Hash, Occ: t.Occ}] {
				fmt.Fprintln(stdout, t.Cmd)
			}
		}
		return nil
	}
	todo := 0
	for _, t := range tasks {
		if !state.OK[taskfarm.Key{Hash: t.Hash, Occ: t.Occ}] {
			todo++
		}
	}
	if todo == 0 { // nothing to run: no block to start
		sum := taskfarm.Summary{Total: len(tasks), Skipped: len(tasks)}
		sum.Write(stderr)
		return nil
	}

	dir, err := os.Getwd()
	if err != nil {
		return err
	}
	if f.outputDir != "" {
		if f.outputDir, err = filepath.Abs(f.outputDir); err != nil {
			return err
		}
		if err := os.MkdirAll(f.outputDir, 0o777); err != nil {
			return err
		}
	}
	opt := frontend.Options{
		NP:       f.np,
		Slots:    f.slots,
		Launcher: launch.MPIRun{Path: f.mpirun, ExtraArgs: strings.Fields(f.mpirunArgs)},
		Logger:   log,
	}
	if err := f.blocks.apply(&opt, f.np, fs.Changed("np"), log); err != nil {
		return usageErr("%v", err)
	}
	ex, err := frontend.Start(ctx, opt)
	if err != nil {
		return err
	}
	sum, err := taskfarm.Run(ctx, ex, tasks, state, j, taskfarm.Config{
		Retries:   f.retries,
		Walltime:  f.walltime,
		KeepGoing: f.keepGoing,
		OutputDir: f.outputDir,
		Dir:       dir,
		Stdout:    taskOut,
		Stderr:    taskErr,
		Progress:  prog,
	})
	if cerr := ex.Close(); cerr != nil {
		log.Warn("closing the block", "err", cerr)
	}
	if j != nil {
		if jerr := j.Close(); jerr != nil && err == nil {
			err = jerr
		}
	}
	if err != nil {
		return err
	}
	sum.Write(stderr)
	if !sum.OK() {
		return errTasksFailed
	}
	return nil
}

// input is what a run reads: the command lines (or templates), the
// argument lines (nil: none), and the file the journal goes beside.
type input struct {
	commands, args []taskfarm.Line
	commandsName   string
	journalFor     string // "" when the input is stdin or the command line
}

// readInput reads the command and argument lines that the flags and
// positional arguments name. A mistake on the command line is a
// *usageError.
func readInput(f runFlags, pos, listed []string, haveList bool, stdin io.Reader) (input, error) {
	var in input
	usage := func(format string, a ...any) error {
		return &usageError{fmt.Sprintf(format, a...)}
	}
	file := ""
	if len(pos) == 1 {
		file = pos[0]
	}
	stdinUsed := false
	readFile := func(name string, commands bool) ([]taskfarm.Line, error) {
		var r io.Reader = stdin
		if name == "-" || name == "" {
			if stdinUsed {
				return nil, usage("standard input can be read only once")
			}
			stdinUsed = true
		} else {
			fh, err := os.Open(name)
			if err != nil {
				return nil, err
			}
			defer fh.Close()
			r = fh
		}
		lines, err := taskfarm.ReadLines(r, commands)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", displayName(name), err)
		}
		return lines, nil
	}
	var err error
	if f.command != "" {
		if file != "" && (haveList || f.argsFile != "") {
			return in, usage("with --command, give the arguments once: as FILE, with --args or after :::")
		}
		in.commands = []taskfarm.Line{{N: 1, Text: f.command}}
		in.commandsName = "--command"
		switch {
		case haveList:
			in.args = make([]taskfarm.Line, 0, len(listed))
			for i, a := range listed {
				in.args = append(in.args, taskfarm.Line{N: i + 1, Text: a})
			}
		default:
			name := f.argsFile
			if name == "" {
				name = file
			}
			if in.args, err = readFile(name, false); err != nil {
				return in, err
			}
			if name != "-" && name != "" {
				in.journalFor = name
			}
		}
		if in.args == nil {
			in.args = []taskfarm.Line{}
		}
		return in, nil
	}
	if in.commands, err = readFile(file, true); err != nil {
		return in, err
	}
	in.commandsName = displayName(file)
	if file != "-" && file != "" {
		in.journalFor = file
	}
	switch {
	case haveList:
		in.args = []taskfarm.Line{}
		for i, a := range listed {
			in.args = append(in.args, taskfarm.Line{N: i + 1, Text: a})
		}
	case f.argsFile != "":
		if in.args, err = readFile(f.argsFile, false); err != nil {
			return in, err
		}
		if in.args == nil {
			in.args = []taskfarm.Line{}
		}
	}
	return in, nil
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func displayName(name string) string {
	if name == "" || name == "-" {
		return "standard input"
	}
	return name
}

// journalPath is the journal's path: --journal, or beside the input file.
func journalPath(f runFlags, input string) string {
	if f.journal != "" {
		return f.journal
	}
	if input == "" {
		return ""
	}
	return input + taskfarm.JournalSuffix
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	fh, ok := w.(*os.File)
	return ok && term.IsTerminal(int(fh.Fd()))
}
