#!/usr/bin/env bash
# Socket activation under a real systemd (Debian 12 in systemd-nspawn, the .deb installed):
# 500 signed callbacks from 8 concurrent clients while the service is restarted three times,
# its main PID is killed with SIGKILL once and the package is upgraded (dpkg -i again) once.
# Expected: no connection refused, every callback answered 200 (a 503 during the drain must
# carry Retry-After and is sent again), every 200 stored exactly once. The only connections
# allowed to fail are those in flight inside the process at the instant it was SIGKILLed
# (the kernel resets them; they are counted and sent again); a reset at any other moment fails.
# Then: stopping the service alone leaves the sockets listening (the next connection starts it
# again); stopping the sockets closes the ports.
# Usage: tests/systemd/test-socket.sh build-deb/komerce-hookd_VERSION_ARCH.deb
# Environment: HOOKD_SOCKET_CALLBACKS (default 500), HOOKD_SOCKET_CLIENTS (8),
# HOOKD_SOCKET_PACE (seconds each client waits between two callbacks, default 0.05), HS_REQUIRED,
# HS_CACHE (lib.sh). Exit 0 ok, 1 failed, 77 skipped.
set -euo pipefail

deb=${1:?usage: test-socket.sh komerce-hookd_VERSION_ARCH.deb}
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
total=${HOOKD_SOCKET_CALLBACKS:-500}
clients=${HOOKD_SOCKET_CLIENTS:-8}
pace=${HOOKD_SOCKET_PACE:-0.05}
. "$(dirname "$0")/lib.sh"

unit=komerce-hookd.service
sockets="komerce-hookd.socket komerce-hookd-admin.socket"
secrets=/etc/komerce-hookd/secrets
conf=/etc/komerce-hookd/komerce-hookd.conf
key=systemd-test-callback-key-0123
url=http://127.0.0.1:8080/v1/komerce/callback
passed=0
current=
t0=$(date +%s)
work=$(mktemp -d /tmp/hookd-socket.XXXXXX)

step() {
	if [ -n "$current" ]; then
		passed=$((passed + 1))
	fi
	current=$*
	echo "== $*"
}
fail() {
	echo "test-socket: FAIL: $current: $*" >&2
	exit 1
}

hs_cleanup_hook() {
	if [ -n "${load_pid:-}" ]; then
		kill -KILL "$load_pid" 2>/dev/null || true
	fi
	if [ "$1" != 0 ] && [ "$1" != 77 ] && [ -n "$HS_PID" ]; then
		echo "---- journalctl -u $unit (last 60 lines)" >&2
		hs_journal -u "$unit" -n 60 >&2 2>&1 || true
		hs_journal -b >"$HS_RUN/journal.txt" 2>&1 || true
		echo "---- whole journal: $HS_RUN/journal.txt; client logs: $work" >&2
		echo "systemd-socket-test: $passed passed, 1 failed" >&2
	else
		rm -rf "$work"
	fi
}

prop() { # PROPERTY [UNIT] -> value
	hs_exec systemctl show -P "$1" "${2:-$unit}"
}
now_ns() {
	hs_exec date +%s%N
}
# Waits up to 30 s for the service to be active with a main PID other than $1; prints it.
wait_new_pid() {
	local old=$1 p
	for _ in $(seq 150); do
		p=$(prop MainPID)
		if [ "$(prop ActiveState)" = active ] && [ "$p" != 0 ] && [ "$p" != "$old" ]; then
			echo "$p"
			return 0
		fi
		sleep 0.2
	done
	echo "$(prop ActiveState)/$(prop SubState) MainPID=$(prop MainPID) NRestarts=$(prop NRestarts)" >&2
	return 1
}

step "real systemd: root, boot, dpkg -i $(basename "$deb"), secrets, start"
hs_root "$deb"
hs_boot
hs_install_deb "$deb"
for u in $unit $sockets; do
	[ "$(hs_exec systemctl is-enabled "$u" 2>/dev/null || true)" = disabled ] ||
		fail "$u is not installed disabled"
	[ "$(prop ActiveState "$u")" = inactive ] || fail "$u is not inactive after install"
