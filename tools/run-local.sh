#!/bin/sh
# `make run`: the daemon on config/local.conf plus, when it is built and the config points at
# 127.0.0.1:8090, the bundled Komerce simulator as its upstream. Ctrl-C stops both.
set -eu
build=${1:-build}
mkdir -p var
sim_pid=
if [ -x "$build/komerce-sim" ] && grep -q '^base_url = http://127.0.0.1:8090' config/local.conf; then
	"$build/komerce-sim" --listen 127.0.0.1:8090 --api-key local-sim-api-key &
	sim_pid=$!
	trap 'kill $sim_pid 2>/dev/null || true' EXIT INT TERM
fi
"$build/komerce-hookd" -c config/local.conf
