#!/bin/sh
# The README's quick start on a fresh Debian 12 machine: installs make and every package the
# project needs (apt-get, as root or through sudo), then `make run` or `make check`.
#   sh tools/quickstart.sh run     build and run the daemon with the bundled Komerce simulator
#   sh tools/quickstart.sh test    build and pass the whole suite (then again under ASan/UBSan)
set -eu
cd "$(dirname "$0")/.."
case "${1:-}" in
run) target=run ;;
test) target=check ;;
*) echo "usage: sh tools/quickstart.sh run|test" >&2; exit 2 ;;
esac
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
if ! command -v make >/dev/null 2>&1; then
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make
fi
make deps
exec make "$target"
