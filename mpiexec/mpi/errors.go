package mpi

import (
	"errors"
	"fmt"
)

// ErrNoMPI is returned (wrapped) by Start and Init when the package was built
// with the nompi tag and so has no MPI library behind it.
var ErrNoMPI = errors.New("mpi: built without MPI (tag nompi)")

// ErrClosed is returned (wrapped) by Endpoint.Send after Close or Abort has
// begun.
var ErrClosed = errors.New("mpi: endpoint closed")

// ErrStarted is returned (wrapped) by a second Start in the same process: MPI
// can be initialised only once per process, even after MPI_Finalize.
var ErrStarted = errors.New("mpi: already started in this process")

// ErrInvalid is returned (wrapped) for an argument MPI would refuse: a
// destination outside 0..Size-1, a tag outside 0..TagUB, or a message longer
// than MaxMessage bytes.
var ErrInvalid = errors.New("mpi: invalid argument")

// MaxMessage is the largest message in bytes: MPI counts are C ints.
const MaxMessage = 1<<31 - 1

// Error is an error code returned by an MPI call. Callers can branch on it
// with errors.As.
type Error struct {
	Op   string // the MPI function, e.g. "MPI_Isend"
	Code int    // the MPI error code (implementation-specific values)
	Msg  string // the text of MPI_Error_string
}

// Error returns "mpi: OP: MSG (code N)".
func (e *Error) Error() string {
	return fmt.Sprintf("mpi: %s: %s (code %d)", e.Op, e.Msg, e.Code)
}

// ThreadLevel is an MPI thread support level, as asked of and granted by Init.
type ThreadLevel int

// The MPI thread levels, in increasing order (MPI_THREAD_*).
const (
	ThreadSingle     ThreadLevel = iota // MPI_THREAD_SINGLE
	ThreadFunneled                      // MPI_THREAD_FUNNELED: only the thread that called Init makes MPI calls
	ThreadSerialized                    // MPI_THREAD_SERIALIZED
	ThreadMultiple                      // MPI_THREAD_MULTIPLE
)

// String returns the MPI name of the level.
func (l ThreadLevel) String() string {
	switch l {
	case ThreadSingle:
		return "MPI_THREAD_SINGLE"
	case ThreadFunneled:
		return "MPI_THREAD_FUNNELED"
	case ThreadSerialized:
		return "MPI_THREAD_SERIALIZED"
	case ThreadMultiple:
		return "MPI_THREAD_MULTIPLE"
	}
	return fmt.Sprintf("ThreadLevel(%d)", int(l))
}

// AnySource and AnyTag are the wildcards of Improbe. They are rankfarm's own
// values (MPICH and OpenMPI spell MPI_ANY_SOURCE differently) and are
// translated to the library's at the call.
const (
	AnySource = -1
	AnyTag    = -1
)

// Status describes a message found by Improbe.
type Status struct {
	Source int // the sender's rank in MPI_COMM_WORLD
	Tag    int // the message tag
	Count  int // the message length in bytes
}
