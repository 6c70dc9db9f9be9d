#!/usr/bin/env python3
"""End-to-end tests of `faultline trace` against variants of the uffd workload.

- the handler in a separate process that got the userfaultfd over SCM_RIGHTS
  (Firecracker style), launched and attached with -p;
- -p following faulting threads created after the tracer attached;
- the mremap and mmap(MAP_FIXED) races.

As in test_trace.py, the reference is the workload's own record: its
wl_fault / wl_race records and its wl_summary (handler_pid, handler_uffd).
"""
import os
import subprocess
import tempfile

from tap import FAULTLINE, jsonl, main, require_root
from test_trace import WORKLOAD, check_against_workload, run_traced

STRAND_NS = 100_000_000  # faultline's default --strand-ms


def wl_summary(wl):
    s = [r for r in wl if r["event"] == "wl_summary"]
    assert len(s) == 1, f"workload wrote {len(s)} summaries"
    assert s[0]["errors"] == 0, f"the workload itself failed: {s[0]}"
    return s[0]


def check_handler_attribution(faults, wl):
    """Every fault of the workload names the handler process and its fd number."""
    summ = wl_summary(wl)
    hpid, hfd = summ["handler_pid"], summ["handler_uffd"]
    assert hpid != summ["pid"], f"the workload's handler is not a separate process: {summ}"
    mine = [f for f in faults if f["pid"] == summ["pid"]]
    assert mine, "no faults of the workload"
    bad = [f for f in mine if f["handler_pid"] != hpid or f["uffd"] != hfd]
    assert not bad, (f"{len(bad)}/{len(mine)} faults not attributed to handler pid {hpid} "
                     f"fd {hfd}: first {bad[0]}")
    # the handler process itself never faults on the region
    assert not [f for f in faults if f["pid"] == hpid], "faults reported for the handler process"


def tasks_of(pid):
    return {int(t) for t in os.listdir(f"/proc/{pid}/task")}


def children_of(pid):
    kids = set()
    for t in tasks_of(pid):
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids |= {int(c) for c in f.read().split()}
        except FileNotFoundError:
            pass
    return kids


