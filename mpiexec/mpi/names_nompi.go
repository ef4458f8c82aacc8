//go:build nompi || !cgo

package mpi

// GatherHosts would gather each node's host name to rank 0; in this nompi
// build it returns ErrNoMPI.
func GatherHosts(rank int, nodeOf []int) ([]string, error) { return nil, noMPI("MPI_Gatherv") }
