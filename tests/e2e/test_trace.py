#!/usr/bin/env python3
"""End-to-end tests of `faultline trace` against real userfaultfd workloads.

The reference is always the workload's own record of each fault: the
faulting thread's CLOCK_MONOTONIC before/after the access, the handler's
resolution, the vCPU thread ids of the KVM test VMM.
"""
import json
import os
import signal
import subprocess
import tempfile
import time

import reference
from tap import BUILD, FAULTLINE, HugePages, Skip, jsonl, main, require_kvm, require_root

WORKLOAD = os.path.join(BUILD, "uffd-workload")
KVM_GUEST = os.path.join(BUILD, "kvm-guest")


def run_traced(wl_cmd, *trace_args, timeout=120):
    """Trace wl_cmd (its records go to a temp file); return (faults, others, wl_records, proc)."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        cmd = [*wl_cmd, "--out", out.name]
        p = subprocess.run([FAULTLINE, "trace", "--json", *trace_args, "--", *cmd],
                           capture_output=True, text=True, timeout=timeout)
        wl = jsonl(out.read())
    objs = jsonl(p.stdout)
    assert p.returncode == 0, f"faultline exited {p.returncode}: {p.stderr[-2000:]}"
    assert any(l.startswith("Tracing") for l in p.stderr.splitlines()), p.stderr
    faults = [o for o in objs if o["event"] == "fault"]
    return faults, objs, wl, p


def check_against_workload(faults, wl, expect=None):
    """Every workload fault seen exactly once, latency and resolution right."""
    ref = [r for r in wl if r["event"] == "wl_fault"]
    assert ref, "workload recorded no faults"
    pid = next(r["pid"] for r in wl if r["event"] == "wl_summary")
    mine = [f for f in faults if f["pid"] == pid]
    keys = [(f["tid"], f["addr"]) for f in mine]
    # A page can fault once per pass; compare multisets in time order.
    assert len(mine) == len(ref), f"faultline saw {len(mine)} faults, workload {len(ref)}"
    by_key = {}
    for f in sorted(mine, key=lambda f: f["start_ns"]):
        by_key.setdefault((f["tid"], f["addr"]), []).append(f)
    assert sorted(keys) == sorted((r["tid"], r["addr"]) for r in ref), "fault sets differ"
    worst = 0.0
    preempted = 0
    short = []
    for r in sorted(ref, key=lambda r: r["start_ns"]):
        f = by_key[(r["tid"], r["addr"])].pop(0)
        want = reference.window(r)
        got = f["latency_ns"]
        assert f["resolved_by"] == r["resolved_by"], \
            f"{r['addr']}: resolved_by {f['resolved_by']} vs workload {r['resolved_by']}"
        if expect:
            assert f["mode"] == expect, f"mode {f['mode']} != {expect}"
        # faultline's window lies inside the thread's own: never longer
        assert got <= want + reference.tolerance(want), \
            f"latency longer than the thread's own: {reference.describe(r, got)}"
        # the handler's clock: the thread slept at least from its read to its resolve
        assert got >= reference.sure_lower(r) - 1000, \
            f"latency shorter than the handler held the fault: {reference.describe(r, got)}"
        tight = reference.tight_lower(r)
        if tight is None:
            preempted += 1
            continue
        if got < tight:
            short.append((r, got))
            continue
        worst = max(worst, abs(got - want))
        # the fault started before the thread's own clock stopped, and after it started
        assert r["start_ns"] <= f["start_ns"] + 1000 <= r["end_ns"] + 1000
    assert preempted <= len(ref) // 4, f"{preempted}/{len(ref)} measurements preempted: too noisy"
    summary = next(r for r in wl if r["event"] == "wl_summary")
    reference.check_shorts(short, len(ref), summary)
    return worst


def test_missing_copy_threads():
    require_root()
    faults, objs, wl, _ = run_traced(
        [WORKLOAD, "--threads", "4", "--pages", "16", "--delay-us", "300"])
    check_against_workload(faults, wl, "missing")
    for f in faults:
        assert f["notify_ns"] is not None and f["resolve_ns"] is not None
        assert f["uffd"] is not None and f["blocked"] is True
        assert f["page_size"] == os.sysconf("SC_PAGESIZE"), f
    summ = [o for o in objs if o["event"] == "summary"][0]
    assert summ["lost"] == 0


def test_hugetlb_faults_name_their_page_size():
    """hugetlbfs-backed memory, MISSING (MAP_HUGETLB) and MINOR (a hugetlb
    memfd): every fault as the workload saw it, at the huge page, and named
    with its 2 MiB page size."""
    with HugePages(12):
        for args in (["--resolve", "copy"], ["--mode", "minor", "--resolve", "continue"]):
            faults, _, wl, _ = run_traced(
                [WORKLOAD, "--hugetlb", "--threads", "2", "--pages", "3", "--delay-us", "300",
                 *args])
            summ = next(r for r in wl if r["event"] == "wl_summary")
            assert summ["page_size"] == 2 << 20, summ
            check_against_workload(faults, wl)
            for f in faults:
                assert f["page_size"] == 2 << 20, f
                assert int(f["addr"], 16) % (2 << 20) == 0 or f["user_fault"], f


def test_missing_mix_copy_zeropage_poison_wake():
    require_root()
    faults, _, wl, _ = run_traced(
        [WORKLOAD, "--threads", "3", "--pages", "12", "--resolve", "mix", "--delay-us", "200"])
    check_against_workload(faults, wl, "missing")
    kinds = {f["resolved_by"] for f in faults}
    assert kinds == {"copy", "zeropage", "poison", "wake"}, kinds


def test_minor_continue_and_poison():
    require_root()
    faults, _, wl, _ = run_traced(
        [WORKLOAD, "--mode", "minor", "--resolve", "mix", "--threads", "2", "--pages", "9",
         "--delay-us", "200"])
    check_against_workload(faults, wl, "minor")
    assert {f["resolved_by"] for f in faults} == {"continue", "poison"}
    # minor + WAKE re-faults on the same page: merged into one episode
    assert sum(f["retries"] for f in faults) >= 1


def test_handler_delay_is_the_resolve_share():
    require_root()
    faults, _, wl, _ = run_traced(
        [WORKLOAD, "--threads", "1", "--pages", "10", "--delay-us", "2000"])
    check_against_workload(faults, wl)
    for f in faults:
        # the injected handler delay (a sleep: never shorter) sits between notify and resolve
        assert f["resolve_ns"] >= 2_000_000, f
        assert f["notify_ns"] < 1_000_000 and f["wake_ns"] < 1_000_000, f
        # the four shares add up to the latency
        parts = f["notify_ns"] + f["resolve_ns"] + f["wake_ns"] + f["run_ns"]
        assert parts == f["latency_ns"], f


def test_multiple_handler_threads_loops():
    require_root()
    faults, _, wl, _ = run_traced(
        [WORKLOAD, "--threads", "4", "--pages", "8", "--handler-threads", "2", "--loops", "3",
         "--delay-us", "100"])
    check_against_workload(faults, wl)


def test_munmap_race_reported():
    require_root()
    _, objs, wl, _ = run_traced(
        [WORKLOAD, "--threads", "1", "--pages", "2", "--race", "munmap", "--race-hold-ms", "400"])
    ref = [r for r in wl if r["event"] == "wl_race"]
    assert len(ref) == 1 and ref[0]["copy_errno"] == "ENOENT"
    races = [o for o in objs if o["event"] == "race"]
    kinds = {r["kind"]: r for r in races}
    for k in ("mapchange_with_waiters", "placement_failed", "waiter_stranded"):
        assert k in kinds, f"missing race {k}: {races}"
        assert kinds[k]["waiter_tid"] == ref[0]["tid"]
        assert kinds[k]["waiter_addr"] == ref[0]["addr"]
    assert kinds["mapchange_with_waiters"]["what"] == "munmap"
    assert kinds["placement_failed"]["errno"] == "ENOENT"
    assert len([r for r in races if r["kind"] == "waiter_stranded"]) == 1
    # stranded is reported while the waiter is still blocked (before the WAKE)
    assert kinds["waiter_stranded"]["ts_ns"] < ref[0]["wake_ns"]
    # the waiter's episode ends with the WAKE
    f = [o for o in objs if o["event"] == "fault" and o["tid"] == ref[0]["tid"]
         and o["addr"] == ref[0]["addr"]]
    assert len(f) == 1 and f[0]["resolved_by"] == "wake"
    assert f[0]["placement_errno"] == "ENOENT" if "placement_errno" in f[0] else True


def test_kvm_vcpu_faults_via_gup():
    require_root()
    require_kvm()
    faults, _, wl, p = run_traced([KVM_GUEST, "--vcpus", "2", "--pages", "16", "--delay-us", "200"])
    vcpu_tids = {r["tid"] for r in wl if r["event"] == "kvm_vcpu"}
    ref = [r for r in wl if r["event"] == "kvm_fault"]
    assert len(vcpu_tids) == 2 and len(ref) == 32
    mine = [f for f in faults if f["tid"] in vcpu_tids]
    assert sorted((f["tid"], f["addr"]) for f in mine) == \
        sorted((r["tid"], r["addr"]) for r in ref), "vCPU faults differ from the VMM's"
    for f in mine:
        # KVM's GUP path: no user page fault; the vCPU thread blocked, unless the
        # page was placed before it reached schedule() (then the read proves the fault)
        assert f["user_fault"] is False, f
        assert f["blocked"] is True or f["notify_ns"] is not None, f
        assert f["resolved_by"] == "copy"
    assert sum(f["blocked"] for f in mine) >= len(mine) - 2


def test_pid_filter_on_running_process():
    require_root()
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        wl = subprocess.Popen([WORKLOAD, "--threads", "2", "--pages", "8", "--delay-us", "200",
                               "--start-delay-ms", "1500", "--out", out.name],
                              stderr=subprocess.PIPE, text=True)
        # decoy: another uffd process that must not appear
        decoy = subprocess.Popen([WORKLOAD, "--threads", "1", "--pages", "8", "--delay-us",
                                  "200", "--start-delay-ms", "1500", "--quiet"],
                                 stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        p = subprocess.Popen([FAULTLINE, "trace", "--json", "-p", str(wl.pid), "--duration", "4"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wl.wait(timeout=30)
        decoy.wait(timeout=30)
        so, se = p.communicate(timeout=30)
        assert p.returncode == 0, se
        assert se.splitlines()[0].startswith("Tracing"), se
        ref = jsonl(out.read())
    faults = [o for o in jsonl(so) if o["event"] == "fault"]
    assert {f["pid"] for f in faults} == {wl.pid}, "only the -p process is reported"
    check_against_workload(faults, ref)


def test_default_scope_finds_uffd_holders():
    require_root()
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        p = subprocess.Popen([FAULTLINE, "trace", "--json", "--duration", "4"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        # started after the tracer, with a pause so the /proc scan picks it up
        wl = subprocess.run([WORKLOAD, "--threads", "2", "--pages", "8", "--delay-us", "200",
                             "--start-delay-ms", "800", "--out", out.name],
                            capture_output=True, text=True, timeout=30)
        assert wl.returncode == 0, wl.stderr
        so, se = p.communicate(timeout=30)
        ref = jsonl(out.read())
    faults = [o for o in jsonl(so) if o["event"] == "fault"]
    check_against_workload(faults, ref)


def syscall_tps_of(pid):
    """Syscall tracepoints the kernel has BPF programs of process pid attached to."""
    p = subprocess.run(["bpftool", "-j", "perf", "show"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return {o.get("tracepoint") for o in json.loads(p.stdout or "[]")
            if o.get("pid") == pid and str(o.get("tracepoint", "")).startswith("sys_")}


def wait_for(pred, timeout=3.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_lite_mode_without_syscall_probes():
    require_root()
    faults, _, wl, p = run_traced(
        [WORKLOAD, "--threads", "2", "--pages", "8", "--delay-us", "300"], "--lite")
    ref = [r for r in wl if r["event"] == "wl_fault"]
    assert len(faults) == len(ref)
    for f in faults:
        assert f["notify_ns"] is None and f["resolve_ns"] is None
    # with a tracked process alive, lite mode still attaches no syscall tracepoint
    wl = subprocess.Popen([WORKLOAD, "--threads", "1", "--pages", "2", "--start-delay-ms",
                           "2500", "--quiet"], stderr=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL)
    tr = subprocess.Popen([FAULTLINE, "trace", "--lite", "-p", str(wl.pid), "--duration", "2"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        assert syscall_tps_of(tr.pid) == set()
    finally:
        tr.wait(timeout=10)
        wl.wait(timeout=20)


def test_syscall_probes_eager_by_default():
    """Default scope: the syscall probes are on from the start, nothing
    tracked or not, so a new process is tracked from its uffd's creation."""
    require_root()
    tr = subprocess.Popen([FAULTLINE, "trace", "--duration", "6"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: {"sys_enter_userfaultfd", "sys_enter_read", "sys_exit_ioctl"}
                        <= syscall_tps_of(tr.pid), timeout=5.0), syscall_tps_of(tr.pid)
    finally:
        tr.terminate()
        tr.wait(timeout=10)


def test_syscall_probes_only_while_tracked():
    """--lazy-syscalls: attached while something is tracked, detached after."""
    require_root()
    if subprocess.run(["sh", "-c", "ls -l /proc/[0-9]*/fd 2>/dev/null | grep -q userfaultfd"]
                      ).returncode == 0:
        raise Skip("another process on this machine holds a userfaultfd")
    tr = subprocess.Popen([FAULTLINE, "trace", "--lazy-syscalls", "--duration", "14"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        assert syscall_tps_of(tr.pid) == set(), "attached with nothing tracked"
        wl = subprocess.Popen([WORKLOAD, "--threads", "1", "--pages", "2", "--start-delay-ms",
                               "2000", "--quiet"], stderr=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL)
        assert wait_for(lambda: "sys_enter_ioctl" in syscall_tps_of(tr.pid)), \
            "not attached while a uffd process runs"
        assert {"sys_enter_read", "sys_exit_ioctl", "sys_enter_munmap"} <= syscall_tps_of(tr.pid)
        wl.wait(timeout=20)
        gone = time.time()
        # kept a while for the next process (3 s), then detached (destroying links takes ~1 s)
        time.sleep(1.0)
        assert "sys_enter_ioctl" in syscall_tps_of(tr.pid), "detached at once"
        assert wait_for(lambda: syscall_tps_of(tr.pid) == set(), timeout=8.0), \
            "still attached long after exit"
        assert time.time() - gone >= 2.5
    finally:
        tr.terminate()
        tr.wait(timeout=10)


def test_uffd_processes_coming_and_going():
    """Default scope on a host where migrations follow each other: each new
    process starts right after the last one left, or while the probes of the
    last one are being detached. Every fault of every process is seen."""
    require_root()
    tr = subprocess.Popen([FAULTLINE, "trace", "--json", "--duration", "20"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    refs = []
    try:
        time.sleep(1.0)
        # gaps around the idle detach (3 s) and its ~1 s of link destruction
        for gap in (0.2, 0.8, 3.1, 3.4, 3.8, 0.1):
            with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
                wl = subprocess.run([WORKLOAD, "--threads", "1", "--pages", "6", "--delay-us",
                                     "200", "--start-delay-ms", "400", "--out", out.name],
                                    capture_output=True, text=True, timeout=30)
                assert wl.returncode == 0, wl.stderr
                refs.append(jsonl(out.read()))
            assert tr.poll() is None, f"faultline exited: {tr.communicate()[1][-1500:]}"
            time.sleep(gap)
    finally:
        tr.terminate()
        so, se = tr.communicate(timeout=30)
    assert tr.returncode == 0, se
    assert "failed" not in se, se
    faults = [o for o in jsonl(so) if o["event"] == "fault"]
    for ref in refs:
        pid = next(r["pid"] for r in ref if r["event"] == "wl_summary")
        check_against_workload([f for f in faults if f["pid"] == pid], ref)


def test_raw_tp_fallback():
    require_root()
    faults, _, wl, p = run_traced(
        [WORKLOAD, "--threads", "2", "--pages", "8", "--delay-us", "300"], "--raw-tp")
    assert "raw_tp" in p.stderr
    check_against_workload(faults, wl)


def test_lost_records_are_reported():
    require_root()
    # a 4 KiB ring buffer whose consumer is stopped for a whole 2000-fault burst must overflow
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        wl = subprocess.Popen([WORKLOAD, "--threads", "4", "--pages", "500", "--start-delay-ms",
                               "3000", "--out", out.name], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        p = subprocess.Popen([FAULTLINE, "trace", "--json", "-p", str(wl.pid), "--ringbuf-kb",
                              "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert p.stderr.readline().startswith("Tracing")
            os.kill(p.pid, signal.SIGSTOP)
            assert wl.wait(timeout=60) == 0
        finally:
            os.kill(p.pid, signal.SIGCONT)
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        so, se = p.communicate(timeout=30)
        assert p.returncode == 0, se
        wl_recs = jsonl(out.read())
    objs = jsonl(so)
    faults = [o for o in objs if o["event"] == "fault"]
    lost = [o for o in objs if o["event"] == "lost"]
    summ = [o for o in objs if o["event"] == "summary"][0]
    assert lost, "no lost event although the buffer overflowed"
    assert summ["lost"] == sum(o["count"] for o in lost) > 0
    ref = [r for r in wl_recs if r["event"] == "wl_fault"]
    assert len(ref) == 2000 and len(faults) < len(ref)
    # and with the default buffer the same burst loses nothing
    faults, objs, wl, p = run_traced([WORKLOAD, "--threads", "4", "--pages", "500"])
    summ = [o for o in objs if o["event"] == "summary"][0]
    assert summ["lost"] == 0 and not [o for o in objs if o["event"] == "lost"]
    assert len(faults) == len([r for r in wl if r["event"] == "wl_fault"])


def test_hist_and_summary():
    require_root()
    p = subprocess.run([FAULTLINE, "trace", "--hist", "--", WORKLOAD, "--threads", "2",
                        "--pages", "8", "--delay-us", "300", "--quiet"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "usecs" in p.stdout and "distribution" in p.stdout
    assert "16 fault(s)" in p.stdout, p.stdout[-500:]
    # the histogram's counts add up to the fault count
    rows = [l for l in p.stdout.splitlines() if "->" in l and "|" in l]
    assert sum(int(l.split(":")[1].split()[0]) for l in rows) == 16


def test_sigint_flushes_and_summarises():
    require_root()
    p = subprocess.Popen([FAULTLINE, "trace", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.send_signal(2)
    so, se = p.communicate(timeout=10)
    assert p.returncode == 0, se
    assert any(o["event"] == "summary" for o in jsonl(so)), so


def test_errors_are_clear():
    p = subprocess.run([FAULTLINE, "trace", "-p", "999999999"], capture_output=True, text=True)
    assert p.returncode != 0 and "999999999" in p.stderr, p.stderr
    p = subprocess.run([FAULTLINE, "trace", "--duration", "soon"], capture_output=True, text=True)
    assert p.returncode != 0 and "invalid duration" in p.stderr, p.stderr
    p = subprocess.run([FAULTLINE, "nosuch"], capture_output=True, text=True)
    assert p.returncode == 2 and "unknown command" in p.stderr
    if os.geteuid() == 0:
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            FAULTLINE, "trace"], capture_output=True, text=True)
        assert p.returncode != 0 and "root" in p.stderr, p.stderr
    # a pid that exists but holds no uffd is fine (it may create one later)
    p = subprocess.run([FAULTLINE, "trace", "-p", "1", "--duration", "0.3"],
                       capture_output=True, text=True, timeout=30)
    if os.geteuid() == 0:
        assert p.returncode == 0, p.stderr


def test_features_lists_kernel_support():
    require_root()
    p = subprocess.run([FAULTLINE, "features", "--json"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    feats = {o["name"]: o for o in jsonl(p.stdout)}
    assert feats["tracepoint sched:sched_switch"]["available"] is True
    assert feats["userfaultfd"]["available"] is True
    for o in feats.values():
        if not o["available"]:
            assert o["disables"], o


def test_help_has_examples():
    for args in (["--help"], ["trace", "--help"], ["features", "--help"]):
        p = subprocess.run([FAULTLINE, *args], capture_output=True, text=True)
        assert p.returncode == 0 and "xample" in p.stdout.upper().replace("EXAMPLE", "xample"), \
            p.stdout


if __name__ == "__main__":
    main([test_missing_copy_threads, test_hugetlb_faults_name_their_page_size, test_missing_mix_copy_zeropage_poison_wake,
          test_minor_continue_and_poison, test_handler_delay_is_the_resolve_share,
          test_multiple_handler_threads_loops, test_munmap_race_reported,
          test_kvm_vcpu_faults_via_gup, test_pid_filter_on_running_process,
          test_default_scope_finds_uffd_holders, test_lite_mode_without_syscall_probes,
          test_syscall_probes_eager_by_default, test_syscall_probes_only_while_tracked,
          test_uffd_processes_coming_and_going,
          test_raw_tp_fallback, test_lost_records_are_reported, test_hist_and_summary,
          test_sigint_flushes_and_summarises,
          test_errors_are_clear, test_features_lists_kernel_support, test_help_has_examples])
