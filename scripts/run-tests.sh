#!/usr/bin/env bash
# Runs every test suite and counts TAP results. Last line: "N passed, N failed, N skipped".
# A suite that exits 77 is skipped as a whole (it prints why); one that dies
# without reporting a failure still counts as one failed test.
set -uo pipefail
cd "$(dirname "$0")/.."

pass=0 fail=0 skip=0
suites=(
	"unit: correlator|build/test_correlator"
	"unit: vmstats|build/test_vmstats"
	"unit: tpformat|build/test_tpformat"
	"unit: stuck (/proc parsers, verdicts)|build/test_stuck"
	"integration: history (daemon store, its socket and who may serve it, stuck verdicts with history)|build/test_history"
	"unit: metrics (Prometheus text format)|build/test_metrics"
	"integration: router (libfaultline on a real userfaultfd, scripted source)|build/test_router"
	"unit: wire protocol framing and validation|build/test_wire"
	"unit: page-state map (zlib chunks, sticky poison)|build/test_statemap"
	"unit: source (CLI parsers, dirty-tracking page hash)|build/test_source"
	"unit: report (recording parser, aggregation, memory map, HTML escaping)|build/test_report"
	"integration: VMM handover (real uffd + memfd over a Unix socket, zaps, refusals)|build/test_handover"
	"fuzz: wire frame decoder, router session, poison journal, history lines, VMM handover, source control lines, source session, report recording lines (libFuzzer, 10 s each)|tests/fuzz/run_fuzz.sh 10"
	"bpf: handlers via BPF_PROG_TEST_RUN|build/test_bpf_handlers"
	"bpf: KVM, poison, machine errors via BPF_PROG_TEST_RUN|build/test_bpf_kvm"
	"e2e: the README's commands (root without sudo, a user with sudo)|python3 tests/e2e/test_commands.py"
	"e2e: faultline trace|python3 tests/e2e/test_trace.py"
	"e2e: faultline report (a real recording and a million faults in headless Chromium; malformed input)|python3 tests/e2e/test_report.py"
	"e2e: workload variants (handler process, races)|python3 tests/e2e/test_workload_variants.py"
	"e2e: VMs, vCPUs, KVM exits, poison|python3 tests/e2e/test_vm.py"
	"e2e: real QEMU postcopy|python3 tests/e2e/test_qemu_postcopy.py"
	"e2e: real QEMU postcopy under a faultline daemon (started first; migrate-pause and recovery)|python3 tests/e2e/test_qemu_daemon.py"
	"e2e: faultline stuck|python3 tests/e2e/test_stuck.py"
	"e2e: faultline source (precopy, dirty map, poison injection, resume)|python3 tests/e2e/test_source.py"
	"e2e: source dirty tracking (write-protection vs hashes against the writer's own record)|python3 tests/e2e/test_dirty.py"
	"e2e: two-host migration with poison (netns + veth; MISSING, MINOR, faults injected)|python3 tests/e2e/test_migration.py"
	"e2e: migration channel security (TLS x509/PSK, refusals, hostile peers)|python3 tests/e2e/test_tls.py"
	"e2e: migration integrity (guest writes vs cuts, restarts, stale journal, duplicates, zeroed pages, discards; no /dev/kvm needed)|python3 tests/e2e/test_integrity.py"
	"e2e: migration on hugetlbfs guests (2 MiB pages; MISSING and MINOR; poison before, during and late; cut, discard, router restart)|python3 tests/e2e/test_hugetlb_migration.py"
	"e2e: faultline exporter (promtool, real Prometheus)|python3 tests/e2e/test_exporter.py"
	"e2e: no blind start (daemon first: every fault, notify, resolution and race of a new process; late tracking reported)|python3 tests/e2e/test_discovery.py"
)
export CMOCKA_MESSAGE_OUTPUT=TAP

for s in "${suites[@]}"; do
	name=${s%%|*} cmd=${s#*|}
	echo "=== $name"
	log=$(mktemp)
	$cmd 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	p=$(grep -E '^ok ' "$log" | grep -vc '# SKIP')
	k=$(grep -E '^ok ' "$log" | grep -c '# SKIP')
	f=$(grep -cE '^not ok ' "$log")
	if ((rc == 77)); then
		k=$((k + 1))
		echo "--- $name: skipped ($(tail -n 1 "$log"))"
	elif ((rc != 0 && f == 0)); then
		f=1
		echo "--- $name: exited $rc without reporting a failure: counted as one"
	fi
	pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + k))
	rm -f "$log"
done
echo "$pass passed, $fail failed, $skip skipped"
((fail == 0))
