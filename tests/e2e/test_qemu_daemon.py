#!/usr/bin/env python3
"""End-to-end: faultline as a host daemon around a real QEMU postcopy.

The same two QEMU 7.2 (TCG) as tests/e2e/test_qemu_postcopy.py, but
faultline runs as fleets run it: `faultline trace` in default scope and
`faultline exporter` started before the destination QEMU exists.

1. A plain postcopy: every fault QEMU's fault thread read is a faultline
   fault (same thread, same page) from the very first one, and every vCPU
   fault faultline saw was read by QEMU or withdrawn by a placement before
   any read (counted apart); the exporter counts at least QEMU's requests
   for the QEMU process.
2. A postcopy paused by `migrate-pause` (what a network failure does):
   `faultline stuck` reports the vCPUs stuck, never handler_gone (QEMU's
   fault thread is alive, waiting for recovery); with the daemon's history
   the verdict is handler_stalled and the evidence names QEMU's fault
   thread; after migrate-recover and the resume nothing is stuck and the
   migration completes.

The references are QEMU's own: its fault-thread trace, query-cpus-fast,
query-migrate's statuses, /proc's thread names.
"""
import json
import os
import re
import shutil
import subprocess
import time

import qemu_postcopy as qp
from tap import FAULTLINE, Skip, main, require_root

MS = 1_000_000


def assets_or_skip():
    require_root()
    if shutil.which(qp.QEMU) is None:
        raise Skip(f"{qp.QEMU} not installed (Debian package qemu-system-x86; "
                   "sudo scripts/install-deps.sh)")
    try:
        return qp.prepare_assets(os.environ.get("FAULTLINE_QEMU_ASSETS"))
    except qp.HarnessError as e:
        raise Skip(f"{e}")


def log(m):
    print(f"# {m}", flush=True)


def faults_total(metrics, process):
    n = 0.0
    for line in metrics.splitlines():
        m = re.match(r'^faultline_faults_total\{(.*)\} (\S+)$', line)
        if m and f'process="{process}"' in m.group(1):
            n += float(m.group(2))
    return n


def test_daemon_started_before_qemu():
    assets = assets_or_skip()
    try:
        res = qp.run_migration(assets=assets, daemon=True, log=log)
    except qp.HarnessError as e:
        raise AssertionError(f"the migration failed: {e}")
    a = qp.analyse(res)
    for line in qp.report_lines(res, a):
        log(line)
    assert res["faultline_rc"] == 0 and res["exporter_rc"] == 0, res["faultline_stderr"][-1500:]
    dst = res["dst_pid"]
    late = [o for o in res["faultline"] if o.get("event") == "tracked_late"]
    assert not [o for o in late if o["pid"] == dst], f"QEMU tracked late: {late}"
    assert a["qemu_requests_on_vcpus"] >= 10, a["qemu_requests_per_vcpu"]
    missing = a["qemu_missing_in_faultline"]
    assert not missing, (f"{len(missing)} of {a['qemu_requests']} (tid, page) QEMU read are not "
                         "faultline faults, the first: " +
                         ", ".join(f"({t}, {p:#x})" for t, p in missing[:5]))
    assert not a["matched_without_notify"], "faults QEMU read without faultline's notify"
    bad = a["faultline_vcpu_not_in_qemu_unexplained"]
    assert not bad, f"{len(bad)} vCPU faults neither read by QEMU nor withdrawn"
    log(f"vCPU faults: {a['faultline_vcpu_faults']}, of which never read by QEMU (withdrawn "
        f"by a placement): {len(a['faultline_vcpu_not_in_qemu'])}")
    # the exporter, up before QEMU too, counted at least what QEMU's fault thread read
    counted = faults_total(res["metrics"], "qemu-system-x86")
    assert counted >= a["qemu_requests"], (counted, a["qemu_requests"])
    assert 'process=""' not in res["metrics"]


def stuck_json(pid, history):
    p = subprocess.run([FAULTLINE, "stuck", "--json", "-p", str(pid), "--min-age", "300ms",
                        "--history-socket", history], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    objs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return [o for o in objs if o["event"] == "stuck"], objs[-1]


def test_paused_postcopy_is_stalled_not_gone():
    assets = assets_or_skip()
    seen = []

    def on_pause(res, dst):
        threads = {}
        for tid in os.listdir(f"/proc/{dst}/task"):
            with open(f"/proc/{dst}/task/{tid}/comm") as f:
                threads[int(tid)] = f.read().strip()
        end = time.monotonic() + 15
        while True:
            mine, summ = stuck_json(dst, res["history_socket"])
            if mine or time.monotonic() > end or "paused_ns" not in res or seen:
                break
            time.sleep(0.5)
        seen.append({"stuck": mine, "summary": summ, "threads": threads,
                     "status": "after" if seen else "paused"})

    try:
        # slow enough that the pause finds most pages still at the source
        res = qp.run_migration(assets=assets, daemon=True, pause=on_pause,
                               postcopy_bandwidth=4 << 20, log=log)
    except qp.HarnessError as e:
        raise AssertionError(f"the migration failed: {e}")
    assert len(seen) == 2, seen
    paused, after = seen
    vcpus = set(res["vcpu_tids"].values())
    stuck = paused["stuck"]
    for o in stuck:
        log(f"paused: tid {o['tid']} ({o['thread']}) {o['verdict']}")
    assert {o["tid"] for o in stuck} & vcpus, f"no vCPU reported stuck while paused: {stuck}"
    assert paused["summary"]["history"] == "daemon", paused["summary"]
    fault_threads = {t: n for t, n in paused["threads"].items() if "fault" in n}
    assert fault_threads, f"no QEMU fault thread among {paused['threads']}"
    for o in stuck:
        assert o["verdict"] != "handler_gone", o
        if o["tid"] not in vcpus:
            continue
        assert o["verdict"] == "handler_stalled", o
        ev = " | ".join(o["evidence"])
        assert any(f"thread {t} ({n}) of pid {res['dst_pid']} read this userfaultfd last" in ev
                   for t, n in fault_threads.items()), ev
        assert "second handler" in o["unstick"], o
    # recovered: nothing stuck, the migration completed (run_migration waited for it)
    assert after["stuck"] == [], after["stuck"]
    assert res["dest_info"]["status"] == "completed", res["dest_info"]


if __name__ == "__main__":
    main([test_daemon_started_before_qemu, test_paused_postcopy_is_stalled_not_gone])