def trace_pid_during_start_delay(wl_args, duration="5"):
    """Start the workload with a start delay, attach `trace -p` to it during the delay.

    Returns (faultline objs, workload records, tasks and children of the
    workload at the moment faultline said it was tracing).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        wl = subprocess.Popen([WORKLOAD, *wl_args, "--start-delay-ms", "1500", "--out", out.name],
                              stderr=subprocess.PIPE, text=True)
        p = subprocess.Popen([FAULTLINE, "trace", "--json", "-p", str(wl.pid), "--duration",
                              duration], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = p.stderr.readline()
            # what exists of the workload now that the tracer is attached
            tasks, kids = tasks_of(wl.pid), children_of(wl.pid)
            wl_err = wl.communicate(timeout=30)[1]
            so, se = p.communicate(timeout=30)
        finally:
            for proc in (wl, p):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert first.startswith("Tracing"), first + se
        assert p.returncode == 0, se
        assert wl.returncode == 0, f"workload exited {wl.returncode}: {wl_err[-2000:]}"
        ref = jsonl(out.read())
    # the tracer must have attached during the delay, or the test proves nothing
    assert len(tasks) == 1 or "--handler-process" not in wl_args, \
        f"workload already had threads {tasks} when faultline attached (attach too slow?)"
    return jsonl(so), ref, tasks, kids


def test_handler_process_launched():
    require_root()
    faults, objs, wl, _ = run_traced(
        [WORKLOAD, "--handler-process", "--threads", "2", "--pages", "8", "--delay-us", "200"])
    check_against_workload(faults, wl, "missing")
    check_handler_attribution(faults, wl)
    summ = [o for o in objs if o["event"] == "summary"][0]
    assert summ["lost"] == 0


def test_handler_process_attached_by_pid():
    require_root()
    objs, wl, tasks, kids = trace_pid_during_start_delay(
        ["--handler-process", "--threads", "2", "--pages", "8", "--delay-us", "200"])
    summ = wl_summary(wl)
    assert summ["handler_pid"] not in kids, \
        "the handler process existed before faultline attached: not following it by fork"
    faults = [o for o in objs if o["event"] == "fault"]
    assert {f["pid"] for f in faults} == {summ["pid"]}, "only the -p process is reported"
    check_against_workload(faults, wl)
    check_handler_attribution(faults, wl)


def test_pid_follows_threads_created_after_attach():
    require_root()
    objs, wl, tasks, _ = trace_pid_during_start_delay(
        ["--threads", "4", "--pages", "8", "--delay-us", "200", "--loops", "2"])
    ref = [r for r in wl if r["event"] == "wl_fault"]
    wl_summary(wl)
    tids = {r["tid"] for r in ref}
    assert len(tids) == 4
    assert not tids & tasks, \
        f"faulting threads {tids & tasks} existed before faultline attached: premise broken"
    faults = [o for o in objs if o["event"] == "fault"]
    seen = {f["tid"] for f in faults}
    assert tids <= seen, f"no faults seen from threads {sorted(tids - seen)} created after attach"
    check_against_workload(faults, wl)


WHAT = {"mremap": "mremap", "mmap-fixed": "mmap MAP_FIXED"}


def check_race(kind, extra=()):
    _, objs, wl, _ = run_traced(
        [WORKLOAD, "--threads", "1", "--pages", "2", "--race", kind, "--race-hold-ms", "400",
         *extra])
    wl_summary(wl)
    refs = [r for r in wl if r["event"] == "wl_race"]
    assert len(refs) == 1 and refs[0]["kind"] == kind, refs
    ref = refs[0]
    tid, addr = ref["tid"], ref["addr"]
    races = [o for o in objs if o["event"] == "race"]

    def of_kind(k):
        return [r for r in races if r["kind"] == k]

    mc = of_kind("mapchange_with_waiters")
    assert len(mc) == 1, f"mapchange_with_waiters: {mc or races}"
    assert mc[0]["what"] == WHAT[kind], mc[0]
    assert (mc[0]["waiter_tid"], mc[0]["waiter_addr"]) == (tid, addr), (mc[0], ref)

    pf = of_kind("placement_failed")
    if ref["copy_errno"] != "none":
        assert len(pf) == 1, f"placement_failed: {pf or races}"
        assert pf[0]["errno"] == ref["copy_errno"], (pf[0], ref)
        assert (pf[0]["waiter_tid"], pf[0]["waiter_addr"]) == (tid, addr), (pf[0], ref)
    else:
        assert not pf, pf

    st = of_kind("waiter_stranded")
    stranded = ref["blocked_after_unmap"] and ref["wake_ns"] - ref["unmap_ns"] > STRAND_NS
    if stranded:
        assert len(st) == 1, f"waiter_stranded x{len(st)}: {races}"
        assert (st[0]["waiter_tid"], st[0]["waiter_addr"]) == (tid, addr), (st[0], ref)
        # reported while the waiter was still blocked, after the strand time
        assert ref["read_ns"] + STRAND_NS <= st[0]["ts_ns"] < ref["wake_ns"], (st[0], ref)
    else:
        assert not st, st

    # the waiter's episode ends with the WAKE and lasts what the thread measured
    f = [o for o in objs if o["event"] == "fault" and o["tid"] == tid and o["addr"] == addr]
    assert len(f) == 1, f
    assert f[0]["resolved_by"] == "wake", f[0]
    want = ref["end_ns"] - ref["start_ns"]
    assert abs(f[0]["latency_ns"] - want) <= 0.1 * want, (f[0]["latency_ns"], want)
    if f[0].get("placement_errno") is not None and ref["copy_errno"] != "none":
        assert f[0]["placement_errno"] == ref["copy_errno"], f[0]
    return ref


def test_race_mremap():
    require_root()
    ref = check_race("mremap")
    # what the kernel did (the workload verified it): the old address is a hole
    assert ref["signal"] == "SIGSEGV" and ref["si_code"] == "SEGV_MAPERR", ref


def test_race_mmap_fixed():
    require_root()
    ref = check_race("mmap-fixed")
    # the woken waiter found the fresh anonymous mapping and read its zero page
    assert ref["signal"] == "none" and ref["value"] == 0, ref


def test_race_mremap_handler_process():
    require_root()
    check_race("mremap", ["--handler-process"])


if __name__ == "__main__":
    main([test_handler_process_launched, test_handler_process_attached_by_pid,
          test_pid_follows_threads_created_after_attach, test_race_mremap,
          test_race_mmap_fixed, test_race_mremap_handler_process])
