#!/bin/sh
# Builds the Debian binary package (dpkg-buildpackage -us -uc -b) from a copy of the source
# tree, so that the working tree stays clean: build directories, var/ and .git are left out.
# Usage: tests/package/build.sh [OUTDIR]   (default build-deb; run from the source root)
# The .deb lands in OUTDIR. DEB_BUILD_OPTIONS=nocheck skips the test suite.
set -eu
out=${1:-build-deb}
src=$out/komerce-hookd

rm -rf "$out"
mkdir -p "$src"
tar --exclude='./build*' --exclude=./.git --exclude=./var --exclude='./obj-*' \
	--exclude=./debian/komerce-hookd --exclude=./debian/.debhelper --exclude=./debian/files \
	--exclude=./tests/node/node_modules \
	--exclude='./debian/*.substvars' --exclude=./debian/debhelper-build-stamp \
	-cf - . | tar -C "$src" -xf -
(cd "$src" && dpkg-buildpackage -us -uc -b -J)
ls "$out"/komerce-hookd_*.deb
