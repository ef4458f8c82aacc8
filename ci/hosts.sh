#!/usr/bin/env bash
# hosts.sh: a small test cluster on this one machine, for the tests that must
# cross host boundaries (a block over several hosts, the front end on another
# host, the queue on a network filesystem, faults of a whole host).
#
#   ci/hosts.sh start [N]  N compute hosts (default 4; 1 to 16) and a storage
#                          host; idempotent: a cluster of N healthy hosts is
#                          left as it is, anything else is torn down first
#   ci/hosts.sh stop       kill every process of every host, unmount, remove
#                          the namespaces, the bridge and the /etc/hosts lines
#   ci/hosts.sh status     say whether the cluster is up (exit 0) or not
#                          (exit 1); leftovers of a killed run (a namespace,
#                          the bridge, a mount, a stray process) are removed
#   ci/hosts.sh env        print the lines that point the tests at it:
#                          eval "$(ci/hosts.sh env)"
#
# Each compute host rfhostI has network, UTS, IPC and mount namespaces of its
# own: its own hostname, its own address 198.18.0.(10+I) on the bridge rfbr0,
# its own /dev/shm and /tmp (tmpfs). The rest of the file tree is the
# machine's, as a cluster's nodes share one image. The machine itself is the
# login host rflogin, 198.18.0.1 on the bridge: the front end runs there and
# so does mpirun.
#
# The storage host rfstore (198.18.0.2, a network namespace) runs an sshd
# whose SFTP serves $RANKFARM_HOSTS_DIR/export; every compute host and the
# login host mount it with sshfs (FUSE; this kernel has no NFS) at
# $RANKFARM_HOSTS_DIR/shared, with the kernel's attribute and directory entry
# caches on, as NFS would cache. Paths under it are the same on every host.
#
# $RANKFARM_HOSTS_DIR/bin/rsh is an rsh agent: `rsh [options] HOST CMD...`
# runs CMD with /bin/sh inside HOST's namespaces, as ssh would. Open MPI takes
# it as --mca plm_rsh_agent, MPICH's Hydra as -launcher ssh -launcher-exec.
#
# Addresses come only from 198.18.0.0/15 (RFC 2544's benchmarking range) and
# live only inside namespaces this script made. It needs root; as another
# user it says so and fails. It installs what it needs with apt (iproute2,
# util-linux, openssh-server, openssh-client, sshfs) when missing.
set -euo pipefail

dir=${RANKFARM_HOSTS_DIR:-/run/rankfarm-hosts}
ns=$dir/ns
bridge=rfbr0
net=198.18.0
login_addr=$net.1
store_addr=$net.2
pkgs="iproute2 util-linux openssh-server openssh-client sshfs fuse3 psmisc"
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
hosts_tag="# rankfarm-hosts"

log() { echo "hosts.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		log "the test cluster needs root (namespaces, a bridge, mounts); run:"
		have_packages || log "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $pkgs"
		log "  sudo RANKFARM_HOSTS_DIR=$dir $self $1"
		exit 1
	fi
}

have_packages() {
	command -v ip >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 &&
		command -v unshare >/dev/null 2>&1 && [ -x /usr/sbin/sshd ] &&
		command -v ssh-keygen >/dev/null 2>&1 && command -v sshfs >/dev/null 2>&1 &&
		command -v fusermount3 >/dev/null 2>&1
}

install_packages() {
	have_packages && return 0
	log "installing $pkgs"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $pkgs >/dev/null
	have_packages || die "the packages did not install: $pkgs"
}

# The hosts that exist now, from their network namespaces.
host_names() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^rfhost[0-9]+$' | sort -V || true; }

count() { cat "$dir/count" 2>/dev/null || echo 0; }

# in HOST CMD...: run CMD inside every namespace of HOST.
in_host() {
	local h=$1
	shift
	nsenter --net="/run/netns/$h" --uts="$ns/$h.uts" --ipc="$ns/$h.ipc" --mount="$ns/$h.mnt" "$@"
}