done
hs_exec sed -i 's#^base_url = .*#base_url = http://127.0.0.1:9/user#' $conf
hs_exec sh -c "printf '%s' '$key' >$secrets/callback_keys
	printf '%s' 'systemd-test-admin-token-0123456789' >$secrets/admin_token
	printf '%s' 'systemd-test-api-key' >$secrets/api_key
	chmod 0600 $secrets/*"
hs_exec systemctl start "$unit" || fail "systemctl start failed"
for u in $sockets; do
	[ "$(prop ActiveState "$u")" = active ] || fail "$u not active with the service"
done
[ "$(prop Backlog komerce-hookd.socket)" = 4096 ] || fail "Backlog $(prop Backlog komerce-hookd.socket)"
log=$(hs_journal -u "$unit" -o cat)
grep -q 'listen: using the socket passed by systemd name=public fd=[0-9]* address=127.0.0.1:8080' <<<"$log" ||
	fail "the public socket was not taken from systemd: $log"
grep -q 'listen: using the socket passed by systemd name=admin fd=[0-9]* address=127.0.0.1:8081' <<<"$log" ||
	fail "the admin socket was not taken from systemd: $log"
echo "   $(grep -m1 'name=public' <<<"$log")"
echo "   $(grep -m1 'name=admin' <<<"$log")"

step "$total callbacks from $clients clients across 3 restarts, a kill -9 and an upgrade"
# The bodies and their signatures, one line "ID SIGNATURE BODY" each, dealt to the clients.
for i in $(seq 1 "$total"); do
	id=$(printf 'KOMPAY-SOCK-%04d' "$i")
	body="{\"payment_id\":\"$id\",\"order_id\":\"SOCK-$i\",\"status\":\"PAID\",\"amount\":$((10000 + i))}"
	sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$key" | awk '{print $NF}')
	echo "$id $sig $body" >>"$work/in.$((i % clients))"
done
hs_exec mkdir -p /root/load
for n in $(seq 0 $((clients - 1))); do
	hs_exec sh -c "cat >/root/load/in.$n" <"$work/in.$n"
done
# One client: sends its callbacks one after another. Per attempt one line: "200 ID REPLY",
# "503 ID RETRY-AFTER?", "ERR ID CURL-EXIT START-NS END-NS MESSAGE" or "BAD ID CODE REPLY".
# A 503 or a connection error is sent again (at most 20 tries).
hs_exec sh -c 'cat >/root/load/client.sh' <<CLIENT
#!/bin/bash
n=\$1
out=/root/load/out.\$n
: >\$out
while read -r id sig body; do
	for try in \$(seq 20); do
		s=\$(date +%s%N)
		code=\$(curl -sS -o /root/load/r.\$n -D /root/load/h.\$n -w '%{http_code}' --max-time 60 \
			-H 'Content-Type: application/json' -H "X-Callback-Api-Key: \$sig" \
			--data-binary "\$body" $url 2>/root/load/e.\$n)
		rc=\$?
		e=\$(date +%s%N)
		if [ \$rc != 0 ]; then
			echo "ERR \$id \$rc \$s \$e \$(tr '\n' ' ' </root/load/e.\$n)" >>\$out
			sleep 0.2
		elif [ "\$code" = 503 ]; then
			if grep -qi '^retry-after:' /root/load/h.\$n; then ra=retry-after; else ra=none; fi
			echo "503 \$id \$ra" >>\$out
			sleep 0.5
		elif [ "\$code" = 200 ]; then
			echo "200 \$id \$(cat /root/load/r.\$n)" >>\$out
			break
		else
			echo "BAD \$id \$code \$(cat /root/load/r.\$n)" >>\$out
			break
		fi
	done
	sleep $pace
done </root/load/in.\$n
echo "DONE \$(date +%s%N)" >>\$out
CLIENT
hs_exec sh -c "cat >/root/load/run.sh" <<RUN
#!/bin/bash
for n in \$(seq 0 $((clients - 1))); do bash /root/load/client.sh \$n & done
wait
RUN
hs_exec cp /dev/stdin /root/install.deb <"$deb"

pid=$(prop MainPID)
pids="$pid"
# (8>&-: the load must not hold the harness's run lock if this script dies.)
hs_exec bash /root/load/run.sh 8>&- &
load_pid=$!
sleep 2
for r in 1 2; do
	hs_exec systemctl restart "$unit" || fail "systemctl restart $r failed"
	pid=$(wait_new_pid "$pid") || fail "no new main PID after restart $r"
	pids="$pids $pid"
	echo "   restart $r: main PID $pid"
	sleep 2
done
# The instants just before and just after the kill, on the clients' clock.
read -r kill_from kill_to < <(hs_exec sh -c "date +%s%N; kill -9 $pid; date +%s%N" | paste -s -d " ")
pid=$(wait_new_pid "$pid") || fail "not restarted after kill -9: $(hs_exec systemctl status --no-pager $unit $sockets 2>&1 | tail -n 30)"
pids="$pids $pid"
echo "   kill -9: restarted by systemd as $pid"
sleep 2
hs_exec systemctl restart "$unit" || fail "systemctl restart 3 failed"
pid=$(wait_new_pid "$pid") || fail "no new main PID after restart 3"
pids="$pids $pid"
echo "   restart 3: main PID $pid"
sleep 2
sock_since=$(prop ActiveEnterTimestampMonotonic komerce-hookd.socket)
out=$(hs_exec env DEBIAN_FRONTEND=noninteractive dpkg -i /root/install.deb 2>&1) ||
	fail "dpkg -i (upgrade) under load: $out"
pid=$(wait_new_pid "$pid") || fail "the upgrade did not restart the service"
pids="$pids $pid"
echo "   upgrade (dpkg -i): main PID $pid"
[ "$(prop ActiveEnterTimestampMonotonic komerce-hookd.socket)" = "$sock_since" ] ||
	fail "the upgrade restarted komerce-hookd.socket"
disrupted_ns=$(now_ns)
wait "$load_pid" || fail "the load run failed"
load_pid=
for n in $(seq 0 $((clients - 1))); do
	hs_exec cat /root/load/out.$n
done >"$work/out"

done_n=$(grep -c '^DONE' "$work/out" || true)
[ "$done_n" = "$clients" ] || fail "$done_n of $clients clients finished"
first_done=$(awk '$1 == "DONE" { print $2 }' "$work/out" | sort -n | head -n 1)
[ "$first_done" -gt "$disrupted_ns" ] ||
	fail "a client finished before the last disruption: the load did not cover them (HOOKD_SOCKET_PACE)"
refused=$(awk '$1 == "ERR" && $3 == 7' "$work/out" | wc -l)
# In flight at the kill: started before it ended and ended after it began.
inflight='$1 == "ERR" && $3 != 7 && $4 <= b && $5 >= a'
killed=$(awk -v a="$kill_from" -v b="$kill_to" "$inflight" "$work/out" | wc -l)
other=$(awk -v a="$kill_from" -v b="$kill_to" "\$1 == \"ERR\" && \$3 != 7 && !($inflight)" "$work/out" | wc -l)
n503=$(grep -c '^503 ' "$work/out" || true)
n503_bare=$(grep -c '^503 .* none$' "$work/out" || true)
bad=$(grep -c '^BAD ' "$work/out" || true)
ok=$(awk '$1 == "200"' "$work/out" | wc -l)
ok_ids=$(awk '$1 == "200" { print $2 }' "$work/out" | sort -u | wc -l)
dups=$(grep -c '^200 .*"duplicate":true' "$work/out" || true)
echo "   main PIDs: $pids"
echo "   $ok answered 200 ($ok_ids distinct, $dups of them duplicate:true), 503: $n503 (without Retry-After: $n503_bare), refused: $refused, reset by the kill -9 in flight: $killed, other connection errors: $other, other replies: $bad"
[ "$refused" = 0 ] || fail "$refused connections refused: $(awk '$1 == "ERR" && $3 == 7' "$work/out" | head -n 3)"
[ "$other" = 0 ] || fail "$other connection errors outside the kill -9: $(awk -v a="$kill_from" -v b="$kill_to" "\$1 == \"ERR\" && \$3 != 7 && !($inflight)" "$work/out" | head -n 5)"
[ "$n503_bare" = 0 ] || fail "503 without Retry-After"
[ "$bad" = 0 ] || fail "unexpected replies: $(grep '^BAD ' "$work/out" | head -n 3)"
[ "$ok" = "$total" ] && [ "$ok_ids" = "$total" ] || fail "$ok replies 200 for $ok_ids ids, expected $total"

step "every 200 stored exactly once (komerce-hookctl events, verify)"
hs_exec komerce-hookctl events --limit 100000 --format jsonl >"$work/events.jsonl" ||
	fail "komerce-hookctl events failed"
# One line per event; its own payment_id comes first (the stored callback body repeats it).
sed -nE 's/^\{"id":[0-9]+,"payment_id":"(KOMPAY-SOCK-[0-9]+)".*/\1/p' "$work/events.jsonl" |
	sort >"$work/stored"
