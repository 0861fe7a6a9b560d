#!/usr/bin/env bash
# The Debian package's unit under a real systemd (Debian 12, systemd 252, in systemd-nspawn),
# checked the way an operator meets it: what a start without secrets does and says, a running
# service that takes signed callbacks under its sandbox and watchdog, restart/stop, a kill -9
# recovered by systemd with nothing lost, and the sandbox score of the running unit.
# Usage: tests/systemd/test-unit.sh build-deb/komerce-hookd_VERSION_ARCH.deb
# Environment: HOOKD_WATCHDOG_WAIT (seconds the running service is watched, default 60),
# HS_REQUIRED=1 (fail instead of skipping where no container can run), HS_CACHE (the cached
# root, see lib.sh). Exit 0 ok, 1 failed, 77 skipped.
set -euo pipefail

deb=${1:?usage: test-unit.sh komerce-hookd_VERSION_ARCH.deb}
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
watchdog_wait=${HOOKD_WATCHDOG_WAIT:-60}
. "$(dirname "$0")/lib.sh"

unit=komerce-hookd.service
secrets=/etc/komerce-hookd/secrets
conf=/etc/komerce-hookd/komerce-hookd.conf
key=systemd-test-callback-key-0123
passed=0
current=
t0=$(date +%s)

step() {
	if [ -n "$current" ]; then
		passed=$((passed + 1))
	fi
	current=$*
	echo "== $*"
}
fail() {
	echo "test-unit: FAIL: $current: $*" >&2
	exit 1
}

# On failure: the unit's journal (and the whole boot's, kept with the console log).
hs_cleanup_hook() {
	if [ "$1" != 0 ] && [ "$1" != 77 ] && [ -n "$HS_PID" ]; then
		echo "---- journalctl -u $unit (last 40 lines)" >&2
		hs_journal -u "$unit" -n 40 >&2 2>&1 || true
		hs_journal -b >"$HS_RUN/journal.txt" 2>&1 || true
		echo "---- whole journal: $HS_RUN/journal.txt" >&2
		echo "systemd-test: $passed passed, 1 failed" >&2
	fi
}

prop() { # PROPERTY -> value
	hs_exec systemctl show -P "$1" "$unit"
}

# Waits up to $2 seconds for the unit's ActiveState to be $1.
wait_state() {
	local want=$1 limit=$2
	for _ in $(seq $((limit * 5))); do
		[ "$(prop ActiveState)" = "$want" ] && return 0
		sleep 0.2
	done
	return 1
}

# The journal's position now, and the unit's journal since such a position at the default
# level (info and above).
cursor() {
	hs_journal -n 1 -o export | sed -n 's/^__CURSOR=//p'
}
journal_since() {
	hs_journal -u "$unit" -p info -o short --after-cursor "$1"
}
# Waits up to 10 s for a line matching the ERE $2 in the unit's journal since cursor $1 (journald
# reads the service's output asynchronously); prints the lines without date and host. With
# $3 = all, the whole journal: what a process of the unit that exits at once sends directly
# to journald may be too late to be attributed to the unit (journalctl -u misses it).
journal_wait() {
	local scope=(-u "$unit")
	[ "${3:-}" != all ] || scope=()
	for _ in $(seq 50); do
		if hs_journal "${scope[@]}" -p info -o short --after-cursor "$1" | grep -E "$2" |
			sed -E 's/^([^ ]+ +){4}//'; then
			return 0
		fi
		sleep 0.2
	done
	return 1
}

# A start that must fail once and stay failed: the unit ends "failed" within 30 s and is not
# restarted after that. $1 = at most this many restarts. Prints nothing; fails the step.
expect_bounded_failure() {
	local max=$1 n
	if hs_exec systemctl start "$unit" >/dev/null 2>&1; then
		fail "systemctl start succeeded"
	fi
	wait_state failed 30 || fail "not 'failed' within 30 s: $(prop ActiveState)/$(prop SubState), NRestarts=$(prop NRestarts)"
	n=$(prop NRestarts)
	# Still failed, and no further tries, after longer than RestartSec.
	sleep 5
	[ "$(prop ActiveState)" = failed ] || fail "left 'failed' again: $(prop ActiveState) (restarted)"
	[ "$(prop NRestarts)" = "$n" ] || fail "NRestarts went from $n to $(prop NRestarts) after failing"
	[ "$n" -le "$max" ] || fail "restarted $n times (at most $max expected)"
}

