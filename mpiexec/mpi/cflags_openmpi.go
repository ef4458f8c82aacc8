//go:build cgo && !nompi && !mpich

package mpi

// #cgo pkg-config: ompi
import "C"

// Family is the MPI implementation this binding is built against: "openmpi"
// (the default, pkg-config ompi), "mpich" (-tags mpich, pkg-config mpich)
// or "none" (-tags nompi, or cgo off). The program must be launched by the
// same family's mpirun; launch.Built mirrors it for the front end.
const Family = "openmpi"
