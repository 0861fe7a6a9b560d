#!/bin/sh
# Journal fields read back from a real systemd-journald: runs journald in a private mount
# namespace (tmpfs over /run and /var/log/journal, so the machine's own journal, if any, is
# neither seen nor touched), starts the real komerce-hookd with its stderr on journald's stream
# (systemd-cat) and $JOURNAL_STREAM naming it, as systemd does for a service, drives a payment's
# story (callbacks, a conflict, a failing sink, an admin track), and checks with journalctl
# that `journalctl PAYMENT_ID=...` shows it: native entries (_TRANSPORT=journal) with
# PAYMENT_ID, ORDER_ID, EVENT_ID, SINK, PRIORITY, and nothing left on the stream.
# Needs root, unshare(1) and /lib/systemd/systemd-journald; exits 77 (skipped) without them.
#   tests/journal/check.sh [HOOKD_BIN]
set -eu
bin=${1:-${HOOKD_BIN:-build/komerce-hookd}}
case $bin in /*) ;; *) bin=$(pwd)/$bin ;; esac
journald=/lib/systemd/systemd-journald
if [ "$(id -u)" -ne 0 ] || ! command -v unshare >/dev/null || [ ! -x "$journald" ] ||
	! command -v systemd-cat >/dev/null || ! command -v journalctl >/dev/null; then
	echo "needs root, unshare, systemd-journald, systemd-cat, journalctl: skipped" >&2
	exit 77
fi
if [ "${HOOKD_JOURNAL_NS:-}" != 1 ]; then
	HOOKD_JOURNAL_NS=1 exec unshare --mount --propagation private "$0" "$bin"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/hookd-journal-XXXXXX")
jpid=
hpid=
finish() {
	[ -z "$hpid" ] || kill -9 "$hpid" 2>/dev/null || true
	[ -z "$jpid" ] || kill "$jpid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap finish EXIT INT TERM
fail() {
	echo "FAIL: $*" >&2
	journalctl -D /run/log/journal --no-pager -o short 2>/dev/null | tail -40 >&2 || true
	exit 1
}

mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
"$journald" >"$work/journald.log" 2>&1 &
jpid=$!
i=0
until [ -S /run/systemd/journal/socket ] && [ -S /run/systemd/journal/stdout ]; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "journald did not start: $(cat "$work/journald.log")"
	sleep 0.05
done

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port); admin=$(free_port); dead=$(free_port)
key=journal-callback-key-0001
token=journal-admin-token-0123456789
cat >"$work/hookd.conf" <<CONF
[server]
listen = 127.0.0.1:$port
[admin]
listen = 127.0.0.1:$admin
token = $token
[komerce]
api_key = journal-api-key
callback_keys = $key
confirm_paid = false
[store]
path = $work/events.db
[reconcile]
enabled = false
[sink.app]
type = http
url = http://127.0.0.1:$dead/hook
secret = journal-sink-secret-0123
timeout_ms = 500
CONF
# As systemd does for a service: stderr is a journal stream, JOURNAL_STREAM names it.
systemd-cat -t komerce-hookd sh -c \
	'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$0" -c "$1"' \
	"$bin" "$work/hookd.conf" &
hpid=$!
i=0
until curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 200 ] || fail "komerce-hookd did not start"
	sleep 0.05
done

pid=KPAY-77/J/2026
post() {
	sig=$(printf '%s' "$1" | openssl dgst -sha256 -hmac "$key" -r | cut -d' ' -f1)
	curl -fs -H 'Content-Type: application/json' -H "X-Callback-Api-Key: $sig" \
		--data-binary "$1" "http://127.0.0.1:$port/v1/komerce/callback" >/dev/null
}
post "{\"payment_id\":\"$pid\",\"order_id\":\"ORD-J1\",\"status\":\"PENDING\",\"amount\":1000}"
post "{\"payment_id\":\"$pid\",\"order_id\":\"ORD-J1\",\"status\":\"PAID\",\"amount\":1000}"
post "{\"payment_id\":\"$pid\",\"order_id\":\"ORD-J1\",\"status\":\"PAID\",\"amount\":1000}"
post "{\"payment_id\":\"$pid\",\"order_id\":\"ORD-J1\",\"status\":\"EXPIRED\",\"amount\":1000}"
post '{"payment_id":"KOMPAY-OTHER","order_id":"ORD-J2","status":"PENDING","amount":5}'
curl -fs -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
	-d '{"payment_id":"KOMPAY-TRACKED","order_id":"ORD-J3","amount":700,"expires_at":4102444800}' \
	"http://127.0.0.1:$admin/v1/payments/track" >/dev/null
# The sink is down: wait for its failure line, then stop the daemon cleanly.
i=0
until journalctl -D /run/log/journal --no-pager -q SINK=app 2>/dev/null | grep -q 'forward delivery failed'; do
	i=$((i + 1)); [ $i -lt 200 ] || fail "no forward failure with SINK=app in the journal"
	sleep 0.05
done
kill -TERM "$hpid"
wait "$hpid" || fail "komerce-hookd did not exit 0"
hpid=
sleep 0.3 # journald reads its sockets asynchronously

journalctl -D /run/log/journal --no-pager -o json SYSLOG_IDENTIFIER=komerce-hookd >"$work/all.json"
python3 - "$work/all.json" "$pid" <<'PY'
import json, sys
entries = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
pid = sys.argv[2]
def fail(msg):
    for e in entries:
        print({k: v for k, v in e.items() if not k.startswith("__")}, file=sys.stderr)
    sys.exit("FAIL: " + msg)
if not entries:
    fail("no entries of komerce-hookd")
# Every line of the daemon went natively, none through the stderr stream.
stream = [e["MESSAGE"] for e in entries if e.get("_TRANSPORT") != "journal"]
if stream:
    fail("lines on the stream instead of native entries: %r" % stream)
if not any(e["MESSAGE"].startswith("komerce-hookd started") and e["PRIORITY"] == "6" for e in entries):
    fail("the start-up line (no fields) is missing")
story = [e for e in entries if e.get("PAYMENT_ID") == pid]
msgs = [e["MESSAGE"] for e in story]
def one(prefix, status=None):
    m = [e for e in story if e["MESSAGE"].startswith(prefix) and (status is None or "status=%s " % status in e["MESSAGE"])]
    if not m:
        fail("PAYMENT_ID=%s has no %r (%s): %r" % (pid, prefix, status, msgs))
    return m[0]
pending = one("callback stored", "PENDING")
paid = one("callback stored", "PAID")
conflict = one("callback conflicts", "EXPIRED")
fwd = one("forward delivery failed")
if len([e for e in story if e["MESSAGE"].startswith("callback stored")]) != 2:
    fail("a duplicate callback was logged as stored: %r" % msgs)
for e in (pending, paid, conflict, fwd):
    if e.get("ORDER_ID") != "ORD-J1" or not e.get("EVENT_ID", "").isdigit():
        fail("fields missing: %r" % e)
    if e.get("SYSLOG_IDENTIFIER") != "komerce-hookd":
        fail("identifier: %r" % e)
if conflict["PRIORITY"] != "4" or pending["PRIORITY"] != "6":
    fail("priorities: conflict %s, stored %s" % (conflict["PRIORITY"], pending["PRIORITY"]))
if 'payment_id="%s"' % pid not in conflict["MESSAGE"]:
    fail("the message text lost its key=value facts: %r" % conflict["MESSAGE"])
if fwd.get("SINK") != "app" or fwd["PRIORITY"] != "4":
    fail("forward failure fields: %r" % fwd)
if len({pending["EVENT_ID"], paid["EVENT_ID"], conflict["EVENT_ID"]}) != 3:
    fail("event ids: %r" % msgs)
# Other payments have their own stories and never show up under this PAYMENT_ID.
if any("KOMPAY-OTHER" in m or "KOMPAY-TRACKED" in m for m in msgs):
    fail("another payment under PAYMENT_ID=%s" % pid)
tracked = [e for e in entries if e.get("PAYMENT_ID") == "KOMPAY-TRACKED"]
if not tracked or not tracked[0]["MESSAGE"].startswith("admin api: payment tracked") or tracked[0].get("ORDER_ID") != "ORD-J3":
    fail("admin track line: %r" % tracked)
print("journal: %d entries of komerce-hookd; PAYMENT_ID=%s: %d (%s)" % (len(entries), pid, len(story), "; ".join(m.split(" payment_id")[0] for m in msgs)))
PY
# And journalctl's own matching, as an operator types it.
n=$(journalctl -D /run/log/journal --no-pager -q -o cat "PAYMENT_ID=$pid" | wc -l)
[ "$n" -ge 4 ] || fail "journalctl PAYMENT_ID=$pid shows $n lines"
echo "1 passed, 0 failed"
