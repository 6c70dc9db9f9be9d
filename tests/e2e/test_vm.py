#!/usr/bin/env python3
"""End-to-end tests of vCPU attribution, per-VM statistics, KVM exits and
poison, against the test VMM's (build/kvm-guest) own measurements."""
import os
import subprocess
import tempfile

from tap import BUILD, FAULTLINE, jsonl, main, require_kvm, require_root
from test_trace import run_traced

KVM_GUEST = os.path.join(BUILD, "kvm-guest")
WORKLOAD = os.path.join(BUILD, "uffd-workload")


def traced_vm(*args, trace_args=()):
    faults, objs, wl, _ = run_traced([KVM_GUEST, *args], *trace_args)
    vm = [o for o in objs if o["event"] == "vm_stats"]
    vsum = {r["vcpu"]: r for r in wl if r["event"] == "kvm_vcpu_summary"}
    ksum = next(r for r in wl if r["event"] == "kvm_summary")
    assert ksum["ok"], ksum
    assert len(vm) == 1, f"expected one VM, got {vm}"
    return faults, objs, wl, vm[0], vsum, ksum


def within(got, want, rel=0.10, abs_ns=0):
    return abs(got - want) <= max(rel * want, abs_ns)


def test_vcpu_attribution_and_per_vcpu_stats():
    require_root()
    require_kvm()
    faults, _, wl, vm, vsum, _ = traced_vm("--vcpus", "2", "--pages", "20", "--delay-us", "3000")
    tids = {r["vcpu"]: r["tid"] for r in wl if r["event"] == "kvm_vcpu"}
    mine = {v["vcpu"]: v for v in vm["vcpus"]}
    assert set(mine) == set(tids), (mine.keys(), tids)
    for n, v in mine.items():
        assert v["tid"] == tids[n]
        ref = vsum[n]
        # every fault of that vCPU thread carries its index
        fs = [f for f in faults if f["tid"] == tids[n]]
        assert len(fs) == ref["faults"] == v["faults"], \
            f"vCPU {n}: faultline {len(fs)} fault records, {v['faults']} in vm_stats, " \
            f"VMM {ref['faults']}; faultline's: {[(f['addr'], f['latency_ns']) for f in fs]}"
        assert all(f["vcpu"] == n for f in fs)
        assert within(v["blocked_ns"], ref["blocked_est_ns"]), \
            f"vCPU {n}: blocked {v['blocked_ns']} vs VMM {ref['blocked_est_ns']}"
        assert within(v["avg_latency_ns"], ref["avg_latency_ns"]), \
            f"vCPU {n}: avg {v['avg_latency_ns']} vs VMM {ref['avg_latency_ns']}"
        for b, (x, y) in enumerate(zip(v["latency_dist_us"], ref["hist_us"])):
            assert abs(x - y) <= max(1, 0.1 * ref["faults"]), \
                f"vCPU {n} bucket {b}: {x} vs VMM {y}"
    assert vm["non_vcpu"]["faults"] == 0


def test_all_vcpu_blocktime():
    require_root()
    require_kvm()
    _, _, _, vm, vsum, ksum = traced_vm("--vcpus", "2", "--pages", "12", "--delay-us", "5000",
                                        "--sync")
    want = ksum["all_vcpu_blocked_est_ns"]
    assert want > 0.5 * min(r["blocked_est_ns"] for r in vsum.values()), "vCPUs not in sync"
    assert within(vm["all_vcpu_blocked_ns"], want), (vm["all_vcpu_blocked_ns"], want)
    # never more than any single vCPU was blocked
    assert vm["all_vcpu_blocked_ns"] <= min(v["blocked_ns"] for v in vm["vcpus"])


def test_kvm_exits_match_vmm_counters():
    require_root()
    require_kvm()
    _, _, _, vm, vsum, _ = traced_vm("--vcpus", "2", "--pages", "16", "--io-per-page",
                                     "--mmio-per-page", "--loops", "2")
    for v in vm["vcpus"]:
        ref = vsum[v["vcpu"]]["exits"]
        got = {k: n for k, n in v["exits"].items() if k.startswith("KVM_EXIT_")}
        assert got == ref, f"vCPU {v['vcpu']}: faultline {got} vs VMM {ref}"
        # the kvm_mmio tracepoint saw every MMIO exit as a write
        assert v["exits"].get("mmio_write") == ref["KVM_EXIT_MMIO"]


