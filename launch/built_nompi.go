//go:build nompi || !cgo

package launch

// built mirrors the build constraint of mpiexec/mpi's nompi stub.
const built = NoMPI
