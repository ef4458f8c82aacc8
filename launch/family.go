package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Family is an MPI implementation family. The family of the launcher decides
// its flags, and it must match the family of the binding the launched
// program was built with: an Open MPI mpirun cannot start an MPICH program's
// ranks as one job, nor the other way round.
type Family string

// The families. Detect is the zero value: MPIRun then finds the family out.
const (
	Detect  Family = ""        // unknown: MPIRun detects it
	OpenMPI Family = "openmpi" // Open MPI: mpirun, mpirun.openmpi, orterun
	MPICH   Family = "mpich"   // MPICH and its Hydra mpiexec (also MVAPICH, Intel MPI)
	NoMPI   Family = "none"    // a binary built without MPI (nompi tag, or cgo off)
)

// Built is the MPI family of this binary's mpiexec/mpi binding, chosen by
// the same build tags: OpenMPI by default, MPICH with -tags mpich, NoMPI
// with -tags nompi or CGO_ENABLED=0. It equals mpi.Family.
const Built = built

// GoBuildFlags returns the flags of go build (or go test) that give a
// program the MPI binding of family f: none for Open MPI, the default;
// -tags mpich for MPICH; -tags nompi for none. A test that builds a program
// to run under MPIRun{} builds it with Built.GoBuildFlags(), so that its
// binding matches the launcher that MPIRun picks.
func (f Family) GoBuildFlags() []string {
	switch f {
	case MPICH:
		return []string{"-tags", "mpich"}
	case NoMPI:
		return []string{"-tags", "nompi"}
	}
	return nil
}

// launcherNames lists the launchers to look for on $PATH, best first, for a
// program whose binding is of family f.
func launcherNames(f Family) []string {
	switch f {
	case OpenMPI:
		return []string{"mpirun.openmpi", "mpiexec.openmpi", "mpirun", "mpiexec"}
	case MPICH:
		return []string{"mpirun.mpich", "mpiexec.mpich", "mpiexec.hydra", "mpiexec", "mpirun"}
	default:
		return []string{"mpirun", "mpiexec"}
	}
}

// familyOfName tells the family from a launcher's file name alone, as
// Debian and the upstream builds name them; Detect when the name says
// nothing (mpirun, mpiexec).
func familyOfName(path string) Family {
	base := filepath.Base(path)
	switch {
	case strings.Contains(base, "openmpi"), base == "orterun", base == "prterun":
		return OpenMPI
	case strings.Contains(base, "mpich"), strings.Contains(base, "hydra"):
		return MPICH
	}
	return Detect
}

// FamilyOfVersion tells the family from what `mpirun --version` printed:
// Open MPI says "mpirun (Open MPI) 4.1.4" (or "(OpenRTE)" in 4.x), MPICH's
// Hydra says "HYDRA build details". It returns Detect when it cannot tell.
func FamilyOfVersion(out string) Family {
	switch {
	case strings.Contains(out, "HYDRA"), strings.Contains(out, "MPICH"), strings.Contains(out, "Intel(R) MPI"):
		return MPICH
	case strings.Contains(out, "Open MPI"), strings.Contains(out, "OpenRTE"), strings.Contains(out, "open-mpi.org"):
		return OpenMPI
	}
	return Detect
}

// ErrNoLauncher is the error of an MPIRun that finds no launcher on $PATH.
var ErrNoLauncher = errors.New("launch: no MPI launcher on $PATH")

// Hooks replaced in tests.
var (
	lookPath = exec.LookPath
	// versionOf runs path --version and returns its output.
	versionOf = func(path string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, path, "--version")
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		return out.String(), err
	}
	// self is the running program, to tell whether a block re-runs it.
	self = os.Executable
)

// versions caches the family that `--version` showed, per launcher path.
var versions sync.Map // string → Family

// familyOf tells the family of the launcher at path: by its name, else
// by its own and its symlink target's names, else by its --version output.
func familyOf(path string) (Family, error) {
	if f := familyOfName(path); f != Detect {
		return f, nil
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		if f := familyOfName(real); f != Detect {
			return f, nil
		}
	}
	if f, ok := versions.Load(path); ok {
		return f.(Family), nil
	}
	out, err := versionOf(path)
	f := FamilyOfVersion(out)
	if f == Detect {
		if err == nil {
			err = errors.New("neither Open MPI nor MPICH in its --version output")
		}
		return Detect, fmt.Errorf("launch: tell the MPI family of %s: %w", path, err)
	}
	versions.Store(path, f)
	return f, nil
}

// Resolve tells which launcher Command runs and whose flags it passes.
// Without a Path it looks on $PATH for the launcher of the family (Family,
// or else Built): mpirun.openmpi then mpirun for Open MPI, mpirun.mpich,
// mpiexec.hydra then mpiexec for MPICH. Without a Family it tells the
// family from the launcher's name or its --version output, and falls back
// to Built (Open MPI for a program without MPI) when that says nothing.
func (m MPIRun) Resolve() (Family, string, error) { return m.resolve(Built) }

// resolve is Resolve for a program whose binding is of family built.
func (m MPIRun) resolve(built Family) (Family, string, error) {
	switch m.Family {
	case Detect, OpenMPI, MPICH:
	default:
		return Detect, "", fmt.Errorf("launch: MPIRun.Family must be %q, %q or empty, not %q", OpenMPI, MPICH, m.Family)
	}
	want := m.Family
	if want == Detect {
		want = built
	}
	path := m.Path
	if path == "" {
		names := launcherNames(want)
		for _, n := range names {
			if p, err := lookPath(n); err == nil {
				path = p
				break
			}
		}
		if path == "" {
			return Detect, "", fmt.Errorf("%w (looked for %s)%s", ErrNoLauncher, strings.Join(names, ", "), installHint(want))
		}
	}
	if m.Family != Detect {
		return m.Family, path, nil
	}
	f, err := familyOf(path)
	if err != nil {
		if want != NoMPI {
			return want, path, nil
		}
		return OpenMPI, path, nil
	}
	return f, path, nil
}

// installHint names the Debian packages of the launcher of family f.
func installHint(f Family) string {
	switch f {
	case MPICH:
		return ": install MPICH (apt-get install mpich)"
	case OpenMPI:
		return ": install Open MPI (apt-get install openmpi-bin)"
	}
	return ""
}

// checkMatch refuses to start exe under a launcher of family f when exe is
// this very program and its binding (of family built) is of another family:
// each rank would come up as a world of its own.
func checkMatch(built, f Family, path, exe string) error {
	if built == NoMPI || f == built {
		return nil
	}
	me, err := self()
	if err != nil {
		return nil
	}
	a, err1 := os.Stat(me)
	b, err2 := os.Stat(exe)
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		return nil
	}
	return fmt.Errorf("launch: this program's MPI binding is %s but %s is %s's launcher: "+
		"set MPIRun.Path to the %s launcher (%s), or build with the binding of %s (%s)",
		built, path, f, built, launcherNames(built)[0], f, buildHint(f))
}

// buildHint tells how to build a binding of family f.
func buildHint(f Family) string {
	if f == MPICH {
		return "go build -tags mpich, make MPI=mpich"
	}
	return "the default build"
}
