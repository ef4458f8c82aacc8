#!/usr/bin/env bash
# slurm.sh: a real single-node Slurm for rankfarm's tests, run as plain
# background daemons (munged, slurmctld, slurmd) without systemd or cgroups.
#
#   ci/slurm.sh start   install the packages with apt when they are missing,
#                       write the configuration, start the daemons and wait
#                       until the node is idle; idempotent
#   ci/slurm.sh stop    cancel this cluster's jobs and stop the daemons that
#                       start started, by their pid files; idempotent
#   ci/slurm.sh status  say whether the cluster is up (exit 0) or not (exit 1)
#   ci/slurm.sh env     print the line that points Slurm's commands at it:
#                       eval "$(ci/slurm.sh env)"
#
# Everything it writes lives in $RANKFARM_SLURM_DIR (default
# /tmp/rankfarm-slurm): slurm.conf, the controller's state, the spool, logs
# and pid files. Slurm's commands find this cluster through SLURM_CONF, which
# `env` prints; the system's /etc/slurm is left alone.
#
# The node advertises $RANKFARM_SLURM_CPUS CPUs (default: the larger of 8
# and the real count; SlurmdParameters=config_overrides lets slurmd accept
# it), so that a test can run several blocks, each with more ranks than this
# machine has cores, as it would on a cluster.
#
# It needs root: slurmd starts jobs and munged owns the credentials. As
# another user it prints the commands to run and fails.
set -euo pipefail

dir=${RANKFARM_SLURM_DIR:-/tmp/rankfarm-slurm}
conf=$dir/slurm.conf
pkgs="slurm-wlm slurmctld slurmd slurm-client munge"
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

log() { echo "slurm.sh: $*" >&2; }

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		log "the Slurm daemons must run as root; run:"
		if ! have_packages; then
			log "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $pkgs"
		fi
		log "  sudo RANKFARM_SLURM_DIR=$dir $self $1"
		exit 1
	fi
}

have_packages() {
	command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 &&
		command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1
}

install_packages() {
	have_packages && return 0
	log "installing $pkgs"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $pkgs >/dev/null
	have_packages
}

# alive PID: the process exists and is not a zombie (a stopped daemon can
# linger as <defunct> for a while where no init reaps it).
alive() {
	local pid=$1 state
	[ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
	state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
	[ "$state" != Z ] && [ "$state" != X ]
}

pid_of() { [ -r "$1" ] && tr -dc '0-9' <"$1" || true; }

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
	if munge_ok; then
		return 0
	fi
	if [ ! -s /etc/munge/munge.key ]; then
		log "creating /etc/munge/munge.key"
		mungekey --create --keyfile=/etc/munge/munge.key
		chown munge:munge /etc/munge/munge.key
		chmod 0400 /etc/munge/munge.key
	fi
	mkdir -p /run/munge /var/log/munge /var/lib/munge
	chown munge:munge /run/munge /var/log/munge /var/lib/munge
	chmod 0755 /run/munge
	runuser -u munge -- /usr/sbin/munged 9>&-
	local i
	for i in $(seq 1 100); do
		if munge_ok; then
			# Remember that this script started it, so that stop stops it.
			pid_of /run/munge/munged.pid >"$dir/munged.pid"
			return 0
		fi
		sleep 0.05
	done
	log "munged did not come up"
	return 1
}

write_conf() {
	local host cpus mem real
	host=$(hostname -s)
	real=$(nproc)
	cpus=${RANKFARM_SLURM_CPUS:-$((real > 8 ? real : 8))}
	# RealMemory in MiB as slurmd measures it.
	mem=$(slurmd -C 2>/dev/null | sed -nE 's/.*RealMemory=([0-9]+).*/\1/p' | head -1)
	mem=${mem:-1000}
	mkdir -p "$dir/state" "$dir/spool" "$dir/log"
	chmod 0755 "$dir"
	cat >"$conf.tmp" <<EOF
# Written by rankfarm's ci/slurm.sh: a single-node test cluster.
ClusterName=rankfarm
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmdParameters=config_overrides
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
	mv "$conf.tmp" "$conf"
}

node_state() { SLURM_CONF=$conf sinfo -h -N -o %T 2>/dev/null | head -1; }

is_up() {
	[ -r "$conf" ] && alive "$(pid_of "$dir/slurmctld.pid")" && alive "$(pid_of "$dir/slurmd.pid")" &&
		SLURM_CONF=$conf scontrol ping 2>/dev/null | grep -q 'is UP'
}

wait_idle() {
	local i state=""
	for i in $(seq 1 300); do
		state=$(node_state)
		case "$state" in
		idle* | mixed* | allocated*) return 0 ;;
		esac
		sleep 0.1
	done
	log "the node did not become idle (state '$state'); see $dir/log/"
	tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
	return 1
}

start() {
	need_root start
	install_packages
	mkdir -p "$dir"
	if is_up; then
		wait_idle
		log "already up (SLURM_CONF=$conf)"
		return 0
	fi
	start_munge
	# A half-started cluster (one daemon died) is stopped before a fresh start.
	stop_daemons
	write_conf
	rm -f "$dir/log/slurmctld.log" "$dir/log/slurmd.log"
	# The daemons must not inherit the lock's descriptor (9), or they would
	# hold the lock for as long as they run.
	slurmctld -c -f "$conf" 9>&-
	slurmd -f "$conf" 9>&-
	wait_idle
	SLURM_CONF=$conf scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
	log "up (SLURM_CONF=$conf)"
}

# stop_pid FILE: SIGTERM the daemon FILE names, wait up to 15 s, then SIGKILL.
stop_pid() {
	local file=$1 pid i
	pid=$(pid_of "$file")
	if alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 150); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then
			log "$(basename "$file" .pid) ($pid) ignored SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$file"
}

stop_daemons() {
	stop_pid "$dir/slurmd.pid"
	stop_pid "$dir/slurmctld.pid"
}

stop() {
	need_root stop
	if is_up; then
		# Jobs' slurmstepd outlive slurmd by design: end them first.
		SLURM_CONF=$conf scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
		local i
		for i in $(seq 1 100); do
			[ -z "$(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null)" ] && break
			sleep 0.1
		done
	fi
	stop_daemons
	if [ -s "$dir/munged.pid" ]; then
		stop_pid "$dir/munged.pid"
	fi
	log "stopped"
}

# One start or stop at a time: test binaries of several packages may call
# this script at once.
lock() {
	mkdir -p "$dir"
	exec 9>"$dir/.lock"
	flock 9
}

case "${1:-}" in
start)
	need_root start
	lock
	start
	;;
stop)
	need_root stop
	lock
	stop
	;;
status)
	if is_up; then
		echo "up: SLURM_CONF=$conf, node $(node_state)"
	else
		echo "down"
		exit 1
	fi
	;;
env) echo "export SLURM_CONF=$conf" ;;
*)
	echo "usage: $0 start|stop|status|env" >&2
	exit 2
	;;
esac