awk '$1 == "200" { print $2 }' "$work/out" | sort >"$work/acked"
[ "$(wc -l <"$work/stored")" = "$total" ] || fail "$(wc -l <"$work/stored") events stored, expected $total"
[ -z "$(uniq -d "$work/stored")" ] || fail "stored twice: $(uniq -d "$work/stored" | head -n 3)"
cmp -s "$work/stored" "$work/acked" || fail "stored and acknowledged differ: $(comm -3 "$work/stored" "$work/acked" | head -n 3)"
out=$(hs_exec komerce-hookctl verify 2>&1) || fail "komerce-hookctl verify: $out"
echo "   $total events, one per acknowledged callback; $out"
log=$(hs_journal -u "$unit" -o cat)
n=$(grep -c 'listen: using the socket passed by systemd name=public' <<<"$log" || true)
[ "$n" -ge 6 ] || fail "only $n starts took the public socket from systemd (6 expected)"
! grep -q 'binding it here' <<<"$log" || fail "a start bound its own socket: $(grep 'binding it here' <<<"$log")"

step "systemctl stop of the service alone: the sockets keep listening, a callback starts it"
pid=$(prop MainPID)
hs_exec systemctl stop "$unit"
[ "$(prop ActiveState)" = inactive ] || fail "not inactive: $(prop ActiveState)"
for u in $sockets; do
	[ "$(prop ActiveState "$u")" = active ] || fail "$u stopped with the service"
