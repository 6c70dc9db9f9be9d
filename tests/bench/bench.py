#!/usr/bin/env python3
"""make bench: faultline's overheads, measured side by side in one run.

Every comparison interleaves its variants (A B A B ...) so drift on this
shared, noisy machine hits both equally, and reports medians and the ratio
of medians. Figures only: nothing here passes or fails a build.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
B = os.path.join(ROOT, "build")
FL, WL, LOOP, FLOOR, KVM = (os.path.join(B, n) for n in
                            ("faultline", "uffd-workload", "syscall-loop", "bench-floor",
                             "kvm-guest"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))


def wl_summary(args, prefix=()):
    """Runs the workload (optionally under a tracer); its own summary, via a file."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        p = subprocess.run([*prefix, WL, *args, "--quiet", "--out", out.name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=300)
        if p.returncode:
            sys.exit(f"bench: workload failed: {p.stderr[-500:]}")
        return next(json.loads(l) for l in out if '"wl_summary"' in l)


class Tracer:
    """faultline trace in the background, up once its Tracing line is out."""

    def __init__(self, *args):
        self.p = subprocess.Popen([FL, "trace", *args], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stderr.readline()
        if not line.startswith("Tracing"):
            sys.exit(f"bench: faultline did not start: {line}{self.p.stderr.read()}")
        time.sleep(0.3)  # first /proc scan and syscall attach

    def stop(self):
        self.p.send_signal(2)
        self.p.wait(timeout=20)


class Floor:
    def __init__(self):
        self.p = subprocess.Popen([FLOOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        if self.p.stdout.readline().strip() != "ATTACHED":
            sys.exit("bench: bench-floor failed to attach")

    def stop(self):
        self.p.stdin.close()
        self.p.wait(timeout=20)


def syscall_ns(calls=2_000_000):
    out = subprocess.run([LOOP, str(calls)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def interleave(variants, measure):
    """variants: {name: (start, stop)}; returns {name: [values]}."""
    res = {n: [] for n in variants}
    for _ in range(ROUNDS):
        for name, (start, stop) in variants.items():
            h = start() if start else None
            try:
                res[name].append(measure())
            finally:
                if stop:
                    stop(h)
    return res


def med(xs):
    return statistics.median(xs)


def report(title, res, base, target=None):
    print(f"\n{title}  ({ROUNDS} interleaved rounds, medians)")
    for n, xs in res.items():
        print(f"  {n:34s} {med(xs):12.1f}   (min {min(xs):.1f}, max {max(xs):.1f})")
    for n in res:
        if n != base:
            r = med(res[n]) / med(res[base])
            tgt = f"   target {target}" if target else ""
            print(f"  ratio {n} / {base}: {r:.3f}{tgt}")


def cpu_ns(pid):
    """CPU time of a process, all its threads, in ns (schedstat: exact, not ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def bench_round_trip():
    """Variants interleaved per round; the workload's own median per fault.

    The floor is the same workload under empty BPF programs on every
    tracepoint faultline uses (bench-floor): what any tracer on these
    tracepoints costs before it does anything. The agent's CPU per fault
    is the daemon-style tracer's CPU time over the faults it traced.
    """
    for delay in ("0", "100"):
        args = ["--threads", "1", "--pages", "3000", "--delay-us", delay]
        res = {n: [] for n in ("detached (ns/fault)", "empty BPF on all tps (ns/fault)",
                               "faultline trace (ns/fault)", "faultline trace --lite (ns/fault)",
                               "faultline daemon, default scope (ns/fault)")}
        agent = []
        for _ in range(ROUNDS):
            res["detached (ns/fault)"].append(wl_summary(args)["median_ns"])
            f = Floor()
            try:
                res["empty BPF on all tps (ns/fault)"].append(wl_summary(args)["median_ns"])
            finally:
                f.stop()
            res["faultline trace (ns/fault)"].append(
                wl_summary(args, prefix=(FL, "trace", "--json", "--"))["median_ns"])
            res["faultline trace --lite (ns/fault)"].append(
                wl_summary(args, prefix=(FL, "trace", "--lite", "--json", "--"))["median_ns"])
            t = Tracer()
            try:
                before = cpu_ns(t.p.pid)
                s = wl_summary(args)
                time.sleep(0.2)  # the agent's share of this run's records
                agent.append((cpu_ns(t.p.pid) - before) / max(s.get("faults", 3000), 1))
                res["faultline daemon, default scope (ns/fault)"].append(s["median_ns"])
            finally:
                t.stop()
        report(f"1. Userfault round trip, handler delay {delay} us "
               "(workload's own median per fault)", res, "empty BPF on all tps (ns/fault)",
               "faultline trace <= 1.05 at 0 us, <= 1.02 at 100 us")
        r = med(res["faultline trace (ns/fault)"]) / med(res["detached (ns/fault)"])
        print(f"  ratio faultline trace / detached: {r:.3f}")
        print(f"  agent CPU per fault (daemon, schedstat): median {med(agent):.0f} ns")


def bpf_prog_costs():
    """run_time_ns per faultline program so far (kernel.bpf_stats_enabled)."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True)
    try:
        progs = json.loads(out.stdout)
    except ValueError:
        return {}
    return {p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in progs
            if p.get("name", "").startswith(("tp", "raw_", "kvm")) and p.get("run_cnt")}


def traced_bpf_ns(args, faults):
    """BPF time per fault of one workload run under the tracer in default scope.

    Counters are read before and after the run, not during it: a program
    runs for every process (and filters), so a sampler's own page faults
    and switches would be counted. Returns {program: (ns, runs) per fault}."""
    stats = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    t = Tracer()
    try:
        # on only for this run: the stats' clock reads would slow every
        # program of the round-trip variants, the empty floor's included
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=False)
        before = bpf_prog_costs()
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        after = bpf_prog_costs()
    finally:
        subprocess.run(["sysctl", "-qw", f"kernel.bpf_stats_enabled={stats}"], check=False)
        t.stop()
    return {n: ((after[n][0] - before.get(n, (0, 0))[0]) / faults,
                (after[n][1] - before.get(n, (0, 0))[1]) / faults) for n in after}


def bench_round_trip_pinned():
    """The round trip with the workload's two threads on one CPU.

    Unpinned, a fault costs a cross-CPU wakeup; on a VM whose other vCPU is
    idle that wakeup alone can be ~65 us and comes and goes (bimodal medians).
    Pinned, every BPF program's cost lands on the fault's own path: the
    CPU-cost view, and a stable one. bpf_stats gives the BPF time per fault
    directly, the figure to A/B a BPF change by.
    """
    pin = ("taskset", "-c", "0")
    args = ["--threads", "1", "--pages", "3000", "--delay-us", "0"]
    res = {"detached (ns/fault)": [], "empty BPF on all tps (ns/fault)": [],
           "faultline trace (ns/fault)": []}
    per_fault, runs, progs = [], [], {}
    for _ in range(ROUNDS):
        res["detached (ns/fault)"].append(wl_summary(args, prefix=pin)["median_ns"])
        f = Floor()
        try:
            res["empty BPF on all tps (ns/fault)"].append(
                wl_summary(args, prefix=pin)["median_ns"])
        finally:
            f.stop()
        res["faultline trace (ns/fault)"].append(
            wl_summary(args, prefix=(FL, "trace", "--json", "--", *pin))["median_ns"])
        costs = traced_bpf_ns([*pin, WL, *args, "--quiet"], 3000)
        per_fault.append(sum(ns for ns, _ in costs.values()))
        runs.append(sum(r for _, r in costs.values()))
        for n, (ns, _) in costs.items():
            progs.setdefault(n, []).append(ns)
    report("1b. Userfault round trip, handler delay 0 us, workload pinned to one CPU", res,
           "empty BPF on all tps (ns/fault)", "faultline trace <= 1.05")
    print(f"  BPF time per fault (bpf_stats, all programs): median {med(per_fault):.0f} ns; "
          f"the floor's extra over detached: "
          f"{med(res['empty BPF on all tps (ns/fault)']) - med(res['detached (ns/fault)']):.0f} ns")
    top = sorted(progs, key=lambda n: -med(progs[n]))[:8]
    print("  per program (ns per fault): " + ", ".join(f"{n} {med(progs[n]):.0f}" for n in top))
    # The physical floor: what a fault's program runs and records cost at the least.
    out = subprocess.run([FLOOR, "--parts", "11"], capture_output=True, text=True, check=True)
    part = {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in out.stdout.splitlines()}
    empty, bit = part["empty program"], part["tracked bit"]
    filt = max(bit - empty, 0.0)
    record = part["bit + record"] - bit
    extra = {k[len("bit + "):]: part[k] - bit for k in part
             if k.startswith("bit + ") and k != "bit + record"}
    floor = med(res["empty BPF on all tps (ns/fault)"])
    least = med(runs) * filt + 4 * record
    print(f"  parts (getppid loop, least of 11 rounds, ns per call): no program "
          f"{part['no program']:.0f}, empty {empty:.0f}, + tracked bit {filt:.0f}, + one record "
          f"{record:.0f}; beyond the floor: " +
          ", ".join(f"{k} {v:.0f}" for k, v in extra.items()))
    print(f"  physical floor: {med(runs):.1f} program runs per fault x {filt:.0f} ns (the "
          f"least a per-process filter costs) + 4 records (block, notify, resolve, run) x "
          f"{record:.0f} ns = {least:.0f} ns per fault: ratio {(floor + least) / floor:.3f} "
          f"against the empty-BPF floor; faultline's extra "
          f"{med(res['faultline trace (ns/fault)']) - floor:.0f} ns is "
          f"{(med(res['faultline trace (ns/fault)']) - floor) / max(least, 1):.2f}x it")


def bench_untracked_lite():
    res = interleave({
        "no probes (ns/syscall)": (None, None),
        "faultline --lite (ns/syscall)": (lambda: Tracer("--lite"), lambda t: t.stop()),
    }, syscall_ns)
    report("2. Untracked getppid loop, block/wake probes only", res, "no probes (ns/syscall)",
           "<= 1.02")


def bench_untracked_syscall_probes():
    holder = subprocess.Popen([WL, "--threads", "1", "--pages", "1", "--start-delay-ms",
                               "600000", "--quiet"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        res = interleave({
            "no probes (ns/syscall)": (None, None),
            "empty BPF on same tps (ns/syscall)": (Floor, lambda f: f.stop()),
            "faultline, syscall probes (ns/syscall)": (Tracer, lambda t: t.stop()),
        }, syscall_ns)
    finally:
        holder.kill()
        holder.wait()
    report("3. Untracked getppid loop while a uffd process is tracked", res,
           "empty BPF on same tps (ns/syscall)", "faultline within 1.10 of the floor")


class Exporter:
    """faultline exporter in the background (the host daemon), up once it traces."""

    def __init__(self, *args):
        self.p = subprocess.Popen([FL, "exporter", "--listen", "127.0.0.1:0", "--no-history-socket",
                                   *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        for line in self.p.stderr:
            if line.startswith("Tracing"):
                break
        else:
            sys.exit("bench: faultline exporter did not start")
        time.sleep(0.3)  # first /proc scan, syscall attach

    def stop(self):
        self.p.send_signal(15)
        self.p.wait(timeout=20)


def bench_discovery_cost():
    """What seeing a new uffd process from its first fault costs everyone else.

    The syscall probes stay attached in default scope (they track a new
    process from the syscall that creates its userfaultfd); an untracked
    process pays the kernel's syscall-tracepoint path on every syscall.
    --lazy-syscalls attaches them only while something is tracked (and
    misses a new process's first faults). Nothing holds a userfaultfd here.
    """
    res = interleave({
        "no probes (ns/syscall)": (None, None),
        "empty BPF on same tps (ns/syscall)": (Floor, lambda f: f.stop()),
        "exporter, eager (ns/syscall)": (Exporter, lambda x: x.stop()),
        "exporter --lazy-syscalls (ns/syscall)": (lambda: Exporter("--lazy-syscalls"),
                                                   lambda x: x.stop()),
    }, syscall_ns)
    report("2b. Untracked getppid loop, exporter daemon idle (nothing tracked)", res,
           "no probes (ns/syscall)", "exporter eager <= 1.05")
    r = med(res["exporter, eager (ns/syscall)"]) / med(res["empty BPF on same tps (ns/syscall)"])
    print(f"  ratio exporter eager / empty BPF on the same tracepoints (the kernel's floor for "
          f"any syscall-tracepoint discovery): {r:.3f}")


def kvm_touch_rate(prefix=()):
    """The test VM's guest-measured memory-touching throughput (bytes/s, all vCPUs)."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        p = subprocess.run([*prefix, KVM, "--vcpus", "4", "--pages", "64", "--touch-loops", "20",
                            "--out", out.name], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=300)
        if p.returncode:
            sys.exit(f"bench: kvm-guest failed: {p.stderr[-500:]}")
        return next(json.loads(l) for l in out if '"kvm_summary"' in l)["touch_bytes_per_s"]


def bench_vm_throughput():
    res = {"detached (MB/s)": [], "faultline trace (MB/s)": []}
    for _ in range(ROUNDS):
        res["detached (MB/s)"].append(kvm_touch_rate() / 1e6)
        res["faultline trace (MB/s)"].append(
            kvm_touch_rate((FL, "trace", "--json", "--")) / 1e6)
    report("5. 4-vCPU test VM, guest memory-touching throughput (guest-measured)", res,
           "detached (MB/s)", ">= 0.95 (<= 5% slower)")


def bench_max_rate():
    args = ["--threads", "4", "--pages", "4000", "--handler-threads", "2"]
    rates, lost, exact = [], [], []
    for _ in range(max(3, ROUNDS // 2)):
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
            p = subprocess.run([FL, "trace", "--json", "--", WL, *args, "--quiet", "--out",
                                out.name], capture_output=True, text=True, timeout=300)
            wl = next(json.loads(l) for l in out if '"wl_summary"' in l)
        objs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        summ = next(o for o in objs if o["event"] == "summary")
        faults = [o for o in objs if o["event"] == "fault" and o["pid"] == wl["pid"]]
        lost.append(summ["lost"])
        exact.append(len(faults) == wl["faults"])
        span = max(f["start_ns"] + f["latency_ns"] for f in faults) - \
            min(f["start_ns"] for f in faults)
        rates.append(len(faults) / (span / 1e9))
    print(f"\n4. Highest fault rate: 4 faulting threads, 2 handler threads, {4 * 4000} faults/run")
    print(f"  faults/s (median of {len(rates)}): {med(rates):,.0f}   "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f})")
    print(f"  lost records per run: {lost}   every fault seen exactly once: {all(exact)}")


def main():
    if os.geteuid() != 0:
        sys.exit("bench: needs root (BPF)")
    for f in (FL, WL, LOOP, FLOOR):
        if not os.access(f, os.X_OK):
            sys.exit(f"bench: {f} missing: run make")
    print(f"faultline bench — {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, "
          f"kernel {os.uname().release}")
    bench_round_trip()
    bench_round_trip_pinned()
    bench_untracked_lite()
    bench_untracked_syscall_probes()
    bench_discovery_cost()
    bench_max_rate()
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        bench_vm_throughput()
    else:
        print("\n5. skipped: /dev/kvm not available")
    from bench_exporter import bench_exporter
    bench_exporter()


if __name__ == "__main__":
    main()