# pids_of HOST: every process whose network namespace is HOST's.
pids_of() {
	local h=$1 want p
	want=$(stat -L -c %i "/run/netns/$h" 2>/dev/null) || return 0
	for p in /proc/[0-9]*; do
		[ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" = "$want" ] && echo "${p#/proc/}"
	done
	return 0
}

# sshfs_opts: the mount options of every host. The keep-alive gives a
# stalled storage host 30 s before the mount gives up and fails the calls in
# flight with EIO; an NFS hard mount would wait, and a 5 s stall failed a
# task's close() with ServerAliveInterval=2,ServerAliveCountMax=3.
sshfs_opts() {
	echo "IdentityFile=$dir/ssh/id,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR,BatchMode=yes,cache=yes,cache_timeout=1,attr_timeout=1,entry_timeout=1,negative_timeout=1,ServerAliveInterval=5,ServerAliveCountMax=6,allow_other,reconnect"
}

write_agent() {
	mkdir -p "$dir/bin"
	cat >"$dir/bin/rsh.tmp" <<EOF
#!/bin/sh
# The rsh agent of rankfarm's test cluster (written by ci/hosts.sh): runs a
# command inside a host's namespaces as ssh would run it on that host.
# usage: rsh [-x] [-o OPT] [-l USER] [-p PORT] [-i FILE] HOST CMD...
ns=$ns
EOF
	cat >>"$dir/bin/rsh.tmp" <<'EOF'
while [ $# -gt 0 ]; do
	case "$1" in
	-o | -l | -p | -i | -F | -E) shift 2 ;;
	-*) shift ;;
	*) break ;;
	esac
done
if [ $# -lt 1 ]; then
	echo "rsh: usage: rsh [options] HOST [CMD...]" >&2
	exit 255
fi
host=${1%%.*}
shift
case "$host" in
*/* | "") host=invalid ;;
esac
if [ ! -e "/run/netns/$host" ] || [ ! -e "$ns/$host.mnt" ]; then
	echo "rsh: no host named '$host' in the test cluster (ci/hosts.sh status)" >&2
	exit 255
fi
if [ "$(id -u)" -eq 0 ]; then
	export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
[ $# -gt 0 ] || set -- exec /bin/sh
exec nsenter --net="/run/netns/$host" --uts="$ns/$host.uts" --ipc="$ns/$host.ipc" --mount="$ns/$host.mnt" --wd=/ /bin/sh -c "$*"
EOF
	chmod 0755 "$dir/bin/rsh.tmp"
	mv "$dir/bin/rsh.tmp" "$dir/bin/rsh"
}

start_storage() {
	mkdir -p "$dir/ssh" "$dir/export" /run/sshd
	chmod 0700 "$dir/ssh"
	chmod 0755 "$dir/export"
	[ -s "$dir/ssh/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh/host_key"
	[ -s "$dir/ssh/id" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh/id"
	cp "$dir/ssh/id.pub" "$dir/ssh/authorized_keys"
	cat >"$dir/ssh/sshd_config" <<EOF
# The storage host of rankfarm's test cluster (written by ci/hosts.sh).
ListenAddress $store_addr
Port 22
HostKey $dir/ssh/host_key
AuthorizedKeysFile $dir/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $dir/sshd.pid
Subsystem sftp internal-sftp
MaxStartups 64
MaxSessions 64
EOF
	ip netns add rfstore
	link_host rfstore "$store_addr"
	ip netns exec rfstore /usr/sbin/sshd -f "$dir/ssh/sshd_config" -E "$dir/sshd.log"
	local i
	for i in $(seq 1 100); do
		ip netns exec rfstore bash -c "exec 3<>/dev/tcp/$store_addr/22" 2>/dev/null && return 0
		sleep 0.05
	done
	die "the storage host's sshd did not come up; see $dir/sshd.log"
}

# link_host NS ADDR: a veth pair from the bridge into NS, eth0 there.
link_host() {
	local h=$1 addr=$2
	ip link add "v$h" type veth peer name eth0 netns "$h"
	ip link set "v$h" master "$bridge" up
	ip -n "$h" addr add "$addr/24" dev eth0
	ip -n "$h" link set eth0 up
	ip -n "$h" link set lo up
	ip -n "$h" route add default via "$login_addr"
}

# mount_shared [HOST]: mount the storage host's export at $dir/shared, in
# HOST's mount namespace or else the login host's.
mount_shared() {
	local h=${1:-}
	local cmd=(sshfs "root@$store_addr:$dir/export" "$dir/shared" -o "$(sshfs_opts)")
	if [ -n "$h" ]; then
		in_host "$h" "${cmd[@]}"
	else
		mkdir -p "$dir/shared"
		"${cmd[@]}"
	fi
}

start_host() {
	local i=$1 h=rfhost$1
	ip netns add "$h"
	link_host "$h" "$net.$((10 + i))"
	touch "$ns/$h.uts" "$ns/$h.ipc" "$ns/$h.mnt"
	# The mount namespace is made before the login host mounts the shared
	# directory: each host mounts it for itself.
	unshare --uts="$ns/$h.uts" --ipc="$ns/$h.ipc" --mount="$ns/$h.mnt" --propagation private \
		/bin/sh -c "hostname $h && mount -t tmpfs -o mode=1777,size=4g rfshm /dev/shm && mount -t tmpfs -o mode=1777,size=4g rftmp /tmp"
	mount_shared "$h"
}

hosts_file() {
	local n=$1 i tmp
	tmp=$(mktemp /etc/hosts.rankfarm.XXXXXX)
	grep -v "$hosts_tag" /etc/hosts >"$tmp" || true
	{
		echo "$login_addr rflogin $hosts_tag"
		echo "$store_addr rfstore $hosts_tag"
		for i in $(seq 1 "$n"); do
			echo "$net.$((10 + i)) rfhost$i $hosts_tag"
		done
	} >>"$tmp"
	chmod 0644 "$tmp"
	# /etc/hosts may be a bind mount (containers): write it in place.
	cat "$tmp" >/etc/hosts
	rm -f "$tmp"
}

start() {
	local n=$1
	install_packages
	if is_up && [ "$(count)" = "$n" ]; then
		log "already up: $n hosts"
		return 0
	fi
	teardown quiet
	mkdir -p "$dir" "$ns" "$dir/shared"
	# Namespace handles must live on a private mount.
	mountpoint -q "$ns" || mount --bind "$ns" "$ns"
	mount --make-private "$ns"
	ip link add "$bridge" type bridge
	ip addr add "$login_addr/24" dev "$bridge"
	ip link set "$bridge" up
	start_storage
	write_agent
	local i
	for i in $(seq 1 "$n"); do
		start_host "$i"
	done
	mount_shared
	hosts_file "$n"
	echo "$n" >"$dir/count"
	check || die "the cluster did not come up whole"
	log "up: $n hosts (rfhost1..rfhost$n), shared directory $dir/shared"
}

# check: every host answers with its own name, sees the shared directory and
# reaches the others.
check() {
	local n h probe
	n=$(count)
	[ "$n" -gt 0 ] || return 1
	[ -e /run/netns/rfstore ] && [ -x "$dir/bin/rsh" ] || return 1
	mountpoint -q "$dir/shared" || return 1
	probe=".probe.$$"
	echo ok >"$dir/export/$probe"
	for h in $(seq 1 "$n"); do
		h=rfhost$h
		# A host whose link a test took down and never brought back
		# (the test was killed) is not healthy.
		if [ ! -e "/run/netns/$h" ] || ! ip -n "$h" link show eth0 2>/dev/null | grep -q 'state UP'; then
			rm -f "$dir/export/$probe"
			return 1
		fi
		if [ "$("$dir/bin/rsh" "$h" "hostname; cat $dir/shared/$probe" 2>/dev/null | tr '\n' ' ')" != "$h ok " ]; then
			rm -f "$dir/export/$probe"
			return 1
		fi
	done
	rm -f "$dir/export/$probe"
	return 0
}

is_up() { [ -d "$dir" ] && check 2>/dev/null; }

# kill_host NS: SIGKILL every process of NS, repeatedly until none is left.
kill_host() {
	local h=$1 i pids
	for i in $(seq 1 50); do
		pids=$(pids_of "$h")
		[ -z "$pids" ] && return 0
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 0.05
	done
	log "processes of $h outlived SIGKILL: $(pids_of "$h" | tr '\n' ' ')"
}

leftovers() {
	[ -n "$(host_names)" ] || [ -e /run/netns/rfstore ] || ip link show "$bridge" >/dev/null 2>&1 ||
		mountpoint -q "$dir/shared" 2>/dev/null || grep -q "$hosts_tag" /etc/hosts 2>/dev/null ||
		mountpoint -q "$ns" 2>/dev/null
}

teardown() {
	local quiet=${1:-} h
	if ! leftovers; then
		return 0
	fi
	[ -n "$quiet" ] || log "tearing down"
	if mountpoint -q "$dir/shared" 2>/dev/null; then
		fusermount3 -u -z "$dir/shared" 2>/dev/null || umount -l "$dir/shared" 2>/dev/null || true
	fi
	for h in $(host_names) rfstore; do
		[ -e "/run/netns/$h" ] || continue
		kill_host "$h"
		ip link del "v$h" 2>/dev/null || true
		ip netns del "$h" 2>/dev/null || true
	done
	if [ -d "$ns" ]; then
		for h in "$ns"/*.uts "$ns"/*.ipc "$ns"/*.mnt; do
			[ -e "$h" ] || continue
			umount "$h" 2>/dev/null || umount -l "$h" 2>/dev/null || true
			rm -f "$h"
		done
		umount -l "$ns" 2>/dev/null || true
	fi
	ip link del "$bridge" 2>/dev/null || true
	if grep -q "$hosts_tag" /etc/hosts 2>/dev/null; then
		local tmp
		tmp=$(mktemp)
		grep -v "$hosts_tag" /etc/hosts >"$tmp" || true
		cat "$tmp" >/etc/hosts
		rm -f "$tmp"
	fi
	rm -f "$dir/count" "$dir/sshd.pid"
}

stop() {
	teardown
	log "stopped"
}

envlines() {
	echo "export RANKFARM_HOSTS_DIR=$dir"
	echo "export RANKFARM_HOSTS=$(seq -s, -f 'rfhost%g' 1 "$(count)")"
	echo "export RANKFARM_HOSTS_AGENT=$dir/bin/rsh"
	echo "export RANKFARM_HOSTS_SHARED=$dir/shared"
	echo "export RANKFARM_HOSTS_LOGIN=$login_addr"
	echo "export RANKFARM_HOSTS_NETWORK=$net.0/24"
}

# One start, stop or status at a time: test binaries may call this at once.
lock() {
	mkdir -p "$dir"
	exec 9>"$dir/.lock"
	flock 9
}

case "${1:-}" in
start)
	n=${2:-4}
	case "$n" in
	[1-9] | 1[0-6]) ;;
	*) die "start takes a number of hosts from 1 to 16, not '$n'" ;;
	esac
	need_root start
	lock
	# A start that fails half-way leaves nothing behind.
	# shellcheck disable=SC2154 # rc is set inside the trap
	trap 'rc=$?; [ $rc -eq 0 ] || { log "start failed; tearing down"; teardown quiet; }; exit $rc' EXIT
	start "$n" 9>&-
	trap - EXIT
	;;
stop)
	need_root stop
	lock
	stop
	;;
status)
	if [ "$(id -u)" -ne 0 ]; then
		[ -x "$dir/bin/rsh" ] && [ -s "$dir/count" ] && echo "up (not checked: not root): $(count) hosts" && exit 0
		echo "down"
		exit 1
	fi
	lock
	if is_up; then
		echo "up: $(count) hosts, rfhost1..rfhost$(count), shared directory $dir/shared"
		exit 0
	fi
	if leftovers; then
		log "removing the leftovers of an earlier cluster"
		teardown quiet
	fi
	echo "down"
	exit 1
	;;
env)
	[ -s "$dir/count" ] || die "the cluster is down: run '$self start' first"
	envlines
	;;
*)
	echo "usage: $0 start [N] | stop | status | env" >&2
	exit 2
	;;
esac