done
body='{"payment_id":"KOMPAY-SOCK-STOPPED","status":"PAID","amount":1}'
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$key" | awk '{print $NF}')
got=$(hs_exec curl -sS --max-time 60 -w ' %{http_code}' -H 'Content-Type: application/json' \
	-H "X-Callback-Api-Key: $sig" --data-binary "$body" $url 2>&1) || fail "callback: $got"
[ "${got##* }" = 200 ] || fail "a callback to the stopped service: $got"
[ "$(prop ActiveState)" = active ] || fail "the service was not started by the connection"
echo "   $got (service started again by the socket, main PID $(prop MainPID))"

step "systemctl stop of the sockets too: the ports are closed"
hs_exec systemctl stop $sockets "$unit"
got=$(hs_exec curl -sS --max-time 10 -o /dev/null -w '%{http_code}' $url 2>&1) && fail "still answered: $got"
grep -q 'Connection refused\|Failed to connect' <<<"$got" || fail "not refused: $got"
[ "$(prop ActiveState)" = inactive ] || fail "the service is $(prop ActiveState)"
echo "   $(grep -o 'curl: .*' <<<"$got")"

passed=$((passed + 1))
current=
echo "systemd-socket-test: $passed passed, 0 failed ($(($(date +%s) - t0)) s)"
