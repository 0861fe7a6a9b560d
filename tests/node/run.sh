#!/bin/sh
# Runs node test-runner suites (tests/node/*.test.mjs) against the built daemon. Exit 77 (meson:
# skipped) when node or the suites' packages are missing: `make node-deps` (npm ci) installs them.
#   tests/node/run.sh FILE.test.mjs...
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v node >/dev/null 2>&1; then
	echo "node not installed: skipped" >&2
	exit 77
fi
if [ ! -d "$here/node_modules/standardwebhooks" ]; then
	echo "tests/node/node_modules missing (run make node-deps): skipped" >&2
	exit 77
fi
cd "$here"
exec node --test "$@"
