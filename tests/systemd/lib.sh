# shellcheck shell=bash
# tests/systemd/lib.sh: a real systemd for tests, in a Debian 12 container (systemd-nspawn).
# Sourced by bash test scripts (set -euo pipefail is fine):
#
#   . tests/systemd/lib.sh
#   hs_root "$deb"        # cached minimal bookworm root with the .deb's dependencies (debootstrap)
#   hs_boot               # boots it (systemd as PID 1), waits for "running" or "degraded"
#   hs_install_deb "$deb" # dpkg -i inside: no network in there, everything must be in the root
#   hs_exec systemctl start komerce-hookd
#   hs_journal -u komerce-hookd
#   hs_shutdown           # clean poweroff, SIGKILL fallback (also run by the EXIT trap)
#
# The root is built once with `debootstrap --variant=minbase` from the machine's own apt source
# and kept in $HS_CACHE (default /var/cache/komerce-hookd-test) under a name keyed by the
# package list, so a change of the list builds a new one. Every boot runs it with
# --volatile=overlay: writes go to a tmpfs over the cached tree, which stays pristine, and runs
# cannot contaminate each other. The container has a private network (loopback only) and is
# not registered anywhere (--keep-unit --register=no: the host may have no D-Bus). Commands
# enter it with nsenter into its PID 1's namespaces.
#
# One container runs at a time (a lock in $HS_CACHE; see hs_boot).
#
# Exit 77 (skip) when this machine cannot run it (not root, tools missing, nspawn cannot start
# a container), with the reason; HS_REQUIRED=1 turns that skip into a failure (CI, where it must
# run). A script that needs its own cleanup defines hs_cleanup_hook; lib.sh owns the EXIT trap.

HS_CACHE=${HS_CACHE:-/var/cache/komerce-hookd-test}
HS_SUITE=${HS_SUITE:-bookworm}
HS_BOOT_TIMEOUT=${HS_BOOT_TIMEOUT:-120}
HS_REQUIRED=${HS_REQUIRED:-0}
# Raised when the way the root is made changes (not only its package list).
HS_ROOT_FORMAT=1
# Packages every root has; hs_root adds the .deb's dependencies.
HS_BASE_PACKAGES="systemd systemd-sysv libnss-systemd curl openssl sqlite3"
HS_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

HS_ROOT=
HS_RUN=
HS_NSPAWN_PID=
HS_PID=

hs_log() { echo "harness: $*" >&2; }

hs_fail() {
	echo "harness: FAIL: $*" >&2
	exit 1
}

hs_skip() {
	if [ "$HS_REQUIRED" = 1 ]; then
		hs_fail "cannot run a real systemd here (HS_REQUIRED=1): $*"
	fi
	echo "SKIP: cannot run a real systemd here: $*"
	exit 77
}

# Tools and privileges, before anything is built.
hs_require() {
	[ "$(id -u)" = 0 ] || hs_skip "needs root (debootstrap, systemd-nspawn, nsenter)"
	local tool missing=
	for tool in debootstrap systemd-nspawn nsenter dpkg-deb flock sha256sum timeout; do
		command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
	done
	[ -z "$missing" ] ||
		hs_skip "missing:$missing (apt-get install debootstrap systemd-container util-linux)"
}

# The machine's Debian mirror for $HS_SUITE: the first "deb" source whose suites include it, in
# /etc/apt/sources.list, sources.list.d/*.list (one-line format) or sources.list.d/*.sources
# (deb822). Prints the URI.
hs_mirror() {
	local f uri=
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		# deb [options] URI SUITE COMPONENT...
		uri=$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
			awk -v s="$HS_SUITE" '$1 == "deb" && $3 == s { print $2; exit }')
		[ -z "$uri" ] || break
	done
	if [ -z "$uri" ]; then
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -f "$f" ] || continue
			# Stanzas separated by blank lines; keys Types, URIs, Suites, Enabled.
			uri=$(awk -v s="$HS_SUITE" '
				function flush() {
					if (!found && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " s " ") &&
					    enabled != "no" && uris != "") {
						split(uris, u, " "); print u[1]; found = 1; exit
					}
					types = suites = uris = ""; enabled = "yes"
				}
				BEGIN { enabled = "yes" }
				/^[ \t]*#/ { next }
				/^[ \t]*$/ { flush(); next }
				{
					k = tolower($1); sub(/:$/, "", k); $1 = ""; sub(/^ +/, "")
					if (k == "types") types = $0
					else if (k == "uris") uris = $0
					else if (k == "suites") suites = $0
					else if (k == "enabled") enabled = tolower($0)
				}
				END { flush() }' "$f")
			[ -z "$uri" ] || break
		done
	fi
	[ -n "$uri" ] || hs_fail "no apt source for $HS_SUITE in /etc/apt/sources.list{,.d/}"
	echo "$uri"
}

