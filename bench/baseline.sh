#!/bin/bash
# baseline.sh — the work of labctl's benchmarked labs done by hand with
# unshare, ip netns, ip link, nsenter, systemd-nspawn and cgroupfs writes,
# so `make bench` can show what labctl costs on top. No labctl involved.
#
#   baseline.sh up   single|net|systemd|oom NAME   returns when ready
#   baseline.sh down single|net|systemd|oom NAME
#   baseline.sh clean                              remove every baseline leftover
#
# Everything lives under its own names: cgroups below
# <hierarchy>/labctl-bench-baseline/, network namespaces bb-*, state in
# /run/labctl-bench-baseline. Nothing is added to the machine's own network
# namespace: each veth pair is made inside a lab namespace with its peer
# created straight in the other one.
#
# Process starts dominate a shell script's time (several ms each on small
# VMs), so the script uses builtins wherever a builtin does the same job:
# it is meant as the lean way to do this work, not a strawman.
set -euo pipefail

CG=labctl-bench-baseline
RUN=/run/labctl-bench-baseline
ROOTFS=${LABCTL_ROOTFS:-/var/cache/labctl/rootfs/debian-v1}

die() {
	echo "baseline: $*" >&2
	exit 1
}

# nap SECONDS: sleep without starting a process (a read that times out on
# a pipe nobody writes).
exec {NAPFD}<> <(:)
nap() { read -r -t "$1" -u "$NAPFD" _ || true; }

# ROOTS: the hierarchies a host is placed in, as labctl does: on v1 memory,
# pids, cpu, cpuacct and freezer; on v2 the unified one. SDROOTS: what a
# systemd host needs besides (the named systemd hierarchy and, on a hybrid
# layout, cgroup2).
ROOTS=() SDROOTS=()
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
	ROOTS=(/sys/fs/cgroup)
else
	for c in memory pids cpu cpuacct freezer; do
		r=/sys/fs/cgroup/$c
		[ -L "$r" ] && r=/sys/fs/cgroup/$(readlink "$r") # cpu -> cpu,cpuacct
		[ -d "$r" ] && [[ " ${ROOTS[*]} " != *" $r "* ]] && ROOTS+=("$r")
	done
	[ -d /sys/fs/cgroup/systemd ] && SDROOTS+=(/sys/fs/cgroup/systemd)
	[ -e /sys/fs/cgroup/unified/cgroup.controllers ] && SDROOTS+=(/sys/fs/cgroup/unified)
fi

# dirs INST HOST [systemd]: sets DIRS to the host's cgroup directories.
dirs() {
	local r
	DIRS=()
	for r in "${ROOTS[@]}"; do DIRS+=("$r/$CG/$1/$2"); done
	if [ "${3:-0}" = 1 ]; then
		for r in "${SDROOTS[@]}"; do DIRS+=("$r/$CG/$1/$2"); done
	fi
	return 0
}

# mkcg INST HOST [systemd]: the host's cgroups, with MEM and PIDS limits
# written where each controller lives.
mkcg() {
	local d
	dirs "$@"
	mkdir -p "${DIRS[@]}"
	if [ "${ROOTS[0]}" = /sys/fs/cgroup ]; then # v2: delegate, then limit
		echo "+memory +pids +cpu" >"/sys/fs/cgroup/$CG/cgroup.subtree_control"
		echo "+memory +pids +cpu" >"/sys/fs/cgroup/$CG/$1/cgroup.subtree_control"
		d=${DIRS[0]}
		echo "$MEM" >"$d/memory.max"
		if [ -e "$d/memory.swap.max" ]; then echo 0 >"$d/memory.swap.max"; fi
		echo "$PIDS" >"$d/pids.max"
		return 0
	fi
	for d in "${DIRS[@]}"; do
		if [ -e "$d/memory.limit_in_bytes" ]; then
			echo "$MEM" >"$d/memory.limit_in_bytes"
			if [ -e "$d/memory.memsw.limit_in_bytes" ]; then echo "$MEM" >"$d/memory.memsw.limit_in_bytes"; fi
		fi
		if [ -e "$d/pids.max" ]; then echo "$PIDS" >"$d/pids.max"; fi
	done
}

