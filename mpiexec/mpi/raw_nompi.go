//go:build nompi || !cgo

package mpi

import "fmt"

// This file is the nompi stub, also used when cgo is off: the same API as the
// cgo binding, with no MPI behind it. Init fails with ErrNoMPI, so Start does
// too; the other raw calls report ErrNoMPI as well.

func noMPI(op string) error { return fmt.Errorf("mpi: %s: %w", op, ErrNoMPI) }

// Init would call MPI_Init_thread; in this nompi build it returns ErrNoMPI.
func Init(required ThreadLevel) (provided ThreadLevel, err error) {
	return 0, noMPI("MPI_Init_thread")
}

// Finalize would call MPI_Finalize; in this nompi build it returns ErrNoMPI.
func Finalize() error { return noMPI("MPI_Finalize") }

// Initialized reports false: a nompi build never initialises MPI.
func Initialized() (bool, error) { return false, nil }

// Finalized reports false: a nompi build never initialises MPI.
func Finalized() (bool, error) { return false, nil }

// WorldRank would call MPI_Comm_rank; in this nompi build it returns ErrNoMPI.
func WorldRank() (int, error) { return 0, noMPI("MPI_Comm_rank") }

// WorldSize would call MPI_Comm_size; in this nompi build it returns ErrNoMPI.
func WorldSize() (int, error) { return 0, noMPI("MPI_Comm_size") }

// TagUB would read MPI_TAG_UB; in this nompi build it returns ErrNoMPI.
func TagUB() (int, error) { return 0, noMPI("MPI_Comm_get_attr(MPI_TAG_UB)") }

// Abort would call MPI_Abort; in this nompi build it returns ErrNoMPI.
func Abort(code int) error { return noMPI("MPI_Abort") }

// NodeSplit would split MPI_COMM_WORLD by node; in this nompi build it
// returns ErrNoMPI.
func NodeSplit() (localRank, localSize, leader int, err error) {
	return 0, 0, 0, noMPI("MPI_Comm_split_type")
}

// AllgatherInt would gather one int from every rank; in this nompi build it
// returns ErrNoMPI.
func AllgatherInt(v int) ([]int, error) { return nil, noMPI("MPI_Allgather") }

// Message is a matched message (never produced in a nompi build).
type Message struct{}

// Improbe would call MPI_Improbe; in this nompi build it returns ErrNoMPI.
func Improbe(source, tag int) (m Message, st Status, found bool, err error) {
	return Message{}, Status{}, false, noMPI("MPI_Improbe")
}

// Mrecv would call MPI_Mrecv; in this nompi build it returns ErrNoMPI.
func Mrecv(m *Message, buf []byte) error { return noMPI("MPI_Mrecv") }

// Request is a send request (never produced in a nompi build).
type Request struct{}

// Isend would call MPI_Isend; in this nompi build it returns ErrNoMPI.
func Isend(data []byte, dest, tag int) (*Request, error) { return nil, noMPI("MPI_Isend") }

// Test would call MPI_Test; in this nompi build it returns ErrNoMPI.
func Test(r *Request) (bool, error) { return false, noMPI("MPI_Test") }

// The Endpoint's internals, never reached because Init fails.

type sendSet struct{}

func newSendSet(int) (*sendSet, error)         { return nil, ErrNoMPI }
func (s *sendSet) len() int                    { return 0 }
func (s *sendSet) full() bool                  { return true }
func (s *sendSet) post([]byte, int, int) error { return ErrNoMPI }
func (s *sendSet) testsome() (int, error)      { return 0, ErrNoMPI }
func (s *sendSet) free()                       {}

type waker struct{}

func newWaker() (*waker, error)           { return nil, ErrNoMPI }
func threadSetup()                        {}
func (w *waker) setup(bool) (bool, error) { return false, ErrNoMPI }
func (w *waker) wait(int64)               {}
func (w *waker) wake()                    {}
func (w *waker) ringPeers([]int32) int    { return 0 }
func (w *waker) close()                   {}

// builtWithMPI tells the tests whether a real MPI is linked.
const builtWithMPI = false

// Family is the MPI implementation this binding is built against: "openmpi"
// (the default, pkg-config ompi), "mpich" (-tags mpich, pkg-config mpich)
// or "none" (-tags nompi, or cgo off), as here.
const Family = "none"
