//go:build cgo && !nompi && mpich

package launch

// built mirrors the build constraint of mpiexec/mpi's MPICH binding.
const built = MPICH
