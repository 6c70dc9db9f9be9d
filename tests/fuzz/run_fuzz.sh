#!/usr/bin/env bash
# tests/fuzz/run_fuzz.sh SECONDS [TARGET...]: runs each libFuzzer target
# (build/fuzz-TARGET; default: frame router journal) for SECONDS on a copy
# of its seed corpus and reports one TAP test per target:
#   frame    the wire decoder, reader and state-map decoder
#   router   the router's session with a hostile source (real userfaultfd)
#   journal  the poison journal reader
#   history  the history socket's request line and answer lines
#   handover the router's side of a VMM's handover (frames from the VMM)
#   control  the source's control-socket page lists, --range, HOST:PORT
#   source   the source's session with up to three peers (its own memory)
#   report   faultline report: a recording's lines, aggregated, written as a page
# Builds nothing: `make test` and `make bench` build them first.  A crash,
# leak, timeout or OOM input is kept in build/fuzz-artifacts/ and named in
# the failure line; reproduce with `build/fuzz-TARGET FILE`.  Inputs that once
# crashed a target are kept in tests/fuzz/regress/TARGET-NAME and run first.
set -uo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-20}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(frame router journal history handover control source report)
echo "1..${#targets[@]}"
failed=0 i=0
for t in "${targets[@]}"; do
	i=$((i + 1))
	bin=build/fuzz-$t
	# frame and router read the same thing: frame streams of the session
	# tests/fuzz/fuzz_common.h describes; the journal starts from nothing
	corpus=build/fuzz-corpus
	[[ $t == journal || $t == history || $t == control || $t == report ]] && corpus=
	if [[ ! -x $bin || ( -n $corpus && ! -d $corpus ) ]]; then
		echo "not ok $i - fuzz_$t: $bin or its corpus missing (make $bin build/fuzz-corpus.stamp)"
		failed=1
		continue
	fi
	work=$(mktemp -d)
	mkdir -p "$work/corpus"
	[[ -n $corpus ]] && cp -r "$corpus"/. "$work/corpus/"
	# inputs that once crashed a target (tests/fuzz/regress/TARGET-*) run first, every time
	for f in tests/fuzz/regress/"$t"-*; do
		[[ -e $f ]] && cp "$f" "$work/corpus/"
	done
	if [[ $t == report ]]; then	# one line of each kind trace --json writes
		cp tests/fuzz/report-seed.jsonl "$work/corpus/seed"
	fi
	if [[ $t == history ]]; then	# a request and an answer line to start from
		printf '\0{"pids":[1,42]}' >"$work/corpus/request"
		printf '\1{"event":"history","daemon_pid":1,"now_ns":5}' >"$work/corpus/answer"
	fi
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
		cp "$f" "build/fuzz-artifacts/$t-$(basename "$f")"
		artifacts+=("build/fuzz-artifacts/$t-$(basename "$f")")
	done
	if ((rc == 0 && ${#artifacts[@]} == 0)); then
		echo "ok $i - fuzz_$t ${runs:-?} runs in ${secs} s, no crash"
	else
		echo "not ok $i - fuzz_$t failed (exit $rc) after ${runs:-?} runs: ${artifacts[*]:-no artifact}"
		grep -E 'ERROR|SUMMARY|property failed|runtime error|^ +#[0-9]+ .* in ' "$work/log" |
			head -n 30 | sed 's/^/# /'
		failed=1
	fi
	rm -rf "$work"
done
exit $failed
