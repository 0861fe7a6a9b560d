#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build-fuzz/ and runs each for SECONDS seconds,
# seeded from tests/fixtures/*.json (callback) and tests/fuzz/corpus/config/ (config). Prints
# the executions run and crashes found per target; exits non-zero if any target found one.
# Installs nothing: it says which package is missing (Debian: clang libclang-rt-14-dev).
#   usage: tests/fuzz/run.sh SECONDS        (BUILD_FUZZ=dir to use another build directory)
set -euo pipefail

secs=${1:-}
if [[ ! $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
	echo "usage: $0 SECONDS" >&2
	exit 2
fi
cd "$(dirname "$0")/../.."
build=${BUILD_FUZZ:-build-fuzz}

missing=()
for tool in clang meson ninja; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
	probe=$(mktemp -d)
	trap 'rm -rf "$probe"' EXIT
	printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n);\n%s\n' \
		'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n; }' \
		>"$probe/p.c"
	if ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" \
		>"$probe/log" 2>&1; then
		missing+=("libclang-rt-14-dev (clang cannot link -fsanitize=fuzzer)")
	fi
fi
if [ ${#missing[@]} -gt 0 ]; then
	echo "fuzz: missing: ${missing[*]}" >&2
	echo "fuzz: on Debian 12: apt-get install -y clang libclang-rt-14-dev meson ninja-build" >&2
	exit 2
fi

# A build directory configured with another compiler cannot switch: wipe it then.
if [ -f "$build/build.ninja" ] && grep -q '"command": "clang ' "$build/compile_commands.json" 2>/dev/null; then
	meson configure "$build" -Dfuzz=true -Dtests=false >/dev/null
else
	wipe=()
	if [ -d "$build" ]; then wipe=(--wipe); fi
	CC=clang meson setup "$build" -Dfuzz=true -Dtests=false "${wipe[@]}" \
		>"$build.setup.log" 2>&1 || {
		cat "$build.setup.log" >&2
		exit 1
	}
	rm -f "$build.setup.log"
fi
if ! ninja -C "$build" tests/fuzz/fuzz_callback tests/fuzz/fuzz_config >"$build/fuzz-build.log" 2>&1; then
	tail -n 40 "$build/fuzz-build.log" >&2
	exit 1
fi

# Working corpora live in the build directory: seeds are copied, findings stay out of git.
work="$build/fuzz"
mkdir -p "$work/corpus/callback" "$work/corpus/config"
cp -n tests/fixtures/*.json "$work/corpus/callback/"
cp -n tests/fuzz/corpus/config/* "$work/corpus/config/"

failed=0
run_target() {
	local name=$1 max_len=$2
	local art="$work/artifacts/$name" log="$work/$name.log"
	local rc=0 execs crashes

	rm -rf "$art"
	mkdir -p "$art"
	# stdin from /dev/null: a fuzzed "token_file = /dev/stdin" must not wait for a terminal.
	"$build/tests/fuzz/fuzz_$name" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
		-rss_limit_mb=2048 -max_len="$max_len" -dict="tests/fuzz/$name.dict" \
		-artifact_prefix="$art/" "$work/corpus/$name" </dev/null >"$log" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	crashes=$(find "$art" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
		-o -name 'oom-*' \) | wc -l)
	if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
		crashes=1 # died without writing an artifact: still a finding
	fi
	printf 'fuzz_%s: %s executions in %ss, %s crashes, corpus %s files\n' "$name" \
		"${execs:-0}" "$secs" "$crashes" "$(find "$work/corpus/$name" -type f | wc -l)"
	if [ "$crashes" -gt 0 ]; then
		failed=1
		echo "fuzz_$name: see $log and $art/" >&2
		grep -m 20 -E 'ERROR|SUMMARY|==[0-9]+==' "$log" >&2 || true
	fi
}
run_target callback 70000
run_target config 8192
exit $failed