post() { # BODY SIGNATURE -> "HTTP-code body"
	hs_exec curl -sS -o /tmp/reply -w '%{http_code}' -H 'Content-Type: application/json' \
		-H "X-Callback-Api-Key: $2" --data-binary "$1" \
		http://127.0.0.1:8080/v1/komerce/callback || true
	printf ' %s' "$(hs_exec cat /tmp/reply)"
}

step "real systemd: root, boot, dpkg -i $(basename "$deb")"
hs_root "$deb"
hs_boot
hs_install_deb "$deb"
[ "$(hs_exec systemctl is-enabled "$unit" 2>/dev/null || true)" = disabled ] ||
	fail "the unit is not installed disabled"
[ "$(hs_exec stat -c %a $secrets)" = 700 ] || fail "$secrets is not mode 700"
[ -z "$(hs_exec ls -A $secrets)" ] || fail "$secrets is not empty after install"
# Komerce is not reachable from the container: point the shipped configuration at a closed
# loopback port (the reconciler has nothing to poll and would only log failures).
hs_exec sed -i 's#^base_url = .*#base_url = http://127.0.0.1:9/user#' $conf
hs_exec grep -q '^base_url = http://127.0.0.1:9/user$' $conf || fail "could not set base_url"

step "a. installed without secrets: fails once, stays failed, names the missing secret"
c=$(cursor)
expect_bounded_failure 0
[ "$(prop ExecMainStatus)" = 2 ] || fail "main process status $(prop ExecMainStatus), not 2"
line=$(journal_wait "$c" 'komerce-hookd\[[0-9]+\]: config: komerce\.callback_keys: missing') ||
	fail "no line naming the missing secret in the journal: $(journal_since "$c")"
grep -q "$secrets/callback_keys" <<<"$line" || fail "the line does not name the file: $line"
echo "   $line"
line=$(journal_wait "$c" 'status=2/INVALIDARGUMENT') || fail "no status=2 in the journal"
echo "   $line"