# Package names a .deb needs at run time: Pre-Depends and Depends, the first of each set of
# alternatives, without versions or architecture qualifiers.
hs_deb_depends() {
	local deb=$1
	{
		dpkg-deb -f "$deb" Pre-Depends
		dpkg-deb -f "$deb" Depends
	} | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/:.*//' -e 's/[[:space:]]//g' |
		grep -v -e '^$' -e '\$' || true
}

# Sets HS_ROOT to a cached root with HS_BASE_PACKAGES and the dependencies of the .deb, building
# it with debootstrap if there is none for this package list yet (the only network access).
hs_root() {
	local deb=${1:?hs_root DEB}
	local packages mirror key dir tmp start
	hs_require
	[ -f "$deb" ] || hs_fail "no such package: $deb"
	packages=$( (
		for p in $HS_BASE_PACKAGES; do echo "$p"; done
		hs_deb_depends "$deb"
	) | sort -u | tr '\n' ' ')
	packages=${packages% }
	mirror=$(hs_mirror)
	key=$(printf '%s\n' "format=$HS_ROOT_FORMAT" "suite=$HS_SUITE" "mirror=$mirror" \
		"arch=$(dpkg --print-architecture)" "packages=$packages" | sha256sum | cut -c1-12)
	dir=$HS_CACHE/$HS_SUITE-root.$key
	mkdir -p "$HS_CACHE"
	exec 9>"$HS_CACHE/lock"
	flock 9
	if [ ! -f "$dir/.hs-complete" ]; then
		hs_log "building $dir (debootstrap $HS_SUITE from $mirror): $packages"
		start=$(date +%s)
		# Left by an interrupted build (we hold the lock). --one-file-system: never into a
		# /proc or /sys that debootstrap left mounted there.
		rm -rf --one-file-system "$HS_CACHE"/.build.*
		tmp=$(mktemp -d "$HS_CACHE/.build.XXXXXX")
		if ! debootstrap --variant=minbase --include="${packages// /,}" "$HS_SUITE" \
			"$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
			tail -n 30 "$tmp/debootstrap.log" >&2
			rm -rf --one-file-system "$tmp"
			hs_fail "debootstrap failed (log above)"
		fi
		# A name of its own, and an apt that does not try to reach the network inside.
		echo hookd-test >"$tmp/root/etc/hostname"
		rm -f "$tmp/root/var/cache/apt/archives/"*.deb
		printf '%s\n' "$packages" >"$tmp/root/.hs-packages"
		rm -rf --one-file-system "$dir"
		mv "$tmp/root" "$dir"
		rm -rf --one-file-system "$tmp"
		touch "$dir/.hs-complete"
		# Older roots (another package list) are not used any more.
		find "$HS_CACHE" -maxdepth 1 -name "$HS_SUITE-root.*" ! -path "$dir" \
			-exec rm -rf --one-file-system {} + 2>/dev/null || true
		hs_log "root built in $(($(date +%s) - start)) s"
	else
		hs_log "cached root $dir"
	fi
	flock -u 9
	exec 9>&-
	HS_ROOT=$dir
}

# Runs a command inside the booted container, as root, in a clean environment.
hs_exec() {
	[ -n "$HS_PID" ] || hs_fail "hs_exec: the container is not booted"
	nsenter --target "$HS_PID" --mount --uts --ipc --net --pid -- \
		/usr/bin/env -i PATH="$HS_PATH" LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= "$@"
}

# The container's init: the child of systemd-nspawn in another PID namespace, running systemd.
hs_find_init() {
	local child
	for child in $(ps -o pid= --ppid "$HS_NSPAWN_PID" 2>/dev/null); do
		[ "$(readlink "/proc/$child/ns/pid" 2>/dev/null)" != "$(readlink /proc/self/ns/pid)" ] ||
			continue
		[ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ] || continue
		echo "$child"
		return 0
	done
	return 1
}

