// Package provider gets blocks from where they run: a Provider turns a
// BlockSpec (the launch command of one block, the environment its ranks
// need, and the resources to ask for) into a Job, on this machine (Local)
// or on a batch system (Slurm, PBSPro), reports how its jobs stand, and
// cancels them.
//
// The model is Parsl's. A block is one launch of the executor: one mpirun
// (or srun) job whose rank 0 dials the front end back and names itself in
// the handshake (RANKFARM_BLOCK). The front end owns the blocks: it decides
// when to ask for one (Submit), watches them (Status, polled every few
// seconds — a batch system does not call back), and gives them up (Cancel,
// after draining). A provider keeps no policy of its own: it does not retry,
// scale or decide that a block is lost; it says what the batch system said,
// in the batch system's own words (JobStatus.Message), so that the front
// end can decide and tell the user.
//
// A batch provider writes a job script per block into the run directory,
// RUNDIR/<block>.sbatch or RUNDIR/<block>.pbs, and keeps it there: it is
// meant to be read. The script holds the scheduler's directives, the
// worker-init snippet, an export line per variable of BlockSpec.Env and the
// launch command. The run's token is never written into a script nor passed
// on a command line: only the path of the token file (RANKFARM_TOKEN_FILE)
// is, and the file must be on a filesystem the compute nodes see.
//
// Launchers build the launch command that goes into a job: launch.MPIRun
// for mpirun (Open MPI or MPICH), Srun for srun --mpi=pmix inside a Slurm
// allocation, and Single for a program that starts once, without MPI.
// Command turns a launcher's *exec.Cmd into BlockSpec.Command.
package provider