step "a. an empty secret file: the same bounded failure, naming it"
hs_exec sh -c "printf '%s' '$key' >$secrets/callback_keys
	printf '%s' 'systemd-test-admin-token-0123456789' >$secrets/admin_token
	: >$secrets/api_key
	chmod 0600 $secrets/*"
c=$(cursor)
expect_bounded_failure 0
line=$(journal_wait "$c" 'komerce-hookd\[[0-9]+\]: config: komerce\.api_key: missing') ||
	fail "no line naming the empty secret: $(journal_since "$c")"
grep -q "$secrets/api_key" <<<"$line" || fail "the line does not name the file: $line"
echo "   $line"

step "a. the secrets directory removed: fails once (243/CREDENTIALS), no restart loop"
hs_exec mv $secrets $secrets.away
c=$(cursor)
expect_bounded_failure 0
[ "$(prop ExecMainStatus)" = 243 ] || fail "main process status $(prop ExecMainStatus), not 243"
journal_wait "$c" 'status=243/CREDENTIALS' >/dev/null ||
	fail "no 243/CREDENTIALS in the journal: $(journal_since "$c")"
line=$(journal_wait "$c" "$unit: Failed to set up credentials" all) ||
	fail "no 'Failed to set up credentials' in the journal"
echo "   $line"
hs_exec mv $secrets.away $secrets

step "a. a start-up error that is retried (exit 1) ends at the start limit"
printf '%s' 'systemd-test-api-key' | hs_exec sh -c "cat >$secrets/api_key"
hs_exec mkdir -p /run/systemd/system/$unit.d
hs_exec sh -c "printf '[Service]\nEnvironment=KOMERCE_HOOKD_STORE_PATH=/var/lib/komerce-hookd/no-such-dir/events.db\n' \
	>/run/systemd/system/$unit.d/broken-store.conf"
hs_exec systemctl daemon-reload
hs_exec systemctl reset-failed "$unit"
c=$(cursor)
expect_bounded_failure 5
journal_wait "$c" 'Start request repeated too quickly' >/dev/null ||
	fail "not stopped by the start limit: $(journal_since "$c" | tail -n 5)"
log=$(journal_since "$c")
[ "$(grep -c 'status=1/FAILURE' <<<"$log")" -ge 2 ] || fail "exit 1 was not retried: $log"
echo "   $(grep -m1 -o 'store: .*' <<<"$log")"
echo "   $(grep -c 'status=1/FAILURE' <<<"$log") tries, then: $(grep -o 'Start request repeated too quickly.*' <<<"$log")"
hs_exec rm -r /run/systemd/system/$unit.d
hs_exec systemctl daemon-reload
hs_exec systemctl reset-failed "$unit"

step "b. with secrets: active, signed callbacks, no seccomp denial"
c=$(cursor)
hs_exec systemctl start "$unit" || fail "systemctl start failed"
[ "$(prop ActiveState)" = active ] || fail "not active: $(prop ActiveState)"
pid=$(prop MainPID)
[ "$pid" -gt 0 ] || fail "no MainPID"
restarts=$(prop NRestarts)
[ "$(prop WatchdogUSec)" = 30s ] || fail "WatchdogUSec is $(prop WatchdogUSec), not 30s"
body='{"payment_id":"KOMPAY-SYSTEMD-1","order_id":"SD-1","status":"PAID","amount":100000}'
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$key" | awk '{print $NF}')
got=$(post "$body" "$sig")
[ "$got" = '200 {"status":"ok","event_id":1,"duplicate":false}' ] || fail "callback: $got"
echo "   $got"
got=$(post "$body" "$sig")
[ "$got" = '200 {"status":"ok","event_id":1,"duplicate":true}' ] || fail "the same again: $got"
echo "   $got"
got=$(post "$body" "$(printf '%064d' 0)")
[ "${got%% *}" = 401 ] || fail "a bad signature got $got"
echo "   bad signature: $got"
token=$(hs_exec cat $secrets/admin_token)
hs_exec curl -fsS -H "Authorization: Bearer $token" http://127.0.0.1:8081/readyz | grep -q ready ||
	fail "admin /readyz is not ready"

step "b. watched for ${watchdog_wait} s: no watchdog timeout, same main PID"
ping0=$(prop WatchdogTimestampMonotonic)
sleep "$watchdog_wait"
[ "$(prop ActiveState)" = active ] || fail "not active after ${watchdog_wait} s: $(prop ActiveState)"
[ "$(prop MainPID)" = "$pid" ] || fail "MainPID changed from $pid to $(prop MainPID)"
[ "$(prop NRestarts)" = "$restarts" ] || fail "restarted while watched"
if [ "$watchdog_wait" -ge 20 ]; then
	# The daemon pings every WatchdogSec/2 = 15 s.
	[ "$(prop WatchdogTimestampMonotonic)" != "$ping0" ] ||
		fail "no WATCHDOG=1 received in ${watchdog_wait} s"
fi
log=$(hs_journal -u "$unit" --after-cursor "$c")
! grep -qi 'watchdog timeout' <<<"$log" || fail "watchdog timeout: $(grep -i watchdog <<<"$log")"
# The filter returns EPERM (SystemCallErrorNumber=), so a denied call can surface as an
# "Operation not permitted" as well as a SIGSYS.
denied=$(hs_journal -b | grep -Ei 'SIGSYS|seccomp|Bad system call|status=31/SYS' || true)
[ -z "$denied" ] || fail "system call filter denials: $denied"
denied=$(grep -i 'Operation not permitted' <<<"$log" || true)
[ -z "$denied" ] || fail "EPERM in the daemon's journal: $denied"

step "c. systemctl restart: clean stop (exit 0, no SIGKILL), active again"
c=$(cursor)
hs_exec systemctl restart "$unit" || fail "systemctl restart failed"
[ "$(prop ActiveState)" = active ] || fail "not active after restart: $(prop ActiveState)"
newpid=$(prop MainPID)
[ "$newpid" != "$pid" ] || fail "MainPID did not change"
line=$(journal_wait "$c" "komerce-hookd\[$pid\]: stopped cleanly") ||
	fail "no 'stopped cleanly' from $pid: $(journal_since "$c")"
echo "   $line"
log=$(hs_journal -u "$unit" --after-cursor "$c")
! grep -Eqi 'Main process exited|SIGKILL|Killing process|timed out|code=killed' <<<"$log" ||
	fail "not a clean exit 0: $log"
pid=$newpid

step "c. systemctl stop: exit status 0, deactivated successfully"
c=$(cursor)
hs_exec systemctl stop "$unit" || fail "systemctl stop failed"
[ "$(prop ActiveState)" = inactive ] || fail "not inactive: $(prop ActiveState)"
# An inactive unit may be unloaded, so its ExecMain* properties are not to be trusted here:
# systemd logs "Main process exited, code=..., status=..." for any end but exit 0, and
# "Deactivated successfully" only for a successful one.
journal_wait "$c" "komerce-hookd\[$pid\]: stopped cleanly" >/dev/null ||
	fail "no 'stopped cleanly' from $pid: $(journal_since "$c")"
line=$(journal_wait "$c" "$unit: Deactivated successfully") ||
	fail "not deactivated successfully: $(journal_since "$c")"
echo "   $line"
log=$(hs_journal -u "$unit" --after-cursor "$c")
! grep -Eqi 'Main process exited|SIGKILL|Killing process|timed out|code=killed' <<<"$log" ||
	fail "not a clean exit 0: $log"

step "d. kill -9 of the main process: systemd restarts it, nothing lost"
hs_exec systemctl start "$unit" || fail "systemctl start failed"
pid=$(prop MainPID)
restarts=$(prop NRestarts)
c=$(cursor)
hs_exec sh -c "kill -9 $pid" # the shell's kill: minbase has no procps
newpid=
for _ in $(seq 150); do
	if [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$pid" ] &&
		[ "$(prop MainPID)" != 0 ]; then
		newpid=$(prop MainPID)
		break
	fi
	sleep 0.2
done
[ -n "$newpid" ] || fail "not active with a new MainPID within 30 s: $(prop ActiveState), MainPID $(prop MainPID)"
[ "$(prop NRestarts)" = $((restarts + 1)) ] || fail "NRestarts $(prop NRestarts), expected $((restarts + 1))"
journal_wait "$c" 'code=killed, status=9/KILL' >/dev/null ||
	fail "the journal does not show the kill: $(journal_since "$c")"
echo "   MainPID $pid killed, restarted as $newpid"
out=$(hs_exec komerce-hookctl verify 2>&1) || fail "komerce-hookctl verify: $out"
grep -q 'verify: OK, 1 events' <<<"$out" || fail "komerce-hookctl verify: $out"
echo "   $out"
hs_exec komerce-hookctl events --format jsonl | grep -q '"payment_id":"KOMPAY-SYSTEMD-1"' ||
	fail "the event from step b is not listed"
got=$(post "$body" "$sig")
[ "$got" = '200 {"status":"ok","event_id":1,"duplicate":true}' ] || fail "after the restart: $got"

step "e. systemd-analyze security of the running unit <= 2.0"
out=$(hs_exec systemd-analyze security "$unit" 2>&1) || true
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p' <<<"$out")
[ -n "$score" ] || fail "no exposure level in: $(tail -n 3 <<<"$out")"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $score > 2.0"
echo "   $(grep 'Overall exposure level' <<<"$out")"

hs_exec systemctl stop "$unit"
passed=$((passed + 1))
current=
echo "systemd-test: $passed passed, 0 failed ($(($(date +%s) - t0)) s)"
