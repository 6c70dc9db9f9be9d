#!/usr/bin/env python3
"""Remote fault latency, target -> source over a veth pair, 4 KiB pages.

Two network namespaces joined by a veth pair are the hosts.  The source
serves a 256 MiB test VM (build/migrate-vm) with `faultline source`, its
background push throttled to 1 MiB/s so that nearly every touch is a remote
fault; on the target `faultline target` routes the faults of remote-touch,
which touches 2000 random pages one at a time and times each touch with
CLOCK_MONOTONIC (network, source and router included).  Rounds are repeated
and medians reported.

The source VM's vCPUs are host threads (migrate-vm --cpu threads) whether or
not /dev/kvm exists: the figure is the target's, the source guest only
dirties a few pages in the background, so KVM would change nothing but where
the bench can run.

    python3 tests/bench/bench_migration.py [--rounds N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import tap  # noqa: E402
from netns import NetnsPair  # noqa: E402

MIGRATE_VM = os.path.join(tap.BUILD, "migrate-vm")
TOUCH = os.path.join(tap.BUILD, "remote-touch")
# Same figures with or without /dev/kvm (see the docstring).
VM_CPU = "threads"


def one_round(net, tmp, touches):
    vm = net.popen("src", [MIGRATE_VM, "--role", "source", "--cpu", VM_CPU, "--json",
                           "--vcpus", "1", "--mem-mib", "256", "--pace-us", "100000"],
                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(vm.stdout.readline())
    ctrl = os.path.join(tmp, "ctl")
    src = net.popen("src", [tap.FAULTLINE, "source", "--pid", str(info["pid"]),
                            "--range", f"{info['addr']}:{info['length']}",
                            "--listen", f"{net.src_ip}:7411", "--control", ctrl,
                            "--max-bandwidth", "1", "--json"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(ctrl):
        time.sleep(0.05)
    sock = os.path.join(tmp, "router.sock")
    tgt = net.popen("tgt", [tap.FAULTLINE, "target", "--source", f"{net.src_ip}:7411",
                            "--vmm-socket", sock, "--json", "--", TOUCH, "--router", sock,
                            "--mem-mib", str(info["length"] >> 20), "--touches", str(touches)],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    result = None
    for line in tgt.stdout:
        if '"remote_touch"' in line:
            result = json.loads(line)
            break
    for p in (tgt, src, vm):
        p.kill()
        p.wait()
    os.unlink(ctrl) if os.path.exists(ctrl) else None
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)))
    ap.add_argument("--touches", type=int, default=2000)
    a = ap.parse_args()
    if not os.access(TOUCH, os.X_OK):
        sys.exit(f"bench_migration: {TOUCH} is missing: build it with `make bench` (or make {TOUCH})")
    if os.geteuid() != 0:
        sys.exit("bench_migration: needs root (network namespaces, userfaultfd of another process)")
    p50, p99 = [], []
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        for _ in range(a.rounds):
            r = one_round(net, tmp, a.touches)
            if not r:
                sys.exit("bench_migration: a round produced no result")
            p50.append(r["p50_ns"])
            p99.append(r["p99_ns"])
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"remote fault latency, target -> source over veth, 4 KiB pages "
          f"({a.touches} random first touches x {a.rounds} rounds, medians of rounds)")
    print(f"  source VM: migrate-vm --cpu {VM_CPU} (/dev/kvm "
          f"{'present' if os.access('/dev/kvm', os.R_OK | os.W_OK) else 'absent'}, not used)")
    print(f"  p50 {med(p50) / 1e3:8.1f} us   (rounds: {', '.join(f'{x / 1e3:.1f}' for x in p50)})")
    print(f"  p99 {med(p99) / 1e3:8.1f} us   (rounds: {', '.join(f'{x / 1e3:.1f}' for x in p99)})")


if __name__ == "__main__":
    main()
