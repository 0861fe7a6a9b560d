#!/bin/sh
# Prints, last, what failed in a meson test run: the Check assertions (file:line: message) and
# sanitizer headlines from the build's test log, so a CI log cut to its tail still names them.
# usage: tools/test-digest.sh BUILD_DIR
log="$1/meson-logs/testlog.txt"
[ -f "$log" ] || exit 0
echo "==== failures in $log ===="
grep -E '^[^ ]+\.c:[0-9]+:[EF]:|ERROR: (Address|Thread|Undefined|Leak)Sanitizer|runtime error:|^not ok|Assertion' "$log" |
	cut -c1-400 | tail -n 40