def test_comm_counts_every_exit_of_a_vmm_without_uffd():
    """-c started first, then a VMM of that name with no userfaultfd at all (a
    QEMU without postcopy) that runs for a few ms: it is tracked from its
    first KVM ioctl, so every exit its own counters saw is counted, not
    only those after a /proc scan would have found it."""
    require_root()
    require_kvm()
    from test_discovery import Tracer
    t = Tracer("-c", "kvm-guest")
    try:
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
            vmm = subprocess.run([KVM_GUEST, "--no-uffd", "--vcpus", "2", "--pages", "16",
                                  "--io-per-page", "--mmio-per-page", "--loops", "2",
                                  "--out", out.name], capture_output=True, text=True, timeout=60)
            assert vmm.returncode == 0, vmm.stderr
            assert " uffd=-1 " in vmm.stderr, vmm.stderr   # holds no userfaultfd
            wl = jsonl(out.read())
    finally:
        objs = t.stop()
    vsum = {r["vcpu"]: r for r in wl if r["event"] == "kvm_vcpu_summary"}
    vm = [o for o in objs if o["event"] == "vm_stats"]
    assert len(vm) == 1, f"expected the VMM as one VM, got {vm} ({t.stderr()[-1000:]})"
    mine = {v["vcpu"]: v for v in vm[0]["vcpus"]}
    assert set(mine) == set(vsum), (sorted(mine), sorted(vsum))
    for n, v in mine.items():
        ref = vsum[n]["exits"]
        got = {k: c for k, c in v["exits"].items() if k.startswith("KVM_EXIT_")}
        assert got == ref, f"vCPU {n}: faultline {got} vs VMM {ref}"
        assert v["faults"] == 0


def test_vcpu_consumes_poison():
    require_root()
    require_kvm()
    _, objs, wl, _, _, ksum = traced_vm("--vcpus", "2", "--pages", "20", "--poison-every", "5",
                                        "--delay-us", "100")
    ref = {(r["vcpu"], r["gpa"], r["hva"]) for r in wl if r["event"] == "kvm_poison_hit"}
    got = {(o["vcpu"], o["gpa"], o["addr"]) for o in objs
           if o["event"] == "poison" and o["kind"] == "kvm_mmio"}
    assert ref and got == ref, f"faultline {sorted(got)} vs VMM {sorted(ref)}"
    installed = [o for o in objs if o["event"] == "poison" and o["kind"] == "installed"]
    assert len(installed) == ksum["poisons"]
    assert all(o["errno"] is None for o in installed)


def test_thread_consumes_poison_sigbus():
    require_root()
    faults, objs, wl, _ = run_traced([WORKLOAD, "--threads", "2", "--pages", "6",
                                      "--resolve", "poison", "--delay-us", "100"])
    ref = [r for r in wl if r["event"] == "wl_fault"]
    assert all(r["sigbus"] for r in ref)
    sig = [o for o in objs if o["event"] == "poison" and o["kind"] == "sigbus"]
    assert len(sig) == len(ref)
    assert sorted((o["tid"], int(o["addr"], 16) & ~0xfff) for o in sig) == \
        sorted((r["tid"], int(r["addr"], 16)) for r in ref)
    assert {o["si_code"] for o in sig} <= {"BUS_ADRERR", "BUS_MCEERR_AR"}


def test_top_batch_json():
    require_root()
    require_kvm()
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        p = subprocess.run([FAULTLINE, "top", "--json", "-i", "0.3", "-n", "4", "--",
                            KVM_GUEST, "--vcpus", "2", "--pages", "300", "--delay-us", "800",
                            "--loops", "8", "--out", out.name], capture_output=True, text=True, timeout=120)
        wl = jsonl(out.read())
    assert p.returncode == 0, p.stderr
    snaps = [o for o in jsonl(p.stdout) if o["event"] == "vm_stats"]
    assert len(snaps) == 4, len(snaps)	# one VM, four refreshes
    tids = {r["tid"] for r in wl if r["event"] == "kvm_vcpu"}
    prev = {}
    for s in snaps:
        for v in s["vcpus"]:
            assert v["tid"] in tids
            assert v["faults"] >= prev.get(v["tid"], 0), "counts went backwards"
            prev[v["tid"]] = v["faults"]
    # human batch mode prints its header per refresh
    p = subprocess.run([FAULTLINE, "top", "-b", "-i", "0.3", "-n", "2", "--", KVM_GUEST,
                        "--vcpus", "1", "--pages", "400", "--delay-us", "800", "--loops", "4",
                        "--out", "/dev/null"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.count("faultline top") == 2, p.stdout


if __name__ == "__main__":
    main([test_vcpu_attribution_and_per_vcpu_stats, test_all_vcpu_blocktime,
          test_kvm_exits_match_vmm_counters, test_comm_counts_every_exit_of_a_vmm_without_uffd,
          test_vcpu_consumes_poison,
          test_thread_consumes_poison_sigbus, test_top_batch_json])
