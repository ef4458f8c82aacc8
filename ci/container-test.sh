#!/usr/bin/env bash
# container-test.sh: the steps of the test containers (containers/Dockerfile.*)
# and of the forge's end-to-end jobs, runnable outside a container as well.
#
#   [MPI=openmpi|mpich] ci/container-test.sh [--prepare] [COMMAND [ARG...]]
#
# COMMAND defaults to `make test MPI=$MPI`. It always runs as a non-root user,
# so Open MPI runs without any allow-run-as-root setting:
#
#   as root     make mpi (installs MPI with apt when it is missing; make
#               chromium likewise, where the Makefile has it), create the
#               user $RANKFARM_CI_USER (default rankfarm) when there is none,
#               copy this tree into $HOME/rankfarm of that user and run COMMAND
#               there as the user. With RANKFARM_CI_SLURM=1 it also starts the
#               single-node Slurm (make slurm) before and stops it after, so
#               that the user's provider tests run real jobs on it.
#   as a user   run COMMAND in this tree; make mpi then prints the apt-get
#               command to run when MPI is missing, and fails.
#
# --prepare does the same setup, then, instead of COMMAND, downloads the Go
# modules and builds bin/rankfarm as the user: the images' build step, so
# that `docker run` needs neither apt nor the module proxy.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
export MPI=${MPI:-openmpi}
user=${RANKFARM_CI_USER:-rankfarm}
prepare=0
if [ "${1:-}" = "--prepare" ]; then
	prepare=1
	shift
fi
if [ $# -eq 0 ]; then
	set -- make test MPI="$MPI"
fi

log() { echo "container-test: $*" >&2; }

case "$MPI" in
openmpi | mpich) ;;
*)
	log "MPI must be openmpi or mpich, not '$MPI'"
	exit 2
	;;
esac
command -v go >/dev/null 2>&1 || {
	log "no go on \$PATH ($PATH); install Go $(sed -n 's/^go //p' "$src/go.mod") from https://go.dev/dl/"
	exit 1
}
command -v make >/dev/null 2>&1 || {
	log "no make on \$PATH; install it: apt-get install -y make"
	exit 1
}
log "$(go version), MPI=$MPI, $(id -un) (uid $(id -u))"

if [ "$(id -u)" -ne 0 ]; then
	cd "$src"
	make --no-print-directory mpi MPI="$MPI"
	if [ "$prepare" -eq 1 ]; then
		go mod download
		exec make --no-print-directory build MPI="$MPI"
	fi
	exec "$@"
fi

# Root: install what the tests need (MPI, and the dashboard test's browser
# where the Makefile has that target), then hand over to the user.
make --no-print-directory -C "$src" mpi MPI="$MPI"
if make -C "$src" -n chromium >/dev/null 2>&1; then
	make --no-print-directory -C "$src" chromium
fi
if ! id -u "$user" >/dev/null 2>&1; then
	log "creating the user $user"
	useradd --create-home --user-group --shell /bin/bash "$user"
fi
home=$(getent passwd "$user" | cut -d: -f6)
tmphome=""
if [ -z "$home" ] || ! runuser -u "$user" -- test -d "$home" -a -w "$home"; then
	# A user without a home of their own (nobody): a temporary one.
	tmphome=$(mktemp -d /tmp/rankfarm-ci-home.XXXXXX)
	chown "$user:" "$tmphome"
	home=$tmphome
fi
work=$home/rankfarm

slurm=0
cleanup() {
	local rc=$?
	if [ "$slurm" -eq 1 ]; then
		make --no-print-directory -C "$src" slurm-stop || true
	fi
	if [ -n "$tmphome" ]; then
		# The module cache is read-only; make it removable first.
		chmod -R u+w "$tmphome" 2>/dev/null || true
		rm -rf "$tmphome"
	fi
	exit "$rc"
}
trap cleanup EXIT

# A fresh copy owned by the user (.git too, so that go build stamps the
# version and git sees no foreign owner); the build and module caches stay
# in the user's home between runs.
log "copying $src to $work"
rm -rf "$work"
runuser -u "$user" -- mkdir -p "$work"
tar -C "$src" --exclude=./bin -cf - . | runuser -u "$user" -- tar -C "$work" -xf -

if [ "${RANKFARM_CI_SLURM:-0}" = 1 ] && [ "$prepare" -eq 0 ]; then
	slurm=1
	make --no-print-directory -C "$src" slurm MPI="$MPI"
fi

# The user's $PATH: root's, less the directories the user cannot search
# (root's own, under /root), where a shell would say "Permission denied"
# instead of "not found".
userpath=""
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
	if [ -n "$d" ] && runuser -u "$user" -- test -d "$d" -a -x "$d"; then
		userpath=${userpath:+$userpath:}$d
	fi
done
if ! runuser -u "$user" -- env PATH="$userpath" go version >/dev/null 2>&1; then
	log "$user cannot run go from \$PATH ($userpath); install Go where every user can, e.g. /usr/local/go"
	exit 1
fi

# as_user runs its arguments in $work as the user, with a clean Go
# environment and none of the allow-run-as-root variables.
as_user() {
	runuser -u "$user" -- env \
		-u OMPI_ALLOW_RUN_AS_ROOT -u OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
		-u GOPATH -u GOCACHE -u GOMODCACHE -u GOENV -u XDG_CACHE_HOME -u XDG_CONFIG_HOME \
		-C "$work" HOME="$home" USER="$user" LOGNAME="$user" PATH="$userpath" MPI="$MPI" \
		"$@"
}

if [ "$prepare" -eq 1 ]; then
	as_user go mod download
	as_user make --no-print-directory build MPI="$MPI"
	exit 0
fi
log "running as $user in $work: $*"
as_user "$@"
