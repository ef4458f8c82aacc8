#!/usr/bin/env bash
# ensure-mpi.sh: make sure OpenMPI (default) or MPICH (MPI=mpich) and its
# development files are installed. As root it installs them with apt; as
# another user it prints the exact command to run and fails.
set -euo pipefail
mpi=${MPI:-openmpi}
case "$mpi" in
  openmpi) pkgs="openmpi-bin libopenmpi-dev pkg-config gcc libc6-dev"; pc=ompi; run=mpirun.openmpi ;;
  mpich)   pkgs="mpich libmpich-dev pkg-config gcc libc6-dev"; pc=mpich; run=mpirun.mpich ;;
  *) echo "ensure-mpi: MPI must be openmpi or mpich, not '$mpi'" >&2; exit 2 ;;
esac
if command -v "$run" >/dev/null 2>&1 && command -v gcc >/dev/null 2>&1 && pkg-config --exists "$pc" 2>/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-mpi: $mpi is missing; install it with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $pkgs" >&2
  exit 1
fi
echo "ensure-mpi: installing $pkgs" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $pkgs >/dev/null
command -v "$run" >/dev/null && pkg-config --exists "$pc"
