#!/usr/bin/env bash
# tests/fuzz/run_fuzz.sh SECONDS: runs build/fuzz-frame (the libFuzzer target
# of the wire decoder) for SECONDS on a copy of the seed corpus
# build/fuzz-corpus, and reports one TAP test.  Builds nothing: `make test`
# and `make bench` build both first.  A crash, leak, timeout or OOM input
# is kept in build/fuzz-artifacts/ and named in the failure line;
# reproduce with `build/fuzz-frame FILE`.
set -uo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-20}
bin=build/fuzz-frame
corpus=build/fuzz-corpus
echo "1..1"
if [[ ! -x $bin || ! -d $corpus ]]; then
	echo "not ok 1 - fuzz_frame: $bin or $corpus missing (make $bin build/fuzz-corpus.stamp)"
	exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$corpus" "$work/corpus"

"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$work/" "$work/corpus" >"$work/log" 2>&1
rc=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$work/log" | tail -n 1)
[[ -n $runs ]] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work/log" | tail -n 1)
[[ -n $runs ]] || runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$work/log" | tail -n 1)
artifacts=()
for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
	[[ -e $f ]] || continue
	mkdir -p build/fuzz-artifacts
	cp "$f" build/fuzz-artifacts/
	artifacts+=("build/fuzz-artifacts/$(basename "$f")")
done

if ((rc == 0 && ${#artifacts[@]} == 0)); then
	echo "ok 1 - fuzz_frame ${runs:-?} runs in ${secs} s, no crash"
	exit 0
fi
echo "not ok 1 - fuzz_frame failed (exit $rc) after ${runs:-?} runs: ${artifacts[*]:-no artifact}"
grep -E 'ERROR|SUMMARY|property failed|runtime error|^ +#[0-9]+ .* in ' "$work/log" | head -n 30 | sed 's/^/# /'
exit 1
