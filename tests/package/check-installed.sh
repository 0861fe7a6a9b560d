#!/usr/bin/env bash
# Installs the Debian package with dpkg -i on this machine (root) and checks it the way an
# operator meets it: the installed files, versions, man pages, the unit (systemd-analyze verify,
# not enabled, sandbox score), the refusal to start without secrets, the installed daemon run by
# hand on loopback receiving a signed callback and stopping cleanly, a database from the future
# refused untouched, and purge keeping the database unless asked. Safe to run again with the
# package installed; the purge steps are skipped where a real installation has data or secrets.
# Usage: tests/package/check-installed.sh build-deb/komerce-hookd_VERSION_ARCH.deb
set -euo pipefail

deb=${1:?usage: check-installed.sh komerce-hookd_VERSION_ARCH.deb}
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d /tmp/hookd-pkg.XXXXXX)
pid=

cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

step() { echo "== $*"; }
fail() {
	echo "check-installed: FAIL: $*" >&2
	exit 1
}

step "dpkg -i $deb"
dpkg -i "$deb" >/dev/null
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' komerce-hookd)" = "ii " ] || fail "not installed"
version=$(dpkg-query -W -f='${Version}' komerce-hookd)
upstream=${version#*:}
upstream=${upstream%-*}

step "installed files"
for f in /usr/sbin/komerce-hookd /usr/bin/komerce-hookctl \
	/lib/systemd/system/komerce-hookd.service /lib/systemd/system/komerce-hookd.socket \
	/lib/systemd/system/komerce-hookd-admin.socket /etc/komerce-hookd/komerce-hookd.conf \
	/usr/share/man/man8/komerce-hookd.8.gz /usr/share/man/man1/komerce-hookctl.1.gz \
	/usr/share/man/man5/komerce-hookd.conf.5.gz \
	/usr/share/bash-completion/completions/komerce-hookctl \
	/usr/share/doc/komerce-hookd/README.md.gz /usr/share/doc/komerce-hookd/copyright; do
	[ -e "$f" ] || fail "missing $f"
done
[ -x /usr/sbin/komerce-hookd ] && [ -x /usr/bin/komerce-hookctl ] || fail "binaries not executable"
[ "$(stat -c %a:%U /etc/komerce-hookd/secrets)" = "700:root" ] ||
	fail "/etc/komerce-hookd/secrets is $(stat -c %a:%U /etc/komerce-hookd/secrets), not 700:root"
dpkg-query -W -f='${Conffiles}\n' komerce-hookd | grep -q '^ /etc/komerce-hookd/komerce-hookd.conf ' ||
	fail "komerce-hookd.conf is not a conffile"
if dpkg -L komerce-hookd | grep -q komerce-sim; then
	fail "komerce-sim (a test tool) is installed"
fi
dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./etc/komerce-hookd/komerce-hookd.conf >"$tmp/shipped.conf"
if [ -f "$src/config/komerce-hookd.conf" ]; then
	cmp -s "$tmp/shipped.conf" "$src/config/komerce-hookd.conf" ||
		fail "the package ships another komerce-hookd.conf than config/komerce-hookd.conf"
fi

step "versions"
[ "$(komerce-hookd --version)" = "komerce-hookd $upstream" ] ||
	fail "komerce-hookd --version says '$(komerce-hookd --version)', package is $version"
[ "$(komerce-hookctl --version)" = "komerce-hookctl $upstream" ] ||
	fail "komerce-hookctl --version says '$(komerce-hookctl --version)'"
komerce-hookd --version

step "man pages"
if grep -qs '^path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then
	fail "dpkg is configured to drop man pages (/etc/dpkg/dpkg.cfg.d): cannot check them here"
fi
man -w komerce-hookd
man -w komerce-hookctl
man -w 5 komerce-hookd.conf
for page in man8/komerce-hookd.8 man1/komerce-hookctl.1 man5/komerce-hookd.conf.5; do
	warnings=$(man --warnings -E UTF-8 -l "/usr/share/man/$page.gz" 2>&1 >/dev/null)
	[ -z "$warnings" ] || fail "$page renders with warnings: $warnings"
done

step "bash completion"
bash -n /usr/share/bash-completion/completions/komerce-hookctl
if [ -f /usr/share/bash-completion/bash_completion ]; then
	got=$(bash -c '. /usr/share/bash-completion/bash_completion
		. /usr/share/bash-completion/completions/komerce-hookctl
		COMP_WORDS=(komerce-hookctl events --status P); COMP_CWORD=3
		COMP_LINE="komerce-hookctl events --status P"; COMP_POINT=${#COMP_LINE}
		_komerce_hookctl; echo "${COMPREPLY[*]}"')
	[ "$got" = "PENDING PAID" ] || fail "completion of 'events --status P' gave '$got'"
fi

step "systemd unit"
unit=/lib/systemd/system/komerce-hookd.service
# verify loads the unit as systemd would: directives parse, ExecStartPre/ExecStart exist and
# are executable. Any output is a warning about our unit.
out=$(systemd-analyze verify "$unit" /lib/systemd/system/komerce-hookd.socket \
	/lib/systemd/system/komerce-hookd-admin.socket 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
grep -q '^ExecStart=/usr/sbin/komerce-hookd -c /etc/komerce-hookd/komerce-hookd.conf$' "$unit" ||
	fail "the unit does not run the installed daemon on the installed configuration"
systemd-analyze security --offline=true --threshold=20 "$unit" >/dev/null ||
	fail "the installed unit's sandbox scores above 2.0"
if [ -e /etc/systemd/system/multi-user.target.wants/komerce-hookd.service ]; then
	echo "   (enabled by the operator of this machine: not checking that install left it disabled)"
else
	[ "$(systemctl is-enabled komerce-hookd.service 2>/dev/null || true)" = "disabled" ] ||
		fail "the unit is not 'disabled' after install"
fi

step "refuses to start without secrets, naming the missing one"
set +e
out=$(env -u CREDENTIALS_DIRECTORY /usr/sbin/komerce-hookd -c "$tmp/shipped.conf" --check-config 2>&1)
rc=$?
set -e
[ "$rc" = 2 ] || fail "--check-config without secrets exited $rc: $out"
grep -Eq 'komerce\.(callback_keys|api_key)|admin\.token' <<<"$out" && grep -q missing <<<"$out" ||
	fail "no line naming the missing secret: $out"
echo "   $out"

step "installed daemon, by hand, on loopback: one signed callback"
key=ci-callback-key-0123456789
cat >"$tmp/hookd.conf" <<EOF
[server]
listen = 127.0.0.1:0
[admin]
listen = 127.0.0.1:0
token = ci-admin-token-0123456789
[komerce]
base_url = http://127.0.0.1:9/user
api_key = ci-api-key
callback_keys = $key
[store]
path = $tmp/events.db
[reconcile]
enabled = false
EOF
/usr/sbin/komerce-hookd -c "$tmp/hookd.conf" 2>"$tmp/hookd.log" &
pid=$!
for _ in $(seq 100); do
	grep -q 'komerce-hookd started' "$tmp/hookd.log" && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
grep -q 'komerce-hookd started' "$tmp/hookd.log" || fail "daemon did not start: $(cat "$tmp/hookd.log")"
port=$(sed -n 's/.*komerce-hookd started.* port=\([0-9]*\) .*/\1/p' "$tmp/hookd.log")
admin_port=$(sed -n 's/.* admin_port=\([0-9]*\).*/\1/p' "$tmp/hookd.log")
curl -fsS "http://127.0.0.1:$admin_port/readyz" | grep -q ready || fail "not ready"

post() { # body signature -> "HTTP-code body"
	curl -sS -o "$tmp/reply" -w '%{http_code}' -H 'Content-Type: application/json' \
		-H "X-Callback-Api-Key: $2" --data-binary "$1" \
		"http://127.0.0.1:$port/v1/komerce/callback" || true
	printf ' %s' "$(cat "$tmp/reply")"
}
body='{"payment_id":"KOMPAY-CI-1","order_id":"CI-1","status":"PAID","amount":100000}'
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$key" | awk '{print $NF}')
got=$(post "$body" "$sig")
[ "$got" = '200 {"status":"ok","event_id":1,"duplicate":false}' ] || fail "callback: $got"
echo "   $got"
got=$(post "$body" "$sig")
[ "$got" = '200 {"status":"ok","event_id":1,"duplicate":true}' ] || fail "retried callback: $got"
got=$(post "$body" "$(printf '%064d' 0)")
[ "${got%% *}" = 401 ] || fail "a wrong signature got $got"
komerce-hookctl -c "$tmp/hookd.conf" events --format jsonl | grep -q '"payment_id":"KOMPAY-CI-1"' ||
	fail "komerce-hookctl does not list the event"
komerce-hookctl -c "$tmp/hookd.conf" verify | grep -q 'verify: OK, 1 events' || fail "verify"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "daemon exited $rc on SIGTERM: $(cat "$tmp/hookd.log")"
grep -q 'stopped cleanly' "$tmp/hookd.log" || fail "no clean stop: $(cat "$tmp/hookd.log")"

step "a database from a newer version is refused and not touched"
sqlite3 "$tmp/future.db" 'PRAGMA journal_mode = DELETE; CREATE TABLE t (x); PRAGMA user_version = 99;' >/dev/null
cp "$tmp/future.db" "$tmp/future.orig"
sed "s#^path = .*#path = $tmp/future.db#" "$tmp/hookd.conf" >"$tmp/future.conf"
set +e
/usr/sbin/komerce-hookd -c "$tmp/future.conf" 2>"$tmp/future.log"
rc=$?
set -e
[ "$rc" = 1 ] || fail "the daemon exited $rc on a newer database: $(cat "$tmp/future.log")"
grep -q 'schema version 99, newer than this binary' "$tmp/future.log" || fail "$(cat "$tmp/future.log")"
cmp -s "$tmp/future.db" "$tmp/future.orig" || fail "the newer database was modified"
echo "   $(cat "$tmp/future.log")"

step "purge keeps the database unless KOMERCE_HOOKD_PURGE_DATA=yes"
if [ -e /var/lib/komerce-hookd ] || [ -e /var/lib/private/komerce-hookd ] ||
	[ -n "$(ls -A /etc/komerce-hookd/secrets)" ]; then
	echo "   skipped: this machine has komerce-hookd data or secrets"
else
	# What systemd's StateDirectory= with DynamicUser=yes leaves behind.
	mkdir -p -m 0700 /var/lib/private/komerce-hookd
	ln -s private/komerce-hookd /var/lib/komerce-hookd
	cp "$tmp/events.db" /var/lib/private/komerce-hookd/events.db
	dpkg --purge komerce-hookd >/dev/null 2>"$tmp/purge.log"
	[ -f /var/lib/komerce-hookd/events.db ] || fail "purge removed the database"
	[ ! -e /etc/komerce-hookd ] || fail "purge left /etc/komerce-hookd"
	[ ! -e "$unit" ] || fail "purge left the unit"
	grep -q 'database in /var/lib/komerce-hookd was kept' "$tmp/purge.log" ||
		fail "purge did not say it kept the database"
	dpkg -i "$deb" >/dev/null
	[ -f /var/lib/komerce-hookd/events.db ] || fail "reinstall lost the database"
	KOMERCE_HOOKD_PURGE_DATA=yes dpkg --purge komerce-hookd >/dev/null
	[ ! -e /var/lib/komerce-hookd ] && [ ! -e /var/lib/private/komerce-hookd ] ||
		fail "KOMERCE_HOOKD_PURGE_DATA=yes purge kept the database"
	dpkg -i "$deb" >/dev/null
fi

echo "check-installed: OK (komerce-hookd $version)"
