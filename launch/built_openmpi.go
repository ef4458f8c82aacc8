//go:build cgo && !nompi && !mpich

package launch

// built mirrors the build constraint of mpiexec/mpi's Open MPI binding.
const built = OpenMPI