# join INST HOST [systemd]: sets JOIN to shell code that moves the shell
# running it into the host's cgroups (v1 cannot start a process in one).
join() {
	local d
	dirs "$@"
	JOIN=""
	for d in "${DIRS[@]}"; do JOIN+="echo \$\$ >$d/cgroup.procs; "; done
}

# nspid1 PID: true if PID is PID 1 of its own pid namespace.
nspid1() {
	local f
	while read -r -a f; do
		if [ "${f[0]}" = NSpid: ]; then
			[ "${f[-1]}" = 1 ]
			return
		fi
	done </proc/"$1"/status 2>/dev/null
	return 1
}

# pid1 INST HOST: sets PID1 to the machine-side PID of the host's init.
pid1() {
	local p
	dirs "$1" "$2"
	while read -r p; do
		if nspid1 "$p"; then
			PID1=$p
			return
		fi
	done <"${DIRS[0]}/cgroup.procs"
	die "no init in host $2"
}

# start_host INST HOST HOSTNAME: a host as labctl builds one: a named
# netns, new pid/mount/uts/ipc/cgroup namespaces, a cgroup with limits,
# /proc, /sys, /tmp, a private /etc (overlay) with its own hosts and
# resolv.conf, lo up, and an init that stays. Returns when the init
# reports ready.
start_host() {
	local inst=$1 host=$2 name=$3 ns=bb-$1-$2 st=$RUN/$1/$2 line=""
	mkdir -p "$st/etc-upper" "$st/etc-work"
	mkcg "$inst" "$host"
	ip netns add "$ns"
	mkfifo "$st/ready"
	exec {ready}<>"$st/ready" # read-write: opening never blocks, a dead init never hangs us
	# The host's PID 1: private mounts, then wait forever.
	cat >"$st/init.sh" <<-EOF
		echo $name >/proc/sys/kernel/hostname
		mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
		mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
		mount -t overlay overlay -o lowerdir=/etc,upperdir=$st/etc-upper,workdir=$st/etc-work /etc
		rm -f /etc/hosts /etc/resolv.conf # a symlink must not be written through
		printf '127.0.0.1 localhost\n127.0.1.1 $name\n%s' "${HOSTS_EXTRA:-}" >/etc/hosts
		echo 'nameserver 127.0.0.53' >/etc/resolv.conf
		ip link set lo up
		echo ok >$st/ready
		exec sleep infinity
	EOF
	join "$inst" "$host"
	setsid bash -c "$JOIN exec nsenter --net=/run/netns/$ns \
		unshare --pid --mount --uts --ipc --cgroup --fork --mount-proc --propagation private \
		bash $st/init.sh" </dev/null >"$st/init.log" 2>&1 &
	read -r -t 30 -u "$ready" line || true
	exec {ready}<&-
	[ "$line" = ok ] || die "host $host did not start: $(<"$st/init.log")"
}

# in_host_bg INST HOST CMD...: start CMD in the background in all of the
# host's namespaces and cgroups.
in_host_bg() {
	local inst=$1 host=$2
	shift 2
	join "$inst" "$host"
	pid1 "$inst" "$host"
	setsid bash -c "$JOIN exec nsenter -t $PID1 -a \"\$@\"" bash "$@" </dev/null >/dev/null 2>&1 &
}