# Boots HS_ROOT (set by hs_root) with systemd as PID 1 and waits until it is up.
hs_boot() {
	local state deadline start
	[ -n "$HS_ROOT" ] || hs_fail "hs_boot: call hs_root first"
	# One container at a time on a machine: with --keep-unit every container's systemd manages
	# the same cgroups (.../payload/system.slice/...), and two would stop each other's services.
	exec 8>"$HS_CACHE/run.lock"
	if ! flock -n 8; then
		hs_log "another container of this harness is running: waiting for it (at most 30 min)"
		flock -w 1800 8 || hs_fail "another container held $HS_CACHE/run.lock for 30 min"
	fi
	HS_RUN=$(mktemp -d /tmp/hookd-systemd.XXXXXX)
	start=$(date +%s)
	# Can this machine run a container at all? (namespaces, cgroups, a working nspawn)
	if ! systemd-nspawn --quiet --keep-unit --register=no --private-network \
		--volatile=overlay -D "$HS_ROOT" /bin/true >"$HS_RUN/probe.log" 2>&1 </dev/null; then
		hs_skip "systemd-nspawn cannot start a container: $(tail -n 5 "$HS_RUN/probe.log" | tr '\n' ' ')"
	fi
	systemd-nspawn --keep-unit --register=no --private-network --volatile=overlay \
		--console=read-only --machine=hookd-test -D "$HS_ROOT" -b \
		>"$HS_RUN/console.log" 2>&1 </dev/null &
	HS_NSPAWN_PID=$!
	deadline=$(($(date +%s) + HS_BOOT_TIMEOUT))
	until HS_PID=$(hs_find_init); do
		HS_PID=
		if ! kill -0 "$HS_NSPAWN_PID" 2>/dev/null; then
			HS_NSPAWN_PID=
			hs_skip "systemd-nspawn -b exited while booting: $(tail -n 10 "$HS_RUN/console.log" | tr '\n' ' ')"
		fi
		[ "$(date +%s)" -lt "$deadline" ] ||
			hs_skip "no systemd in the container after ${HS_BOOT_TIMEOUT}s: $(tail -n 10 "$HS_RUN/console.log" | tr '\n' ' ')"
		sleep 0.2
	done
	# PID 1 exec'd systemd; now wait for the boot to finish (the private socket may need a
	# moment to appear, hence the loop around --wait).
	state=
	while [ "$(date +%s)" -lt "$deadline" ]; do
		state=$(timeout $((deadline - $(date +%s) + 1)) \
			nsenter --target "$HS_PID" --mount --uts --ipc --net --pid -- \
			/usr/bin/env -i PATH="$HS_PATH" systemctl is-system-running --wait 2>/dev/null) || true
		case $state in
		running | degraded) break ;;
		*) sleep 0.5 ;;
		esac
	done
	case $state in
	running) ;;
	degraded) hs_log "container booted degraded: $(hs_exec systemctl --failed --plain --no-legend | tr '\n' ' ')" ;;
	*) hs_skip "the container's systemd did not finish booting (state '$state'): $(tail -n 10 "$HS_RUN/console.log" | tr '\n' ' ')" ;;
	esac
	hs_log "booted $(hs_exec systemctl --version | head -n 1) as PID $HS_PID in $(($(date +%s) - start)) s"
}

# Copies the .deb in and installs it with dpkg -i (no network: dependencies are in the root).
hs_install_deb() {
	local deb=${1:?hs_install_deb DEB} out
	hs_exec sh -c 'cat >/root/install.deb' <"$deb"
	out=$(hs_exec dpkg -i /root/install.deb 2>&1) || hs_fail "dpkg -i $(basename "$deb") inside: $out"
	hs_exec rm -f /root/install.deb
}

# journalctl inside, without a pager; arguments as for journalctl.
hs_journal() {
	hs_exec journalctl --no-pager "$@"
}

# Clean poweroff; SIGKILL to the container's init (which ends every process in it) if it takes
# longer than 30 s.
hs_shutdown() {
	[ -n "$HS_NSPAWN_PID" ] || return 0
	if kill -0 "$HS_NSPAWN_PID" 2>/dev/null && [ -n "$HS_PID" ]; then
		hs_exec systemctl poweroff --no-block >/dev/null 2>&1 || true
		for _ in $(seq 150); do
			kill -0 "$HS_NSPAWN_PID" 2>/dev/null || break
			sleep 0.2
		done
	fi
	if kill -0 "$HS_NSPAWN_PID" 2>/dev/null; then
		hs_log "the container did not power off in 30 s: killing it"
		[ -z "$HS_PID" ] || kill -KILL "$HS_PID" 2>/dev/null || true
		sleep 1
		kill -KILL "$HS_NSPAWN_PID" 2>/dev/null || true
	fi
	wait "$HS_NSPAWN_PID" 2>/dev/null || true
	HS_NSPAWN_PID=
	HS_PID=
	exec 8>&-
}

hs_cleanup() {
	local rc=$?
	if declare -F hs_cleanup_hook >/dev/null; then
		hs_cleanup_hook "$rc" || true
	fi
	hs_shutdown
	if [ -n "$HS_RUN" ]; then
		if [ "$rc" != 0 ] && [ "$rc" != 77 ] && [ -s "$HS_RUN/console.log" ]; then
			hs_log "container console kept in $HS_RUN/console.log"
		else
			rm -rf "$HS_RUN"
		fi
	fi
	return "$rc"
}

trap hs_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
