//go:build !mpich

package mpi

// launcher names the mpirun to use and the flags it needs for a run of np
// ranks on a small machine.
func launcher(np string) (names []string, args []string) {
	return []string{"mpirun.openmpi", "mpirun"}, []string{"--oversubscribe", "-np", np}
}