# stop_host INST HOST [systemd]: kill everything in the host's cgroups
# (the pid namespace dies with its init), remove them and the netns.
stop_host() {
	local inst=$1 host=$2 sd=${3:-0} d p left subs=()
	dirs "$inst" "$host" "$sd"
	if [ "$sd" = 1 ]; then
		# systemd makes cgroups below the host's: all of them, deepest first.
		mapfile -t subs < <(find "${DIRS[@]}" -depth -type d 2>/dev/null)
	else
		for d in "${DIRS[@]}"; do [ -d "$d" ] && subs+=("$d"); done
	fi
	for ((n = 0; n < 2000; n++)); do
		left=0
		for d in "${subs[@]}"; do
			while read -r p; do
				left=1
				kill -9 "$p" 2>/dev/null || true
			done <"$d/cgroup.procs"
		done
		[ $left = 0 ] && break
		nap 0.002
	done
	[ ${#subs[@]} = 0 ] || rmdir "${subs[@]}"
	ip netns del "bb-$inst-$host" 2>/dev/null || true
	rm -rf "${RUN:?}/$inst/$host"
}

# rm_parents INST: the instance's (and, when unused, the baseline's)
# cgroup parents and state directory.
rm_parents() {
	local r ds=()
	for r in "${ROOTS[@]}" "${SDROOTS[@]}"; do
		[ -d "$r/$CG/$1" ] && ds+=("$r/$CG/$1" "$r/$CG")
	done
	rmdir --ignore-fail-on-non-empty "${ds[@]}" "$RUN/$1" "$RUN" 2>/dev/null || true
}

# --- scenarios -------------------------------------------------------------

# single: first-look (one host, 96Mi, 48 pids, no fault).
up_single() {
	MEM=$((96 << 20)) PIDS=48 start_host "$1" app batch-01
}
down_single() {
	stop_host "$1" app
	rm_parents "$1"
}

# net: no-default-route (client - router - server, an HTTP service on
# server, the client's default route removed).
NET_HOSTS="10.213.1.2 client
10.213.1.1 router
10.213.2.2 server
"
up_net() {
	local i=$1 h st=$RUN/$1/server line=""
	for h in client router server; do
		MEM=$((256 << 20)) PIDS=256 HOSTS_EXTRA="$NET_HOSTS" start_host "$i" $h $h
	done
	ip -n "bb-$i-client" link add eth0 type veth peer name eth0 netns "bb-$i-router"
	ip -n "bb-$i-router" link add eth1 type veth peer name eth0 netns "bb-$i-server"
	ip -n "bb-$i-client" -b - <<-EOF
		addr add 10.213.1.2/24 dev eth0
		link set eth0 up
		route add default via 10.213.1.1
	EOF
	ip -n "bb-$i-router" -b - <<-EOF
		addr add 10.213.1.1/24 dev eth0
		addr add 10.213.2.1/24 dev eth1
		link set eth0 up
		link set eth1 up
	EOF
	ip -n "bb-$i-server" -b - <<-EOF
		addr add 10.213.2.2/24 dev eth0
		link set eth0 up
		route add default via 10.213.2.1
	EOF
	# ip_forward is per network namespace, resolved when the file is opened.
	nsenter --net="/run/netns/bb-$i-router" bash -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
	# The service: an HTTP server that says when it listens.
	mkfifo "$st/svc"
	exec {svc}<>"$st/svc"
	in_host_bg "$i" server perl -MIO::Socket::INET -e '
		$0 = "api";
		my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 16, ReuseAddr => 1) or die "listen: $!";
		open(my $r, ">", $ARGV[0]) or die; print $r "listening\n"; close $r;
		while (my $c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\napi ok"; close $c }' "$st/svc"
	read -r -t 30 -u "$svc" line || true
	exec {svc}<&-
	[ "$line" = listening ] || die "the service did not start"
	ip -n "bb-$i-client" route del default
}
down_net() {
	local h
	for h in server router client; do stop_host "$1" $h; done
	rm_parents "$1"
}

# systemd: exec-not-found (a booted systemd under systemd-nspawn with
# labctl's flags, a unit whose ExecStart does not exist, until systemd
# reports status 203).
up_systemd() {
	local i=$1 m=bb-$1-app st=$RUN/$1/app nspawn c leader="" state="" root
	mkdir -p "$st"
	MEM=$((256 << 20)) PIDS=256 mkcg "$i" app 1
	ip netns add "$m"
	join "$i" app 1
	setsid bash -c "$JOIN exec systemd-nspawn --quiet --register=no --keep-unit \
		--console=passive --machine=$m --hostname=queue-01 --directory=$ROOTFS \
		--volatile=overlay --network-namespace-path=/run/netns/$m --resolv-conf=off \
		--timezone=off --link-journal=no --boot systemd.firstboot=off systemd.hostname=queue-01" \
		</dev/null >"$st/nspawn.log" 2>&1 &
	nspawn=$!
	for ((n = 0; n < 6000; n++)); do # the container's PID 1: a child of nspawn
		read -r -a kids </proc/$nspawn/task/$nspawn/children 2>/dev/null || true
		for c in "${kids[@]}"; do nspid1 "$c" && leader=$c; done
		[ -n "$leader" ] && break
		nap 0.005
	done
	[ -n "$leader" ] || die "nspawn did not start: $(<"$st/nspawn.log")"
	echo "$leader" >"$st/leader"
	for ((n = 0; n < 3000; n++)); do
		state=$(nsenter -t "$leader" -a systemctl is-system-running 2>/dev/null || true)
		[ "$state" = running ] || [ "$state" = degraded ] && break
		nap 0.02
	done
	[ "$state" = running ] || [ "$state" = degraded ] || die "systemd did not boot (state $state)"
	root=/proc/$leader/root
	mkdir -p "$root/usr/local/bin"
	printf '#!/bin/sh\nwhile :; do date +%%s >/run/queue-worker.heartbeat; sleep 2; done\n' >"$root/usr/local/bin/queue-worker"
	chmod 755 "$root/usr/local/bin/queue-worker"
	printf '[Unit]\nDescription=Queue worker\n\n[Service]\nExecStart=/usr/local/sbin/queue-worker\n\n[Install]\nWantedBy=multi-user.target\n' \
		>"$root/etc/systemd/system/worker.service"
	nsenter -t "$leader" -a systemctl daemon-reload
	nsenter -t "$leader" -a systemctl enable --quiet worker.service
	nsenter -t "$leader" -a systemctl start --no-block worker.service
	for ((n = 0; n < 1500; n++)); do
		[ "$(nsenter -t "$leader" -a systemctl show -P ExecMainStatus worker.service)" = 203 ] && return
		nap 0.02
	done
	die "worker.service never failed with 203"
}
down_systemd() {
	local i=$1 st=$RUN/$1/app leader="" f sub
	[ -e "$st/leader" ] && read -r leader <"$st/leader"
	if [ -n "$leader" ] && [ -d /proc/"$leader" ]; then
		# SIGTERM to nspawn powers the container off (as sandbox.Stop does);
		# what is left is killed below.
		read -r -a f </proc/"$leader"/stat
		kill -TERM "${f[3]}" 2>/dev/null || true
		for ((n = 0; n < 300; n++)); do
			[ -d /proc/"$leader" ] || break
			nap 0.01
		done
	fi
	stop_host "$i" app 1
	for sub in propagate unix-export incoming; do
		rm -rf "/run/systemd/nspawn/$sub/bb-$i-app"
	done
	rmdir /run/systemd/nspawn/{propagate,unix-export,incoming,locks} /run/systemd/nspawn 2>/dev/null || true
	rm_parents "$i"
}

# oom: oom-killed-worker (one host, 64Mi; a process that touches more
# anonymous memory than that, until the kernel's OOM kill is counted).
up_oom() {
	local i=$1 f key val n
	MEM=$((64 << 20)) PIDS=64 start_host "$i" app batch-02
	dirs "$i" app # the memory hierarchy comes first
	f=${DIRS[0]}/memory.oom_control
	if [ "${ROOTS[0]}" = /sys/fs/cgroup ]; then f=${DIRS[0]}/memory.events; fi
	# tail keeps /dev/zero's endless "line" in anonymous memory.
	in_host_bg "$i" app tail /dev/zero
	for ((n = 0; n < 6000; n++)); do
		while read -r key val; do
			[ "$key" = oom_kill ] && [ "$val" -gt 0 ] && return
		done <"$f"
		nap 0.005
	done
	die "no OOM kill counted in $f"
}
down_oom() {
	stop_host "$1" app
	rm_parents "$1"
}

clean() {
	local r d p
	for r in "${ROOTS[@]}" "${SDROOTS[@]}"; do
		[ -d "$r/$CG" ] || continue
		for n in 1 2 3; do
			while read -r d; do
				while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$d/cgroup.procs"
			done < <(find "$r/$CG" -type d)
			nap 0.1
		done
		find "$r/$CG" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	for d in /run/netns/bb-*; do
		if [ -e "$d" ]; then ip netns del "${d##*/}"; fi
	done
	rm -rf "$RUN"
}

[ "$EUID" = 0 ] || die "needs root"
case "${1:-}/${2:-}" in
up/single | up/net | up/systemd | up/oom | down/single | down/net | down/systemd | down/oom)
	[ -n "${3:-}" ] || die "usage: $0 up|down SCENARIO NAME"
	"$1_$2" "$3"
	;;
clean/*) clean ;;
*) die "usage: $0 up|down single|net|systemd|oom NAME | clean" ;;
esac
