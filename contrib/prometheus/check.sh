#!/bin/sh
# `make test-prometheus`: the alerting rules and a live scrape, checked with promtool (Debian's
# prometheus package). Starts the real daemon (+ komerce-sim as its upstream, an HTTP sink that
# refuses, a Redis sink nobody listens on) on loopback ports, sends signed callbacks and an
# admin request so that every family has series, scrapes /metrics and runs
#   promtool check metrics   (exposition format and naming lint)
#   promtool check rules     (contrib/prometheus/komerce-hookd.rules.yml)
#   promtool test rules      (contrib/prometheus/tests.yml: synthetic series, each alert)
# and checks that every hookd_* metric the rules use appears in the scrape.
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
here=contrib/prometheus
command -v promtool >/dev/null || { echo "promtool missing: apt-get install prometheus" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/hookd-prom-XXXXXX")
hookd_pid=
sim_pid=
cleanup() {
	[ -z "$hookd_pid" ] || { kill "$hookd_pid" 2>/dev/null; wait "$hookd_pid" 2>/dev/null || true; }
	[ -z "$sim_pid" ] || { kill "$sim_pid" 2>/dev/null; wait "$sim_pid" 2>/dev/null || true; }
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

"$BUILD/komerce-sim" --listen 127.0.0.1:0 --api-key prom-api-key --port-file "$work/sim.port" \
	--quiet 2>>"$work/sim.log" &
sim_pid=$!
i=0
until [ -s "$work/sim.port" ]; do
	i=$((i + 1)); [ $i -lt 200 ] || { echo "komerce-sim did not start" >&2; exit 1; }
	sleep 0.05
done
port=$(free_port); admin=$(free_port); dead=$(free_port)
key=prom-callback-key-0001
token=prom-admin-token-0123456789
cat >"$work/hookd.conf" <<CONF
[server]
listen = 127.0.0.1:$port
[admin]
listen = 127.0.0.1:$admin
token = $token
[komerce]
base_url = http://127.0.0.1:$(cat "$work/sim.port")/user
api_key = prom-api-key
callback_keys = $key
[store]
path = $work/events.db
[reconcile]
grace_seconds = 0
[sink.app]
type = http
url = http://127.0.0.1:$dead/hook
secret = prom-sink-secret-0123456789
[sink.queue]
type = redis
url = redis://127.0.0.1:$dead/0
CONF
"$BUILD/komerce-hookd" -c "$work/hookd.conf" 2>>"$work/hookd.log" &
hookd_pid=$!
i=0
until curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 200 ] || { echo "komerce-hookd did not start:" >&2; cat "$work/hookd.log" >&2; exit 1; }
	sleep 0.05
done

# Traffic: signed callbacks (PENDING: watched), one with a bad signature, an admin request.
for n in 1 2 3; do
	body="{\"payment_id\":\"KOMPAY-PROM-$n\",\"order_id\":\"ORD-$n\",\"status\":\"PENDING\",\"amount\":1000}"
	sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$key" -r | cut -d' ' -f1)
	curl -fs -H 'Content-Type: application/json' -H "X-Callback-Api-Key: $sig" --data-binary "$body" \
		"http://127.0.0.1:$port/v1/komerce/callback" >/dev/null
done
curl -s -o /dev/null -H 'Content-Type: application/json' -H 'X-Callback-Api-Key: bad' --data-binary '{}' \
	"http://127.0.0.1:$port/v1/komerce/callback"
curl -fs -H "Authorization: Bearer $token" "http://127.0.0.1:$admin/v1/events?limit=1" >/dev/null
# The forwarders and the reconciler publish their gauges within a few seconds.
i=0
until curl -fs "http://127.0.0.1:$admin/metrics" >"$work/metrics.txt" &&
	grep -q '^hookd_payments_pending ' "$work/metrics.txt" &&
	grep -q '^hookd_outbox_pending{sink="queue"}' "$work/metrics.txt"; do
	i=$((i + 1)); [ $i -lt 300 ] || { echo "gauges never appeared:" >&2; cat "$work/metrics.txt" >&2; exit 1; }
	sleep 0.05
done

echo "promtool check metrics (live scrape, $(grep -c '^hookd_' "$work/metrics.txt") series)"
promtool check metrics <"$work/metrics.txt"
promtool check rules "$here/komerce-hookd.rules.yml"
promtool test rules "$here/tests.yml"

# The Grafana dashboard is JSON whose every query names its metrics.
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["panels"] and d["uid"]' \
	contrib/grafana/komerce-hookd.json

# Every hookd_* metric a rule or a dashboard panel uses must exist in the live scrape
# (histograms by their _bucket series, their _sum/_count with them).
missing=0
for m in $(cat "$here/komerce-hookd.rules.yml" contrib/grafana/komerce-hookd.json |
	grep -o 'hookd_[a-z_]*' | sed 's/_\(bucket\|sum\|count\)$//' | sort -u); do
	case $m in hookd_leader) continue ;; esac # comes with the PostgreSQL backend (absent() rule)
	if ! grep -q "^$m[ {]" "$work/metrics.txt" && ! grep -q "^${m}_bucket{" "$work/metrics.txt"; then
		echo "rules or dashboard use $m, which the daemon does not export" >&2
		missing=1
	fi
done
[ $missing -eq 0 ]
kill "$hookd_pid"
wait "$hookd_pid"
hookd_pid=
echo "prometheus checks: ok"
